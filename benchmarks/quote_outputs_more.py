"""More requests for benchmarks/quote_outputs.py's byte-for-byte comparison, weighted to the dense
models (Llama-3.1-8B has the most candidates: TP x PP on 1-4 nodes and DP engines on one node)
and to what the ranking consumes: --top 50, --all-zones, --objective usd-per-hour, --layout tp/dp,
--market, --max-interruption, cloud and GPU filters, SLOs, and plan_quote results with --top 0,
5, 7 and 25 (the best of each market and its rank).

    python benchmarks/quote_outputs_more.py OUT_BEFORE      # on the old checkout
    python benchmarks/quote_outputs_more.py OUT_AFTER       # on the new one
    diff -r OUT_BEFORE OUT_AFTER
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quote_outputs as q

K, DS, L8, L70 = q.K, q.DS, q.L8, q.L70
R1 = ["--model", "deepseek-ai/DeepSeek-R1"]
L405 = ["--model", "meta-llama/Llama-3.1-405B"]
CASES: list[list[str]] = [
    [*L8, "--ctx", "32k"],
    [*L8, "--ctx", "32k", "--json", "--show-rejected"],
    [*L8, "--ctx", "32k", "--objective", "usd-per-hour", "--json"],
    [*L8, "--ctx", "32k", "--objective", "usd-per-hour", "--top", "0"],
    [*L8, "--ctx", "32k", "--all-zones", "--json"],
    [*L8, "--ctx", "32k", "--all-zones", "--top", "0", "--wide"],
    [*L8, "--ctx", "32k", "--layout", "tp", "--json"],
    [*L8, "--ctx", "32k", "--layout", "dp", "--json"],
    [*L8, "--ctx", "32k", "--layout", "dp", "--top", "0"],
    [*L8, "--ctx", "32k", "--top", "50", "--json"],
    [*L8, "--ctx", "32k", "--top", "50", "--wide"],
    [*L8, "--ctx", "32k", "--market", "spot", "--json"],
    [*L8, "--ctx", "32k", "--market", "on-demand", "--top", "0", "--json"],
    [*L8, "--ctx", "32k", "--market", "spot", "--max-interruption", "10", "--json"],
    [*L8, "--ctx", "32k", "--max-interruption", "5", "--top", "0"],
    [*L8, "--ctx", "32k", "--cloud", "aws", "--json"],
    [*L8, "--ctx", "32k", "--cloud", "gcp", "--cloud", "azure", "--top", "0"],
    [*L8, "--ctx", "32k", "--gpu", "H100", "--json"],
    [*L8, "--ctx", "32k", "--explain"],
    [*L8, "--ctx", "32k", "--show-rejected"],
    [*L8, "--ctx", "32k", "--risk-adjusted", "--json"],
    [*L8, "--ctx", "32k", "--min-availability", "0.99", "--top", "0"],
    [*L8, "--ctx", "32k", "--explore-splits", "--json"],
    [*L8, "--ctx", "32k", "--nodes", "2", "--json"],
    [*L8, "--ctx", "32k", "--max-nodes", "1", "--top", "0"],
    [*L8, "--ctx", "32k", "--concurrency", "64", "--json"],
    [*L8, "--ctx", "32k", "--min-output-tps", "5000", "--json"],
    [*L8, "--ctx", "32k", "--max-tpot-ms", "5", "--json"],
    [*L8, "--ctx", "32k", "--max-tpot-ms", "1", "--json"],
    [*L8, "--ctx", "32k", "--compare-api"],
    [*L8, "--ctx", "32k", "--cpu-offload-gb", "4", "--json"],
    [*L8, "--ctx", "128k", "--kv-dtype", "fp8", "--json"],
    [*L8, "--quant", "fp8", "--ctx", "32k", "--json"],
    [*L8, "--quant", "q4_k_m", "--ctx", "8k", "--top", "0"],
    [*L8, "--ctx", "32k", "--cloud", "aws", "--region", "nowhere-1", "--json"],
    [*L8, "--ctx", "32k", "--gpu", "L4", "--layout", "dp", "--json"],
    [*L70, "--ctx", "32k", "--json"],
    [*L70, "--ctx", "32k", "--top", "0", "--all-zones"],
    [*L70, "--quant", "fp8", "--ctx", "32k", "--layout", "dp", "--json"],
    [*L70, "--quant", "int4", "--ctx", "32k", "--objective", "usd-per-hour", "--top", "50"],
    [*L70, "--quant", "q4_k_m", "--ctx", "8k", "--json"],
    [*L405, "--ctx", "32k", "--json"],
    [*L405, "--quant", "fp8", "--ctx", "32k", "--layout", "dp", "--top", "0"],
    ["--model", "mistralai/Mixtral-8x22B-v0.1", "--ctx", "32k", "--top", "0", "--json"],
    [*R1, "--ctx", "128k", "--json"],
    [*R1, "--ctx", "128k", "--top", "50", "--all-zones"],
    [*DS, "--ctx", "128k", "--top", "50", "--json"],
    [*DS, "--ctx", "128k", "--objective", "usd-per-hour", "--top", "0"],
    [*DS, "--ctx", "128k", "--layout", "tp", "--market", "spot", "--json"],
    [*K, "--ctx", "128k", "--top", "50", "--json"],
    [*K, "--ctx", "128k", "--all-zones", "--top", "0"],
    [*K, "--ctx", "128k", "--cloud", "aws", "--cloud", "gcp", "--json"],
    [*K, "--ctx", "128k", "--market", "spot", "--json"],
    [*K, "--ctx", "128k", "--layout", "dp", "--top", "0"],
    ["--model", "openai/gpt-oss-120b", "--ctx", "128k", "--layout", "dp", "--top", "0", "--json"],
    ["--model", "Qwen/Qwen3-235B-A22B", "--ctx", "32k", "--objective", "usd-per-hour", "--json"],
]
L8_PLAN: dict[str, Any] = {"model": "meta-llama/Llama-3.1-8B", "quant": "bf16", "ctx": 32768}
K_PLAN: dict[str, Any] = {"model": "moonshotai/Kimi-K2-Thinking", "quant": "int4", "ctx": 131072}
PLANS: list[dict[str, Any]] = [
    {**L8_PLAN, "top": 0},
    {**L8_PLAN, "top": 25, "market": "on-demand"},
    {**L8_PLAN, "objective": "usd-per-hour"},
    {**L8_PLAN, "layout": "dp-ep", "top": 5},
    {**L8_PLAN, "max_interruption": 10},
    {**L8_PLAN, "risk_adjusted": True, "top": 5},
    {**L8_PLAN, "explore_splits": True},
    {"model": "meta-llama/Llama-3.1-70B", "quant": "auto", "ctx": 32768, "top": 0},
    {"model": "meta-llama/Llama-3.1-8B", "quant": "q4_k_m", "ctx": 8192, "top": 0},
    {"model": "deepseek-ai/DeepSeek-V3", "quant": "auto", "ctx": 131072, "top": 0},
    {**K_PLAN, "top": 0},
    {**K_PLAN, "objective": "usd-per-hour", "top": 7},
]


def main(argv: list[str] | None = None) -> int:
    return q.main(argv, CASES, PLANS, __doc__)


if __name__ == "__main__":
    sys.exit(main())
