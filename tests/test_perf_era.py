"""The engine-era terms of the throughput model (perf_data.engine_era, perf.estimate(era=...)).

Expected values are hand derivations from the term's definition: an older engine adds its CPU
time per schedule / --num-scheduler-steps plus its time per sequence per step, and scales the
efficiencies by its kernel factor; prov's own plans run a current engine and carry none of it.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from pricing.offers_csv import COLUMNS, parse_offers
from provisioner.core.catalog import resolve_model
from provisioner.core.explain import era_line
from provisioner.core.hardware import gpu_specs
from provisioner.core.perf import Workload, estimate
from provisioner.core.perf_data import CURRENT_ERA, calibration_data, calibration_for, engine_era
from provisioner.core.planner import plan_quote
from provisioner.core.quant import resolve_quant
from provisioner.core.request import make_request

BENCH = Path(__file__).parents[1] / "benchmarks"


@pytest.mark.parametrize(
    ("engine", "version", "era"),
    [
        ("vllm", "0.6.3.post2.dev308+gb489fc3c", "vllm-v0"),  # dstack's 405B runs
        ("vllm", "0.7.3", "vllm-v0"),
        ("vllm", "0.8.3 (rocm/vllm:rocm6.3.1_instinct, V0)", "vllm-v0"),  # ROCm build on V0
        ("vllm", "0.8.5", CURRENT_ERA),  # V1 is the default from 0.8
        ("vllm", "v0.19.1", CURRENT_ERA),
        ("vllm", "main at the PR (June 2026, V1 engine)", CURRENT_ERA),
        ("vllm", None, CURRENT_ERA),  # no version stated: treated as current
        ("sglang", "0.4.3.post2 (lmsysorg/sglang:latest)", "sglang-0.4"),
        ("sglang", "0.3.0", "sglang-0.4"),
        ("sglang", "0.5.6", CURRENT_ERA),
        ("trtllm", "0.17.post1.dev", CURRENT_ERA),  # no era defined for TensorRT-LLM
    ],
)
def test_engine_era_from_the_version_a_run_records(engine: str, version: str, era: str) -> None:
    assert engine_era(engine, version) == era


def _data_with_era(step_ms: float, seq_us: float, kernel: float) -> dict:
    data = copy.deepcopy(calibration_data())
    data["eras"]["vllm-v0"].update(
        step_ms=step_ms, seq_us=seq_us, kernel=kernel, moe_kernel={"_all": 1.0}
    )
    return data


def _llama8b(data: dict, era: str, steps: int = 1, conc: int = 4):
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    return estimate(
        spec,
        resolve_quant("bf16", spec),
        gpu_specs()["H100-SXM"],
        tp=1,
        pp=1,
        gpus_per_node=8,
        interconnect="nvlink",
        fabric="efa",
        workload=Workload(128, 256, conc),
        era=era,
        scheduler_steps=steps,
        data=data,
    )


def test_older_engine_adds_its_cpu_time_per_schedule_and_per_sequence() -> None:
    data = _data_with_era(step_ms=3.0, seq_us=100.0, kernel=1.0)
    now = _llama8b(data, CURRENT_ERA)
    old = _llama8b(data, "vllm-v0")
    # 3 ms per schedule + 4 sequences x 100 us = 3.4 ms more per decode step
    assert old.step_s - now.step_s == pytest.approx(3.4e-3, rel=1e-9)
    # multi-step scheduling (--num-scheduler-steps 10) schedules once per 10 steps; output
    # processing still runs for every sequence at every step: 0.3 + 0.4 ms
    multi = _llama8b(data, "vllm-v0", steps=10)
    assert multi.step_s - now.step_s == pytest.approx(0.7e-3, rel=1e-9)


def test_older_engine_kernels_scale_the_efficiencies() -> None:
    data = _data_with_era(step_ms=0.0, seq_us=0.0, kernel=0.5)
    gpu = gpu_specs()["H100-SXM"]
    now = calibration_for(gpu, "vllm", data, "dense")
    old = calibration_for(gpu, "vllm", data, "dense", "vllm-v0")
    assert old.hbm_eff == pytest.approx(now.hbm_eff * 0.5)
    assert old.gemm_eff == pytest.approx(now.gemm_eff * 0.5)
    assert old.layer_us == pytest.approx(now.layer_us / 0.5)  # slower kernels, longer floor
    # the era's MoE kernels per GPU family apply to MoE models on that family only
    data["eras"]["vllm-v0"]["moe_kernel"] = {"_all": 1.0, "cdna3": 0.6}
    mi300x = gpu_specs()["MI300X"]
    moe = calibration_for(mi300x, "vllm", data, "moe", "vllm-v0")
    dense = calibration_for(mi300x, "vllm", data, "dense", "vllm-v0")
    assert moe.era_kernel == pytest.approx(0.5 * 0.6) and dense.era_kernel == pytest.approx(0.5)
    assert calibration_for(gpu, "vllm", data, "moe", "vllm-v0").era_kernel == pytest.approx(0.5)


def test_plans_run_a_current_engine_and_say_so() -> None:
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    row = "aws,us-east-1,use1-az1,p5.48xlarge,H100-SXM,8,80,192,2048,nvlink,efa,98.32,,,"
    offers = list(parse_offers("\n".join([",".join(COLUMNS), row])))
    req = make_request(model=spec.id, ctx=8192, concurrency=8, top=1)
    result = plan_quote(req, spec, resolve_quant("bf16", spec), offers)
    assert result.best is not None and result.best.perf is not None
    cal = result.best.perf.calibration
    assert cal is not None and cal.era == CURRENT_ERA
    assert (cal.era_step_ms, cal.era_seq_us, cal.era_kernel) == (0.0, 0.0, 1.0)
    assert "current" in era_line(cal) and len(era_line(cal)) <= 80


def test_fitted_era_factors_exist_only_where_calibration_runs_of_that_era_do() -> None:
    cal = json.loads((BENCH / "throughput_refs.json").read_text())["refs"]
    data = calibration_data()
    eras = {engine_era(r["engine"], r.get("engine_version"), data) for r in cal}
    for name, row in data["eras"].items():
        assert row["calibrated"] == (name in eras)
        if not row["calibrated"]:  # neutral: an era with no calibration run changes nothing
            assert (row["step_ms"], row["seq_us"], row["kernel"]) == (0.0, 0.0, 1.0)


def _locators(source: str) -> set[str]:
    """Repositories, pull requests/issues and web pages a source names."""
    source = re.sub(
        r"(github\.com/[\w.-]+/[\w.-]+)\s+(?:pull request|PR|issue) #(\d+)", r"\1/pull/\2", source
    )
    pat = r"(github\.com/[\w.-]+/[\w.-]+(?:/pull/\d+)?|[\w-]+\.(?:com|ai|io|org)/[\w./-]+)"
    return {m.lower().rstrip("./") for m in re.findall(pat, source)}


def test_no_repository_page_or_pull_request_is_in_both_sets() -> None:
    """Stronger than the source ids: the same document cannot enter both sets under two names."""
    cal = json.loads((BENCH / "throughput_refs.json").read_text())["refs"]
    held = json.loads((BENCH / "throughput_heldout.json").read_text())["refs"]
    cal_locs = set().union(*(_locators(r["source"]) for r in cal))
    held_locs = set().union(*(_locators(r["source"]) for r in held))
    assert cal_locs and held_locs
    assert not cal_locs & held_locs
