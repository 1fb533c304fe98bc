"""The engine-era terms of the throughput model (perf_data.engine_era, perf.estimate(era=...)).

Expected values are hand derivations from the term's definition: an older engine adds its CPU
time per schedule and per sequence, both / --num-scheduler-steps, and scales the efficiencies by
its kernel factors; prov's own plans run a current engine and carry none of it.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
from bench_modules import load_benchmark

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


def _llama8b(
    data: dict | None,
    era: str,
    steps: int = 1,
    conc: int = 4,
    isl: int = 128,
    osl: int = 256,
    budget: int = 8192,
):
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
        workload=Workload(isl, osl, conc),
        era=era,
        scheduler_steps=steps,
        max_num_batched_tokens=budget,
        data=data,
    )


def test_older_engine_adds_its_cpu_time_per_schedule_and_per_sequence() -> None:
    data = _data_with_era(step_ms=3.0, seq_us=100.0, kernel=1.0)
    now = _llama8b(data, CURRENT_ERA)
    old = _llama8b(data, "vllm-v0")
    # 3 ms per schedule + 4 sequences x 100 us = 3.4 ms more per decode step
    assert old.step_s - now.step_s == pytest.approx(3.4e-3, rel=1e-9)
    # multi-step scheduling (--num-scheduler-steps 10) schedules and prepares the inputs of all
    # sequences once per 10 steps (output processing runs async beside the GPU, vLLM v0.6.0
    # blog): (3 + 4 x 0.1) / 10 = 0.34 ms
    multi = _llama8b(data, "vllm-v0", steps=10)
    assert multi.step_s - now.step_s == pytest.approx(0.34e-3, rel=1e-9)


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
    # the check set (collected as calibration, not fitted) is kept apart from held-out too
    cal += json.loads((BENCH / "throughput_check.json").read_text())["refs"]
    held = json.loads((BENCH / "throughput_heldout.json").read_text())["refs"]
    held += json.loads((BENCH / "throughput_heldout_aic.json").read_text())["refs"]
    cal_locs = set().union(*(_locators(r["source"]) for r in cal))
    held_locs = set().union(*(_locators(r["source"]) for r in held))
    assert cal_locs and held_locs
    assert not cal_locs & held_locs


def _llama8b_long(budget: int, conc: int = 8, data: dict | None = None):
    return _llama8b(data, CURRENT_ERA, conc=conc, isl=20000, osl=2000, budget=budget)


def test_a_prefill_chunk_hides_only_in_its_own_mixed_step() -> None:
    # 8 requests of 20,000 prompt tokens, budget 8,192: a cycle carries 8 x 20,000 prompt
    # tokens in chunks of 8,192 - 8 + 1 = 8,185, i.e. 19.5 mixed steps of its 2,000 steps. Only
    # those steps' memory-bound slack (memory - compute of the step) hides prefill, and a
    # request's own prefill never hides in its own decode: x 7/8.
    est = _llama8b_long(8192)
    chunk_steps = 8 * 20000 / (8192 - 8 + 1)
    slack = chunk_steps * (est.stage.memory_s - est.stage.compute_s) * 7 / 8
    assert est.prefill_hidden == pytest.approx(min(1.0, slack / (8 * est.prefill_s)), rel=1e-6)
    assert est.prefill_hidden < 0.2  # most of a 20K-token prefill adds to the cycle
    # a 512-token budget (vLLM V0's chunked default) spreads it over 16x more steps
    small = _llama8b_long(512)
    assert small.prefill_hidden > 5 * est.prefill_hidden


def test_an_idle_ttft_pays_each_layer_s_eager_launch_floor() -> None:
    data = copy.deepcopy(calibration_data())
    data["software"]["prefill_layer_us"] = 0.0
    base = _llama8b_long(8192, conc=1, data=data)
    data["software"]["prefill_layer_us"] = 500.0
    slow = _llama8b_long(8192, conc=1, data=data)
    # 32 layers x 500 us, divided by the family scale (Hopper 1.0): 16 ms more, TPOT unchanged
    assert slow.ttft_s - base.ttft_s == pytest.approx(32 * 500e-6, rel=1e-9)
    assert slow.tpot_s == base.tpot_s


def test_benchmark_rows_get_their_engine_s_default_scheduling() -> None:
    # vllm/engine/arg_utils.py and vllm/config.py at v0.6.3, v0.6.4, v0.6.6, v0.7.3, v0.8.4: V0
    # chunks prefills by itself only for max_model_len > 32768 (from 0.7 not for MLA, not on
    # ROCm), 512 tokens a step up to 0.6.4, 2048 from 0.6.6; SGLang runs a prefill batch alone
    # unless --enable-mixed-chunk; V1 always chunks at `vllm serve`'s budget for the GPU.
    acc = load_benchmark("accuracy")
    gpus = gpu_specs()
    h100, mi300x, a100 = gpus["H100-SXM"], gpus["MI300X"], gpus["A100-80GB-SXM"]
    llama = resolve_model("meta-llama/Llama-3.1-405B")  # 131,072 positions
    r1 = resolve_model("deepseek-ai/DeepSeek-R1")  # MLA

    def sched(version: str, spec=llama, gpu=h100, era="vllm-v0", **kw: object):
        return acc.scheduling({"engine": "vllm", "engine_version": version, **kw}, spec, gpu, era)

    assert sched("0.6.3") == (True, 512)
    assert sched("0.6.4.post1") == (True, 512)
    assert sched("0.6.6") == (True, 2048)
    assert sched("v0.7.3+rocm", gpu=h100) == (True, 2048)  # a "v" prefix is still 0.7.3
    assert sched("0.6.3", max_model_len=8192) == (False, 8192)  # short context: no chunking
    assert sched("0.7.3", spec=r1)[0] is False  # MLA on V0 from 0.7
    assert sched("0.7.3", gpu=mi300x)[0] is False  # ROCm from 0.7
    assert sched("0.8.4 V0 fallback", gpu=mi300x)[0] is False
    assert sched("0.6.3", gpu=mi300x)[0] is True  # 0.6 did not yet exclude ROCm
    assert sched("0.6.3", num_scheduler_steps=10) == (True, 131072)
    sglang = {"engine": "sglang", "engine_version": "0.4.3"}
    assert acc.scheduling(sglang, r1, h100, "sglang-0.4")[0] is False
    assert sched("0.11.0", spec=r1, era=CURRENT_ERA) == (True, 8192)
    assert sched("0.11.0", gpu=a100, era=CURRENT_ERA) == (True, 2048)  # A100: the small default


def test_a_median_itl_is_the_plain_decode_step_a_mean_one_spreads_the_prefills() -> None:
    acc = load_benchmark("accuracy")
    row = {
        "id": "t-itl", "engine": "vllm", "engine_version": "0.11.0",
        "model": "meta-llama/Llama-3.1-8B", "quant": "bf16", "kv_dtype": "auto",
        "gpu": "H100-SXM", "tp": 1, "pp": 1,
        "isl": 1000, "osl": 500, "concurrency": 16, "metric": "itl_ms", "stat": "median",
    }  # fmt: skip
    # 16 x 1,000 prompt tokens at 8,192 a step: ~2 mixed steps of 500: the median gap is a step
    value, est = acc.predict(row, {})
    assert value == pytest.approx(est.step_s * 1000) and est.step_s < est.tpot_s
    assert acc.predict({**row, "stat": "mean"}, {})[0] == pytest.approx(est.tpot_s * 1000)
    # prefill-bound (16 x 20,000 prompt tokens, 10 out): mixed steps are the majority
    long = {**row, "id": "t-itl-long", "isl": 20000, "osl": 10}
    value, est = acc.predict(long, {})
    assert value == pytest.approx(est.tpot_s * 1000)
