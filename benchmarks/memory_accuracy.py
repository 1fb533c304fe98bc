"""Memory model accuracy: prov's per-GPU weights and KV cache against public vLLM start-up logs.

    python benchmarks/memory_accuracy.py           # one row per case, then the summary
    python benchmarks/memory_accuracy.py --json    # the same as JSON

Cases (each with its source): benchmarks/memory_logs/cases.json and SOURCES.md. How prov runs
each case (model config, GPU, fit/check split, why a case is skipped): memory_logs/prov.json.
KV error is on "GPU KV cache size" tokens when logged, else on "Available KV cache memory".
The calibration constants (provisioner/core/memory.py Calibration) were derived on the `fit` cases
only; the summary reports the `check` cases apart. Targets (issue 12), vLLM >= 0.10: KV median
|error| <= 3% and worst <= 10%, weights median <= 1%, every logged start-up failure "does not fit".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from provisioner.core.catalog import resolve_model
from provisioner.core.fit import FitRequest, FitResult, evaluate
from provisioner.core.memory import GIB
from provisioner.core.quant import resolve_quant
from provisioner.core.vllm_rules import parse_version, rules_for, with_paths
from provisioner.errors import ProvError

LOGS = Path(__file__).with_name("memory_logs")


def load() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    cases = json.loads((LOGS / "cases.json").read_text())
    ann = json.loads((LOGS / "prov.json").read_text())["cases"]
    return cases, ann


def _version(case: dict[str, Any], a: dict[str, Any] | None = None) -> str | None:
    # An annotated (inferred) version wins: a source build logs setuptools-scm's '0.1.devN'.
    v = (a or {}).get("version") or case.get("vllm_version")
    if not v:
        return None
    try:
        parse_version(v)
    except ProvError:
        return None
    return str(v)


def request_for(case: dict[str, Any], a: dict[str, Any]) -> FitRequest:
    """The `prov fit` inputs that reproduce one logged start-up."""
    model = a["model"]
    spec = resolve_model(str(LOGS / model) if model.startswith("configs/") else model)
    f = case["flags"]
    scheme = resolve_quant(a.get("quant", "auto"), spec)  # e.g. an fp8 re-quantized checkpoint
    version = _version(case, a)
    kv = 1 if str(f.get("kv_cache_dtype") or "auto").startswith("fp8") else 2
    return FitRequest(
        spec=spec,
        scheme=scheme,
        # Kernel paths are inputs read off the case: the sampler when the log names it ("Using
        # FlashInfer for top-p & top-k sampling") or the flags set it, the install when the
        # source states it (llm-d: the vllm/vllm-openai image), else pip (prov.json _about).
        rules=with_paths(
            rules_for(version) if version else rules_for(),
            a.get("install", "pip"),
            a.get("sampler", "auto"),
            a.get("mxfp4_backend", "auto"),
        ),
        ctx=int(f["max_model_len"] or spec.max_position_embeddings),  # vLLM default: derived
        gpu=a.get("gpu"),
        device_gib=a.get("device_gib"),
        tp=int(f.get("tensor_parallel_size") or 1),
        pp=int(f.get("pipeline_parallel_size") or 1),
        dcp=int(f.get("decode_context_parallel_size") or 1),
        expert_parallel=bool(f.get("enable_expert_parallel")),
        kv_bytes=kv,
        gpu_memory_utilization=f.get("gpu_memory_utilization"),
        max_num_seqs=f.get("max_num_seqs"),
        max_num_batched_tokens=f.get("max_num_batched_tokens"),
        enforce_eager=bool(f.get("enforce_eager")),
        usage=a.get("usage", "serve"),
    )


def _err(pred: float, logged: float | None) -> float | None:
    if logged is None or logged <= 0:
        return None
    return (pred - logged) / logged * 100


def row(case: dict[str, Any], a: dict[str, Any], res: FitResult) -> dict[str, Any]:
    m = res.memory
    lg = case["logged"]
    failed = not str(case["outcome"]).startswith("started")
    out: dict[str, Any] = {
        "id": case["id"],
        "set": a.get("set", "check"),
        "version": None if a.get("version") else case.get("vllm_version"),
        "version_inferred": a.get("version"),
        "model": case["model"].split("/")[-1],
        "gpu": a.get("gpu") or case["gpu"],
        "shape": f"TP{res.request.tp}xPP{res.request.pp}",
        "weights_only": bool(a.get("weights_only")),
        "logged_failure": failed,
        "predicted_fits": res.fits,
        "weights_err_pct": None,
        "kv_err_pct": None,
        "kv_basis": None,
    }
    if m is None:
        return out
    w = max(s.weights for s in m.stages) / GIB
    out["weights_gib"] = round(w, 2)
    out["weights_err_pct"] = _err(w, lg.get("model_weights_gib"))
    if not failed and not a.get("weights_only"):
        if lg.get("kv_cache_tokens"):
            out["kv_basis"] = "tokens"
            out["kv_err_pct"] = _err(m.kv_cache_tokens, lg["kv_cache_tokens"])
            out["kv_tokens"] = m.kv_cache_tokens
        elif lg.get("available_kv_cache_gib"):
            out["kv_basis"] = "GiB"
            out["kv_err_pct"] = _err(max(0.0, m.worst.kv_pool) / GIB, lg["available_kv_cache_gib"])
    return out


def evaluate_all() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    cases, ann = load()
    rows, skipped = [], []
    for case in cases:
        a = ann.get(case["id"])
        if a is None or a.get("skip"):
            skipped.append({"id": case["id"], "why": (a or {}).get("skip", "not annotated")})
            continue
        rows.append(row(case, a, evaluate(request_for(case, a))))
    return rows, skipped


def _stats(vals: list[float]) -> dict[str, Any]:
    if not vals:
        return {"n": 0}
    absv = [abs(v) for v in vals]
    return {"n": len(vals), "median_abs_pct": statistics.median(absv), "worst_abs_pct": max(absv)}


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def pick(
        key: str, subset: str | None = None, v10: bool = True, inferred: bool = False
    ) -> list[float]:
        out = []
        for r in rows:
            if subset and r["set"] != subset:
                continue
            if v10 and not (r["version"] or (inferred and r["version_inferred"])):
                continue
            if r[key] is not None:
                out.append(r[key])
        return out

    def groups(key: str) -> dict[str, dict[str, Any]]:
        """Check-set KV error by version ('~' = inferred) or by GPU."""
        out: dict[str, list[float]] = {}
        for r in rows:
            if r["set"] != "check" or r["kv_err_pct"] is None:
                continue
            if key == "gpu":
                label = r["gpu"]
            else:
                label = r["version"] or (
                    f"~{r['version_inferred']}" if r["version_inferred"] else "?"
                )
            out.setdefault(label, []).append(r["kv_err_pct"])
        return {k: _stats(v) for k, v in sorted(out.items())}

    failures = [r for r in rows if r["logged_failure"] and not r["weights_only"]]
    return {
        "kv_check_with_inferred_versions": _stats(pick("kv_err_pct", "check", inferred=True)),
        "weights_check": _stats(pick("weights_err_pct", "check", v10=False)),
        "kv_check_by_version": groups("version"),
        "kv_check_by_gpu": groups("gpu"),
        "kv_all": _stats(pick("kv_err_pct")),
        "kv_check": _stats(pick("kv_err_pct", "check")),
        "kv_fit": _stats(pick("kv_err_pct", "fit")),
        "kv_with_inferred_versions": _stats(pick("kv_err_pct", inferred=True)),
        "weights_all": _stats(pick("weights_err_pct", v10=False)),
        "failures_logged": len(failures),
        "failures_predicted": sum(1 for r in failures if not r["predicted_fits"]),
    }


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:+.1f}%"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    rows, skipped = evaluate_all()
    s = summary(rows)
    if args.json:
        print(json.dumps({"rows": rows, "skipped": skipped, "summary": s}, indent=2))
        return 0
    print(
        f"{'id':4} {'set':5} {'vLLM':8} {'model':30} {'gpu':9} {'shape':7} {'weights':>8} "
        f"{'KV':>7} {'basis':6} verdict"
    )
    for r in rows:
        version = r["version"] or (f"~{r['version_inferred']}" if r["version_inferred"] else "?")
        verdict = ("ok" if r["predicted_fits"] != r["logged_failure"] else "WRONG") + (
            " (failure)" if r["logged_failure"] else ""
        )
        if r["weights_only"]:
            verdict = "weights only"
        print(
            f"{r['id']:4} {r['set']:5} {version[:8]:8} {r['model'][:30]:30} "
            f"{r['gpu'][:9]:9} {r['shape']:7} {_fmt(r['weights_err_pct']):>8} "
            f"{_fmt(r['kv_err_pct']):>7} {r['kv_basis'] or '':6} {verdict}"
        )
    print(f"\nskipped {len(skipped)}: " + "; ".join(f"{x['id']} {x['why']}" for x in skipped))
    for key, label in (
        ("kv_all", "KV, vLLM >= 0.10, all"),
        ("kv_check", "KV, check set"),
        ("kv_fit", "KV, fit set"),
        ("kv_with_inferred_versions", "KV, + inferred versions"),
        ("kv_check_with_inferred_versions", "KV, check + inferred"),
        ("weights_all", "weights, all"),
        ("weights_check", "weights, check set"),
    ):
        st = s[key]
        if st["n"]:
            print(
                f"{label:24} n={st['n']:2}  median |err| {st['median_abs_pct']:.1f}%  "
                f"worst {st['worst_abs_pct']:.1f}%"
            )
    for key, label in (("kv_check_by_version", "vLLM"), ("kv_check_by_gpu", "GPU")):
        print(
            f"KV, check set by {label}: "
            + "; ".join(
                f"{k} n={v['n']} med {v['median_abs_pct']:.1f}% worst {v['worst_abs_pct']:.1f}%"
                for k, v in s[key].items()
            )
        )
    print(
        f"logged start-up failures predicted 'does not fit': {s['failures_predicted']}/"
        f"{s['failures_logged']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
