"""`prov prices refresh --cloud aws`: live on-demand and spot prices of AWS GPU instances.

The only module of prov that imports boto3 (when a refresh runs; never on the `prov quote`
path). Per region, concurrently:

* GPU count and memory, vCPUs, host memory, EFA: ``ec2.describe_instance_types`` (GpuInfo);
* the availability zones (AZ ids) that offer each type: ``ec2.describe_instance_type_offerings``;
* spot prices: ``ec2.describe_spot_price_history`` (Linux/UNIX, from now), the latest per AZ and
  instance type;
* on-demand prices: the Pricing API ``get_products`` (us-east-1 endpoint; Linux, Shared tenancy,
  no pre-installed software, capacitystatus Used, the region, the instance types), or a saved
  ``aws pricing get-products`` output (:class:`PriceListFile`).

Rows are normalised like the embedded snapshot (``pricing.tools.build_snapshot``: the same GPU
names,
memory rule, interconnect/fabric tables and price flags), dated with the fetch date and flagged
``live``, then merged with the previous cache: a region that fails keeps its previous rows. The
cache is a dated CSV plus a JSON meta file that names it; the meta file is replaced last (the
commit), so a reader sees the old cache or the new one, never a mix. See docs/prices.md.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from pricing.offers import (
    CACHE_FORMAT,
    LIVE_FLAG,
    LiveCache,
    cache_dir,
    cache_meta_path,
    instance_family,
    read_live_cache,
)
from pricing.tools.build_snapshot import (
    AWS_FAMILY_GPU,
    INTERCONNECT,
    GpuSpec,
    Node,
    _Ctx,
    fabric_for,
    offers_csv,
    price_flags,
    read_gpus,
)
from provisioner.core.offer import CAPACITY_BLOCK_ONLY, Offer
from provisioner.errors import DataError, OperationalError, UsageError
from provisioner.fileio import write_atomic

CLOUD = "aws"
#: GPU families refreshed by default: the families the snapshot maps, plus p6-b200 (its GpuInfo
#: name, B200, is a gpus.csv name as it stands).
DEFAULT_FAMILIES: tuple[str, ...] = tuple(dict.fromkeys((*AWS_FAMILY_GPU, "p6-b200")))
#: The Pricing API is served from us-east-1 (also eu-central-1, ap-south-1); prices are global.
PRICING_REGION = "us-east-1"
#: Product attributes of a plain Linux on-demand instance hour.
PRODUCT_FILTERS: dict[str, str] = {
    "operatingSystem": "Linux",
    "tenancy": "Shared",
    "preInstalledSw": "NA",
    "capacitystatus": "Used",
}
#: ProductDescription values of Linux spot prices (EC2-Classic accounts saw the VPC variant).
SPOT_PRODUCTS = ("Linux/UNIX", "Linux/UNIX (Amazon VPC)")
#: The Pricing API's filter values are at most 1024 characters (ANY_OF: comma-separated).
_FILTER_VALUE_MAX = 1024

NO_CREDENTIALS = (
    "no AWS credentials found. Provide them the standard boto3 way: environment variables "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (plus AWS_SESSION_TOKEN for temporary keys); "
    "the file ~/.aws/credentials (`aws configure`); a named profile with AWS_PROFILE=NAME; or "
    "IAM Identity Center: `aws configure sso`, then `aws sso login --profile NAME` and "
    "AWS_PROFILE=NAME. The refresh needs ec2:DescribeRegions, ec2:DescribeInstanceTypes, "
    "ec2:DescribeInstanceTypeOfferings, ec2:DescribeAvailabilityZones, "
    "ec2:DescribeSpotPriceHistory and pricing:GetProducts"
)

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_FAMILY = re.compile(r"^[a-z]+\d[a-z0-9-]*$")


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def parse_regions(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """'us-east-1,us-west-2' -> the regions; 'all' or None -> None (every enabled region)."""
    items = _items(text)
    if not items or items == ["all"]:
        return None
    for r in items:
        if r == "all":
            raise UsageError("--regions: use 'all' alone or a list of regions, not both")
        if not _REGION.match(r):
            raise UsageError(f"--regions {r!r} is not an AWS region name (e.g. us-east-1) or all")
    return tuple(dict.fromkeys(items))


def parse_families(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'p5,g6e' -> ('p5', 'g6e'); None -> DEFAULT_FAMILIES."""
    items = _items(text)
    if not items:
        return DEFAULT_FAMILIES
    for f in items:
        if not _FAMILY.match(f):
            raise UsageError(
                f"--families {f!r} is not an instance family (the part before the dot, e.g. "
                f"p5, p5en, g6e, p6-b200); default: {','.join(DEFAULT_FAMILIES)}"
            )
    return tuple(dict.fromkeys(items))


def _items(text: str | Sequence[str] | None) -> list[str]:
    if text is None:
        return []
    parts = [text] if isinstance(text, str) else list(text)
    return [p.strip().lower() for t in parts for p in t.split(",") if p.strip()]


# --------------------------------------------------------------------------------------------
# On-demand prices: the Pricing API, or a saved get-products output
# --------------------------------------------------------------------------------------------


@dataclass
class OnDemandPrices:
    usd_per_hour: dict[str, float] = field(default_factory=dict)  # instance type -> node $/h
    conflicts: set[str] = field(default_factory=set)  # types with disagreeing documents
    warnings: list[str] = field(default_factory=list)


class OnDemandSource(Protocol):
    """Where on-demand prices come from; called from the region workers (thread-safe)."""

    name: str

    def __call__(self, region: str, instance_types: Sequence[str]) -> OnDemandPrices: ...


class MalformedPriceDocument(DataError):
    """One Price List document that does not parse; the refresh skips it with a warning."""


def parse_price_document(doc: str | dict[str, Any]) -> tuple[dict[str, str], float]:
    """(product attributes, USD per hour) of one ``get_products`` PriceList entry.

    Raises MalformedPriceDocument naming what is missing or wrong.
    """
    try:
        data = json.loads(doc) if isinstance(doc, str) else doc
    except json.JSONDecodeError as e:
        raise MalformedPriceDocument(f"not JSON ({e.msg})") from None
    try:
        attrs = data["product"]["attributes"]
        terms = data["terms"]["OnDemand"]
    except (KeyError, TypeError):
        raise MalformedPriceDocument("no product.attributes or terms.OnDemand") from None
    if not isinstance(attrs, dict) or not attrs.get("instanceType"):
        raise MalformedPriceDocument("no product.attributes.instanceType")
    usd: set[float] = set()
    try:
        for term in terms.values():
            for dim in term["priceDimensions"].values():
                if dim.get("unit") in ("Hrs", "Hours"):
                    usd.add(float(dim["pricePerUnit"]["USD"]))
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise MalformedPriceDocument(f"bad priceDimensions ({type(e).__name__}: {e})") from None
    if len(usd) != 1:
        what = "no hourly USD price" if not usd else f"several hourly prices {sorted(usd)}"
        raise MalformedPriceDocument(what)
    price = usd.pop()
    if not 0 <= price < float("inf"):
        raise MalformedPriceDocument(f"price {price!r} is not a finite number >= 0")
    return {str(k): str(v) for k, v in attrs.items()}, price


def _collect(
    out: OnDemandPrices, docs: Iterable[Any], region: str, wanted: set[str], where: str
) -> None:
    for doc in docs:
        try:
            attrs, usd = parse_price_document(doc)
        except MalformedPriceDocument as e:
            sku = _sku(doc)
            out.warnings.append(
                f"{region}: skipped a malformed price document{sku} from {where}: {e}"
            )
            continue
        if attrs.get("regionCode", region) != region or attrs["instanceType"] not in wanted:
            continue
        if any(attrs.get(k) != v for k, v in PRODUCT_FILTERS.items()):
            continue
        itype = attrs["instanceType"]
        seen = out.usd_per_hour.get(itype)
        if seen is not None and seen != usd:
            out.conflicts.add(itype)
            usd = max(seen, usd)  # never understate a price (as the snapshot build does)
        out.usd_per_hour[itype] = usd


def _sku(doc: Any) -> str:
    try:
        data = json.loads(doc) if isinstance(doc, str) else doc
        return f" (sku {data['product']['sku']})"
    except Exception:
        return ""


class PricingApi:
    """On-demand prices from the AWS Price List Query API (``pricing:GetProducts``)."""

    name = "Pricing API GetProducts"

    def __init__(self, client: Any) -> None:
        self.client = client

    def filters(self, region: str, instance_types: Sequence[str]) -> list[dict[str, str]]:
        base = [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in PRODUCT_FILTERS.items()]
        base.append({"Type": "TERM_MATCH", "Field": "regionCode", "Value": region})
        base.append({"Type": "ANY_OF", "Field": "instanceType", "Value": ",".join(instance_types)})
        return base

    def __call__(self, region: str, instance_types: Sequence[str]) -> OnDemandPrices:
        out = OnDemandPrices()
        paginator = self.client.get_paginator("get_products")
        for chunk in chunk_values(sorted(instance_types), _FILTER_VALUE_MAX):
            for page in paginator.paginate(
                ServiceCode="AmazonEC2",
                Filters=self.filters(region, chunk),
                FormatVersion="aws_v1",
                PaginationConfig={"PageSize": 100},
            ):
                _collect(out, page.get("PriceList", []), region, set(chunk), self.name)
        return out


def chunk_values(values: Sequence[str], limit: int) -> Iterator[list[str]]:
    """Split values into comma-joined groups of at most `limit` characters."""
    chunk: list[str] = []
    size = 0
    for v in values:
        extra = len(v) + (1 if chunk else 0)
        if chunk and size + extra > limit:
            yield chunk
            chunk, size, extra = [], 0, len(v)
        chunk.append(v)
        size += extra
    if chunk:
        yield chunk


class PriceListFile:
    """On-demand prices from a saved ``aws pricing get-products --service-code AmazonEC2``
    output: a JSON object with a ``PriceList`` array (of JSON strings or objects), or an array
    of such objects (several pages). For hosts without access to the Pricing API and for
    endpoints that do not serve it (moto)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = f"{self.path.name}"
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except OSError as e:
            raise UsageError(f"--pricing-file {self.path}: cannot read ({e.strerror})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UsageError(f"--pricing-file {self.path}: not JSON ({e})") from None
        pages = data if isinstance(data, list) else [data]
        if not all(isinstance(p, dict) and isinstance(p.get("PriceList"), list) for p in pages):
            raise UsageError(
                f"--pricing-file {self.path}: expected the JSON of `aws pricing get-products` "
                '(an object with a "PriceList" array, or an array of them)'
            )
        self.documents: list[Any] = [doc for p in pages for doc in p["PriceList"]]

    def __call__(self, region: str, instance_types: Sequence[str]) -> OnDemandPrices:
        out = OnDemandPrices()
        _collect(out, self.documents, region, set(instance_types), self.name)
        return out


# --------------------------------------------------------------------------------------------
# One region
# --------------------------------------------------------------------------------------------


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


class _CredentialsProblem(Exception):
    """The credential chain failed while a worker ran (expired SSO token, ...)."""


def _gpu_specs() -> dict[str, GpuSpec]:
    import provisioner

    return read_gpus(Path(provisioner.__file__).parent / "data" / "gpus.csv")


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
        result.fetched_at = _iso(now)
    except _credential_errors() as e:
        raise _CredentialsProblem(f"{type(e).__name__}: {e}") from e
    except ClientError as e:
        err = e.response.get("Error", {})
        result.error = f"{step}: {err.get('Code', '?')}: {err.get('Message', e)}"
    except (BotoCoreError, OSError) as e:
        result.error = f"{step}: {type(e).__name__}: {e}"
    except (KeyError, TypeError, ValueError) as e:  # a response without the documented shape
        result.error = f"{step}: unexpected response ({type(e).__name__}: {e})"
    result.seconds = time.perf_counter() - start
    return result


def _credential_errors() -> tuple[type[Exception], ...]:
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
    ctx = _Ctx(CLOUD, Path("describe_instance_types"), gpus)
    as_of = now.date().isoformat()
    offers: list[Offer] = []
    for itype, info in sorted(types.items()):
        gpu_list = info["GpuInfo"]["Gpus"]
        family = instance_family(itype)
        # The snapshot's rule (build_snapshot.norm_aws): the family table, else the catalog name.
        if family in CAPACITY_BLOCK_ONLY.get(CLOUD, ()):  # never spot or on-demand
            result.dropped[f"capacity_block_only:{itype}"] += 1
            continue
        spec = ctx.known_gpu(AWS_FAMILY_GPU.get(family, gpu_list[0].get("Name", "")))
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
                gpu_memory_gib=ctx.gpu_memory(spec, float(mib) if mib else None, flags),
                vcpus=float(info["VCpuInfo"]["DefaultVCpus"]),
                memory_gib=float(info["MemoryInfo"]["SizeInMiB"]) / 1024,
                ondemand=od.usd_per_hour.get(itype),
                spot=spot.get((az, itype)),
                flags=flags,
            )
            price_flags(CLOUD, node)
            node.flags -= {"date_unknown", "date_from_commit"}  # a live row: its fetch date
            node.flags.add(LIVE_FLAG)
            if node.ondemand is None and node.spot is None:
                result.dropped[f"no_price:{itype}"] += 1
                continue
            offers.append(
                Offer(
                    node.cloud,
                    node.region,
                    node.zone,
                    node.instance_type,
                    node.gpu,
                    node.gpus_per_node,
                    node.gpu_memory_gib,
                    node.vcpus,
                    node.memory_gib,
                    INTERCONNECT[node.gpu],
                    fabric,
                    node.ondemand,
                    node.spot,
                    as_of,
                    tuple(sorted(node.flags)),
                )
            )
    return offers


# --------------------------------------------------------------------------------------------
# The refresh: regions concurrently, merge with the previous cache, commit atomically
# --------------------------------------------------------------------------------------------


@dataclass
class RefreshReport:
    families: tuple[str, ...]
    results: list[RegionResult]  # in the requested order
    offers_path: Path | None  # the committed CSV (None when nothing was written)
    meta_path: Path
    total_offers: int  # rows in the committed cache
    kept: dict[str, int]  # failed region -> previous rows kept
    warnings: list[str]
    seconds: float

    @property
    def failed(self) -> list[RegionResult]:
        return [r for r in self.results if r.error]

    @property
    def succeeded(self) -> list[RegionResult]:
        return [r for r in self.results if not r.error]


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _session() -> Any:
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        return boto3.session.Session()
    except ProfileNotFound as e:
        raise OperationalError(f"{e}; {NO_CREDENTIALS}") from None


def _config(retry_mode: str, max_attempts: int, pool: int) -> Any:
    from botocore.config import Config

    return Config(
        retries={"mode": retry_mode, "total_max_attempts": max_attempts},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=max(10, pool),
    )


@contextmanager
def _progress(total: int, enabled: bool | None) -> Iterator[Callable[[str], None]]:
    """A rich progress bar on stderr (off when stderr is not a terminal); yields advance()."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    disable = not console.is_terminal if enabled is None else not enabled
    with Progress(
        TextColumn("AWS prices"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("regions {task.description}"),
        TimeElapsedColumn(),
        console=console,
        disable=disable,
        transient=True,
    ) as bar:
        task = bar.add_task("", total=total)

        def advance(region: str) -> None:
            bar.update(task, advance=1, description=region)

        yield advance


def refresh_aws(
    regions: str | Sequence[str] | None = None,
    families: str | Sequence[str] | None = None,
    *,
    session: Any = None,
    ondemand: OnDemandSource | None = None,
    directory: Path | None = None,
    max_workers: int = 8,
    progress: bool | None = None,
    now: datetime | None = None,
    retry_mode: str = "adaptive",
    max_attempts: int = 6,
) -> RefreshReport:
    """Fetch live AWS GPU prices and commit them to the cache (see the module docstring).

    ``session`` (a boto3 Session) and ``ondemand`` are injectable; by default the standard
    credential chain and the Pricing API are used. Raises OperationalError without credentials
    or when no region could be fetched; UsageError for a region that is not enabled.
    """
    wanted = parse_regions(regions)
    fams = parse_families(families)
    if max_workers < 1:
        raise UsageError(f"--workers {max_workers}: must be at least 1")
    started = time.perf_counter()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    directory = directory or cache_dir()
    session = session or _session()
    try:
        credentials = session.get_credentials()
    except _credential_errors() as e:
        raise OperationalError(f"{type(e).__name__}: {e}; {NO_CREDENTIALS}") from None
    if credentials is None:
        raise OperationalError(NO_CREDENTIALS)
    config = _config(retry_mode, max_attempts, max_workers)
    home = session.region_name or PRICING_REGION
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        ec2_home = session.client("ec2", region_name=home, config=config)
        enabled = [r["RegionName"] for r in ec2_home.describe_regions()["Regions"]]
    except _credential_errors() as e:
        raise OperationalError(f"{type(e).__name__}: {e}; {NO_CREDENTIALS}") from None
    except ClientError as e:
        err = e.response.get("Error", {})
        raise OperationalError(
            f"DescribeRegions in {home} failed: {err.get('Code')}: {err.get('Message')}"
        ) from None
    except BotoCoreError as e:
        raise OperationalError(f"DescribeRegions in {home} failed: {e}") from None
    if wanted is None:
        todo = sorted(enabled)
    else:
        unknown = [r for r in wanted if r not in enabled]
        if unknown:
            raise UsageError(
                f"--regions: {', '.join(unknown)} not enabled for this account; enabled: "
                f"{', '.join(sorted(enabled))}"
            )
        todo = list(wanted)
    if ondemand is None:
        ondemand = PricingApi(session.client("pricing", region_name=PRICING_REGION, config=config))
    gpus = _gpu_specs()
    lock = threading.Lock()

    def run(region: str) -> RegionResult:
        with lock:  # a boto3 Session is not thread-safe; its clients are
            ec2 = session.client("ec2", region_name=region, config=config)
        return fetch_region(region, fams, ec2, ondemand, now, gpus)

    results: dict[str, RegionResult] = {}
    try:
        with (
            _progress(len(todo), progress) as advance,
            ThreadPoolExecutor(max_workers=min(max_workers, len(todo)) or 1) as pool,
        ):
            futures = {pool.submit(run, r): r for r in todo}
            for fut in as_completed(futures):
                res = fut.result()
                results[res.region] = res
                advance(res.region)
    except _CredentialsProblem as e:
        raise OperationalError(f"{e}; {NO_CREDENTIALS}") from None
    ordered = [results[r] for r in todo]
    return _commit(ordered, fams, directory, now, started)


def _commit(
    results: list[RegionResult],
    families: tuple[str, ...],
    directory: Path,
    now: datetime,
    started: float,
) -> RefreshReport:
    warnings = list(dict.fromkeys(w for r in results for w in r.warnings))
    found = {f for r in results if not r.error for f in r.families_found}
    if any(not r.error for r in results):
        warnings += [
            f"--families {f}: no GPU instance types in the refreshed regions (not a GPU family?)"
            for f in families
            if f not in found
        ]
    meta_path = cache_meta_path(CLOUD, directory)
    prev: LiveCache | None
    try:
        prev = read_live_cache(CLOUD, directory)
    except DataError as e:
        warnings.append(f"the previous cache is unreadable and is replaced: {e}")
        prev = None
    ok = [r for r in results if not r.error]
    kept_by_region = Counter(o.region for o in prev.offers) if prev else Counter()
    kept = {r.region: kept_by_region.get(r.region, 0) for r in results if r.error}
    if not ok:
        return RefreshReport(
            families,
            results,
            None,
            meta_path,
            len(prev.offers) if prev else 0,
            kept,
            warnings,
            time.perf_counter() - started,
        )
    coverage = {reg: dict(fams) for reg, fams in (prev.coverage if prev else {}).items()}
    refreshed = {(r.region, f) for r in ok for f in families}
    rows = [
        o
        for o in (prev.offers if prev else ())
        if (o.region, instance_family(o.instance_type)) not in refreshed
    ]
    for r in ok:
        assert r.fetched_at is not None
        rows.extend(r.offers)
        coverage.setdefault(r.region, {}).update(dict.fromkeys(families, r.fetched_at))
    rows.sort(key=lambda o: (o.region, o.zone, o.instance_type, o.gpu))
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    offers_path = directory / f"offers-{CLOUD}-{stamp}-{secrets.token_hex(3)}.csv"
    per_region = Counter(o.region for o in rows)
    meta: dict[str, Any] = {
        "format": CACHE_FORMAT,
        "cloud": CLOUD,
        "offers_file": offers_path.name,
        "written_at": _iso(datetime.now(UTC)),
        "regions": {
            reg: {
                "fetched_at": max(fams.values()),
                "offers": per_region.get(reg, 0),
                "families": dict(sorted(fams.items())),
            }
            for reg, fams in sorted(coverage.items())
        },
        "last_refresh": {
            "at": _iso(now),
            "families": list(families),
            "regions": {
                r.region: ({"error": r.error} if r.error else {"offers": len(r.offers)})
                for r in results
            },
        },
    }
    try:
        write_atomic(offers_path, offers_csv(rows))  # not visible until the meta names it
        write_atomic(meta_path, json.dumps(meta, indent=2) + "\n")  # the commit
    except OSError as e:
        offers_path.unlink(missing_ok=True)
        raise OperationalError(
            f"cannot write the price cache in {directory}: {e.strerror or e}; "
            "the previous cache is unchanged"
        ) from None
    _prune(directory, keep={offers_path.name, prev.offers_path.name if prev else ""})
    return RefreshReport(
        families,
        results,
        offers_path,
        meta_path,
        len(rows),
        kept,
        warnings,
        time.perf_counter() - started,
    )


#: Cache CSVs younger than this are never pruned: one may belong to a refresh running beside
#: this one that has not committed its meta file yet.
_PRUNE_AFTER_S = 600


def _prune(directory: Path, keep: set[str]) -> None:
    """Delete older cache CSVs (the previous one stays for readers that loaded the old meta)."""
    for path in directory.glob(f"offers-{CLOUD}-*.csv"):
        try:
            old = time.time() - path.stat().st_mtime > _PRUNE_AFTER_S
        except FileNotFoundError:
            continue
        if path.name not in keep and old:
            path.unlink(missing_ok=True)


def report_lines(report: RefreshReport) -> list[str]:
    """The human summary of a refresh (stdout)."""
    lines = []
    for r in report.results:
        if r.error:
            lines.append(
                f"{r.region:<16} FAILED after {r.seconds:.1f} s: {r.error} "
                f"(kept {report.kept.get(r.region, 0)} earlier offers)"
            )
            continue
        drops = sum(r.dropped.values())
        lines.append(
            f"{r.region:<16} {len(r.offers):>4} offers in {r.seconds:.1f} s"
            + (f" ({drops} rows without a price or known GPU dropped)" if drops else "")
        )
    if report.offers_path is not None:
        lines.append(
            f"cache: {report.total_offers} live AWS offers in {report.offers_path} "
            f"({len(report.succeeded)} of {len(report.results)} regions refreshed, families "
            f"{','.join(report.families)}; {report.seconds:.1f} s)"
        )
    return lines
