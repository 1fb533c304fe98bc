"""Normalise the SkyPilot-format price catalogs into ``pricing/data/offers.csv``.

    python -m pricing.tools.build_snapshot [--shared PATH] [--out DIR] [--check]

Reads ``PATH/prices/*.csv`` (default PATH: ``../shared/data`` next to the repo) and
``PATH/gpus.csv``, writes one row per purchasable GPU node per cloud/region/zone
(columns: ``pricing.offers_csv.FILE_COLUMNS``), sorted, atomically. Rows whose GPU is not in
gpus.csv, rows without any price and GCP rows that cannot be joined are dropped and
counted; quirks of the upstream data are kept as ``flags`` rather than fixed.
The printed summary is also written into the marked block of ``DIR/SOURCE.md``.

This is a maintainer tool (not on the ``prov`` hot path). Upstream quirks it handles
are described in ``pricing/data/SOURCE.md``. Its parts: pricing.tools.catalogs (reading),
pricing.tools.normalise (per-cloud rows -> nodes), then here: merge, flag, apply the
rentable rules (pricing.rentable), write. The rules it shares with the live refreshes are
runtime modules (pricing.nodes, pricing.interconnect, pricing.gpu_names); pricing.tools
only imports downward.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from pricing import rentable
from pricing.interconnect import fabric_for
from pricing.nodes import Node, price_flags
from pricing.offers_csv import offers_csv
from pricing.tools.catalogs import (
    CATALOGS,
    COMMON_COLUMNS,
    PRICES_AS_OF,
    ZONE_CLOUDS,
    CatalogContext,
    CloudReport,
    date_flags,
    read_catalog,
    read_gpu_table,
)
from pricing.tools.normalise import NORMALISERS
from provisioner.errors import ProvError
from provisioner.fileio import write_atomic

REPO = Path(__file__).resolve().parents[2]
#: ../shared/data next to the checkout (or next to any parent: worktrees live one level deeper).
DEFAULT_SHARED = next(
    (p / "shared" / "data" for p in REPO.parents if (p / "shared" / "data" / "prices").is_dir()),
    REPO.parent / "shared" / "data",
)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data"
#: The runtime GPU table: its names complete the shared one (see ``build``).
DEFAULT_EXTRA_GPUS = REPO / "provisioner" / "data" / "gpus.csv"


@dataclass
class BuildResult:
    nodes: list[Node]
    reports: dict[str, CloudReport]

    def summary(self) -> str:
        return format_summary(self.reports)


def _pick(a: float | None, b: float | None, flags: set[str]) -> float | None:
    if a is None:
        return b
    if b is None or a == b:
        return a
    flags.add("duplicate_conflict")
    return max(a, b)  # conflicting duplicates: keep the higher (never understate a price)


def merge_duplicates(ctx: CatalogContext, nodes: list[Node]) -> list[Node]:
    """One node per (cloud, region, zone, instance_type, gpu); keep every price seen."""
    merged: dict[tuple[str, str, str, str, str], Node] = {}
    for node in nodes:
        seen = merged.get(node.key())
        if seen is None:
            merged[node.key()] = node
            continue
        ctx.report.merged_duplicates += 1
        seen.flags |= node.flags | {"duplicate_row"}
        seen.ondemand = _pick(seen.ondemand, node.ondemand, seen.flags)
        seen.spot = _pick(seen.spot, node.spot, seen.flags)
    return list(merged.values())


def build(shared: Path, extra_gpus: Path | None = None) -> BuildResult:
    """Normalise every catalog under ``shared/prices`` using ``shared/gpus.csv``.

    ``extra_gpus`` (the packaged provisioner/data/gpus.csv) adds the GPUs the runtime knows
    that the shared table lacks (B300), so the snapshot never names a GPU prov cannot size.
    """
    gpus = read_gpu_table(shared / "gpus.csv")
    if extra_gpus is not None:
        for name, spec in read_gpu_table(extra_gpus).items():
            gpus.setdefault(name, spec)
    nodes: list[Node] = []
    reports: dict[str, CloudReport] = {}
    for cloud, filename in CATALOGS.items():
        path = shared / "prices" / filename
        required = COMMON_COLUMNS + (("AvailabilityZone",) if cloud in ZONE_CLOUDS else ())
        rows = read_catalog(path, required)
        ctx = CatalogContext(cloud, path, gpus)
        ctx.report.rows_in = len(rows)
        cloud_nodes = merge_duplicates(ctx, NORMALISERS[cloud](ctx, rows))
        cloud_nodes = rentable.drop_capacity_block_only(cloud_nodes, ctx.drop)
        kept = []
        for node in cloud_nodes:
            price_flags(cloud, node)
            date_flags(cloud, node)
            if node.ondemand is None and node.spot is None:
                ctx.drop("no_price", node.instance_type)
                continue
            kept.append(node)
        rentable.mark_single_machine(kept)
        kept = rentable.collapse_aliases(
            kept, ctx.drop, lambda n: fabric_for(n.cloud, n.instance_type)
        )
        kept = rentable.collapse_regionless(kept, ctx.drop)
        ctx.report.offers_out = len(kept)
        reports[cloud] = ctx.report
        nodes.extend(kept)
    nodes.sort(key=Node.key)
    return BuildResult(nodes, reports)


def to_csv(nodes: list[Node]) -> str:
    """The snapshot's offers.csv text: each node dated with its catalog's upstream date."""
    return offers_csv(n.to_offer(PRICES_AS_OF.get(n.cloud) or None) for n in nodes)


def format_summary(reports: dict[str, CloudReport]) -> str:
    lines = ["cloud       rows_in  offers_out  merged_dups  dropped"]
    for cloud, r in reports.items():
        lines.append(
            f"{cloud:<11} {r.rows_in:>7}  {r.offers_out:>10}  {r.merged_duplicates:>11}"
            f"  {sum(r.dropped.values()):>7}"
        )
    total_in = sum(r.rows_in for r in reports.values())
    total_out = sum(r.offers_out for r in reports.values())
    lines.append(f"{'total':<11} {total_in:>7}  {total_out:>10}")
    lines.append("")
    lines.append("dropped (cloud: reason [name] x count):")
    for cloud, r in reports.items():
        by_reason: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for (reason, name), n in sorted(r.dropped.items()):
            by_reason[reason].append((name, n))
        for reason, items in by_reason.items():
            total = sum(n for _, n in items)
            detail = ", ".join(f"{name} x{n}" for name, n in items if name)
            lines.append(f"  {cloud}: {reason} x{total}" + (f" ({detail})" if detail else ""))
    return "\n".join(lines)


SUMMARY_BEGIN = "<!-- build-summary:begin (generated by pricing.tools.build_snapshot) -->"
SUMMARY_END = "<!-- build-summary:end -->"


def update_source_md(path: Path, summary: str) -> bool:
    """Replace the generated summary block of SOURCE.md; False if the file/markers are absent."""
    if not path.exists():
        return False
    text = path.read_text(encoding="utf-8")
    start, end = text.find(SUMMARY_BEGIN), text.find(SUMMARY_END)
    if start < 0 or end < start:
        return False
    block = f"{SUMMARY_BEGIN}\n```\n{summary}\n```\n"
    new = text[:start] + block + text[end:]
    if new != text:
        write_atomic(path, new)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pricing.tools.build_snapshot", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--shared",
        type=Path,
        default=DEFAULT_SHARED,
        help=f"dir with prices/*.csv and gpus.csv (default {DEFAULT_SHARED})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output dir for offers.csv (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if DIR/offers.csv is not what a build produces",
    )
    args = parser.parse_args(argv)
    try:
        result = build(args.shared, DEFAULT_EXTRA_GPUS)
    except ProvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    text = to_csv(result.nodes)
    target = args.out / "offers.csv"
    summary = result.summary()
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current != text:
            print(
                f"{target} is out of date; run python -m pricing.tools.build_snapshot",
                file=sys.stderr,
            )
            return 1
        print(f"{target} is up to date ({len(result.nodes)} offers)")
        return 0
    write_atomic(target, text)
    update_source_md(args.out / "SOURCE.md", summary)
    print(summary)
    print(f"\nwrote {len(result.nodes)} offers to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
