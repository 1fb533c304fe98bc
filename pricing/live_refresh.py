"""`prov prices refresh --cloud azure|runpod|vast|oci`: fetch, check, commit a dated cache.

One source per cloud (pricing.live_sources). A refresh either commits a complete cache for
its cloud or leaves the previous one untouched: the offers CSV is written first under a new
dated name, then the meta file that names it replaces the old meta atomically (the commit),
as pricing.aws_refresh does. `prov quote` and `prov prices show` prefer the cache
(pricing.offers.current_offers) for the regions it covers (``*`` = the whole cloud).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pricing.interconnect import fabric_for
from pricing.live_sources import SourceResult, fetch_azure, fetch_oci, fetch_runpod, fetch_vast
from pricing.offers import (
    CACHE_FORMAT,
    LIVE_FLAG,
    _packaged_offers,
    cache_dir,
    cache_meta_path,
    check_offers,
)
from pricing.offers_csv import offers_csv
from pricing.rentable import collapse_aliases, mark_single_machine
from provisioner.core.hardware import gpu_specs
from provisioner.core.offer import Offer
from provisioner.errors import DataError, ProvError, UsageError
from provisioner.fileio import write_atomic

#: The clouds this module refreshes (aws has its own module: pricing.aws_refresh).
CLOUDS: tuple[str, ...] = ("azure", "runpod", "vast", "oci")


@dataclass
class CloudRefresh:
    """The outcome for one cloud: committed offers, or the error that left the cache as it was."""

    cloud: str
    offers: int = 0
    regions: list[str] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    pages: int = 0
    seconds: float = 0.0
    error: str | None = None
    offers_path: Path | None = None


def _azure_skus() -> list[str]:
    """The Azure GPU sizes prov maps: every size (and alias) in the embedded snapshot."""
    names = set()
    for o in _packaged_offers():
        if o.cloud == "azure":
            names.add(o.instance_type)
            names.update(o.aliases)
    return sorted(names)


def _fetch(cloud: str, regions: list[str] | None, fetch: Callable[..., Any] | None) -> SourceResult:
    gpus = gpu_specs()
    kw: dict[str, Any] = {"fetch": fetch} if fetch else {}
    if cloud == "azure":
        return fetch_azure(gpus, _azure_skus(), regions, **kw)
    if cloud == "runpod":
        return fetch_runpod(gpus, **kw)
    if cloud == "vast":
        return fetch_vast(gpus, **kw)
    if cloud == "oci":
        return fetch_oci(gpus, **kw)
    raise UsageError(f"no live price source for {cloud!r}; allowed: {', '.join(CLOUDS)}")


def to_offers(cloud: str, result: SourceResult, as_of: str) -> list[Offer]:
    """Live nodes -> Offers with the snapshot's rules; host size from the snapshot's same type."""
    host = {(o.cloud, o.instance_type): (o.vcpus, o.memory_gib) for o in _packaged_offers()}
    nodes = result.nodes
    mark_single_machine(nodes)
    drops: Counter[tuple[str, str]] = Counter()

    def drop(reason: str, name: str, n: int = 1) -> None:
        drops[(reason, name)] += n

    nodes = collapse_aliases(nodes, drop, lambda n: fabric_for(n.cloud, n.instance_type))
    for (reason, _name), n in drops.items():
        result.skipped[reason] += n
    offers = []
    for node in sorted(nodes, key=lambda n: n.key()):
        if not node.vcpus and (cloud, node.instance_type) in host:
            node.vcpus, node.memory_gib = host[(cloud, node.instance_type)]
        node.flags.add(LIVE_FLAG)
        offers.append(node.to_offer(as_of))
    return offers


def refresh_cloud(
    cloud: str,
    *,
    regions: list[str] | None = None,
    directory: Path | None = None,
    now: datetime | None = None,
    fetch: Callable[..., Any] | None = None,
) -> CloudRefresh:
    """Fetch one cloud and commit its cache; any failure is reported, never half-written."""
    started = time.perf_counter()
    now = now or datetime.now(UTC)
    out = CloudRefresh(cloud)
    try:
        result = _fetch(cloud, regions, fetch)
        out.skipped, out.pages = result.skipped, result.pages
        offers = to_offers(cloud, result, now.date().isoformat())
        if not offers:
            raise DataError(f"{cloud}: the source answered but no GPU offer prov knows was in it")
        check_offers(offers, f"{cloud} live prices")
        out.offers_path = _commit(cloud, offers, result.regions, now, directory)
        out.offers, out.regions = len(offers), result.regions
    except ProvError as exc:
        out.error = str(exc)
    out.seconds = time.perf_counter() - started
    return out


def _commit(
    cloud: str, offers: list[Offer], regions: list[str], now: datetime, directory: Path | None
) -> Path:
    directory = directory or cache_dir()
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    offers_path = directory / f"offers-{cloud}-{stamp}.csv"
    fetched_at = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    per_region = Counter(o.region for o in offers)
    meta = {
        "format": CACHE_FORMAT,
        "cloud": cloud,
        "offers_file": offers_path.name,
        "fetched_at": fetched_at,
        "regions": {
            r: {
                "families": {"*": fetched_at},
                "fetched_at": fetched_at,
                "offers": per_region.get(r, 0) if r != "*" else len(offers),
            }
            for r in regions
        },
    }
    meta_path = cache_meta_path(cloud, directory)
    write_atomic(offers_path, offers_csv(offers))  # not visible until the meta names it
    write_atomic(meta_path, json.dumps(meta, indent=2) + "\n")  # the commit
    for old in directory.glob(f"offers-{cloud}-*.csv"):
        if old != offers_path:
            old.unlink(missing_ok=True)
    return offers_path


def report_lines(results: list[CloudRefresh]) -> list[str]:
    lines = []
    for r in results:
        if r.error:
            lines.append(f"{r.cloud:<8} FAILED ({r.seconds:.1f} s): {r.error}; cache unchanged")
            continue
        where = "all regions" if r.regions == ["*"] else f"{len(r.regions)} regions"
        lines.append(
            f"{r.cloud:<8} {r.offers:>5} offers, {where}, {r.pages} pages, {r.seconds:.1f} s"
            f" -> {r.offers_path}"
        )
        skipped = sum(r.skipped.values())
        if skipped:
            top = ", ".join(f"{k} x{n}" for k, n in r.skipped.most_common(4))
            lines.append(f"{'':8} skipped {skipped} rows ({top})")
    return lines
