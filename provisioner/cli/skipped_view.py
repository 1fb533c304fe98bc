"""`prov quote --show-rejected`: the prices not ranked, named (the footer only counts them).

One block per rule, most prices first: each price's cloud, place, instance, both prices of the
node and the market not used; --json's `skipped_price_rows` lists every one.
"""

from __future__ import annotations

from typing import Any

from provisioner.cli.textable import short_gpu, short_instance
from provisioner.core.planner import QuoteResult

#: rows named per rule in the text (the rest are counted; --json lists each)
SHOWN_PER_RULE = 8


def _usd(value: float | None) -> str:
    return "none" if value is None else f"{value:,.2f}"


def price_row(r: dict[str, Any]) -> str:
    """'aws apne2-az2 p4d.24xlarge 8xA100-40GB: spot 4.55, od 30.41 $/h' (node prices; the
    market not used first)."""
    place = r["zone"] or r["region"]
    prices = [("spot", r["spot_usd_per_hour"]), ("od", r["ondemand_usd_per_hour"])]
    if r["market"] == "on-demand":
        prices.reverse()
    text = ", ".join(f"{m} {_usd(p)}" for m, p in prices)
    itype = short_instance(r["instance_type"])
    return f"{r['cloud']} {place} {itype} {r['gpus_per_node']}x{short_gpu(r['gpu'])}: {text} $/h"


def skipped_price_lines(result: QuoteResult) -> list[str]:
    rows = result.skipped_price_rows
    if not rows:
        return ["skipped prices: none"]
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_rule.setdefault(r["reason"], []).append(r)
    lines = [f"skipped prices: {len(rows)}, by rule (--json lists each)"]
    for rule, group in sorted(by_rule.items(), key=lambda kv: -len(kv[1])):
        lines.append(f"{len(group):6d}  {rule}")
        lines += [f"        {price_row(r)}" for r in group[:SHOWN_PER_RULE]]
        if len(group) > SHOWN_PER_RULE:
            lines.append(f"        ... and {len(group) - SHOWN_PER_RULE} more")
    return lines
