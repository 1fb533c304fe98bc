"""pricing.offers: the packaged snapshot and the runtime loader.

Expected numbers are worked out by hand from ../shared/data/prices/*.csv and its SOURCE.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pricing.offers import SNAPSHOT_DATE, load_offers, offers_frame
from pricing.offers_csv import FILE_COLUMNS, REQUIRED_COLUMNS, parse_offers
from provisioner.core.offer import Offer
from provisioner.errors import DataError, UsageError

GPUS_CSV_NAMES = {
    "H100-SXM",
    "H100-PCIe",
    "H100-NVL",
    "H200-SXM",
    "H200-NVL",
    "B200",
    "GB200",
    "A100-40GB-SXM",
    "A100-80GB-SXM",
    "A100-80GB-PCIe",
    "L40S",
    "L40",
    "L4",
    "A10G",
    "A10",
    "B300",
    "MI300X",
    "RTX4090",
    "RTX5090",
}

HEADER = ",".join(REQUIRED_COLUMNS)  # an offers file written before multi_node/aliases
GOOD_ROW = "aws,us-east-1,use1-az1,p5.48xlarge,H100-SXM,8,80,192,2048,nvlink,efa,98.32,30.326,,"


@pytest.fixture(scope="module")
def offers() -> list[Offer]:
    return load_offers()


def pick(offers: list[Offer], **match: object) -> list[Offer]:
    return [o for o in offers if all(getattr(o, k) == v for k, v in match.items())]


def test_snapshot_date() -> None:
    assert SNAPSHOT_DATE == "2026-11-22"


def test_gcp_a3_highgpu_8g_is_host_plus_gpu_row(offers: list[Offer]) -> None:
    rows = pick(offers, cloud="gcp", region="us-central1", instance_type="a3-highgpu-8g")
    assert [o.zone for o in rows] == ["us-central1-a", "us-central1-b", "us-central1-c"]
    for o in rows:
        assert o.ondemand_usd_per_hour == pytest.approx(9.46006 + 33.60609)
        assert o.spot_usd_per_hour == pytest.approx(3.86318 + 32.0104)
        assert (o.gpu, o.gpus_per_node, o.gpu_memory_gib) == ("H100-SXM", 8, 80.0)
        assert (o.interconnect, o.fabric, o.prices_as_of) == (
            "nvlink",
            "gpudirect-tcpx",
            "2026-05-20",
        )


def test_gcp_a4_host_row_zero(offers: list[Offer]) -> None:
    (a4,) = pick(offers, cloud="gcp", zone="us-central1-b", instance_type="a4-highgpu-8g")
    assert (a4.gpu, a4.ondemand_usd_per_hour, a4.spot_usd_per_hour) == ("B200", 90.216, 34.2368)


def test_aws_p5_us_east_1(offers: list[Offer]) -> None:
    rows = pick(offers, cloud="aws", region="us-east-1", instance_type="p5.48xlarge")
    assert len(rows) == 7  # use1-az1..az6 and the Atlanta Local Zone use1-atl2-az1
    for o in rows:
        assert o.ondemand_usd_per_hour == 55.04  # aws_2026.csv, after the June 2025 cut
        assert (o.gpu, o.gpus_per_node, o.gpu_memory_gib) == ("H100-SXM", 8, 80.0)
        assert (o.fabric, o.interconnect, o.vcpus, o.memory_gib) == ("efa", "nvlink", 192, 2048)
        assert o.prices_as_of == "2026-04-02" and "date_from_commit" in o.flags
    assert pick(rows, zone="use1-az6")[0].spot_usd_per_hour == 20.0775  # SOURCE.md min spot


def test_aws_new_types_present(offers: list[Offer]) -> None:
    (small,) = pick(offers, zone="use1-az1", instance_type="p5.4xlarge")
    assert (small.gpus_per_node, small.ondemand_usd_per_hour) == (1, 6.88)
    assert len(pick(offers, instance_type="p6-b200.48xlarge")) == 9
    b300 = pick(offers, instance_type="p6-b300.48xlarge")
    assert len(b300) == 6 and {o.gpu for o in b300} == {"B300"}
    assert {o.ondemand_usd_per_hour for o in b300 if o.region == "us-east-1"} == {142.416}


def test_aws_p5e_capacity_blocks_are_not_offered(offers: list[Offer]) -> None:
    assert pick(offers, cloud="aws", instance_type="p5e.48xlarge") == []


def test_aws_p4de_one_row_per_az(offers: list[Offer]) -> None:
    rows = pick(offers, cloud="aws", instance_type="p4de.24xlarge")
    zones = [(o.region, o.zone) for o in rows]
    assert len(zones) == len(set(zones)) == 11  # aws_2026.csv: 11 rows, one per AZ
    (az4,) = pick(rows, zone="use1-az4")
    assert (az4.gpu, az4.ondemand_usd_per_hour, az4.spot_usd_per_hour) == (
        "A100-80GB-SXM",
        27.44705,
        22.2561,
    )


def test_aws_g6e_fabric_by_size(offers: list[Offer]) -> None:
    (big,) = pick(offers, cloud="aws", zone="use1-az1", instance_type="g6e.48xlarge")
    (small,) = pick(offers, cloud="aws", zone="use1-az1", instance_type="g6e.xlarge")
    assert (big.fabric, big.ondemand_usd_per_hour, big.gpu_memory_gib) == ("efa", 30.13118, 44.7)
    assert (small.fabric, small.ondemand_usd_per_hour) == ("ethernet", 1.861)
    assert big.interconnect == small.interconnect == "pcie"


def test_lambda_has_no_spot(offers: list[Offer]) -> None:
    rows = pick(offers, cloud="lambda")
    # 13 mapped instance types; the catalog's 17 same-price region copies collapse to "any"
    assert len(rows) == 13
    assert {o.region for o in rows} == {"any"}
    assert all("region_unverified" in o.flags for o in rows)
    assert all(o.spot_usd_per_hour is None and o.price("spot") is None for o in rows)
    (h100,) = pick(rows, instance_type="gpu_8x_h100_sxm5")
    assert (h100.gpu, h100.ondemand_usd_per_hour, h100.prices_as_of) == (
        "H100-SXM",
        31.92,
        "2026-05-07",
    )
    (pcie,) = pick(rows, instance_type="gpu_1x_h100_pcie")
    assert (pcie.gpu, pcie.interconnect) == ("H100-PCIe", "pcie")


def test_azure_mi300x_listed_once_per_region_with_its_alias(offers: list[Offer]) -> None:
    rows = pick(offers, cloud="azure", gpu="MI300X")
    regions = [o.region for o in rows]
    assert len(regions) == len(set(regions)) == 17
    assert {o.instance_type for o in rows} == {"Standard_ND96isr_MI300X_v5"}
    assert {o.aliases for o in rows} == {("Standard_ND96is_MI300X_v5",)}


def test_marketplace_offers_are_single_machines(offers: list[Offer]) -> None:
    assert {o.multi_node for o in offers if o.cloud in ("vast", "runpod")} == {False}
    assert {o.multi_node for o in offers if o.cloud not in ("vast", "runpod")} == {True}


def test_azure_known_rows(offers: list[Offer]) -> None:
    (h100,) = pick(offers, cloud="azure", region="eastus", instance_type="Standard_ND96isr_H100_v5")
    assert (h100.gpu, h100.ondemand_usd_per_hour, h100.spot_usd_per_hour, h100.fabric) == (
        "H100-SXM",
        98.32,
        18.169536,
        "infiniband",
    )
    (h200,) = pick(
        offers, cloud="azure", region="eastus2", instance_type="Standard_ND96isr_H200_v5"
    )
    assert h200.ondemand_usd_per_hour == h200.spot_usd_per_hour == 84.8
    assert "spot_eq_ondemand" in h200.flags
    (mi,) = pick(
        offers, cloud="azure", region="eastus2", instance_type="Standard_ND96isr_MI300X_v5"
    )
    assert (mi.gpu, mi.interconnect, mi.ondemand_usd_per_hour) == ("MI300X", "xgmi", 48.0)
    (nc,) = pick(offers, cloud="azure", region="eastus", instance_type="Standard_NC24ads_A100_v4")
    assert (nc.gpu, nc.interconnect, nc.fabric) == ("A100-80GB-PCIe", "pcie", "ethernet")


def test_runpod_l40s_kept_as_is_and_flagged(offers: list[Offer]) -> None:
    rows = pick(offers, cloud="runpod", instance_type="1x_L40S_SECURE")
    assert len(rows) == 25
    for o in rows:
        assert (o.ondemand_usd_per_hour, o.spot_usd_per_hour) == (0.43, 0.86)
        assert {"columns_swapped?", "spot_gt_ondemand"} <= set(o.flags)
    (nvl,) = pick(offers, cloud="runpod", zone="US-CA-1", instance_type="8x_H100-NVL_SECURE")
    assert (nvl.gpu, nvl.interconnect, nvl.ondemand_usd_per_hour) == (
        "H100-NVL",
        "nvlink-bridge",
        22.32,
    )


def test_nebius_gpu_memory_is_not_host_memory(offers: list[Offer]) -> None:
    (h200,) = pick(
        offers, cloud="nebius", region="eu-north1", instance_type="gpu-h200-sxm_8gpu-128vcpu-1600gb"
    )
    assert (h200.gpu_memory_gib, h200.ondemand_usd_per_hour, h200.spot_usd_per_hour) == (
        141.0,
        28.0,
        11.6,
    )
    assert h200.fabric == "infiniband"


def test_vast_zero_spot_means_none(offers: list[Offer]) -> None:
    rows = pick(offers, cloud="vast")
    assert rows and all(o.spot_usd_per_hour is None for o in rows)
    assert all("marketplace" in o.flags for o in rows)


def test_snapshot_invariants(offers: list[Offer]) -> None:
    assert len(offers) == 3391
    keys = [(o.cloud, o.region, o.zone, o.instance_type, o.gpu) for o in offers]
    assert len(set(keys)) == len(keys) and keys == sorted(keys)
    assert {o.gpu for o in offers} <= GPUS_CSV_NAMES
    assert {o.fabric for o in offers} == {"efa", "infiniband", "gpudirect-tcpx", "ethernet"}
    assert {o.interconnect for o in offers} == {"nvlink", "xgmi", "nvlink-bridge", "pcie"}
    for o in offers:
        assert o.ondemand_usd_per_hour is not None or o.spot_usd_per_hour is not None
        assert o.gpus_per_node >= 1 and o.gpu_memory_gib > 0
        assert o.zone or o.cloud not in ("aws", "gcp", "runpod")


def test_price_by_market() -> None:
    (o,) = parse_offers(f"{HEADER}\n{GOOD_ROW}\n")
    assert (o.price("on-demand"), o.price("spot")) == (98.32, 30.326)
    assert (o.prices_as_of, o.flags) == (None, ())
    with pytest.raises(UsageError, match="allowed: spot, on-demand"):
        o.price("reserved")


def test_default_load_is_cached_but_callers_get_their_own_list() -> None:
    first = load_offers()
    first.clear()
    second = load_offers()
    assert len(second) == 3391
    assert second[0] is load_offers()[0]


def test_loads_explicit_path_with_any_column_order(tmp_path: Path) -> None:
    cols = list(FILE_COLUMNS)
    values = GOOD_ROW.split(",")
    values[-2:] = ["2026-05-20", "a;b", "false", "x.1;x.2"]
    order = list(reversed(range(len(cols))))
    path = tmp_path / "offers.csv"
    path.write_text(
        ",".join(cols[i] for i in order) + "\n" + ",".join(values[i] for i in order) + "\n"
    )
    (o,) = load_offers(path)
    assert (o.cloud, o.gpus_per_node, o.ondemand_usd_per_hour) == ("aws", 8, 98.32)
    assert (o.prices_as_of, o.flags) == ("2026-05-20", ("a", "b"))
    assert (o.multi_node, o.aliases) == (False, ("x.1", "x.2"))


def test_legacy_file_without_new_columns_gets_the_cloud_default(tmp_path: Path) -> None:
    vast = GOOD_ROW.replace("aws,", "vast,", 1)
    offers = parse_offers(f"{HEADER}\n{GOOD_ROW}\n{vast}\n")
    assert [(o.cloud, o.multi_node, o.aliases) for o in offers] == [
        ("aws", True, ()),
        ("vast", False, ()),
    ]
    with pytest.raises(DataError, match="line 2: multi_node must be true or false"):
        parse_offers(f"{HEADER},multi_node\n{GOOD_ROW},maybe\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            HEADER.replace(",spot_usd_per_hour", "") + "\n",
            "line 1: missing column 'spot_usd_per_hour'",
        ),
        (
            f"{HEADER}\n{GOOD_ROW}\n{GOOD_ROW.replace('98.32', 'cheap')}\n",
            "line 3: ondemand_usd_per_hour is not a number: 'cheap'",
        ),
        (
            f"{HEADER}\n{GOOD_ROW.replace('30.326', '-1')}\n",
            "line 2: spot_usd_per_hour must be a finite number >= 0, got '-1'",
        ),
        (
            f"{HEADER}\n{GOOD_ROW.replace('98.32', 'nan')}\n",
            "line 2: ondemand_usd_per_hour must be a finite number >= 0, got 'nan'",
        ),
        (
            f"{HEADER}\n{GOOD_ROW}\n\n{GOOD_ROW.replace(',8,80,', ',8.0,80,')}\n",
            "line 4: gpus_per_node is not an integer: '8.0'",
        ),
        (
            f"{HEADER}\n{GOOD_ROW.replace(',efa,', ',efa,,')}\n",
            "line 2: expected 15 fields, found 16",
        ),
        (f"{HEADER}\n{GOOD_ROW.replace(',192,', ',,')}\n", "line 2: vcpus is not a number: ''"),
        (
            f"{HEADER}\n{GOOD_ROW[:-1]}2026/05/20,\n",
            "line 2: prices_as_of is not YYYY-MM-DD: '2026/05/20'",
        ),
        ("", "line 1: empty file"),
    ],
)
def test_malformed_file_raises_data_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError) as err:
        load_offers(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {message}")
    assert "\n" not in msg


def test_missing_file_is_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: cannot read price file"):
        load_offers(tmp_path / "nope.csv")


def test_import_does_not_pull_pandas() -> None:
    code = "import sys, pricing.offers as p; p.load_offers(); print('pandas' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert out.stdout.strip() == "False"


def test_offers_frame(offers: list[Offer]) -> None:
    pytest.importorskip("pandas")
    frame = offers_frame()
    assert list(frame.columns) == list(FILE_COLUMNS)
    assert len(frame) == len(offers)
    lam = frame[frame["cloud"] == "lambda"]
    assert lam["spot_usd_per_hour"].isna().all()
    assert frame["ondemand_usd_per_hour"].dtype == "float64"
    p5 = frame[(frame["instance_type"] == "p5.48xlarge") & (frame["zone"] == "use1-az1")]
    assert p5.iloc[0]["ondemand_usd_per_hour"] == 55.04
    assert p5.iloc[0]["flags"] == "date_from_commit"
    small = offers_frame(offers[:2])
    assert len(small) == 2 and list(small.columns) == list(FILE_COLUMNS)
