"""Throughput model accuracy: calibration and held-out errors, by group, and the fit.

    python benchmarks/accuracy.py              # both tables (per row + by group), markdown
    python benchmarks/accuracy.py --json       # the same as JSON
    python benchmarks/accuracy.py --fit        # refit on the CALIBRATION set only, set the bands,
                                               # rewrite provisioner/data/perf_calibration.json
    python benchmarks/accuracy.py --bands      # only reset the printed bands (no refit)
    python benchmarks/accuracy.py --out F.md   # also write the markdown to F.md

Calibration set: benchmarks/throughput_refs.json (fitted). Held-out set:
benchmarks/throughput_heldout.json (checked only: the fit never reads it; no source is in both).
Check set: benchmarks/throughput_check.json (collected as calibration, predicted before any fit saw
it, not fitted: fitting it made the out-of-sample errors worse; docs/accuracy.md says why).
Error = predicted / published - 1; "worst" is the largest ratio either way; "in band" = the
published value lies inside the band the plan would print for that GPU family and regime.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from provisioner.core import perf, perf_data
from provisioner.core.catalog import resolve_model
from provisioner.core.hardware import GpuSpec, gpu_specs
from provisioner.core.memory import MemorySettings, concurrent_requests, shape_memory
from provisioner.core.models import ModelSpec
from provisioner.core.perf_data import (
    CURRENT_ERA,
    LATENCY_MAX_BATCH,
    calibration_data,
    engine_era,
    gpu_family,
)
from provisioner.core.quant import QuantScheme, kv_bytes, resolve_quant
from provisioner.core.vllm_rules import batch_defaults, rules_for
from provisioner.errors import ProvError

sys.path.insert(0, str(Path(__file__).parent))  # this folder's report module, then out again
try:
    from accuracy_report import (
        CV,
        cross_rows,
        groups,
        loso_in_band,
        markdown,
        set_bands,
        summary,
    )
finally:
    sys.path.remove(str(Path(__file__).parent))

HERE = Path(__file__).parent
REFS = HERE / "throughput_refs.json"
HELDOUT = HERE / "throughput_heldout.json"
HELDOUT_AIC = HERE / "throughput_heldout_aic.json"  # a second held-out set: one large source
CHECK = HERE / "throughput_check.json"  # collected as calibration, not fitted (see its _about)
MODELS = HERE / "models"
DATA = Path(perf.__file__).parents[1] / "data" / "perf_calibration.json"


# ---- rows ------------------------------------------------------------------------------------


@cache
def _spec(ref_model: str, arch_config: str | None) -> ModelSpec:
    # the checkpoint's own config when benchmarks/models/ has it (its quantization decides the
    # weights: Meta's FP8 405B keeps attention in bf16), else the base architecture's
    exact = MODELS / (ref_model.replace("/", "__") + ".json")
    if exact.is_file():
        return resolve_model(str(exact))
    for cand in (arch_config, ref_model):
        if not cand:
            continue
        local = MODELS / (cand.replace("/", "__") + ".json")
        if local.is_file():
            return resolve_model(str(local))
        try:
            return resolve_model(cand)
        except ProvError:
            continue
    raise LookupError(f"model {ref_model} is not in the catalog nor in benchmarks/models/")


def _gpu(name: str, overrides: dict[str, Any]) -> GpuSpec:
    specs = gpu_specs()
    if name in specs:
        return specs[name]
    o = overrides[name]
    return replace(specs[o["base"]], name=name, intra_node_gbps=o["intra_node_gbps"])


def default_max_num_seqs(engine: str, gpu: GpuSpec, era: str = CURRENT_ERA) -> int:
    """The batch cap of a run that states none: `vllm serve`'s on this GPU (core.vllm_rules.
    batch_defaults: 1024 on >= 70 GiB GPUs other than A100, else 256; SGLang's runs are read
    the same), vLLM V0's (< 0.8) 256 on every GPU (EngineArgs.max_num_seqs), TensorRT-LLM's 2048."""
    if engine == "trtllm":
        return 2048
    if engine == "vllm" and era != CURRENT_ERA:
        return 256
    return batch_defaults(rules_for(), gpu.name, gpu.memory_gb)[1]


def not_modelled(ref: dict[str, Any]) -> str | None:
    if ref.get("pd_disagg"):
        return "prefill/decode disaggregation is not modelled"
    if (ref.get("attn_dp") or 1) > 1:
        return "SGLang data-parallel attention is not modelled"
    if ref["engine"] == "vllm" and re.match(r"0\.[0-5]\.", str(ref.get("engine_version") or "")):
        return "vLLM before 0.6.0 (CPU-bound scheduler, before its 0.6.0 rewrite) is not modelled"
    if ref["quant"] not in {"auto", "bf16", "fp16", "fp8", "int4", "int8", "nvfp4", "mxfp4"}:
        return f"quant {ref['quant']} is not a prov format"
    if ref["metric"] not in METRICS:
        return f"metric {ref['metric']} is not predicted"
    if _variable_lengths(ref) and ref["metric"] not in {"tpot_ms", "itl_ms", "ttft_ms"}:
        return "throughput of a variable-length (ShareGPT) burst: set by its longest requests"
    if ref["metric"] == "ttft_ms" and ref.get("concurrency") != 1:
        return "TTFT under load is queueing; prov predicts the idle-deployment TTFT (concurrency 1)"
    try:
        _spec(ref["model"], ref.get("arch_config"))
    except LookupError as e:
        return str(e)
    except ProvError as e:
        return f"model config: {e}"
    return None


def _variable_lengths(ref: dict[str, Any]) -> bool:
    text = " ".join(str(ref.get(k) or "") for k in ("notes", "assumed", "source")).lower()
    return "sharegpt" in text


def _version(text: str) -> tuple[int, int, int]:
    """(0, 7, 3) from '0.7.3', 'v0.7.3+rocm' or '0.7.4.dev181'; (0, 0, 0) when none is stated."""
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)) if m else (0, 0, 0)


def scheduling(ref: dict[str, Any], spec: ModelSpec, gpu: GpuSpec, era: str) -> tuple[bool, int]:
    """(prefill chunks ride in decode steps?, max_num_batched_tokens) of the run's engine, as
    stated by the row, else the engine's default:
    - SGLang runs a prefill batch as a step of its own unless --enable-mixed-chunk is given;
    - vLLM's V0 engine (< 0.8, and ROCm builds that fall back to V0) turns chunked prefill on by
      itself only for max_model_len > 32768, from 0.7 not for MLA models nor on ROCm; it then
      runs 512 tokens a step up to 0.6.4 and 2048 from 0.6.6 (max(max_model_len, 2048) under
      multi-step); without chunking, prefills run alone (vllm/engine/arg_utils.py and
      vllm/config.py at v0.6.3, v0.6.4, v0.6.6, v0.7.3 and v0.8.4);
    - vLLM's V1 engine always chunks, `vllm serve`'s default budget for the GPU
      (core.vllm_rules.batch_defaults: 8192 on >= 70 GiB GPUs other than A100, else 2048)."""
    stated = ref.get("max_num_batched_tokens")
    if ref["engine"] == "sglang":
        return bool(ref.get("chunked_prefill", False)), int(stated or 8192)
    if ref["engine"] != "vllm":
        return bool(ref.get("chunked_prefill", True)), int(stated or 8192)
    if era == CURRENT_ERA:
        serve, _ = batch_defaults(rules_for(), gpu.name, gpu.memory_gb)
        return bool(ref.get("chunked_prefill", True)), int(stated or serve)
    max_len = int(ref.get("max_model_len") or spec.max_position_embeddings)
    version = _version(str(ref.get("engine_version") or ""))
    rocm = gpu_family(gpu) == "cdna3"
    auto = max_len > 32768 and not (version >= (0, 7, 0) and (spec.mla is not None or rocm))
    chunked = bool(ref.get("chunked_prefill", auto))
    steps = int(ref.get("num_scheduler_steps") or 1)
    if chunked and steps == 1:
        default = 512 if version < (0, 6, 5) else 2048
    else:
        default = max(max_len, 2048)
    return chunked, int(stated or default)


def _one_wave(ref: dict[str, Any], conc: int) -> bool:
    """All requests start together (num_prompts <= concurrency): nobody decodes while the
    prefills run, so chunked prefill has nothing to hide them in."""
    prompts = int(ref.get("num_prompts") or 0)
    return prompts > 0 and prompts / max(1, int(ref.get("dp") or 1)) <= conc * 1.5


def _concurrency(
    ref: dict[str, Any], spec: ModelSpec, gpu: GpuSpec, kvb: int, era: str = CURRENT_ERA
) -> tuple[int, int]:
    """(requests in flight per replica, max_num_seqs): never more than the KV cache holds."""
    mns = int(ref.get("max_num_seqs") or default_max_num_seqs(ref["engine"], gpu, era))
    dp = int(ref.get("dp") or 1)
    if ref.get("concurrency"):
        prompts = math.ceil(int(ref["concurrency"]) / dp)
    else:
        prompts = math.ceil(int(ref.get("num_prompts") or mns) / dp)
    tokens = ref["isl"] + ref["osl"]
    if ref.get("kv_cache_tokens"):  # the engine's startup log states its KV cache: take it
        return min(prompts, mns, max(1, int(ref["kv_cache_tokens"]) // tokens)), mns
    scheme = resolve_quant(ref["quant"], spec)
    settings = MemorySettings(max_num_seqs=mns, kv_bytes=kvb)
    # gpus.csv's "80 GB" HBM parts are 80 GiB devices (81,920 MiB as nvidia-smi reports them)
    mem = shape_memory(spec, scheme, ref["tp"], ref["pp"], gpu.memory_gb, tokens, settings)
    fits = max(1, concurrent_requests(spec, mem, tokens, settings))
    return min(prompts, mns, fits), mns


class _Setup(NamedTuple):
    spec: ModelSpec
    scheme: QuantScheme
    gpu: GpuSpec
    kv_bytes: int
    concurrency: int
    max_num_seqs: int
    era: str
    chunked: bool
    budget: int


_SETUP: dict[tuple[Any, ...], _Setup] = {}
_SETUP_FIELDS = (
    *("id", "model", "arch_config", "quant", "kv_dtype", "gpu", "tp", "pp", "dp", "engine"),
    *("engine_version", "isl", "osl", "concurrency", "num_prompts", "max_num_seqs"),
    *("max_num_batched_tokens", "chunked_prefill", "max_model_len", "num_scheduler_steps"),
    "kv_cache_tokens",
)
_STAGES: dict[tuple[Any, ...], dict[Any, Any]] = {}
METRICS = {"tpot_ms", "itl_ms", "output_tps", "total_tps", "output_tps_per_gpu", "ttft_ms"}


def predict(
    ref: dict[str, Any], overrides: dict[str, Any], data: dict[str, Any] | None = None
) -> tuple[float, perf.PerfEstimate]:
    # a run's setup does not depend on the factors: read once, kept across a fit's trials
    # (keyed by every field it is read from, the GPU's overrides and the eras' versions)
    eras = (data or calibration_data()).get("eras", {})
    key = (
        *(ref.get(k) for k in _SETUP_FIELDS),
        repr(overrides.get(ref["gpu"])),
        tuple((k, row.get("engine"), row.get("before")) for k, row in eras.items()),
    )
    setup = _SETUP.get(key)
    if setup is None:
        spec = _spec(ref["model"], ref.get("arch_config"))
        gpu = _gpu(ref["gpu"], overrides)
        kvb = kv_bytes(ref.get("kv_dtype") or "auto", spec)
        era = _era(ref, data)
        setup = _SETUP[key] = _Setup(
            spec,
            resolve_quant(ref["quant"], spec),
            gpu,
            kvb,
            *_concurrency(ref, spec, gpu, kvb, era),
            era,
            *scheduling(ref, spec, gpu, era),
        )
    spec, scheme, gpu, kvb, conc, mns, era, chunked, budget = setup
    stages = _STAGES.setdefault((ref["model"], ref.get("arch_config"), ref["quant"]), {})
    est = perf.estimate(
        spec,
        scheme,
        gpu,
        tp=ref["tp"],
        pp=ref["pp"],
        gpus_per_node=ref.get("gpus_per_node") or 8,
        interconnect=ref.get("interconnect") or "nvlink",
        fabric=ref.get("fabric") or "infiniband",
        workload=perf.Workload(ref["isl"], ref["osl"], conc),
        kv_bytes=kvb,
        dcp=ref.get("dcp") or 1,
        engine=ref["engine"],
        era=era,
        scheduler_steps=int(ref.get("num_scheduler_steps") or 1),
        max_num_seqs=mns,
        max_num_batched_tokens=budget,
        chunked_prefill=chunked and not _one_wave(ref, conc),
        data=data,
        stage_cache=stages,
    )
    dp = int(ref.get("dp") or 1)
    m = ref["metric"]
    # the median gap between tokens is a plain decode step while prefill (or mixed) steps are
    # the minority of steps; TPOT and a mean ITL spread the prefills over the tokens
    median_itl = m == "itl_ms" and (ref.get("stat") or "median") == "median"
    if median_itl and est.batch * ref["isl"] / budget < est.steps_per_cycle / 2:
        return est.step_s * 1000, est
    if m in {"tpot_ms", "itl_ms"}:
        return est.tpot_s * 1000, est
    if m == "ttft_ms":
        return est.ttft_s * 1000, est
    if m == "total_tps":
        return est.total_tps * dp, est
    if m == "output_tps_per_gpu":
        return est.output_tps / (ref["tp"] * ref["pp"]), est
    return est.output_tps * dp, est


def load(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if not path.is_file():
        return [], {}
    doc = json.loads(path.read_text())
    return doc["refs"], doc.get("gpu_overrides", {})


def table(
    refs: list[dict[str, Any]], overrides: dict[str, Any], data: dict[str, Any] | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, skipped = [], []
    for ref in refs:
        why = not_modelled(ref)
        if why:
            skipped.append({"id": ref["id"], "reason": why})
            continue
        pred, est = predict(ref, overrides, data)
        value = float(ref["value"])
        ratio = pred / value
        lo, hi = est.interval(pred)
        spec = _spec(ref["model"], ref.get("arch_config"))
        rows.append(
            {
                "id": ref["id"],
                "source": ref.get("source_id") or ref.get("source_group") or "",
                "model": ref["model"].split("/")[-1],
                "engine": ref["engine"],
                "gpu": ref["gpu"],
                "family": gpu_family(_gpu(ref["gpu"], overrides)),
                "moe": "MoE" if spec.moe is not None else "dense",
                "regime": "latency" if est.batch <= LATENCY_MAX_BATCH else "throughput",
                "hw": f"{ref['tp'] * ref['pp']}x{ref['gpu']} TP{ref['tp']}xPP{ref['pp']}"
                + (f" DCP{ref['dcp']}" if (ref.get("dcp") or 1) > 1 else "")
                + (f" DP{ref['dp']}" if (ref.get("dp") or 1) > 1 else ""),
                "workload": f"{ref['isl']}/{ref['osl']} c{est.batch}",
                "metric": ref["metric"],
                "published": value,
                "predicted": round(pred, 2),
                "error_pct": round((ratio - 1) * 100, 1),
                "ratio": max(ratio, 1 / ratio),
                "band_pct": round(est.band * 100),
                "thin": bool(est.band_info and est.band_info.thin),
                "in_band": lo <= value <= hi,
                "era": _engine_era(ref),
            }
        )
    return rows, skipped


def _era(ref: dict[str, Any], data: dict[str, Any] | None = None) -> str:
    """The engine era of a run, from the engine version it records (part of its setup)."""
    return engine_era(ref["engine"], ref.get("engine_version"), data)


def _engine_era(ref: dict[str, Any]) -> str:
    """'2024-25 engine' for vLLM's V0 engine (< 0.8) and SGLang < 0.5, from the row's
    engine_version (perf_data.engine_era); 'current engine' otherwise (also when the version
    is not stated). The model reads the same era as an input (its era factors)."""
    return "current engine" if _era(ref) == CURRENT_ERA else "2024-25 engine"


AIC_TITLE = "Held-out 2: aiconfigurator's measured table (one source; not fitted, not in bands)"
CHECK_TITLE = "Check set: session 6's runs (predicted before any fit; not fitted, not in bands)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--fit", action="store_true", help="refit on the calibration set, set bands")
    ap.add_argument("--bands", action="store_true", help="only reset the bands (no refit)")
    ap.add_argument("--out", type=Path, help="also write the markdown to this file")
    args = ap.parse_args(argv)
    cal_refs, cal_over = load(REFS)
    held_refs, held_over = load(HELDOUT)
    overrides = {**held_over, **cal_over}
    if args.fit or args.bands:
        data = json.loads(DATA.read_text())
        if args.fit:
            sys.path.insert(0, str(HERE))
            from accuracy_fit import cross_check, fit

            data = fit(cal_refs, overrides)  # the model's factors: calibration rows only
            cv_rows = cross_check(cal_refs, overrides)  # each source without its own fit
            CV.write_text(json.dumps(cv_rows, indent=1) + "\n")
        rows, _ = table(cal_refs, overrides, data)
        held_rows, _ = table(held_refs, overrides, data)
        # the printed bands: out-of-sample errors only (held-out runs, and calibration runs as
        # predicted by a fit without their source)
        set_bands(data, cross_rows(rows) + held_rows)
        rows, _ = table(cal_refs, overrides, data)  # in band: the bands just set
        held_rows, _ = table(held_refs, overrides, data)
        data["fit"] = {"calibration": summary(rows), "heldout": summary(held_rows)}
        tmp = DATA.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(DATA)
        perf_data.calibration_data.cache_clear()
    cal, cal_skip = table(cal_refs, overrides)
    held, held_skip = table(held_refs, overrides)
    cross = cross_rows(cal)
    loso = loso_in_band(held, cross)
    aic_refs, aic_over = load(HELDOUT_AIC)
    aic, aic_skip = table(aic_refs, {**overrides, **aic_over})
    check_refs, check_over = load(CHECK)
    check, check_skip = table(check_refs, {**overrides, **check_over})
    if args.json:
        doc = {
            "calibration": {"summary": groups(cal), "rows": cal, "skipped": cal_skip},
            "calibration_cross_check": {"summary": groups(cross)},
            "heldout": {
                "summary": groups(held),
                "loso_in_band_pct": loso,
                "rows": held,
                "skipped": held_skip,
            },
            "heldout_aic": {"summary": groups(aic), "rows": aic, "skipped": aic_skip},
            "check": {"summary": groups(check), "rows": check, "skipped": check_skip},
        }
        print(json.dumps(doc, indent=2))
        return 0
    text = "\n\n".join(
        [
            markdown("Calibration (fitted)", cal, cal_skip),
            markdown("Calibration, each source predicted by a fit without it", cross, [], False),
            markdown("Held-out (never fitted)", held, held_skip),
            f"Held-out runs inside a band derived without their own source: {loso}%",
            markdown(AIC_TITLE, aic, aic_skip, False),
            markdown(CHECK_TITLE, check, check_skip, False),
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
