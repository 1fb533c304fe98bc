"""`prov prices refresh --cloud aws` against a moto server on 127.0.0.1, and the cache it writes
being used by `prov quote` and `prov prices show`.

* EC2 (regions, instance types with GpuInfo, offerings per AZ id, AZ names) is moto's, over
  real HTTP. moto's spot price history is a placeholder (every price 0.00001, year 2006), so
  the moto server is seeded: its DescribeSpotPriceHistory responder is replaced by one that
  serves the records below (pages of 2, throttling and failures on demand). botocore's own
  retry and pagination run against it unchanged.
* moto has no Pricing API: get_products answers come from botocore's Stubber with documents
  shaped like the real PriceList entries (JSON strings with product.attributes and
  terms.OnDemand/Reserved), or from a saved get-products output (--pricing-file).

The prices are test data in the range of real ones; every expected number below is read off
these tables by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from pricing.aws_price_list import (
    MalformedPriceDocument,
    OnDemandPrices,
    PricingApi,
    chunk_values,
    parse_price_document,
)
from pricing.aws_refresh import parse_families, parse_regions, refresh_aws
from pricing.offers import cache_meta_path, current_offers, read_live_cache
from provisioner.cli.main import app
from provisioner.core.offer import Offer
from provisioner.errors import OperationalError, UsageError

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
FAMILIES = "p5,p5e,p5en"
TYPES = "p5.48xlarge,p5.4xlarge,p5e.48xlarge,p5en.48xlarge"  # sorted, as the ANY_OF filter

# ---- seed data ------------------------------------------------------------------------------

#: Spot price history per region, as DescribeSpotPriceHistory returns it. us-east-1's p5en
#: record in us-east-1a carries only the AZ name (moto maps us-east-1a to use1-az6).
SPOT: dict[str, list[dict[str, str]]] = {
    "us-east-1": [
        {"InstanceType": "p5.48xlarge", "AvailabilityZoneId": "use1-az1",
         "AvailabilityZone": "us-east-1b", "SpotPrice": "22.510000",
         "Timestamp": "2026-11-20T09:00:00.000Z"},
        {"InstanceType": "p5.48xlarge", "AvailabilityZoneId": "use1-az2",
         "AvailabilityZone": "us-east-1c", "SpotPrice": "23.900000",
         "Timestamp": "2026-11-20T07:00:00.000Z"},
        {"InstanceType": "p5.48xlarge", "AvailabilityZoneId": "use1-az2",
         "AvailabilityZone": "us-east-1c", "SpotPrice": "21.300000",
         "Timestamp": "2026-11-20T11:00:00.000Z"},
        {"InstanceType": "p5.48xlarge", "AvailabilityZoneId": "use1-az4",
         "AvailabilityZone": "us-east-1d", "SpotPrice": "24.770000",
         "Timestamp": "2026-11-19T23:00:00.000Z"},
        {"InstanceType": "p5en.48xlarge", "AvailabilityZoneId": "use1-az2",
         "AvailabilityZone": "us-east-1c", "SpotPrice": "19.950000",
         "Timestamp": "2026-11-20T10:00:00.000Z"},
        {"InstanceType": "p5en.48xlarge", "AvailabilityZone": "us-east-1a",
         "SpotPrice": "20.410000", "Timestamp": "2026-11-20T08:00:00.000Z"},
    ],
    "us-west-2": [
        {"InstanceType": "p5.48xlarge", "AvailabilityZoneId": "usw2-az1",
         "AvailabilityZone": "us-west-2b", "SpotPrice": "25.100000",
         "Timestamp": "2026-11-20T06:00:00.000Z"},
        {"InstanceType": "p5e.48xlarge", "AvailabilityZoneId": "usw2-az3",
         "AvailabilityZone": "us-west-2c", "SpotPrice": "15.770000",
         "Timestamp": "2026-11-20T05:00:00.000Z"},
        {"InstanceType": "p5en.48xlarge", "AvailabilityZoneId": "usw2-az2",
         "AvailabilityZone": "us-west-2a", "SpotPrice": "18.900000",
         "Timestamp": "2026-11-20T04:00:00.000Z"},
        {"InstanceType": "p5en.48xlarge", "AvailabilityZoneId": "usw2-az3",
         "AvailabilityZone": "us-west-2c", "SpotPrice": "19.120000",
         "Timestamp": "2026-11-20T04:00:00.000Z"},
        {"InstanceType": "p5en.48xlarge", "AvailabilityZoneId": "usw2-az4",
         "AvailabilityZone": "us-west-2d", "SpotPrice": "19.600000",
         "Timestamp": "2026-11-20T04:00:00.000Z"},
    ],
}  # fmt: skip

#: On-demand $/h per region (p5e has none: capacity blocks only; no p5.4xlarge in us-west-2).
ONDEMAND: dict[str, dict[str, float]] = {
    "us-east-1": {"p5.48xlarge": 55.04, "p5.4xlarge": 6.88, "p5en.48xlarge": 63.296},
    "us-west-2": {"p5.48xlarge": 55.04, "p5en.48xlarge": 63.296},
}
_LOCATION = {"us-east-1": ("US East (N. Virginia)", ""), "us-west-2": ("US West (Oregon)", "USW2-")}


def price_doc(region: str, itype: str, usd: float, sku: str, reserved: float | None = None) -> str:
    """One get_products PriceList entry, shaped like the real ones (a JSON string)."""
    location, prefix = _LOCATION[region]
    gpus = "1" if itype.endswith(".4xlarge") else "8"
    od_code, rate = "JRTCKXETXF", "6YS6EN2CT7"
    terms: dict[str, Any] = {
        "OnDemand": {
            f"{sku}.{od_code}": {
                "priceDimensions": {
                    f"{sku}.{od_code}.{rate}": {
                        "unit": "Hrs",
                        "endRange": "Inf",
                        "description": f"${usd} per On Demand Linux {itype} Instance Hour",
                        "appliesTo": [],
                        "rateCode": f"{sku}.{od_code}.{rate}",
                        "beginRange": "0",
                        "pricePerUnit": {"USD": f"{usd:.10f}"},
                    }
                },
                "sku": sku,
                "effectiveDate": "2026-11-01T00:00:00Z",
                "offerTermCode": od_code,
                "termAttributes": {},
            }
        }
    }
    if reserved is not None:  # a 1-year no-upfront reservation: must not be read as on-demand
        terms["Reserved"] = {
            f"{sku}.4NA7Y494T4": {
                "priceDimensions": {
                    f"{sku}.4NA7Y494T4.6YS6EN2CT7": {
                        "unit": "Hrs",
                        "description": f"Linux/UNIX (Amazon VPC), {itype} reserved instance",
                        "appliesTo": [],
                        "rateCode": f"{sku}.4NA7Y494T4.6YS6EN2CT7",
                        "beginRange": "0",
                        "endRange": "Inf",
                        "pricePerUnit": {"USD": f"{reserved:.10f}"},
                    }
                },
                "sku": sku,
                "effectiveDate": "2026-11-01T00:00:00Z",
                "offerTermCode": "4NA7Y494T4",
                "termAttributes": {
                    "LeaseContractLength": "1yr",
                    "OfferingClass": "standard",
                    "PurchaseOption": "No Upfront",
                },
            }
        }
    return json.dumps(
        {
            "product": {
                "productFamily": "Compute Instance",
                "attributes": {
                    "enhancedNetworkingSupported": "Yes",
                    "memory": "2048 GiB" if gpus == "8" else "256 GiB",
                    "vcpu": "192" if gpus == "8" else "16",
                    "capacitystatus": "Used",
                    "locationType": "AWS Region",
                    "instanceFamily": "GPU instance",
                    "operatingSystem": "Linux",
                    "regionCode": region,
                    "physicalProcessor": "AMD EPYC 7R13 Processor",
                    "networkPerformance": "3200 Gigabit",
                    "servicename": "Amazon Elastic Compute Cloud",
                    "gpuMemory": "NA",
                    "instanceType": itype,
                    "tenancy": "Shared",
                    "usagetype": f"{prefix}BoxUsage:{itype}",
                    "servicecode": "AmazonEC2",
                    "licenseModel": "No License required",
                    "currentGeneration": "Yes",
                    "preInstalledSw": "NA",
                    "location": location,
                    "processorArchitecture": "64-bit",
                    "marketoption": "OnDemand",
                    "operation": "RunInstances",
                    "availabilityzone": "NA",
                    "gpu": gpus,
                },
                "sku": sku,
            },
            "serviceCode": "AmazonEC2",
            "terms": terms,
            "version": "20261115012345",
            "publicationDate": "2026-11-15T01:23:45Z",
        }
    )


def price_docs(region: str, ondemand: dict[str, float]) -> list[str]:
    return [
        price_doc(region, t, usd, f"{region[:2].upper()}{i:04d}SKU", reserved=usd * 0.6)
        for i, (t, usd) in enumerate(sorted(ondemand.items()))
    ]


MALFORMED = json.dumps({"product": {"sku": "BROKEN01", "attributes": {"instanceType": "p5"}}})


def expected_filters(region: str) -> list[dict[str, str]]:
    """The get_products filters of a plain Linux on-demand hour, written out by hand."""
    return [
        {"Type": "TERM_MATCH", "Field": "operatingSystem", "Value": "Linux"},
        {"Type": "TERM_MATCH", "Field": "tenancy", "Value": "Shared"},
        {"Type": "TERM_MATCH", "Field": "preInstalledSw", "Value": "NA"},
        {"Type": "TERM_MATCH", "Field": "capacitystatus", "Value": "Used"},
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
        {"Type": "ANY_OF", "Field": "instanceType", "Value": TYPES},
    ]


# ---- the moto server, seeded ----------------------------------------------------------------


class SpotSeed:
    """The seeded DescribeSpotPriceHistory of the moto server (pages of `page_size`)."""

    def __init__(self, records: dict[str, list[dict[str, str]]], page_size: int = 2) -> None:
        self.records = records
        self.page_size = page_size
        self.throttle: Counter[str] = Counter()  # region -> throttling answers still to give
        self.fail: dict[str, tuple[str, str]] = {}  # region -> (code, message)
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def respond(self, handler: Any) -> Any:
        from moto.core.responses import ActionResult
        from moto.ec2.exceptions import EC2ClientError

        region = handler.region
        with self.lock:
            self.calls[region] += 1
            if self.throttle[region] > 0:
                self.throttle[region] -= 1
                raise EC2ClientError("RequestLimitExceeded", "Request limit exceeded.")
        if region in self.fail:
            raise EC2ClientError(*self.fail[region])
        types = set(handler._get_param("InstanceTypes", []) or [])
        products = handler._get_param("ProductDescriptions", []) or []
        assert products == ["Linux/UNIX"], products
        rows = [
            {**r, "ProductDescription": "Linux/UNIX"}
            for r in self.records.get(region, [])
            if not types or r["InstanceType"] in types
        ]
        start = int(handler._get_param("NextToken") or 0)
        size = min(self.page_size, handler._get_int_param("MaxResults") or 1000)
        out: dict[str, Any] = {"SpotPriceHistory": rows[start : start + size]}
        if start + size < len(rows):
            out["NextToken"] = str(start + size)
        return ActionResult(out)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def cache(moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake credentials, the moto endpoint, nothing from ~/.aws, a private cache dir."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    directory = tmp_path / "cache"
    monkeypatch.setenv("PROV_CACHE_DIR", str(directory))
    return directory


@pytest.fixture
def spot(monkeypatch: pytest.MonkeyPatch) -> SpotSeed:
    from moto.ec2.responses.spot_instances import SpotInstances

    seed = SpotSeed(SPOT)

    def describe_spot_price_history(handler: Any) -> Any:
        return seed.respond(handler)

    monkeypatch.setattr(SpotInstances, "describe_spot_price_history", describe_spot_price_history)
    return seed


class StubbedPricing:
    """get_products through botocore's Stubber: one stubbed client per region (the regions
    run concurrently and a Stubber answers in queue order)."""

    name = "Pricing API GetProducts"

    def __init__(self, pages: dict[str, list[list[str]]]) -> None:
        import boto3
        from botocore.stub import Stubber

        self.apis: dict[str, PricingApi] = {}
        self.stubbers: list[Stubber] = []
        for region, region_pages in pages.items():
            client = boto3.client("pricing", region_name="us-east-1")
            stub = Stubber(client)
            for i, docs in enumerate(region_pages):
                params: dict[str, Any] = {
                    "ServiceCode": "AmazonEC2",
                    "Filters": expected_filters(region),
                    "FormatVersion": "aws_v1",
                    "MaxResults": 100,
                }
                response: dict[str, Any] = {"FormatVersion": "aws_v1", "PriceList": docs}
                if i:
                    params["NextToken"] = f"{region}-page-{i}"
                if i + 1 < len(region_pages):
                    response["NextToken"] = f"{region}-page-{i + 1}"
                stub.add_response("get_products", response, params)
            stub.activate()
            self.stubbers.append(stub)
            self.apis[region] = PricingApi(client)

    def __call__(self, region: str, instance_types: Sequence[str]) -> OnDemandPrices:
        return self.apis[region](region, instance_types)

    def assert_done(self) -> None:
        for stub in self.stubbers:
            stub.assert_no_pending_responses()


def pricing_pages(ondemand: dict[str, dict[str, float]] = ONDEMAND) -> StubbedPricing:
    """us-east-1 in two pages (the first with a malformed document); us-west-2 in one."""
    east = price_docs("us-east-1", ondemand["us-east-1"])
    return StubbedPricing(
        {
            "us-east-1": [[east[0], MALFORMED], east[1:]],
            "us-west-2": [price_docs("us-west-2", ondemand["us-west-2"])],
        }
    )


def refresh(pricing: Any, now: datetime = NOW, regions: str = "us-east-1,us-west-2") -> Any:
    return refresh_aws(regions, FAMILIES, ondemand=pricing, progress=False, now=now)


def by_key(offers: Sequence[Offer]) -> dict[tuple[str, str, str], Offer]:
    return {(o.region, o.zone, o.instance_type): o for o in offers}


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return _runner().invoke(app, list(args), env=env)


# ---- a full refresh -------------------------------------------------------------------------


def test_full_refresh_of_two_regions(cache: Path, spot: SpotSeed) -> None:
    pricing = pricing_pages()
    report = refresh(pricing)
    pricing.assert_done()  # both get_products pages of us-east-1 were asked for, with the filters
    assert [r.region for r in report.succeeded] == ["us-east-1", "us-west-2"] and not report.failed
    # us-east-1: p5.48xlarge and p5.4xlarge in its 6 offered AZs, p5en in use1-az2/az6 = 14;
    # us-west-2: p5.48xlarge in 4 AZs, p5en in 3 AZs = 7 (p5.4xlarge has no price there:
    # dropped in its 4 AZs; p5e is sold as capacity blocks only: never spot or on-demand).
    assert [len(r.offers) for r in report.results] == [14, 7]
    assert report.results[1].dropped == Counter(
        {"no_price:p5.4xlarge": 4, "capacity_block_only:p5e.48xlarge": 1}
    )
    # 6 + 5 spot records in pages of 2: 3 + 3 calls
    assert spot.calls == Counter({"us-east-1": 3, "us-west-2": 3})
    assert report.warnings == [
        "us-east-1: skipped a malformed price document (sku BROKEN01) from Pricing API "
        "GetProducts: no product.attributes or terms.OnDemand"
    ]

    live = read_live_cache("aws", cache)
    assert live is not None and report.offers_path == live.offers_path
    got = by_key(live.offers)
    assert len(got) == 21 == report.total_offers
    o = got[("us-east-1", "use1-az2", "p5.48xlarge")]
    # the latest of the two use1-az2 records (11:00 21.30, not 07:00 23.90); on-demand, not the
    # reserved 33.024 of the same document
    assert (o.ondemand_usd_per_hour, o.spot_usd_per_hour) == (55.04, 21.3)
    assert (o.gpu, o.gpus_per_node, o.gpu_memory_gib, o.vcpus, o.memory_gib) == (
        "H100-SXM", 8, 80.0, 192.0, 2048.0,
    )  # fmt: skip
    assert (o.interconnect, o.fabric, o.prices_as_of, o.flags) == (
        "nvlink", "efa", "2026-11-20", ("live",),
    )  # fmt: skip
    assert got[("us-east-1", "use1-az3", "p5.48xlarge")].spot_usd_per_hour is None
    # the AZ-name-only record: us-east-1a is use1-az6 in this account
    assert got[("us-east-1", "use1-az6", "p5en.48xlarge")].spot_usd_per_hour == 20.41
    assert got[("us-east-1", "use1-az6", "p5en.48xlarge")].gpu == "H200-SXM"
    small = got[("us-east-1", "use1-az5", "p5.4xlarge")]
    assert (small.gpus_per_node, small.ondemand_usd_per_hour, small.fabric) == (1, 6.88, "efa")
    assert ("us-west-2", "usw2-az3", "p5e.48xlarge") not in got  # its 15.77 spot is no market

    meta = json.loads(cache_meta_path("aws", cache).read_text())
    assert meta["regions"]["us-west-2"]["fetched_at"] == "2026-11-20T12:00:00Z"
    assert meta["regions"]["us-east-1"]["families"] == dict.fromkeys(
        ["p5", "p5e", "p5en"], "2026-11-20T12:00:00Z"
    )
    assert meta["regions"]["us-east-1"]["offers"] == 14
    assert meta["regions"]["us-west-2"]["offers"] == 7
    # nothing else in the cache dir: no temp files, one dated CSV
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        ["offers-aws.json", live.offers_path.name]
    )
    assert live.offers_path.name.startswith("offers-aws-20261120T120000Z-")


def test_throttled_spot_history_is_retried_by_botocore(cache: Path, spot: SpotSeed) -> None:
    spot.throttle["us-west-2"] = 1  # RequestLimitExceeded once, then the pages
    report = refresh(pricing_pages())
    assert not report.failed
    assert spot.calls["us-west-2"] == 1 + 3
    assert len(report.results[1].offers) == 7


def test_a_family_without_gpus_is_warned_about(cache: Path, spot: SpotSeed) -> None:
    pricing = StubbedPricing({})
    report = refresh_aws("us-west-2", "m5", ondemand=pricing, progress=False, now=NOW)
    assert not report.failed and report.total_offers == 0
    assert report.warnings == [
        "--families m5: no GPU instance types in the refreshed regions (not a GPU family?)"
    ]


def test_a_failing_region_keeps_its_previous_data(cache: Path, spot: SpotSeed) -> None:
    first = refresh(pricing_pages())
    before = by_key(read_live_cache("aws", cache).offers)  # type: ignore[union-attr]
    spot.fail["us-west-2"] = ("UnauthorizedOperation", "You are not authorized.")
    cheaper = {**ONDEMAND, "us-east-1": {**ONDEMAND["us-east-1"], "p5.48xlarge": 52.0}}
    later = NOW + timedelta(days=2)
    second = refresh(
        StubbedPricing({"us-east-1": [price_docs("us-east-1", cheaper["us-east-1"])]}), later
    )
    assert [r.region for r in second.failed] == ["us-west-2"]
    assert second.failed[0].error == (
        "DescribeSpotPriceHistory: UnauthorizedOperation: You are not authorized."
    )
    assert second.kept == {"us-west-2": 7}
    live = read_live_cache("aws", cache)
    assert live is not None
    after = by_key(live.offers)
    assert len(after) == 21
    assert after[("us-east-1", "use1-az1", "p5.48xlarge")].ondemand_usd_per_hour == 52.0
    assert after[("us-east-1", "use1-az1", "p5.48xlarge")].prices_as_of == "2026-11-22"
    west = {k: v for k, v in after.items() if k[0] == "us-west-2"}
    assert west == {k: v for k, v in before.items() if k[0] == "us-west-2"}
    assert {o.prices_as_of for o in west.values()} == {"2026-11-20"}
    assert live.fetched_at("us-west-2") == "2026-11-20T12:00:00Z"
    assert live.fetched_at("us-east-1") == "2026-11-22T12:00:00Z"
    assert live.meta["last_refresh"]["regions"]["us-west-2"]["error"].startswith(  # type: ignore[index]
        "DescribeSpotPriceHistory: UnauthorizedOperation"
    )
    # the previous CSV stays (a reader may have loaded the old meta), older ones are pruned
    assert first.offers_path is not None and first.offers_path.exists()


def test_every_region_failing_writes_nothing(cache: Path, spot: SpotSeed) -> None:
    refresh(pricing_pages())
    snapshot = {p.name: p.read_bytes() for p in cache.iterdir()}
    spot.fail.update({r: ("AuthFailure", "AWS was not able to validate.") for r in SPOT})
    report = refresh(StubbedPricing({}), NOW + timedelta(days=1))
    assert report.offers_path is None and len(report.failed) == 2
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == snapshot


def test_an_interrupted_commit_leaves_the_previous_cache(
    cache: Path, spot: SpotSeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pricing.aws_refresh as aws_refresh

    refresh(pricing_pages())
    snapshot = {p.name: p.read_bytes() for p in cache.iterdir()}
    real = aws_refresh.write_atomic

    def fail_on_meta(path: Path, text: str) -> None:
        if path.suffix == ".json":
            raise OSError(28, "No space left on device")
        real(path, text)

    monkeypatch.setattr(aws_refresh, "write_atomic", fail_on_meta)
    with pytest.raises(OperationalError, match=r"No space left on device.*previous cache"):
        refresh(pricing_pages(), NOW + timedelta(days=1))
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == snapshot


def test_old_cache_files_are_pruned_but_not_a_concurrent_refresh_s(
    cache: Path, spot: SpotSeed
) -> None:
    first = refresh(pricing_pages()).offers_path
    second = refresh(pricing_pages(), NOW + timedelta(days=1)).offers_path
    assert first is not None and second is not None
    hour_ago = datetime.now(UTC).timestamp() - 3600
    os.utime(first, (hour_ago, hour_ago))
    other = cache / "offers-aws-20261121T000000Z-abcdef.csv"  # another refresh, not committed
    other.write_text("in progress")
    third = refresh(pricing_pages(), NOW + timedelta(days=2)).offers_path
    assert third is not None
    assert sorted(p.name for p in cache.glob("*.csv")) == sorted(
        [second.name, third.name, other.name]
    )


def test_a_damaged_cache_is_reported_and_replaced_by_the_next_refresh(
    cache: Path, spot: SpotSeed
) -> None:
    cache.mkdir(parents=True)
    cache_meta_path("aws", cache).write_text("{not json", encoding="utf-8")
    result = run("quote", "-m", "meta-llama/Llama-3.1-8B", "--ctx", "8k", "--json")
    assert result.exit_code == 2
    assert "offers-aws.json: not valid JSON; delete the file or run `prov prices refresh`" in (
        result.stderr
    )
    report = refresh(pricing_pages())
    assert any("previous cache is unreadable" in w for w in report.warnings)
    assert read_live_cache("aws", cache) is not None


# ---- the CLI: credentials, bad input, partial failure ---------------------------------------


def test_no_credentials_exits_2_saying_how_to_provide_them(cache: Path, tmp_path: Path) -> None:
    """Configuration to fix: exit 2, as every AWS command (test_credentials_exit_codes.py)."""
    env: dict[str, str | None] = {
        "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None,
        "AWS_PROFILE": None,
    }
    result = run("prices", "refresh", "--cloud", "aws", "--regions", "us-east-1", env=env)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prov: error: no AWS credentials found")
    for how in ("AWS_ACCESS_KEY_ID", "~/.aws/credentials", "AWS_PROFILE", "aws sso login"):
        assert how in lines[0]
    assert not cache.exists()


def test_unknown_profile_exits_2(cache: Path) -> None:
    result = run("prices", "refresh", "--regions", "us-east-1", env={"AWS_PROFILE": "nope"})
    assert result.exit_code == 2
    assert "nope" in result.stderr and "AWS_PROFILE" in result.stderr


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--cloud", "gcp"], "no live price source; allowed: aws, azure, runpod, vast, oci, all"),
        (["--regions", "us east 1"], "is not an AWS region name"),
        (["--regions", "all,us-east-1"], "use 'all' alone"),
        (["--families", "P5!"], "is not an instance family"),
        (["--regions", "eu-mars-1"], "eu-mars-1 not enabled for this account"),
        (["--pricing-file", "/nonexistent/prices.json", "--regions", "us-east-1"], "cannot read"),
        (["--workers", "0", "--regions", "us-east-1"], "--workers 0"),
    ],
)
def test_bad_refresh_input_exits_2_with_one_line(cache: Path, args: list[str], expect: str) -> None:
    result = run("prices", "refresh", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], lines


def test_refresh_cli_reports_a_failed_region_and_exits_1(
    cache: Path, spot: SpotSeed, tmp_path: Path
) -> None:
    prices = tmp_path / "get-products.json"
    docs = price_docs("us-east-1", ONDEMAND["us-east-1"])
    prices.write_text(json.dumps({"FormatVersion": "aws_v1", "PriceList": docs}))
    spot.fail["us-west-2"] = ("UnauthorizedOperation", "You are not authorized.")
    result = run(
        "prices", "refresh", "--regions", "us-east-1,us-west-2", "--families", FAMILIES,
        "--pricing-file", str(prices),
    )  # fmt: skip
    assert result.exit_code == 1
    assert "us-east-1          14 offers" in result.stdout
    assert "us-west-2        FAILED" in result.stdout and "kept 0 earlier offers" in result.stdout
    assert result.stderr.strip() == (
        "prov: error: 1 of 2 regions failed (us-west-2): their previous prices are kept"
    )


# ---- the cache in quote and prices show; staleness -------------------------------------------

KIMI_H200 = [
    "quote", "-m", "kimi-k2-thinking", "-q", "int4", "--ctx", "128k", "--cloud", "aws",
    "--gpu", "H200", "--region", "us-east-1,us-west-2", "--objective", "usd-per-hour",
    "--top", "0", "--json",
]  # fmt: skip


def test_quote_and_prices_show_use_the_cache(cache: Path, spot: SpotSeed) -> None:
    today = datetime.now(UTC)
    embedded_h200 = [
        o
        for o in current_offers()
        if o.cloud == "aws" and o.gpu == "H200-SXM" and o.region in ("us-east-1", "us-west-2")
    ]
    assert embedded_h200 and all(o.prices_as_of == "2026-04-02" for o in embedded_h200)
    refresh(pricing_pages(), now=today)

    shown = run("prices", "show", "--gpu", "H200", "--cloud", "aws", "--region",
                "us-east-1,us-west-2", "--json", "--top", "0")  # fmt: skip
    assert shown.exit_code == 0 and shown.stderr == ""
    rows = json.loads(shown.stdout)
    # live rows only: us-east-1 p5en x2, us-west-2 p5en x3; the snapshot's are gone
    assert sorted((r["zone"], r["instance_type"]) for r in rows) == [
        ("use1-az2", "p5en.48xlarge"), ("use1-az6", "p5en.48xlarge"),
        ("usw2-az2", "p5en.48xlarge"), ("usw2-az3", "p5en.48xlarge"),
        ("usw2-az4", "p5en.48xlarge"),
    ]  # fmt: skip
    assert {r["prices_as_of"] for r in rows} == {today.date().isoformat()}
    assert all("live" in r["flags"] for r in rows)
    # other regions keep the embedded rows (aws_2026.csv, dated by its commit)
    everywhere = json.loads(run("prices", "show", "--gpu", "H200", "--cloud", "aws", "--json",
                                "--top", "0").stdout)  # fmt: skip
    assert {r["prices_as_of"] for r in everywhere} == {today.date().isoformat(), "2026-04-02"}

    result = run(*KIMI_H200)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    doc = json.loads(result.stdout)
    best = doc["plans"][0]
    # cheapest rentable H200 node in the two regions: p5en usw2-az2 spot 18.90 (the p5e spot
    # record at 15.77 is a capacity-block type: never ranked)
    assert (best["instance_type"], best["zone"], best["market"], best["nodes"]) == (
        "p5en.48xlarge", "usw2-az2", "spot", 1,
    )  # fmt: skip
    assert best["usd_per_hour"] == 18.9
    assert best["price_age_days"] == 0
    assert best["prices_as_of"] == today.date().isoformat()
    assert doc["prices_as_of"] == today.date().isoformat()
    assert (
        "embedded price snapshot (taken into prov 2026-11-22) + live prices of aws; oldest "
        f"price shown {today.date().isoformat()} (0 days old)"
    ) in doc["notes"]


def flat(text: str) -> str:
    """Wrapped output (continuation lines indented) as one line per paragraph's words."""
    return " ".join(ln.strip() for ln in text.splitlines())


def test_stale_live_prices_warn(cache: Path, spot: SpotSeed) -> None:
    fetched = datetime.now(UTC) - timedelta(days=10)
    refresh(pricing_pages(), now=fetched)
    result = run(*KIMI_H200, "--max-price-age", "7")
    assert result.exit_code == 0
    warning = (
        "older than --max-price-age 7 days (aws 10 d); refresh: prov prices refresh --cloud aws"
    )
    assert result.stderr.startswith("prov: warning: ") and warning in flat(result.stderr)
    notes = json.loads(result.stdout)["notes"]
    assert any(warning in n for n in notes)
    assert run(*KIMI_H200, "--max-price-age", "30").stderr == ""
    table = run(
        *KIMI_H200[:-1], "--max-price-age", "7"
    )  # table output: the warning goes to stderr only
    assert warning in flat(table.stderr) and warning not in flat(table.stdout)
    shown = run("prices", "show", "--gpu", "H200", "--region", "us-west-2", "--cloud", "aws",
                "--max-price-age", "7")  # fmt: skip
    assert shown.exit_code == 0 and warning in flat(shown.stderr)
    assert f"oldest price shown {fetched.date().isoformat()} (10 days old)" in flat(shown.stdout)
    assert run(*KIMI_H200).stderr == ""  # the default --max-price-age is 90 days
    bad = run(*KIMI_H200, "--max-price-age", "-1")
    assert bad.exit_code == 2 and "--max-price-age -1" in bad.stderr


def test_the_embedded_snapshot_always_states_its_dates(cache: Path) -> None:
    args = ["-m", "meta-llama/Llama-3.1-8B", "--ctx", "8k", "--gpu", "L4,H100-PCIe", "--top", "0"]
    result = run("quote", *args, "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    [note] = [n for n in doc["notes"] if n.startswith("embedded price snapshot")]
    # L4: aws (2026-04-02), gcp (2026-05-20); H100 PCIe: lambda, runpod and fluidstack (undated)
    oldest = min(p["prices_as_of"] for p in doc["plans"] if p["prices_as_of"])
    assert oldest == doc["prices_as_of"] == "2026-04-02"
    assert note.startswith(
        "embedded price snapshot (taken into prov 2026-11-22); oldest price shown 2026-04-02 ("
    )
    # one warning (wrapped to 80 columns): undated catalogs and prices older than 90 days
    assert result.stderr.count("prov: warning:") == 1
    warning = flat(result.stderr)
    assert "undated (fluidstack, runpod: age unknown)" in warning
    assert "older than --max-price-age 90 days (aws " in warning
    shown = run("prices", "show", "--gpu", "H100", "--spot", "--top", "5")
    assert shown.exit_code == 0
    assert "note: embedded price snapshot (taken into prov 2026-11-22)" in flat(shown.stdout)


# ---- the issue's "done when": the real command line against the seeded moto server ----------


def test_done_when_refresh_then_show_and_quote_use_the_cache(
    cache: Path, spot: SpotSeed, tmp_path: Path
) -> None:
    # moto serves no Pricing API: on-demand prices come from a saved get-products output
    prices = tmp_path / "get-products.json"
    pages = [{"FormatVersion": "aws_v1", "PriceList": price_docs(r, ONDEMAND[r])} for r in ONDEMAND]
    prices.write_text(json.dumps(pages))
    env = {**os.environ}  # the cache fixture's AWS_ENDPOINT_URL, fake keys, PROV_CACHE_DIR
    refresh_cmd = [
        sys.executable, "-m", "provisioner.cli.main", "prices", "refresh", "--cloud", "aws",
        "--regions", "us-east-1,us-west-2", "--families", FAMILIES, "--pricing-file", str(prices),
    ]  # fmt: skip
    done = subprocess.run(refresh_cmd, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar when stderr is not a terminal, no warnings
    assert "us-east-1          14 offers" in done.stdout
    assert "us-west-2           7 offers" in done.stdout
    today = datetime.now(UTC).date().isoformat()

    show = subprocess.run(
        [sys.executable, "-m", "provisioner.cli.main", "prices", "show", "--gpu", "H200",
         "--cloud", "aws", "--json", "--top", "0"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    rows = json.loads(show.stdout)
    live = [r for r in rows if r["prices_as_of"] == today]
    assert len(live) == 5 and {r["region"] for r in live} == {"us-east-1", "us-west-2"}

    # prov quote reads the cache without importing boto3
    code = textwrap.dedent(
        f"""
        import sys
        from provisioner.cli.main import app
        try:
            app({KIMI_H200!r})
        except SystemExit:
            pass
        print(sorted(m for m in ("boto3", "botocore", "pricing.aws_refresh") if m in sys.modules),
              file=sys.stderr)
        """
    )
    quote = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert quote.stderr.strip() == "[]", quote.stderr
    doc = json.loads(quote.stdout)
    assert doc["plans"][0]["prices_as_of"] == today
    assert doc["plans"][0]["instance_type"] == "p5en.48xlarge"


# ---- pieces ---------------------------------------------------------------------------------


def test_parse_price_document_takes_the_on_demand_hour() -> None:
    attrs, usd = parse_price_document(price_doc("us-west-2", "p5.48xlarge", 55.04, "S1", 33.0))
    assert usd == 55.04 and attrs["regionCode"] == "us-west-2"
    assert attrs["usagetype"] == "USW2-BoxUsage:p5.48xlarge"


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ("{", "not JSON"),
        (MALFORMED, "no product.attributes or terms.OnDemand"),
        (
            price_doc("us-east-1", "p5.48xlarge", 55.04, "S1").replace("5.0400000000", "x"),
            "bad priceDimensions",
        ),
        (price_doc("us-east-1", "p5.48xlarge", 55.04, "S1").replace('"Hrs"', '"Qty"'), "no hourly"),
    ],
)
def test_malformed_price_documents_are_refused(doc: str, why: str) -> None:
    with pytest.raises(MalformedPriceDocument, match=why):
        parse_price_document(doc)


def test_instance_type_lists_are_split_under_the_filter_limit() -> None:
    names = [f"p5.{i}xlarge" for i in range(300)]
    chunks = list(chunk_values(names, 1024))
    assert [n for c in chunks for n in c] == names
    assert all(len(",".join(c)) <= 1024 for c in chunks) and len(chunks) == 4


def test_region_and_family_lists() -> None:
    assert parse_regions("all") is None and parse_regions(None) is None
    assert parse_regions("us-east-1, us-west-2,us-east-1") == ("us-east-1", "us-west-2")
    assert parse_families(None)[:3] == ("p5", "p5e", "p5en") and "p6-b200" in parse_families(None)
    assert parse_families("P5EN,g6e") == ("p5en", "g6e")
    with pytest.raises(UsageError):
        parse_regions("us-east-1;rm")
