"""One AWS region's GPU offers: instance types, their zones, spot and on-demand prices.

Called by pricing.aws_refresh from its region workers with a boto3 EC2 client (botocore is
imported only inside the functions that need it). Rows are normalised like the snapshot's
(pricing.nodes: the GPU memory rule and price flags; pricing.gpu_names; pricing.interconnect),
dated with the fetch date and flagged ``live``. A failing call is the region's error.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pricing.aws_price_list import OnDemandPrices, OnDemandSource
from pricing.gpu_names import AWS_FAMILY_GPU
from pricing.interconnect import fabric_for
from pricing.nodes import Node, gpu_memory_gib, price_flags
from pricing.offers import LIVE_FLAG, instance_family
from provisioner.core.hardware import GpuSpec
from provisioner.core.offer import CAPACITY_BLOCK_ONLY, Offer
from provisioner.errors import CredentialsError

CLOUD = "aws"
#: ProductDescription values of Linux spot prices (EC2-Classic accounts saw the VPC variant).
SPOT_PRODUCTS = ("Linux/UNIX", "Linux/UNIX (Amazon VPC)")


@dataclass
class RegionResult:
    region: str
    offers: list[Offer] = field(default_factory=list)
    fetched_at: str | None = None  # ISO 8601 UTC, set on success
    seconds: float = 0.0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    families_found: set[str] = field(default_factory=set)  # families with GPU types here


class CredentialsProblem(CredentialsError):
    """The credential chain failed while a worker ran (expired SSO token, ...)."""


def fetch_region(
    region: str,
    families: Sequence[str],
    ec2: Any,
    ondemand: OnDemandSource,
    now: datetime,
    gpus: dict[str, GpuSpec],
) -> RegionResult:
    """Fetch and normalise one region; a failing call is the region's error, not an exception."""
    from botocore.exceptions import BotoCoreError, ClientError

    result = RegionResult(region)
    start = time.perf_counter()
    step = "DescribeInstanceTypes"
    try:
        types = _instance_types(ec2, families)
        names = sorted(types)
        result.families_found = {instance_family(t) for t in names}
        zones: dict[str, set[str]] = {t: set() for t in names}
        spot: dict[tuple[str, str], float] = {}
        od = OnDemandPrices()
        if names:
            step = "DescribeInstanceTypeOfferings"
            for t, az in _offerings(ec2, names):
                zones[t].add(az)
            step = "DescribeSpotPriceHistory"
            spot = _spot_prices(ec2, names, now, result.warnings)
            step = f"on-demand prices ({ondemand.name})"
            od = ondemand(region, names)
            result.warnings.extend(od.warnings)
        result.offers = _offers(region, types, zones, spot, od, now, gpus, result)
        result.fetched_at = iso(now)
    except credential_errors() as e:
        raise CredentialsProblem(f"{type(e).__name__}: {e}") from e
    except ClientError as e:
        err = e.response.get("Error", {})
        result.error = f"{step}: {err.get('Code', '?')}: {err.get('Message', e)}"
    except (BotoCoreError, OSError) as e:
        result.error = f"{step}: {type(e).__name__}: {e}"
    except (KeyError, TypeError, ValueError) as e:  # a response without the documented shape
        result.error = f"{step}: unexpected response ({type(e).__name__}: {e})"
    result.seconds = time.perf_counter() - start
    return result


def credential_errors() -> tuple[type[Exception], ...]:
    from botocore import exceptions as bx

    return (
        bx.NoCredentialsError,
        bx.PartialCredentialsError,
        bx.CredentialRetrievalError,
        bx.TokenRetrievalError,
        bx.SSOError,
        bx.ProfileNotFound,
    )


def _instance_types(ec2: Any, families: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Instance type -> its DescribeInstanceTypes record, for the GPU types of `families`."""
    out: dict[str, dict[str, Any]] = {}
    paginator = ec2.get_paginator("describe_instance_types")
    for page in paginator.paginate(
        Filters=[{"Name": "instance-type", "Values": [f"{f}.*" for f in families]}],
        PaginationConfig={"PageSize": 100},
    ):
        for it in page.get("InstanceTypes", []):
            name = it.get("InstanceType", "")
            if instance_family(name) in families and it.get("GpuInfo", {}).get("Gpus"):
                out[name] = it
    return out


def _offerings(ec2: Any, names: Sequence[str]) -> Iterator[tuple[str, str]]:
    paginator = ec2.get_paginator("describe_instance_type_offerings")
    for page in paginator.paginate(
        LocationType="availability-zone-id",
        Filters=[{"Name": "instance-type", "Values": list(names)}],
        PaginationConfig={"PageSize": 1000},
    ):
        for o in page.get("InstanceTypeOfferings", []):
            if o.get("InstanceType") in names and o.get("Location"):
                yield o["InstanceType"], o["Location"]


def _spot_prices(
    ec2: Any, names: Sequence[str], now: datetime, warnings: list[str]
) -> dict[tuple[str, str], float]:
    """(AZ id, instance type) -> the latest Linux spot price at `now`."""
    latest: dict[tuple[str, str], tuple[datetime, float]] = {}
    az_ids: dict[str, str] | None = None
    paginator = ec2.get_paginator("describe_spot_price_history")
    for page in paginator.paginate(
        InstanceTypes=list(names),
        ProductDescriptions=[SPOT_PRODUCTS[0]],
        StartTime=now,
        PaginationConfig={"PageSize": 1000},
    ):
        for rec in page.get("SpotPriceHistory", []):
            itype = rec.get("InstanceType")
            if itype not in names or rec.get("ProductDescription") not in SPOT_PRODUCTS:
                continue
            az = rec.get("AvailabilityZoneId")
            if not az:  # older API responses carry only the account-specific AZ name
                if az_ids is None:
                    zones = ec2.describe_availability_zones()["AvailabilityZones"]
                    az_ids = {z["ZoneName"]: z["ZoneId"] for z in zones}
                az = az_ids.get(rec.get("AvailabilityZone", ""))
            try:
                price = float(rec["SpotPrice"])
                stamp = rec["Timestamp"]
                if not (az and 0 <= price < float("inf") and isinstance(stamp, datetime)):
                    raise ValueError(rec.get("SpotPrice"))
            except (KeyError, ValueError):
                warnings.append(f"skipped a malformed spot price record for {itype}: {rec!r}")
                continue
            key = (az, itype)
            if key not in latest or stamp > latest[key][0]:
                latest[key] = (stamp, price)
    return {k: v[1] for k, v in latest.items()}


def _offers(
    region: str,
    types: dict[str, dict[str, Any]],
    zones: dict[str, set[str]],
    spot: dict[tuple[str, str], float],
    od: OnDemandPrices,
    now: datetime,
    gpus: dict[str, GpuSpec],
    result: RegionResult,
) -> list[Offer]:
    as_of = now.date().isoformat()
    offers: list[Offer] = []
    for itype, info in sorted(types.items()):
        gpu_list = info["GpuInfo"]["Gpus"]
        family = instance_family(itype)
        # The snapshot's rule (pricing.tools.normalise.norm_aws): the family table, else the
        # catalog's GPU name.
        if family in CAPACITY_BLOCK_ONLY.get(CLOUD, ()):  # never spot or on-demand
            result.dropped[f"capacity_block_only:{itype}"] += 1
            continue
        spec = gpus.get(AWS_FAMILY_GPU.get(family, gpu_list[0].get("Name", "")))
        if spec is None:
            result.dropped[f"gpu_not_in_gpus_csv:{itype}"] += 1
            continue
        count = int(sum(g.get("Count", 0) for g in gpu_list))
        mib = gpu_list[0].get("MemoryInfo", {}).get("SizeInMiB")
        fabric = fabric_for(CLOUD, itype)
        if fabric == "ethernet" and info.get("NetworkInfo", {}).get("EfaSupported"):
            fabric = "efa"  # a family the FABRIC table does not list (e.g. p6-b200)
        azs = zones[itype] | {az for az, t in spot if t == itype}
        for az in sorted(azs):
            flags: set[str] = {"duplicate_conflict"} if itype in od.conflicts else set()
            node = Node(
                cloud=CLOUD,
                region=region,
                zone=az,
                instance_type=itype,
                gpu=spec.name,
                gpus_per_node=count,
                gpu_memory_gib=gpu_memory_gib(spec, float(mib) if mib else None, flags),
                vcpus=float(info["VCpuInfo"]["DefaultVCpus"]),
                memory_gib=float(info["MemoryInfo"]["SizeInMiB"]) / 1024,
                ondemand=od.usd_per_hour.get(itype),
                spot=spot.get((az, itype)),
                flags=flags,
            )
            price_flags(CLOUD, node)  # a live row is dated by its fetch: no date flags
            node.flags.add(LIVE_FLAG)
            if node.ondemand is None and node.spot is None:
                result.dropped[f"no_price:{itype}"] += 1
                continue
            offers.append(node.to_offer(as_of, fabric))
    return offers


def iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
