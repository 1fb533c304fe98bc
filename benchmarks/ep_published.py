"""prov's DP / EP predictions next to published EP numbers (docs/ep-dp-layouts.md s5).

    python benchmarks/ep_published.py           # a table
    python benchmarks/ep_published.py --json

Checking data only: nothing here was used to set a factor of the model (the EP terms are not
fitted). Each row states the published figure, its source, and how prov is asked: a decode-only
row (P/D-disaggregated decode nodes) is per-rank batch / decode step; a capacity row is the KV
cache. Batch sizes the sources do not state are marked as assumptions.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from provisioner.core.catalog import resolve_model
from provisioner.core.hardware import cuda_memory_gib, gpu_specs
from provisioner.core.layout_memory import layout_memory
from provisioner.core.layouts import Layout
from provisioner.core.memory import MemorySettings
from provisioner.core.perf import Workload
from provisioner.core.perf_ep import estimate_layout
from provisioner.core.quant import resolve_quant
from provisioner.core.vllm_rules import VLLM_VERSION, batch_defaults, rules_for

GiB = 1024**3


def _settings(gpu: str) -> MemorySettings:
    r = rules_for(VLLM_VERSION)
    tokens, seqs = batch_defaults(r, gpu, cuda_memory_gib(gpu))
    return MemorySettings(max_num_batched_tokens=tokens, max_num_seqs=seqs, sm=90, rules=r)


def capacity(model: str, quant: str, gpu: str, lay: Layout, ctx: int) -> dict[str, Any]:
    spec = resolve_model(model)
    m = layout_memory(
        spec, resolve_quant(quant, spec), lay, cuda_memory_gib(gpu), ctx, _settings(gpu)
    )
    return {
        "kv_tokens": m.kv_cache_tokens,
        "kv_gib_per_gpu": round(m.worst.kv_pool / GiB, 2),
        "requests": m.max_concurrent,
    }


def decode_per_gpu(
    model: str,
    quant: str,
    gpu: str,
    lay: Layout,
    per_rank: int,
    isl: int,
    osl: int,
    fabric: str,
    backend: str = "deepep",
) -> dict[str, Any]:
    """Decode-only tokens/s per GPU: per-rank batch x DP / decode step / GPUs."""
    spec = resolve_model(model)
    est, terms = estimate_layout(
        spec,
        resolve_quant(quant, spec),
        gpu_specs()[gpu],
        lay,
        gpus_per_node=8,
        interconnect="nvlink",
        fabric=fabric,
        workload=Workload(isl, osl, per_rank * lay.dp),
        max_num_seqs=per_rank,
        backend=backend,
    )
    return {
        "tok_s_per_gpu": round(per_rank * lay.dp / est.step_s / lay.gpus),
        "step_ms": round(est.step_s * 1000, 1),
        "all_to_all_ms": round(terms.all_to_all_s * 1000, 1),
        "imbalance": round(terms.imbalance, 3),
    }


def rows() -> list[dict[str, Any]]:
    kimi, k2 = "moonshotai/Kimi-K2-Thinking", "moonshotai/Kimi-K2-Instruct"
    ds = "deepseek-ai/DeepSeek-V3"
    out: list[dict[str, Any]] = []
    ctx = 131072
    tp8 = capacity(kimi, "int4", "H200-SXM", Layout(8), ctx)
    dp8 = capacity(kimi, "int4", "H200-SXM", Layout(1, 8, 1, True), ctx)
    out.append(
        {
            "id": "E8",
            "case": "Kimi-K2-Thinking int4, 8xH200, TP8: KV tokens (start-up log)",
            "published": 715072,
            "prov": tp8["kv_tokens"],
            "source": "vllm-project/recipes moonshotai/Kimi-K2-Think.md @8959cf64",
        }
    )
    out.append(
        {
            "id": "E8+",
            "case": "same, DP8+EP8: 128K requests (log-anchored: 46.80 GiB - replicated weights)",
            "published": 24,
            "prov": dp8["requests"],
            "source": "derived from E8 (docs/ep-dp-layouts.md s4)",
        }
    )
    # LMSYS K2 (E5): 12 decode nodes = 96 H200, 2000 in / 100 out, decode batch 480 (per GPU:
    # assumption), 288k output tok/s over 12 nodes = 3,000 per GPU
    k2row = decode_per_gpu(
        k2, "auto", "H200-SXM", Layout(1, 96, 1, True), 480, 2000, 100, "infiniband"
    )
    out.append(
        {
            "id": "E5",
            "case": "Kimi K2 fp8 decode, 96xH200 DP96+EP96, bs 480/GPU (assumed), 2000/100",
            "published": 3000,
            "prov": k2row["tok_s_per_gpu"],
            "detail": k2row,
            "source": "LMSYS blog 2025-07-20-k2-large-scale-ep (SGLang, EPLB, 96 redundant)",
        }
    )
    # LMSYS DeepSeek (E4): decode EP72 on 9 nodes of 8xH100, 22.3k tok/s per node = 2,788/GPU
    dsrow = decode_per_gpu(
        ds, "auto", "H100-SXM", Layout(1, 72, 1, True), 256, 2000, 100, "infiniband"
    )
    out.append(
        {
            "id": "E4",
            "case": "DeepSeek-V3 fp8 decode, 72xH100 DP72+EP72, bs 256/GPU (assumed), 2000 in",
            "published": 2788,
            "prov": dsrow["tok_s_per_gpu"],
            "detail": dsrow,
            "source": "LMSYS blog 2025-05-05-large-scale-ep (SGLang, DeepEP, EPLB)",
        }
    )
    # vLLM wide-EP (E1): 2.2k tok/s per H200 decode, multi-node (batch not stated: 256 assumed)
    wide = decode_per_gpu(
        ds, "auto", "H200-SXM", Layout(1, 16, 1, True), 256, 2000, 1000, "infiniband"
    )
    out.append(
        {
            "id": "E1",
            "case": "DeepSeek-V3 fp8 decode, 16xH200 DP16+EP16, bs 256/GPU (assumed)",
            "published": 2200,
            "prov": wide["tok_s_per_gpu"],
            "detail": wide,
            "source": "vLLM blog 2025-12-17-large-scale-serving (llm-d, DeepEP, DBO, EPLB)",
        }
    )
    for r in out:
        r["ratio"] = round(r["prov"] / r["published"], 2) if r["published"] else None
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    data = rows()
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        print()
        return 0
    for r in data:
        print(f"{r['id']:4} {r['case']}")
        print(f"     published {r['published']:>10,}  prov {r['prov']:>10,}  ratio {r['ratio']}")
        if "detail" in r:
            print(f"     {r['detail']}")
        print(f"     source: {r['source']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
