"""The throughput model's fit and its out-of-sample check (run through accuracy.py --fit).

fit():          coordinate descent over the factors, CALIBRATION rows only, in two stages:
                the current engine's factors on current-engine runs, then each older engine
                era's factors (perf_data "eras") on that era's runs with the first held.
cross_check():  every calibration source predicted by a fit made without it (leave-one-source-
                out): the calibration set's own out-of-sample errors. They and the held-out
                errors set the printed bands (accuracy.set_bands).
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from collections import defaultdict
from typing import Any

from accuracy import DATA, _era, _gpu, _spec, not_modelled, predict, table

from provisioner.core.perf_data import CURRENT_ERA, arch_class, gpu_family

# what the fit may move, and over which grid (coordinate descent, a few passes)
SOFT_GRID: dict[str, list[float]] = {
    "mem_eff": [0.5 + 0.05 * i for i in range(11)],
    "compute_eff": [0.2 + 0.05 * i for i in range(17)],
    "moe_eff": [0.4 + 0.05 * i for i in range(13)],
    "moe_tok_half": [0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
    "moe_tok_ns": [0.0, 5.0, 10.0, 20.0, 40.0],  # permute/unpermute of a hidden vector: ~10 ns
    "step_overhead_ms": [0.25 * i for i in range(17)],
    "seq_overhead_us": [0.0, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0],
    "multinode_pp_ms": [2.5 * i for i in range(13)],
    "lowbit_mem_eff": [0.5 + 0.05 * i for i in range(11)],
    "attn_prefill_eff": [0.2 + 0.1 * i for i in range(9)],
}
# the idle TTFT's per-layer floor, per engine with TTFT runs (API server, scheduler, launches)
TTFT_LAYER_GRID = [0.0, 100.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0]
LAYER_GRID = [10.0 * i for i in range(1, 31)]
PREFILL_GRID = [0.2 + 0.05 * i for i in range(22)]  # x the measured GEMM fraction: <= 0.81
# where the fit starts (physically plausible guesses), so a refit does not depend on the last one
START = {
    "mem_eff": 0.85,
    "compute_eff": 0.6,
    "prefill_eff": {"mla_moe": 0.6, "moe": 0.6, "dense": 0.6},
    "moe_eff": 0.8,
    "moe_tok_half": 8.0,
    "moe_tok_ns": 10.0,
    "step_overhead_ms": 1.0,
    "seq_overhead_us": 20.0,
    "multinode_pp_ms": 20.0,
    "lowbit_mem_eff": 1.0,
    "attn_prefill_eff": 0.6,
    "prefill_layer_us": {"vllm": 0.0},
    "layer_us": {"mla_moe": 100.0, "moe": 70.0, "dense": 40.0},
}
SCALE_GRID = [0.5 + 0.05 * i for i in range(21)]
ENGINE_GRID = [0.6 + 0.05 * i for i in range(21)]
MIN_FAMILY_RUNS = 2  # a GPU family's own factors need at least this many calibration runs
# an older engine's factors (perf_data "eras"): per-step and per-sequence CPU time, kernels
ERA_GRID: dict[str, list[float]] = {
    "step_ms": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0],
    "seq_us": [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0],
    "kernel": [0.5 + 0.05 * i for i in range(11)],  # an older engine's kernels: never faster
}
# an older engine's prefill kernels, per architecture class where it has that class's runs
# (vLLM V0's MLA prefill predates FlashMLA and the chunked-MLA kernels)
ERA_PREFILL_GRID = [0.25 + 0.05 * i for i in range(16)]
ERA_MOE_GRID = [0.5 + 0.05 * i for i in range(11)]


def _loss(refs: list[dict[str, Any]], overrides: dict[str, Any], data: dict[str, Any]) -> float:
    """Mean |log error| per source (each source weighs the same) + a penalty beyond 1.5x.
    (Weighing sources of one or two runs less was tried: leave-one-source-out on the calibration
    set got worse, mean |log error| 0.296 -> 0.316.)"""
    by_source: dict[str, list[float]] = defaultdict(list)
    penalty = 0.0
    for r in refs:
        x = abs(math.log(predict(r, overrides, data)[0] / float(r["value"])))
        by_source[r.get("source_id", "")].append(x)
        penalty += max(0.0, x - math.log(1.5))
    return statistics.mean(statistics.mean(v) for v in by_source.values()) + penalty / len(refs)


Knob = tuple[tuple[str, ...], list[float]]


def _knobs(
    data: dict[str, Any], refs: list[dict[str, Any]], overrides: dict[str, Any]
) -> list[Knob]:
    """(path, grid) for every factor of the CURRENT engine its calibration rows can inform."""
    knobs: list[tuple[tuple[str, ...], list[float]]] = [
        (("software", k), g) for k, g in SOFT_GRID.items()
    ]
    ttft: dict[str, int] = defaultdict(int)
    for r in refs:
        ttft[r["engine"]] += r["metric"] == "ttft_ms"
    engines_ttft = sorted({"vllm"} | {e for e, n in ttft.items() if n >= MIN_FAMILY_RUNS})
    knobs += [(("software", "prefill_layer_us", e), TTFT_LAYER_GRID) for e in engines_ttft]
    for a in ("mla_moe", "moe", "dense"):
        knobs += [
            (("software", "layer_us", a), LAYER_GRID),
            (("software", "prefill_eff", a), PREFILL_GRID),
        ]
    knobs += [(("families", f, "scale"), SCALE_GRID) for f in _families(refs, overrides)]
    # a family's MoE multiplier only where it has its own MoE runs (Hopper is the reference)
    moe_fams = _families([r for r in refs if _is_moe(r)], overrides)
    knobs += [(("families", f, "moe_scale"), SCALE_GRID) for f in moe_fams]
    engines = {r["engine"] for r in refs} - {"vllm"}
    knobs += [(("engines", e, "_all"), ENGINE_GRID) for e in sorted(engines)]
    for e in sorted(engines):  # per architecture class only where the engine has 2+ classes
        archs = {
            arch_class(_spec(r["model"], r.get("arch_config"))) for r in refs if r["engine"] == e
        }
        if len(archs) > 1:
            knobs += [(("engines", e, a), ENGINE_GRID) for a in sorted(archs)]
    # and per class on a GPU family other than the reference where it has 2+ such runs (MLA and
    # MoE kernels are per vendor)
    pairs: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in refs:
        fam = gpu_family(_gpu(r["gpu"], overrides))
        if r["engine"] != "vllm" and fam != "hopper":
            pairs[(r["engine"], arch_class(_spec(r["model"], r.get("arch_config"))), fam)] += 1
    knobs += [
        (("engines", e, f"{a}@{f}"), ENGINE_GRID)
        for (e, a, f), n in sorted(pairs.items())
        if n >= MIN_FAMILY_RUNS
    ]
    return knobs


def _era_knobs(
    data: dict[str, Any], refs: list[dict[str, Any]], overrides: dict[str, Any], done: set[str]
) -> list[Knob]:
    """(path, grid) for the older engines' factors, from their own runs only: each era's CPU
    terms and kernels, its fused-MoE kernels per GPU family, and the scale of a GPU family
    whose only runs are older-engine runs (`done`: families the current runs already fit)."""
    knobs: list[tuple[tuple[str, ...], list[float]]] = []
    for era in sorted({_era(r, data) for r in refs}):
        rows = [r for r in refs if _era(r, data) == era]
        knobs += [(("eras", era, k), g) for k, g in ERA_GRID.items()]
        archs = sorted({arch_class(_spec(r["model"], r.get("arch_config"))) for r in rows})
        knobs += [(("eras", era, "prefill", a), ERA_PREFILL_GRID) for a in archs]
        moe = _families([r for r in rows if _is_moe(r)], overrides, reference=True)
        knobs += [(("eras", era, "moe_kernel", f), ERA_MOE_GRID) for f in moe]
    fams = [f for f in _families(refs, overrides) if f not in done]
    knobs += [(("families", f, "scale"), SCALE_GRID) for f in fams]
    return knobs


def _families(
    refs: list[dict[str, Any]], overrides: dict[str, Any], reference: bool = False
) -> list[str]:
    """GPU families with at least MIN_FAMILY_RUNS runs, without the reference (Hopper) unless
    asked: a family factor is not fitted to a single run (its family stays 'not calibrated')."""
    n: dict[str, int] = defaultdict(int)
    for r in refs:
        n[gpu_family(_gpu(r["gpu"], overrides))] += 1
    return sorted(f for f, k in n.items() if k >= MIN_FAMILY_RUNS and (reference or f != "hopper"))


def _is_moe(ref: dict[str, Any]) -> bool:
    return _spec(ref["model"], ref.get("arch_config")).moe is not None


def _set(data: dict[str, Any], path: tuple[str, ...], value: float) -> None:
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = round(value, 3)


def fit(refs: list[dict[str, Any]], overrides: dict[str, Any], passes: int = 5) -> dict[str, Any]:
    """Two stages, calibration rows only. 1: the current engine's factors on current-engine
    runs. 2: with those held, each older engine era's factors on that era's runs (and the scale
    of a GPU family that only older-engine runs cover)."""
    data = json.loads(DATA.read_text())
    data["software"].update(copy.deepcopy(START))
    for row in data["families"].values():
        row["scale"] = 1.0
        row["moe_scale"] = 1.0
    data["engines"] = {e: 1.0 if e == "vllm" else {"_all": 1.0} for e in data["engines"]}
    refs = [r for r in refs if not not_modelled(r)]
    current = [r for r in refs if _era(r, data) == CURRENT_ERA]
    older = [r for r in refs if _era(r, data) != CURRENT_ERA]
    for era, row in data["eras"].items():  # neutral start; an era with no runs stays neutral
        row.update(step_ms=0.0, seq_us=0.0, kernel=1.0, prefill={}, moe_kernel={"_all": 1.0})
        row["calibrated"] = any(_era(r, data) == era for r in older)
    data = _descend(data, current, overrides, _knobs(data, current, overrides), passes)
    done = {"hopper", *_families(current, overrides)}
    if older:
        knobs = _era_knobs(data, older, overrides, done)
        data = _descend(data, older, overrides, knobs, passes)
    fams = done | set(_families(older, overrides))
    for fam, row in data["families"].items():
        row["calibrated"] = fam in fams
    return data


def _descend(
    data: dict[str, Any],
    refs: list[dict[str, Any]],
    overrides: dict[str, Any],
    knobs: list[Knob],
    passes: int,
) -> dict[str, Any]:
    """Coordinate descent of _loss over `knobs` (path, grid), a few passes."""
    best = _loss(refs, overrides, data)
    for _ in range(passes):
        start = best
        for path, grid in knobs:
            for value in grid:
                trial = copy.deepcopy(data)
                _set(trial, path, value)
                loss = _loss(refs, overrides, trial)
                if loss < best - 1e-9:
                    best, data = loss, trial
        if best >= start - 1e-9:  # a pass that moved nothing: the next ones would not either
            break
    return data


def cross_check(
    refs: list[dict[str, Any]], overrides: dict[str, Any], passes: int = 4
) -> list[dict[str, Any]]:
    """Each calibration source's runs as predicted by a fit made WITHOUT that source."""
    refs = [r for r in refs if not not_modelled(r)]
    out: list[dict[str, Any]] = []
    for source in sorted({r["source_id"] for r in refs}):
        data = fit([r for r in refs if r["source_id"] != source], overrides, passes)
        rows, _ = table([r for r in refs if r["source_id"] == source], overrides, data)
        out += rows
    return out
