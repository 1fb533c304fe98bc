"""Memory model accuracy: prov's per-GPU weights and KV cache against public vLLM start-up logs.

    python benchmarks/memory_accuracy.py           # one row per case, then the summary
    python benchmarks/memory_accuracy.py --json    # the same as JSON

Cases (each with its source): benchmarks/memory_logs/cases.json and SOURCES.md. How prov runs
each case (model config, GPU, fit/check split, why a case is skipped): memory_logs/prov.json.
KV error is on "GPU KV cache size" tokens when logged, else on "Available KV cache memory".
The calibration constants (provisioner/core/memory.py Calibration) were derived on the `fit` cases
only; the summary reports the `check` cases apart. Targets (issue 12), vLLM >= 0.10: KV median
|error| <= 3% and worst <= 10%, weights median <= 1%, every logged start-up failure "does not fit".

Two paths per case. "As run": the install and sampler each log ran (prov.json: read off the log
or the source, else pip, marked "assumed"). "Image": what `prov fit --vllm-version V` predicts by
default, the official vllm/vllm-openai image `prov deploy` runs, at the log's version. They differ
only on v0.10.0-v0.11.0, where the image ships FlashInfer and vLLM takes its sampler by default;
at the version prov deploys (VLLM_VERSION) both are the same path.
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
from provisioner.core.vllm_rules import VLLM_VERSION, parse_version, rules_for, with_paths
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


def install_basis(a: dict[str, Any]) -> str:
    """How the install a case ran was decided: 'log' (a log line names the sampler path),
    'source' (the source says which install ran) or 'assumed' (pip, nothing says)."""
    if a.get("sampler_basis") == "log":
        return "log"
    return "source" if a.get("install") else "assumed"


def image_path(a: dict[str, Any]) -> dict[str, Any]:
    """The annotation with the official image's default paths (what prov deploys): the install
    becomes 'image', a sampler read off a log goes back to 'auto'; one the user's flags forced
    (VLLM_USE_FLASHINFER_SAMPLER=0) stays, as it would in the image."""
    out = {**a, "install": "image"}
    if a.get("sampler_basis") != "flags":
        out.pop("sampler", None)
    return out


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
        "paths": f"{res.request.rules.sampler}"
        + ("/triton" if res.request.rules.triton_mxfp4_on_hopper else ""),
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
        r = row(case, a, evaluate(request_for(case, a)))
        img = row(case, image_path(a), evaluate(request_for(case, image_path(a))))
        r["install"] = a.get("install", "pip")
        r["install_basis"] = install_basis(a)
        # The log checks the image's prediction only when the log ran that path, or when the
        # other path gives the very same KV figure (a forward pass larger than either sampler).
        same_kv = img["kv_err_pct"] is not None and img["kv_err_pct"] == r["kv_err_pct"]
        r["image_same_path"] = img["paths"] == r["paths"] or same_kv
        r["image_kv_err_pct"] = img["kv_err_pct"]
        r["image_predicted_fits"] = img["predicted_fits"]
        rows.append(r)
    return rows, skipped


def _stats(vals: list[tuple[float, str]]) -> dict[str, Any]:
    if not vals:
        return {"n": 0}
    absv = sorted((abs(v), i) for v, i in vals)
    return {
        "n": len(vals),
        "median_abs_pct": statistics.median(v for v, _ in absv),
        "worst_abs_pct": absv[-1][0],
        "worst_id": absv[-1][1],
    }


def summary(rows: list[dict[str, Any]], kv: str = "kv_err_pct") -> dict[str, Any]:
    """Medians and worst cases per set. kv: 'kv_err_pct' (each log's own install and sampler)
    or 'image_kv_err_pct' (the official image's default paths at the log's version)."""

    def pick(
        key: str, subset: str | None = None, v10: bool = True, inferred: bool = False
    ) -> list[tuple[float, str]]:
        out = []
        for r in rows:
            if subset and r["set"] != subset:
                continue
            if v10 and not (r["version"] or (inferred and r["version_inferred"])):
                continue
            if r[key] is not None and (key != "image_kv_err_pct" or r["image_same_path"]):
                out.append((r[key], r["id"]))
        return out

    def groups(key: str) -> dict[str, dict[str, Any]]:
        """Check-set KV error by version ('~' = inferred) or by GPU."""
        out: dict[str, list[tuple[float, str]]] = {}
        for r in rows:
            if r["set"] != "check" or r[kv] is None:
                continue
            if kv == "image_kv_err_pct" and not r["image_same_path"]:
                continue
            if key == "gpu":
                label = r["gpu"]
            else:
                label = r["version"] or (
                    f"~{r['version_inferred']}" if r["version_inferred"] else "?"
                )
            out.setdefault(label, []).append((r[kv], r["id"]))
        return {k: _stats(v) for k, v in sorted(out.items())}

    fits = "predicted_fits" if kv == "kv_err_pct" else "image_predicted_fits"
    failures = [r for r in rows if r["logged_failure"] and not r["weights_only"]]
    if kv == "image_kv_err_pct":  # a failure checks the image's verdict only on its path
        failures = [r for r in failures if r["image_same_path"]]
    return {
        "kv_check_with_inferred_versions": _stats(pick(kv, "check", inferred=True)),
        "weights_check": _stats(pick("weights_err_pct", "check", v10=False)),
        "kv_check_by_version": groups("version"),
        "kv_check_by_gpu": groups("gpu"),
        "kv_all": _stats(pick(kv)),
        "kv_check": _stats(pick(kv, "check")),
        "kv_fit": _stats(pick(kv, "fit")),
        "kv_with_inferred_versions": _stats(pick(kv, inferred=True)),
        "weights_all": _stats(pick("weights_err_pct", v10=False)),
        "failures_logged": len(failures),
        "failures_predicted": sum(1 for r in failures if not r[fits]),
        "started_predicted_not_fitting": sorted(
            r["id"] for r in rows if not r["logged_failure"] and r[fits] is False
        ),
        "image_unchecked": {  # the image's path differs from what the log ran
            r["id"]: {"kv_err_pct": r["image_kv_err_pct"], "fits": r["image_predicted_fits"]}
            for r in rows
            if not r["image_same_path"] and not r["weights_only"]
        },
    }


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:+.1f}%"


def _print_summary(s: dict[str, Any], title: str) -> None:
    print(f"\n{title}")
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
                f"  {label:24} n={st['n']:2}  median |err| {st['median_abs_pct']:.1f}%  "
                f"worst {st['worst_abs_pct']:.1f}% ({st['worst_id']})"
            )
    for key, label in (("kv_check_by_version", "vLLM"), ("kv_check_by_gpu", "GPU")):
        print(
            f"  KV, check set by {label}: "
            + "; ".join(
                f"{k} n={v['n']} med {v['median_abs_pct']:.1f}% worst {v['worst_abs_pct']:.1f}%"
                for k, v in s[key].items()
            )
        )
    print(
        f"  logged start-up failures predicted 'does not fit': {s['failures_predicted']}/"
        f"{s['failures_logged']}; started but predicted 'does not fit': "
        + (", ".join(s["started_predicted_not_fitting"]) or "none")
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args(argv)
    rows, skipped = evaluate_all()
    s = summary(rows)
    s_image = summary(rows, "image_kv_err_pct")
    if args.json:
        out = {"rows": rows, "skipped": skipped, "summary": s, "summary_image": s_image}
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"{'id':4} {'set':5} {'vLLM':8} {'model':24} {'gpu':9} {'shape':7} {'weights':>7} "
        f"{'as run: install, path':28} {'KV':>7} {'image KV':>8} verdict"
    )
    for r in rows:
        version = r["version"] or (f"~{r['version_inferred']}" if r["version_inferred"] else "?")
        verdict = ("ok" if r["predicted_fits"] != r["logged_failure"] else "WRONG") + (
            " (failure)" if r["logged_failure"] else ""
        )
        if r["image_predicted_fits"] != r["predicted_fits"]:
            verdict += ", image: " + ("fits" if r["image_predicted_fits"] else "does not fit")
        if r["weights_only"]:
            verdict = "weights only"
        install = f"{r['install']} ({r['install_basis']}), {r['paths']}"
        image = "same" if r["image_same_path"] else _fmt(r["image_kv_err_pct"]) or "other"
        image = "" if r["weights_only"] else image
        print(
            f"{r['id']:4} {r['set']:5} {version[:8]:8} {r['model'][:24]:24} "
            f"{r['gpu'][:9]:9} {r['shape']:7} {_fmt(r['weights_err_pct']):>7} {install:28} "
            f"{_fmt(r['kv_err_pct']):>7} {image:>8} {verdict}"
        )
    print(f"\nskipped {len(skipped)}: " + "; ".join(f"{x['id']} {x['why']}" for x in skipped))
    _print_summary(s, "As each log ran (install/sampler read off the log or source, else pip):")
    _print_summary(
        s_image,
        "Image path (what `prov fit`/`quote` predict by default), on the logs that ran it:",
    )
    print(
        "  image path differs from the run, so no log checks it: "
        + "; ".join(
            f"{k} {_fmt(v['kv_err_pct']) or ('fits' if v['fits'] else 'does not fit')}"
            for k, v in s_image["image_unchecked"].items()
        )
        + f"\n  (v0.10.0-v0.11.0 only; at v{VLLM_VERSION}, what prov deploys, image = pip)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
