"""`prov quote --explain`: why the best plan's layout wins over the other layouts of its node.

Compares, on the best plan's hardware and node count, the cheapest plan of every layout the
planner ranked (TP8, DP8+EP8, TP4xDP2+EP8, ...): what each GPU holds, the KV tokens and
concurrent requests, the batch, tokens/s and $/Mtok. Pure (returns lines).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from provisioner.core.memory import GIB

if TYPE_CHECKING:
    from provisioner.core.planner import QuoteResult, RankedPlan


def _mtok(p: RankedPlan) -> float:
    e = p.perf
    return p.usd_per_hour / (e.output_tps * 3600) * 1e6 if e and e.output_tps > 0 else 0.0


def layout_lines(result: QuoteResult) -> list[str]:
    best = result.best
    if best is None:
        return []
    nodes = best.verdict.nodes
    req = result.request
    alts = sorted(result.layout_alternatives, key=_mtok)
    by_layout = {p.layout_label: p for p in alts}
    if len(by_layout) < 2:
        return []
    lines = [
        f"Layouts on the best offer ({nodes} x {best.offer.instance_type}, {best.market}); "
        "#rank when ranked (an offer is ranked with its fastest TP and its fastest DP/EP "
        "layout; --layout tp|dp-ep|auto narrows):",
        f"  {'layout (#rank)':17}{'weights/GPU':>12}{'KV tokens':>12}{'ctx reqs':>9}{'batch':>7}"
        f"{'tok/s':>8}{'$/Mtok':>8}",
    ]
    for label, p in by_layout.items():
        m, e = p.verdict.memory, p.perf
        assert m is not None
        w = max(s.weights for s in m.stages)
        lines.append(
            f"  {label + (f' (#{p.rank})' if p.rank else ''):17}{w / GIB:9.1f} GiB"
            f"{m.kv_cache_tokens:>12,}{m.max_concurrent:>9}"
            f"{e.batch if e else 0:>7}{e.output_tps if e else 0:>8,.0f}{_mtok(p):>8.2f}"
        )
    win = best.verdict
    tp_plan = next((p for p in by_layout.values() if p.verdict.dp == 1 and not p.verdict.ep), None)
    dense = result.model.moe is None
    if win.dp > 1 and tp_plan is not None and tp_plan.verdict.memory is not None:
        wm, tm = win.memory, tp_plan.verdict.memory
        assert wm is not None
        extra = max(s.weights for s in wm.stages) - max(s.weights for s in tm.stages)
        ratio = wm.kv_cache_tokens / tm.kv_cache_tokens if tm.kv_cache_tokens else 0.0
        if dense:
            lines.append(
                f"  {win.layout.label} wins: {win.dp} independent TP{win.tp} engines (a dense "
                "model's DP ranks share nothing: no all-to-all, no lockstep), each batching its "
                f"own requests; {extra / GIB:+.1f} GiB of replicated weights per GPU leave "
                f"{ratio:.1f}x the KV tokens of {tp_plan.verdict.layout.label} "
                f"({wm.max_concurrent} requests of {req.ctx:,} tokens vs {tm.max_concurrent}), "
                "but smaller TP pays "
                "fewer all-reduces per token (docs/ep-dp-layouts.md section 7)."
            )
            return lines
        lines.append(
            f"  {win.layout.label} wins: each of its {win.dp} DP ranks keeps its own requests' KV"
            + (
                " (the MLA latent is not split by TP, so TP replicates it on every GPU)"
                if result.model.mla is not None
                else ""
            )
            + f", {ratio:.1f}x the KV tokens of {tp_plan.verdict.layout.label} for "
            f"{extra / GIB:+.1f} GiB of replicated weights per GPU (attention, dense layers, "
            f"embeddings); at {req.ctx:,} tokens it holds {wm.max_concurrent} requests vs "
            f"{tm.max_concurrent}, so it batches more and costs less per token, paying an "
            "all-to-all per MoE layer (docs/ep-dp-layouts.md)."
        )
    elif win.dp == 1 and dense:
        lines.append(
            f"  {win.layout.label} wins: at this workload the DP engines' replicated weights "
            "cost more KV cache (smaller batches) than their fewer all-reduces save."
        )
    elif win.dp == 1 and len(by_layout) > 1:
        lines.append(
            f"  {win.layout.label} wins: at this workload the larger batches of DP/EP do not pay "
            "for their replicated weights, all-to-all and lockstep decoding."
        )
    return lines
