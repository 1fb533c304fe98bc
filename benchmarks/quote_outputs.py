"""What `prov quote` answers to a fixed set of requests, to compare two versions byte for byte.

    python benchmarks/quote_outputs.py OUT_BEFORE      # on the old checkout
    python benchmarks/quote_outputs.py OUT_AFTER       # on the new one
    diff -r OUT_BEFORE OUT_AFTER                      # a refactor leaves no difference

Each request runs in-process through the CLI (stdout, stderr and the exit code per file), then a
few plan_quote results are dumped whole (with best_by_market and the --explain layouts), with
and without the rejection list. Run both sides on the same day: ages of prices are in the output.
The set covers the README's question, --json, --top 0, --explain, --show-rejected, --all-zones,
the layouts, --risk-adjusted, --min-availability, SLOs, --compare-api, --cpu-offload-gb (TP and
DP/EP), --dcp (TP and TP+EP), GGUF, filters that leave nothing, and bad flags.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

K = ["--model", "moonshotai/Kimi-K2-Thinking", "--quant", "int4"]
DS = ["--model", "deepseek-ai/DeepSeek-V3"]
L8 = ["--model", "meta-llama/Llama-3.1-8B"]
L70 = ["--model", "meta-llama/Llama-3.1-70B"]
CLI_CASES: list[list[str]] = [
    [*K, "--ctx", "128k"],
    [*K, "--ctx", "128k", "--json"],
    [*K, "--ctx", "128k", "--gpu", "H200", "--nodes", "1", "--top", "0", "--json"],
    [*K, "--ctx", "128k", "--explain"],
    [*K, "--ctx", "128k", "--show-rejected"],
    [*K, "--ctx", "128k", "--all-zones", "--json"],
    [*K, "--ctx", "128k", "--wide", "--top", "0"],
    [*K, "--ctx", "128k", "--layout", "dp-ep", "--json"],
    [*K, "--ctx", "128k", "--layout", "tp", "--json"],
    [*K, "--ctx", "128k", "--risk-adjusted", "--json"],
    [*K, "--ctx", "128k", "--min-availability", "0.99", "--json"],
    [*K, "--ctx", "128k", "--market", "spot", "--max-interruption", "10", "--json"],
    [*K, "--ctx", "128k", "--objective", "usd-per-hour", "--json"],
    [*K, "--ctx", "32k", "--compare-api", "--json"],
    [*K, "--ctx", "32k", "--compare-api"],
    [*K, "--ctx", "128k", "--explore-splits", "--json"],
    [*K, "--ctx", "128k", "--concurrency", "16", "--max-tpot-ms", "80", "--json"],
    [*K, "--ctx", "128k", "--weights", "hub", "--risk-adjusted", "--explain"],
    [*DS, "--ctx", "128k", "--json"],
    [*DS, "--ctx", "128k", "--dcp", "8", "--json"],
    [*DS, "--ctx", "128k", "--explain"],
    [*DS, "--quant", "fp8", "--ctx", "32k", "--layout", "dp-ep", "--gpu", "H100", "--top", "0"],
    [*L8, "--quant", "bf16", "--ctx", "32k", "--json"],
    [*L8, "--quant", "bf16", "--ctx", "32k", "--top", "0", "--json"],
    [*L8, "--quant", "q4_k_m", "--ctx", "8k", "--json"],
    [*L70, "--quant", "fp8", "--ctx", "32k", "--cpu-offload-gb", "20", "--json"],
    [
        *L70,
        "--quant",
        "int4",
        "--ctx",
        "32k",
        "--cloud",
        "aws",
        "--region",
        "us-east-1",
        "--explain",
    ],
    [*L8, "--ctx", "32k", "--gpu", "nonexist"],
    [*K, "--ctx", "128k", "--gpu", "L4", "--json"],
    [*K, "--ctx", "128k", "--gpu", "L4", "--nodes", "1"],
    [*K, "--ctx", "128k", "--gpu", "L4", "--nodes", "1", "--json"],
    [*K, "--ctx", "128k", "--max-tpot-ms", "1", "--show-rejected"],
    [*K, "--ctx", "128k", "--cloud", "aws", "--region", "nowhere-1"],
    [*L8, "--ctx", "32k", "--top", "3", "--market", "on-demand", "--all-zones"],
    [*L8, "--ctx", "32k", "--top", "2", "--cloud", "vast", "--json"],
    [*K, "--ctx", "128k", "--top", "1", "--explain", "--compare-api"],
    ["--model", "Qwen/Qwen3-235B-A22B", "--ctx", "32k", "--json"],
    ["--model", "openai/gpt-oss-120b", "--ctx", "128k", "--json"],
    [*K, "--ctx", "128k", "--gpu-memory-utilization", "nan"],
    [*K, "--ctx", "128k", "--cpu-offload-gb", "20", "--json"],  # offload on the EP path
    ["--model", "Qwen/Qwen3-235B-A22B-FP8", "--ctx", "32k", "--dcp", "2", "--json"],  # DCP on TP+EP
]
PLAN_CASES: list[dict[str, Any]] = [
    {"model": "moonshotai/Kimi-K2-Thinking", "quant": "int4", "ctx": 131072},
    {
        "model": "moonshotai/Kimi-K2-Thinking",
        "quant": "int4",
        "ctx": 131072,
        "top": 0,
        "risk_adjusted": True,
    },
    {"model": "meta-llama/Llama-3.1-8B", "quant": "bf16", "ctx": 32768},
    {"model": "deepseek-ai/DeepSeek-V3", "quant": "auto", "ctx": 131072, "min_availability": 0.95},
    {
        "model": "deepseek-ai/DeepSeek-V3",
        "quant": "auto",
        "ctx": 131072,
        "market": "on-demand",
        "top": 3,
    },
]


def cli_outputs(out: Path) -> None:
    from typer.testing import CliRunner

    from provisioner.cli.main import app

    runner = CliRunner()
    env = {"NO_COLOR": "1", "COLUMNS": "80"}
    for i, args in enumerate(CLI_CASES):
        res = runner.invoke(app, ["quote", *args], env=env)
        text = f"exit={res.exit_code}\n{res.stdout}"
        if res.stderr:
            text += f"\nSTDERR\n{res.stderr}"
        if res.exception is not None and not isinstance(res.exception, SystemExit):
            text += f"\nEXCEPTION {res.exception!r}"
        write(out / f"cli{i:02d}.txt", text, " ".join(args))


def plan_outputs(out: Path) -> None:
    from pricing.offers import load_offers
    from provisioner.core.catalog import resolve_model
    from provisioner.core.planner import plan_quote, result_to_json
    from provisioner.core.quant import resolve_quant
    from provisioner.core.request import make_request

    offers = load_offers()
    for i, fields in enumerate(PLAN_CASES):
        req = make_request(**fields)
        spec = resolve_model(req.model)
        scheme = resolve_quant(req.quant, spec)
        for rejected in (False, True):
            res = plan_quote(req, spec, scheme, offers, collect_rejected=rejected)
            doc = result_to_json(res)
            doc["best_by_market"] = {m: p.to_json() for m, p in res.best_by_market.items()}
            doc["layout_alternatives"] = [p.to_json() for p in res.layout_alternatives]
            name = f"plan{i}{'_rejected' if rejected else ''}.json"
            write(out / name, json.dumps(doc, indent=1), f"plan_quote {fields}")


def write(path: Path, text: str, label: str) -> None:
    path.write_text(text, encoding="utf-8")
    print(f"{hashlib.sha256(text.encode()).hexdigest()[:12]}  {path.name:22} {label[:90]}")


def main(
    argv: list[str] | None = None,
    cli_cases: list[list[str]] | None = None,
    plan_cases: list[dict[str, Any]] | None = None,
    doc: str | None = __doc__,
) -> int:
    """Write the outputs of `cli_cases` and `plan_cases` (default: this module's) to OUT."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    ap.add_argument("out", type=Path, help="an empty or new folder for the outputs")
    args = ap.parse_args(argv)
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        ap.error(f"{out} is not empty: outputs of two runs must not mix")
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NO_COLOR", "1")
    if cli_cases is not None:
        CLI_CASES[:] = cli_cases
    if plan_cases is not None:
        PLAN_CASES[:] = plan_cases
    cli_outputs(out)
    plan_outputs(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
