"""Where the modelled TPOT, TTFT and tok/s fall as the batch grows: the survey behind the SLO search
(provisioner/core/planner/estimates.py slo_batch; docs/quote.md "How the batch is found").

    python benchmarks/slo_monotonic.py                   # the default shapes (~5 min, 2 cores)
    python benchmarks/slo_monotonic.py --explore-splits  # also in-node PP (~10 min)

For every feasible shape of a few quotes (embedded prices) and each fabric it is offered on,
the shape's estimate at every batch from 1 to its saturation; each step where TPOT, TTFT or
output tok/s falls is counted by kind: `pp-knee` (the batch from which every PP stage has a
micro-batch), `pp` (another batch of a PP shape), `no-pp` (TP, DP, DP/EP); with the largest
relative fall of each. tok/s falls one batch past a multiple of DP (or PP): the search serves
the multiple below then.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from typing import Any

CASES = [
    ("moonshotai/Kimi-K2-Thinking", "int4", "128k"),
    ("moonshotai/Kimi-K2-Thinking", "int4", "32k"),
    ("meta-llama/Llama-3.1-8B", "bf16", "32k"),
    ("meta-llama/Llama-3.1-70B", "fp8", "32k"),
    ("deepseek-ai/DeepSeek-V3", "auto", "128k"),
    ("Qwen/Qwen3-235B-A22B", "auto", "32k"),
    ("openai/gpt-oss-120b", "auto", "128k"),
]


def survey(model_id: str, quant: str, ctx: str, explore: bool) -> dict[str, Any]:
    from pricing.offers import load_offers
    from provisioner.core.catalog import resolve_model
    from provisioner.core.hardware import gpu_specs
    from provisioner.core.perf import Workload
    from provisioner.core.perf_ep import estimate_layout
    from provisioner.core.planner.candidates import Enumeration
    from provisioner.core.planner.estimates import host_link_gbps, throughput_batch
    from provisioner.core.planner.quote import plan_quote
    from provisioner.core.quant import resolve_quant
    from provisioner.core.request import make_request, parse_tokens

    spec = resolve_model(model_id)
    scheme = resolve_quant(quant, spec)
    req = make_request(model=spec.id, quant=quant, ctx=parse_tokens(ctx), explore_splits=explore)
    found: list[Enumeration] = []
    run = Enumeration.run

    def keep(self: Enumeration, *a: Any, **k: Any) -> None:
        run(self, *a, **k)
        found.append(self)

    Enumeration.run = keep  # type: ignore[method-assign]
    try:
        plan_quote(req, spec, scheme, list(load_offers()), collect_rejected=False)
    finally:
        Enumeration.run = run  # type: ignore[method-assign]
    f = found[-1]
    seen: set[tuple[Any, ...]] = set()
    shapes = estimates = 0
    falls: dict[tuple[str, str], list[float]] = defaultdict(list)
    for vi, v in enumerate(f.verdicts):
        gpu = gpu_specs()[v.hw.gpu]
        fabrics = {o.fabric for o in f.class_offers[vi]} if v.nodes > 1 else {"ethernet"}
        for fabric in sorted(fabrics):
            key = (v.hw.gpu, v.hw.gpus_per_node, v.hw.interconnect, v.nodes, v.layout, fabric)
            if key in seen:
                continue
            seen.add(key)
            shapes += 1
            top = min(throughput_batch(req, v), v.max_num_seqs * v.dp)
            knee = (v.pp - 1) * v.dp + 1
            prev = None
            for b in range(1, top + 1):
                e, _ = estimate_layout(
                    spec, scheme, gpu, v.layout, gpus_per_node=v.hw.gpus_per_node,
                    interconnect=v.hw.interconnect, fabric=fabric,
                    workload=Workload(f.isl, f.osl, b), kv_bytes=f.kvb,
                    max_num_seqs=v.max_num_seqs,
                    max_num_batched_tokens=v.max_num_batched_tokens,
                    layout_cache=f.stage_cache, pcie_gbps=host_link_gbps(gpu),
                )  # fmt: skip
                estimates += 1
                if prev is not None:
                    kind = "no-pp" if v.pp == 1 else ("pp-knee" if b == knee else "pp")
                    for metric, x0, x1 in (
                        ("tpot", prev.tpot_s, e.tpot_s),
                        ("ttft", prev.ttft_s, e.ttft_s),
                        ("tok/s", prev.output_tps, e.output_tps),
                    ):
                        if x1 < x0 * (1 - 1e-12):
                            falls[(kind, metric)].append(1 - x1 / x0)
                prev = e
    return {"shapes": shapes, "estimates": estimates, "falls": falls}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--explore-splits", action="store_true", help="also in-node PP splits")
    args = ap.parse_args(argv)
    total = 0
    for model_id, quant, ctx in CASES:
        r = survey(model_id, quant, ctx, args.explore_splits)
        total += r["shapes"]
        print(f"{model_id} {quant} {ctx}: {r['shapes']} shapes, {r['estimates']:,} estimates")
        for (kind, metric), drops in sorted(r["falls"].items()):
            print(f"  {metric} falls at {kind}: {len(drops)} steps, largest {max(drops):.2%}")
    print(f"{total} shapes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
