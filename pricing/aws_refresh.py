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

One region's fetch is pricing.aws_region, the on-demand prices pricing.aws_price_list. Rows are
normalised like the embedded snapshot (the same GPU names, memory rule, interconnect/fabric
tables and price flags: pricing.gpu_names, pricing.nodes, pricing.interconnect), dated with the
fetch date and flagged ``live``, then merged with the previous cache here: a region that fails
keeps its previous rows. The cache is a dated CSV plus a JSON meta file that names it; the meta
file is replaced last (the commit), so a reader sees the old cache or the new one, never a mix.
See docs/prices.md.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pricing.aws_price_list import OnDemandSource, PricingApi
from pricing.aws_region import (
    CLOUD,
    CredentialsProblem,
    RegionResult,
    credential_errors,
    fetch_region,
    iso,
)
from pricing.gpu_names import AWS_FAMILY_GPU
from pricing.offers import (
    CACHE_FORMAT,
    LiveCache,
    cache_dir,
    cache_meta_path,
    instance_family,
    read_live_cache,
)
from pricing.offers_csv import offers_csv
from provisioner.aws_credentials import (
    credentials_error,
    is_credentials_failure,
    require_credentials,
)
from provisioner.core.hardware import gpu_specs
from provisioner.errors import DataError, OperationalError, UsageError
from provisioner.fileio import write_atomic

#: GPU families refreshed by default: the families the snapshot maps, plus p6-b200 (its GpuInfo
#: name, B200, is a gpus.csv name as it stands).
DEFAULT_FAMILIES: tuple[str, ...] = tuple(dict.fromkeys((*AWS_FAMILY_GPU, "p6-b200")))
#: The Pricing API is served from us-east-1 (also eu-central-1, ap-south-1); prices are global.
PRICING_REGION = "us-east-1"
#: What the refresh needs the credentials for (the one credentials line names it).
NEEDS = (
    "prices refresh --cloud aws calls ec2:DescribeRegions, ec2:DescribeInstanceTypes, "
    "ec2:DescribeInstanceTypeOfferings, ec2:DescribeSpotPriceHistory and pricing:GetProducts"
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
    credential chain and the Pricing API are used. Raises CredentialsError (exit 2) without
    usable credentials, OperationalError when no region could be fetched, UsageError for a
    region that is not enabled.
    """
    wanted = parse_regions(regions)
    fams = parse_families(families)
    if max_workers < 1:
        raise UsageError(f"--workers {max_workers}: must be at least 1")
    started = time.perf_counter()
    now = (now or datetime.now(UTC)).astimezone(UTC)
    directory = directory or cache_dir()
    session = require_credentials(NEEDS, session)
    config = _config(retry_mode, max_attempts, max_workers)
    home = session.region_name or PRICING_REGION
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        ec2_home = session.client("ec2", region_name=home, config=config)
        enabled = [r["RegionName"] for r in ec2_home.describe_regions()["Regions"]]
    except credential_errors() as e:
        raise credentials_error(NEEDS, e) from None
    except ClientError as e:
        if is_credentials_failure(e):  # keys AWS does not accept: configuration, exit 2
            raise credentials_error(NEEDS, e) from None
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
    gpus = gpu_specs()
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
    except CredentialsProblem as e:
        raise credentials_error(NEEDS, e.__cause__ or e) from None
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
        "written_at": iso(datetime.now(UTC)),
        "regions": {
            reg: {
                "fetched_at": max(fams.values()),
                "offers": per_region.get(reg, 0),
                "families": dict(sorted(fams.items())),
            }
            for reg, fams in sorted(coverage.items())
        },
        "last_refresh": {
            "at": iso(now),
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
