"""The throughput model's factor lookup and the printed bands' thin-data rule."""

from __future__ import annotations

import copy
import math

from bench_modules import load_benchmark

from provisioner.core.hardware import gpu_specs
from provisioner.core.perf_data import calibration_data, calibration_for


def test_an_engine_factor_can_be_its_own_on_one_gpu_family() -> None:
    # SGLang's MLA kernels are FlashInfer/FlashMLA on CUDA and AITER/Triton on ROCm: a factor
    # "mla_moe@cdna3" applies on MI300X only; elsewhere the class's factor, else the engine's
    data = copy.deepcopy(calibration_data())
    data["engines"]["sglang"] = {"_all": 1.1, "mla_moe": 1.5, "mla_moe@cdna3": 0.6}
    for fam in data["families"].values():
        fam.update(scale=1.0, moe_scale=1.0)
    specs = gpu_specs()
    hw, sw = data["hardware"], data["software"]

    def gemm(gpu: str, arch: str) -> float:
        return calibration_for(specs[gpu], "sglang", data, arch).gemm_eff

    assert math.isclose(gemm("MI300X", "mla_moe"), hw["cdna3"]["gemm"] * sw["compute_eff"] * 0.6)
    assert math.isclose(gemm("H200-SXM", "mla_moe"), hw["hopper"]["gemm"] * sw["compute_eff"] * 1.5)
    assert math.isclose(gemm("MI300X", "dense"), hw["cdna3"]["gemm"] * sw["compute_eff"] * 1.1)


def test_a_band_from_one_source_says_thin_data() -> None:
    rep = load_benchmark("accuracy_report")
    # nine runs all within 10%: from one source, the floor of a thin band (50%), flagged thin
    logs = [math.log(1.1)] * 9
    rel, thin = rep._band(logs, 1)
    assert math.isclose(rel, 0.5) and thin
    # the same errors from two sources: the 90% quantile, rounded up to 5%, floored at 15%
    rel, thin = rep._band(logs, 2)
    assert math.isclose(rel, 0.15) and not thin
    # fewer than five runs is thin whatever their sources
    assert rep._band(logs[:4], 3)[1]
    # ten runs, two 33% off: the 90% quantile (9th of 10) is 33%, rounded up to 5% -> 35%
    rel, thin = rep._band([math.log(1.1)] * 8 + [math.log(1.33)] * 2, 2)
    assert math.isclose(rel, 0.35) and not thin
    rows = [
        {"engine": "vllm", "family": "ada", "regime": "latency", "source": "a", "ratio": 1.1},
        {"engine": "vllm", "family": "ada", "regime": "latency", "source": "a", "ratio": 0.9},
        {"engine": "trtllm", "family": "ada", "regime": "latency", "source": "b", "ratio": 1.0},
    ]
    # a TensorRT-LLM run never widens nor vouches for a vLLM/SGLang band
    assert rep._band_cells(rows)[("ada", "latency")][1] == {"a"}


def test_the_idle_ttft_floor_is_the_engine_s_own_not_scaled_by_its_kernels() -> None:
    # the per-layer TTFT floor is API server, scheduling and eager launches: SGLang's and vLLM's
    # differ, and an engine's faster MLA kernels (factor 1.6) do not shorten it
    data = copy.deepcopy(calibration_data())
    data["software"]["prefill_layer_us"] = {"vllm": 300.0, "sglang": 1500.0}
    data["engines"]["sglang"] = {"_all": 1.6}
    data["families"]["hopper"]["scale"] = 1.0
    data["families"]["ampere"]["scale"] = 0.8
    specs = gpu_specs()

    def floor(gpu: str, engine: str) -> float:
        return calibration_for(specs[gpu], engine, data, "mla_moe").prefill_layer_us

    assert math.isclose(floor("H200-SXM", "sglang"), 1500.0)
    assert math.isclose(floor("H200-SXM", "vllm"), 300.0)
    assert math.isclose(floor("H200-SXM", "trtllm"), 300.0)  # no TTFT runs of its own: vLLM's
    assert math.isclose(floor("A100-80GB-SXM", "vllm"), 300.0 / 0.8)  # the family's speed
