"""pricing.tools.build_snapshot: normalisation rules on a hand-picked, hermetic copy of raw rows.

Every catalog line below is copied verbatim from ../shared/data/prices/*.csv (data, with
its provenance in that directory's SOURCE.md); expected values are worked out by hand.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pricing.interconnect import fabric_for
from pricing.nodes import Node
from pricing.offers import load_offers
from pricing.offers_csv import FILE_COLUMNS
from pricing.tools import build_snapshot as bs
from provisioner.errors import DataError

# gpus.csv rows (the columns the one parser, provisioner.core.hardware.parse_gpu_table,
# requires), values as in provisioner/data/gpus.csv (B300 is not in the shared table).
GPUS_CSV = """\
gpu,vendor,arch,memory_GB,memory_MiB_cloud_reported,hbm_bandwidth_TBps,bf16_dense_TFLOPS,fp8_dense_TFLOPS,int8_dense_TOPS,fp4_dense_TFLOPS,intra_node_interconnect,intra_node_GBps_per_gpu_bidir,sm_version
H100-SXM,NVIDIA,Hopper,80,81920,3.35,989,1979,1979,,NVLink4 + NVSwitch,900,90
H100-PCIe,NVIDIA,Hopper,80,81920,2.0,756.5,1513,1513,,PCIe Gen5,128,90
H100-NVL,NVIDIA,Hopper,94,,3.9,835,1671,1671,,NVLink bridge (pairs) + PCIe Gen5,600,90
H200-SXM,NVIDIA,Hopper,141,144384,4.8,989,1979,1979,,NVLink4 + NVSwitch,900,90
B200,NVIDIA,Blackwell,180,,8.0,2250,4500,4500,9000,NVLink5 + NVSwitch,1800,100
B300,NVIDIA,Blackwell,288,275040,8.0,2250,4500,,13125,NVLink5 + NVSwitch,1800,103
MI300X,AMD,CDNA3,192,,5.3,1307.4,2614.9,2614.9,,Infinity Fabric,896,
GB200,NVIDIA,Blackwell,186,189471,8.0,2500,5000,5000,10000,NVLink5 (NVL72 domain),1800,100
A100-40GB-SXM,NVIDIA,Ampere,40,40960,1.555,312,,624,,NVLink3 + NVSwitch,600,80
A100-80GB-SXM,NVIDIA,Ampere,80,81920,2.039,312,,624,,NVLink3 + NVSwitch,600,80
L40S,NVIDIA,Ada,48,45776,0.864,362.05,733,733,,PCIe Gen4 (no NVLink),64,89
A10,NVIDIA,Ampere,24,,0.600,125,,250,,PCIe Gen4 (no NVLink),64,86
"""

_GI = (
    "\"{'Gpus': [{'Name': '%s', 'Manufacturer': 'NVIDIA', 'Count': %s, 'MemoryInfo': "
    "{'SizeInMiB': %d}}], 'TotalGpuMemoryInMiB': %d}\""
)

AWS_SAMPLE = (Path(__file__).parent / "fixtures" / "aws_2026_sample.csv").read_text("utf-8")

CATALOGS = {
    # verbatim rows of ../shared/data/prices/aws_2026.csv (16 columns), plus the old aws.csv
    # quirk of a p4de twin row without a SpotPrice (the merge rule still exists for it)
    "aws_2026.csv": AWS_SAMPLE
    + AWS_SAMPLE.splitlines(keepends=True)[5].replace(",22.256100,", ",,"),
    "gcp.csv": """\
InstanceType,vCPUs,MemoryGiB,AcceleratorName,AcceleratorCount,GpuInfo,Region,AvailabilityZone,Price,SpotPrice
a3-highgpu-8g,208.0,1872.0,,,,us-central1,us-central1-a,9.46006,3.86318
a3-edgegpu-8g-nolssd,208.0,1872.0,,,,us-central1,us-central1-a,9.46006,3.86318
a4-highgpu-8g,224.0,3968.0,,,,us-central1,us-central1-b,0.0,0.0
a3-megagpu-8g,208.0,1872.0,,,,asia-northeast1,asia-northeast1-b,12.14861,3.01038
,,,H100,8,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 81920}}]},us-central1,us-central1-a,33.60609,32.0104
,,,B200,8,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 184320}}]},us-central1,us-central1-b,90.216,34.2368
,,,H100-MEGA,8,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 81920}}]},asia-northeast1,asia-northeast1-b,35.39149,20.088
,,,H100-MEGA,8,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 81920}}]},asia-northeast3,asia-northeast3-a,35.39149,
,,,T4,1,{'Gpus': [{'MemoryInfo': {'SizeInMiB': 16384}}]},us-central1,us-central1-a,0.35,0.1654
""",  # noqa: E501
    "azure.csv": """\
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,Generation
Standard_NC40ads_H100_v5,H100,1,40,320,H100,6.98,2.192418,eastus,V2
Standard_NC4as_T4_v3,T4,1,4,28,T4,0.526,0.204246,eastus,V1,V2
Standard_ND96isr_H200_v5,H200,8,96,1850,H200,84.8,84.8,eastus2,V2
Standard_NV36ads_A10_v5,A10,1,36,440,A10,3.2,0.59136,eastus,V1,V2
Standard_NV6ads_A10_v5,A10,0.167,6,55,A10,0.454,0.083899,eastus,V1,V2
Standard_ND128isr_NDR_GB200_v6,,,128,864,,108.16,108.16,eastus,V2
Standard_ND96is_MI300X_v5,,,96,1850,,48,8.8704,eastus2,V2
Standard_ND96isr_MI300X_v5,MI300X,8,96,1850,MI300X,48,8.8704,eastus2,V2
""",
    "lambda.csv": "\n".join(
        [
            "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,"
            "SpotPrice",
            "gpu_4x_a100,A100,4.0,120.0,800.0,7.96,us-east-1,"
            + _GI % ("A100", "4.0", 40960, 40960)
            + ",",
            "gpu_1x_h100_pcie,H100,1.0,26.0,200.0,3.29,us-east-1,"
            + _GI % ("H100", "1.0", 81920, 81920)
            + ",",
            "gpu_8x_h100_sxm5,H100,8.0,208.0,1800.0,31.92,us-east-1,"
            + _GI % ("H100", "8.0", 81920, 81920)
            + ",",
            "gpu_8x_h100_sxm5,H100,8.0,208.0,1800.0,31.92,europe-central-1,"
            + _GI % ("H100", "8.0", 81920, 81920)
            + ",",
            "gpu_1x_gh200,GH200,1.0,64.0,432.0,2.29,us-east-1,"
            + _GI % ("GH200", "1.0", 98304, 98304)
            + ",",
        ]
    )
    + "\n",
    "runpod.csv": """\
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Region,SpotPrice,Price,AvailabilityZone
8x_H100-SXM_SECURE,H100-SXM,8.0,160.0,640.0,H100-SXM,US,21.52,23.92,US-CA-1
1x_L40S_SECURE,L40S,1.0,12.0,62.0,L40S,US,0.86,0.43,US-CA-1
1x_RTXA6000_SECURE,RTXA6000,1.0,4.0,48.0,RTXA6000,US,0.33,0.49,US-CA-1
2x_B200_SECURE,B200,2.0,72.0,360.0,B200,US,,15.98,US-CA-1
2x_B200_SECURE,B200,2.0,72.0,360.0,B200,US,,15.98,US-CA-1
""",
    "nebius.csv": "\n".join(
        [
            "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,"
            "SpotPrice",
            "gpu-h100-sxm_8gpu-128vcpu-1600gb,H100,8,128,1600,23.60,eu-north1,"
            + _GI % ("H100", 8, 204800, 1638400)
            + ",10.00",
        ]
    )
    + "\n",
    "vast_anycloud.csv": """\
InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region
1x-H100_NVL-32-65536,H100,1,32,64.0,"{'Gpus': [{'Name': 'H100', 'Count': 1, 'MemoryInfo': {'SizeInMiB': 95830}}], 'TotalGpuMemoryInMiB': 95830}",1.98,0.00,"Bulgaria, BG, EU"
2x-A100_SXM4-32-65536,A100,2,32,64.0,"{'Gpus': [{'Name': 'A100', 'Count': 2, 'MemoryInfo': {'SizeInMiB': 81920}}], 'TotalGpuMemoryInMiB': 81920}",1.87,0.00,"Germany, DE, EU"
1x-Tesla_V100-32-65536,V100,1,32,64.0,"{'Gpus': [{'Name': 'V100', 'Count': 1, 'MemoryInfo': {'SizeInMiB': 16384}}], 'TotalGpuMemoryInMiB': 16384}",0.18,0.00,"The Netherlands, NL, EU"
""",  # noqa: E501
    "fluidstack_v6.csv": "\n".join(
        [
            "InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,Price,Region,GpuInfo,"
            "SpotPrice",
            "H100_NVLINK_80GB::8,H100,8,252,1440.0,23.92,FINLAND,"
            + _GI % ("H100", 8, 81920, 655360)
            + ",",
        ]
    )
    + "\n",
}


def make_shared(root: Path, **overrides: str) -> Path:
    (root / "prices").mkdir(parents=True)
    (root / "gpus.csv").write_text(GPUS_CSV, encoding="utf-8")
    for name, text in {**CATALOGS, **overrides}.items():
        (root / "prices" / name).write_text(text, encoding="utf-8")
    return root


@pytest.fixture()
def shared(tmp_path: Path) -> Path:
    return make_shared(tmp_path / "shared")


@pytest.fixture()
def built(shared: Path) -> bs.BuildResult:
    return bs.build(shared)


def _rows(result: bs.BuildResult, **match: object) -> list[Node]:
    return [n for n in result.nodes if all(getattr(n, k) == v for k, v in match.items())]


def _one(result: bs.BuildResult, **match: object) -> Node:
    rows = _rows(result, **match)
    assert len(rows) == 1, rows
    return rows[0]


def test_aws_p5_row_as_in_catalog(built: bs.BuildResult) -> None:
    p5 = _one(built, cloud="aws", instance_type="p5.48xlarge")
    assert (p5.region, p5.zone, p5.gpu, p5.gpus_per_node) == (
        "us-east-1",
        "use1-az1",
        "H100-SXM",
        8,
    )
    # aws_2026.csv: after AWS's June 2025 P5 price cut (prices/SOURCE.md: $98.32 -> $55.04)
    assert (p5.ondemand, p5.spot, p5.gpu_memory_gib) == (55.04, 21.0363, 80.0)
    assert (p5.vcpus, p5.memory_gib) == (192.0, 2048.0)
    assert "date_from_commit" in p5.flags and "date_unknown" not in p5.flags
    assert bs.to_csv([p5]).splitlines()[1].split(",")[13] == "2026-04-02"  # prices_as_of
    small = _one(built, cloud="aws", instance_type="p5.4xlarge")
    assert (small.gpu, small.gpus_per_node, small.ondemand) == ("H100-SXM", 1, 6.88)


def test_aws_p6_b300_present_with_cloud_memory(built: bs.BuildResult) -> None:
    b300 = _one(built, cloud="aws", instance_type="p6-b300.48xlarge")
    # GpuInfo SizeInMiB 275040 / 1024 = 268.59 GiB
    assert (b300.gpu, b300.gpus_per_node, b300.gpu_memory_gib, b300.ondemand) == (
        "B300",
        8,
        268.6,
        142.416,
    )
    assert fabric_for("aws", "p6-b300.48xlarge") == "efa"


def test_aws_p4de_duplicates_merged_keeping_spot(built: bs.BuildResult) -> None:
    p4de = _one(built, cloud="aws", instance_type="p4de.24xlarge")
    assert (p4de.gpu, p4de.ondemand, p4de.spot) == ("A100-80GB-SXM", 27.44705, 22.2561)
    assert "duplicate_row" in p4de.flags
    assert built.reports["aws"].merged_duplicates == 1


def test_aws_p5e_capacity_block_only_never_spot_or_on_demand(built: bs.BuildResult) -> None:
    # both sample p5e rows carry a SpotPrice and no Price: still not rentable as spot
    assert _rows(built, cloud="aws", instance_type="p5e.48xlarge") == []
    assert built.reports["aws"].dropped[("capacity_block_only", "p5e.48xlarge")] == 2


def test_aws_efa_only_on_large_sizes(built: bs.BuildResult) -> None:
    assert fabric_for("aws", "g6e.48xlarge") == "efa"
    assert fabric_for("aws", "g6e.8xlarge") == "efa"
    assert fabric_for("aws", "g6e.4xlarge") == "ethernet"
    assert fabric_for("aws", "g6e.xlarge") == "ethernet"
    assert fabric_for("aws", "p4d.24xlarge") == "efa"
    text = bs.to_csv(built.nodes)
    assert ",g6e.xlarge,L40S,1,44.7,4,32,pcie,ethernet,1.861,1.6002,2026-04-02," in text
    assert ",g6e.48xlarge,L40S,8,44.7,192,1536,pcie,efa,30.13118,14.8664,2026-04-02," in text


def test_gcp_host_and_gpu_rows_joined(built: bs.BuildResult) -> None:
    a3 = _one(built, cloud="gcp", instance_type="a3-highgpu-8g")
    # SOURCE.md: host 9.46006 (spot 3.86318) + GPU row H100 x8 33.60609 (spot 32.0104)
    assert a3.ondemand == pytest.approx(9.46006 + 33.60609)
    assert bs.to_csv([a3]).splitlines()[1].split(",")[11:13] == ["43.06615", "35.87358"]
    assert (a3.gpu, a3.gpus_per_node, a3.vcpus, a3.zone) == ("H100-SXM", 8, 208.0, "us-central1-a")
    assert fabric_for("gcp", "a3-highgpu-8g") == "gpudirect-tcpx"
    assert fabric_for("gcp", "a3-highgpu-4g") == "ethernet"
    a4 = _one(built, cloud="gcp", instance_type="a4-highgpu-8g")  # host row 0.0
    assert (a4.gpu, a4.ondemand, a4.spot, a4.gpu_memory_gib) == ("B200", 90.216, 34.2368, 180.0)
    mega = _one(built, cloud="gcp", instance_type="a3-megagpu-8g")
    assert (mega.ondemand, mega.spot) == (pytest.approx(47.5401), pytest.approx(23.09838))


def test_gcp_unjoinable_and_unknown_rows_counted(built: bs.BuildResult) -> None:
    dropped = built.reports["gcp"].dropped
    assert dropped[("gcp_gpu_row_without_host_row", "8x H100-MEGA")] == 1  # asia-northeast3-a
    assert dropped[("gcp_host_row_unused", "a3-edgegpu-8g-nolssd")] == 1
    assert dropped[("gpu_not_in_gpus_csv", "T4")] == 1
    assert len(_rows(built, cloud="gcp")) == 3


def test_azure_sizes_generation_spill_and_drops(built: bs.BuildResult) -> None:
    nvl = _one(built, cloud="azure", instance_type="Standard_NC40ads_H100_v5")
    assert (nvl.gpu, nvl.gpu_memory_gib) == ("H100-NVL", 94.0)
    assert "gpu_memory_nominal" in nvl.flags
    h200 = _one(built, cloud="azure", instance_type="Standard_ND96isr_H200_v5")
    assert (h200.gpu, h200.ondemand, h200.spot) == ("H200-SXM", 84.8, 84.8)
    assert "spot_eq_ondemand" in h200.flags
    gb200 = _one(built, cloud="azure", instance_type="Standard_ND128isr_NDR_GB200_v6")
    assert (gb200.gpu, gb200.gpus_per_node, gb200.gpu_memory_gib) == ("GB200", 4, 185.0)
    assert "gpu_from_instance_type" in gb200.flags
    a10 = _one(built, cloud="azure", instance_type="Standard_NV36ads_A10_v5")  # "V1,V2" row
    assert (a10.ondemand, a10.spot, a10.gpus_per_node) == (3.2, 0.59136, 1)
    dropped = built.reports["azure"].dropped
    assert dropped[("fractional_gpu", "Standard_NV6ads_A10_v5 (0.167 GPU)")] == 1
    assert dropped[("gpu_not_in_gpus_csv", "T4")] == 1
    assert fabric_for("azure", "Standard_ND96isr_H200_v5") == "infiniband"
    assert fabric_for("azure", "Standard_ND96is_MI300X_v5") == "ethernet"
    assert fabric_for("azure", "Standard_NC80adis_H100_v5") == "ethernet"


def test_lambda_names_and_no_spot(built: bs.BuildResult) -> None:
    assert _one(built, cloud="lambda", instance_type="gpu_8x_h100_sxm5").gpu == "H100-SXM"
    assert _one(built, cloud="lambda", instance_type="gpu_1x_h100_pcie").gpu == "H100-PCIe"
    assert all(n.spot is None for n in _rows(built, cloud="lambda"))
    dropped = built.reports["lambda"].dropped
    assert dropped[("gpu_not_in_gpus_csv", "A100-40GB-PCIe")] == 1
    assert dropped[("gpu_not_in_gpus_csv", "GH200")] == 1


def test_runpod_swapped_columns_flagged_not_fixed(built: bs.BuildResult) -> None:
    l40s = _one(built, cloud="runpod", instance_type="1x_L40S_SECURE")
    assert (l40s.ondemand, l40s.spot) == (0.43, 0.86)
    assert {"columns_swapped?", "spot_gt_ondemand"} <= l40s.flags
    h100 = _one(built, cloud="runpod", instance_type="8x_H100-SXM_SECURE")
    assert (h100.ondemand, h100.spot, h100.gpu_memory_gib) == (23.92, 21.52, 80.0)
    b200 = _one(built, cloud="runpod", instance_type="2x_B200_SECURE")
    assert "duplicate_row" in b200.flags
    assert built.reports["runpod"].dropped[("gpu_not_in_gpus_csv", "RTXA6000")] == 1


def test_conflicting_duplicates_keep_the_higher_price(tmp_path: Path) -> None:
    conflict = "2x_B200_SECURE,B200,2.0,72.0,360.0,B200,US,9.99,16.5,US-CA-1\n"
    shared = make_shared(tmp_path / "shared", **{"runpod.csv": CATALOGS["runpod.csv"] + conflict})
    b200 = _one(bs.build(shared), cloud="runpod", instance_type="2x_B200_SECURE")
    assert (b200.ondemand, b200.spot) == (16.5, 9.99)
    assert {"duplicate_row", "duplicate_conflict"} <= b200.flags


def test_nebius_memory_from_gpus_csv_and_infiniband(built: bs.BuildResult) -> None:
    neb = _one(built, cloud="nebius")
    assert (neb.gpu, neb.gpu_memory_gib, neb.ondemand, neb.spot) == ("H100-SXM", 80.0, 23.6, 10.0)
    assert fabric_for("nebius", neb.instance_type) == "infiniband"


def test_vast_zero_spot_is_no_spot_and_memory_per_gpu(built: bs.BuildResult) -> None:
    nvl = _one(built, cloud="vast", instance_type="1x-H100_NVL-32-65536")
    assert (nvl.gpu, nvl.gpu_memory_gib, nvl.spot, nvl.region) == (
        "H100-NVL",
        93.6,
        None,
        "Bulgaria, BG, EU",
    )
    a100 = _one(built, cloud="vast", instance_type="2x-A100_SXM4-32-65536")
    assert (a100.gpu, a100.gpu_memory_gib) == ("A100-40GB-SXM", 40.0)  # 81920 MiB for 2 GPUs
    assert built.reports["vast"].dropped[("gpu_not_in_gpus_csv", "V100")] == 1


def test_fluidstack_nvlink_is_sxm(built: bs.BuildResult) -> None:
    fs = _one(built, cloud="fluidstack")
    assert (fs.gpu, fs.gpus_per_node, fs.ondemand, fs.spot) == ("H100-SXM", 8, 23.92, None)


def test_output_sorted_dated_and_loadable(built: bs.BuildResult, tmp_path: Path) -> None:
    keys = [n.key() for n in built.nodes]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    path = tmp_path / "offers.csv"
    path.write_text(bs.to_csv(built.nodes), encoding="utf-8")
    offers = load_offers(path)
    # 6 aws, 3 gcp, 5 azure (2 MI300X names -> 1), lambda 2, runpod 3, nebius 1, vast 2, fs 1
    assert len(offers) == len(built.nodes) == 23
    by_cloud = {o.cloud: o.prices_as_of for o in offers}
    assert by_cloud == {
        "aws": "2026-04-02",
        "azure": "2026-05-20",
        "fluidstack": None,
        "gcp": "2026-05-20",
        "lambda": "2026-05-07",
        "nebius": None,
        "runpod": None,
        "vast": "2026-04-29",
    }


def test_builder_is_deterministic_and_atomic(shared: Path, tmp_path: Path) -> None:
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert bs.main(["--shared", str(shared), "--out", str(out)]) == 0
    first, second = ((o / "offers.csv").read_bytes() for o in outs)
    assert first == second
    assert first.decode().splitlines()[0] == ",".join(FILE_COLUMNS)
    assert sorted(os.listdir(outs[0])) == ["offers.csv"]  # no temp files left behind
    assert bs.main(["--shared", str(shared), "--out", str(outs[0]), "--check"]) == 0
    (outs[0] / "offers.csv").write_text(first.decode().replace("55.04", "55.05"))
    assert bs.main(["--shared", str(shared), "--out", str(outs[0]), "--check"]) == 1


def test_summary_written_into_source_md(
    shared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "SOURCE.md").write_text(f"# x\n{bs.SUMMARY_BEGIN}\nstale\n{bs.SUMMARY_END}\ntail\n")
    assert bs.main(["--shared", str(shared), "--out", str(out)]) == 0
    text = (out / "SOURCE.md").read_text()
    printed = capsys.readouterr().out
    assert "stale" not in text and text.endswith(f"{bs.SUMMARY_END}\ntail\n")
    assert "aws: capacity_block_only x2 (p5e.48xlarge x2)" in text
    assert "aws: capacity_block_only x2 (p5e.48xlarge x2)" in printed


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"aws_2026.csv": CATALOGS["aws_2026.csv"].replace(",55.04,", ",n/a,")},
            "aws_2026.csv: line 4: Price is not a number: 'n/a'",
        ),
        (
            {"lambda.csv": CATALOGS["lambda.csv"].replace(",3.29,", ",-3.29,")},
            "lambda.csv: line 3: Price must be a finite number >= 0: '-3.29'",
        ),
        (
            {"runpod.csv": CATALOGS["runpod.csv"].replace(",SpotPrice,", ",Spot,")},
            "runpod.csv: line 1: missing column 'SpotPrice'",
        ),
        (
            {"gcp.csv": CATALOGS["gcp.csv"] + "a2-highgpu-1g,12.0\n"},
            "gcp.csv: line 11: expected 10 fields, found 2",
        ),
    ],
)
def test_malformed_catalog_raises_data_error(
    tmp_path: Path, override: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = make_shared(tmp_path / "shared", **override)
    with pytest.raises(DataError) as err:
        bs.build(shared)
    assert str(err.value) == message
    assert bs.main(["--shared", str(shared), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "offers.csv").exists()


@pytest.mark.skipif(
    not (bs.DEFAULT_SHARED / "prices").is_dir(),
    reason="../shared/data (the raw catalogs) is not next to this checkout",
)
def test_packaged_snapshot_is_what_the_builder_produces() -> None:
    packaged = (Path(bs.__file__).parents[1] / "data" / "offers.csv").read_text(encoding="utf-8")
    assert bs.to_csv(bs.build(bs.DEFAULT_SHARED, bs.DEFAULT_EXTRA_GPUS).nodes) == packaged, (
        "pricing/data/offers.csv is stale: run python -m pricing.tools.build_snapshot"
    )


def test_azure_sku_aliases_collapse_into_the_rdma_name(built: bs.BuildResult) -> None:
    # ND96is_MI300X_v5 and ND96isr_MI300X_v5: one VM size listed twice at $48.00 in eastus2
    mi = _one(built, cloud="azure", gpu="MI300X")
    assert mi.instance_type == "Standard_ND96isr_MI300X_v5"
    assert mi.aliases == ["Standard_ND96is_MI300X_v5"] and "sku_alias" in mi.flags
    assert (mi.ondemand, mi.spot) == (48.0, 8.8704)
    assert bs.to_csv([mi]).splitlines()[1].split(",")[10] == "infiniband"  # fabric
    assert (
        built.reports["azure"].dropped[
            ("sku_alias_collapsed", "Standard_ND96is_MI300X_v5 -> Standard_ND96isr_MI300X_v5")
        ]
        == 1
    )


def test_azure_aliases_with_different_prices_stay_apart(tmp_path: Path) -> None:
    dearer = "Standard_ND96is_MI300X_v5,,,96,1850,,49,8.8704,eastus2,V2\n"
    text = CATALOGS["azure.csv"].replace(
        "Standard_ND96is_MI300X_v5,,,96,1850,,48,8.8704,eastus2,V2\n", dearer
    )
    result = bs.build(make_shared(tmp_path / "shared", **{"azure.csv": text}))
    assert len(_rows(result, cloud="azure", gpu="MI300X")) == 2


def test_lambda_every_region_copy_becomes_one_unverified_offer(built: bs.BuildResult) -> None:
    h100 = _one(built, cloud="lambda", instance_type="gpu_8x_h100_sxm5")
    assert (h100.region, h100.ondemand) == ("any", 31.92)
    assert "region_unverified" in h100.flags
    assert built.reports["lambda"].dropped[("region_copies_collapsed", "gpu_8x_h100_sxm5")] == 1


def test_marketplace_rows_are_single_machines(built: bs.BuildResult) -> None:
    assert {n.multi_node for n in _rows(built, cloud="vast")} == {False}
    assert {n.multi_node for n in _rows(built, cloud="runpod")} == {False}
    assert {n.multi_node for n in _rows(built, cloud="aws")} == {True}
    line = bs.to_csv([_one(built, cloud="vast", instance_type="1x-H100_NVL-32-65536")])
    assert line.splitlines()[1].endswith(",marketplace,false,")


@pytest.mark.parametrize(
    ("gpus_csv", "message"),
    [
        (GPUS_CSV.replace("H200-SXM,NVIDIA,Hopper,141,", "H200-SXM,NVIDIA,Hopper,lots,"),
         "gpus.csv: line 5: a value of 'H200-SXM' is missing or not a number"),
        (GPUS_CSV.replace(",hbm_bandwidth_TBps,", ",hbm,"),
         "gpus.csv: line 1: missing column 'hbm_bandwidth_TBps'"),
        (GPUS_CSV + "X100,NVIDIA,Next,96,,9,1,,,,NVLink,900,110\n",
         "gpus.csv: line 14: GPU 'X100' has no entry in pricing.interconnect.INTERCONNECT; "
         "add one"),
    ],
)  # fmt: skip
def test_the_shared_gpu_table_is_read_with_the_runtime_parser(
    tmp_path: Path, gpus_csv: str, message: str
) -> None:
    shared = make_shared(tmp_path / "shared")
    (shared / "gpus.csv").write_text(gpus_csv, encoding="utf-8")
    with pytest.raises(DataError) as err:
        bs.build(shared)
    assert str(err.value) == message
    assert bs.main(["--shared", str(shared), "--out", str(tmp_path / "out")]) == 2


def test_every_gpu_prov_knows_has_an_interconnect() -> None:
    from pricing.interconnect import INTERCONNECT
    from provisioner.core.hardware import gpu_specs

    assert sorted(set(gpu_specs()) - set(INTERCONNECT)) == []


def test_one_gpu_spec_class_in_the_project() -> None:
    root = Path(__file__).parents[2]
    found = [
        str(p.relative_to(root))
        for pkg in ("provisioner", "pricing", "stacks", "benchmarks", "tools")
        for p in (root / pkg).rglob("*.py")
        if "class GpuSpec" in p.read_text(encoding="utf-8")
    ]
    assert found == ["provisioner/core/hardware.py"]
