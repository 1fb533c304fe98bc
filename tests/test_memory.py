"""vLLM's per-GPU memory accounting, checked against hand arithmetic and vLLM's own logs."""

from __future__ import annotations

import pytest

from provisioner.core.catalog import resolve_model
from provisioner.core.memory import GIB, MemorySettings, shape_memory
from provisioner.core.models import ModelSpec
from provisioner.core.quant import resolve_quant
from provisioner.core.weight_placement import pp_partition

S = MemorySettings()


def test_pp_partition_gives_the_remainder_to_earlier_stages() -> None:
    # vLLM get_pp_indices: 61 // 2 = 30 each, the extra layer goes to partitions[-2]
    assert pp_partition(61, 2) == [(0, 31), (31, 61)]
    assert pp_partition(61, 3) == [(0, 20), (20, 41), (41, 61)]
    assert pp_partition(80, 4) == [(0, 20), (20, 40), (40, 60), (60, 80)]


def test_llama3_8b_weights_match_vllm_log() -> None:
    # vLLM logs "Loading model weights took 14.96 GiB" for Llama-3-8B bf16 on one H100 and
    # 7.48 GiB per GPU at TP2 (PR #10511, docs/vllm-rules.md section 6).
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    q = resolve_quant("bf16", spec)
    one = shape_memory(spec, q, 1, 1, 80, 8192, S)
    two = shape_memory(spec, q, 2, 1, 80, 8192, S)
    assert one.stages[0].weights / GIB == pytest.approx(14.96, abs=0.01)
    assert two.stages[0].weights / GIB == pytest.approx(7.48, abs=0.01)


def test_kimi_int4_does_not_fit_8x_h100(kimi_thinking: ModelSpec) -> None:
    # 594 GB / 8 + replicated MLA down-projections ~ 76 GB > 0.9 x 80 GiB = 77.3 GB
    q = resolve_quant("int4", kimi_thinking)
    m = shape_memory(kimi_thinking, q, 8, 1, 80, 131072, S)
    assert not m.weights_fit
    assert m.max_concurrent == 0


def test_kimi_int4_8x_h200_weights_and_kv(kimi_thinking: ModelSpec) -> None:
    q = resolve_quant("int4", kimi_thinking)
    m = shape_memory(kimi_thinking, q, 8, 1, 141, 131072, S)
    st = m.stages[0]
    # replicated on every rank: MLA q_a/kv_a (7168 x 2112 x 61) + routers (384 x 7168 x 60
    # + biases) + norms, all bf16 ~ 2.2 GB; the other ~592 GB split 8 ways ~ 74.0 GB
    replicated = (7168 * 2112 * 61 + (384 * 7168 + 384) * 60) * 2
    assert st.weights == pytest.approx((594.2e9 - replicated) / 8 + replicated, rel=0.005)
    # one 128K request: 131072 tokens x 70,272 B = 9.21 GB on every rank (MLA is not split)
    assert m.request_bytes_per_stage[0] == 131072 * 70_272
    assert m.max_concurrent == int(st.kv_pool // (131072 * 70_272))
    assert m.max_concurrent >= 1


def test_pp_splits_mla_kv_by_layers(kimi_thinking: ModelSpec) -> None:
    q = resolve_quant("int4", kimi_thinking)
    m = shape_memory(kimi_thinking, q, 8, 2, 80, 131072, S)
    # stage 0 holds 31 layers, stage 1 holds 30: 1152 B per token per layer
    assert m.request_bytes_per_stage == (131072 * 1152 * 31, 131072 * 1152 * 30)
    assert m.max_concurrent >= 1  # 16 x H100 (TP8 x PP2) runs it


def test_dcp_shards_mla_tokens(kimi_thinking: ModelSpec) -> None:
    q = resolve_quant("int4", kimi_thinking)
    plain = shape_memory(kimi_thinking, q, 8, 1, 141, 131072, S)
    dcp = shape_memory(kimi_thinking, q, 8, 1, 141, 131072, S, dcp=8)
    assert dcp.request_bytes_per_stage[0] == plain.request_bytes_per_stage[0] / 8
    assert dcp.kv_cache_tokens >= 7 * plain.kv_cache_tokens


def test_fp8_kv_halves_the_request(kimi_thinking: ModelSpec) -> None:
    q = resolve_quant("int4", kimi_thinking)
    bf16 = shape_memory(kimi_thinking, q, 8, 1, 141, 131072, S)
    fp8 = shape_memory(kimi_thinking, q, 8, 1, 141, 131072, MemorySettings(kv_bytes=1))
    assert fp8.request_bytes_per_stage[0] * 2 == bf16.request_bytes_per_stage[0]


def test_gqa_request_split_over_tp(llama70b: ModelSpec) -> None:
    q = resolve_quant("bf16", llama70b)
    m = shape_memory(llama70b, q, 8, 1, 80, 32768, S)
    assert m.request_bytes_per_stage[0] == 32768 * 327_680 / 8


def test_sliding_window_caps_the_request() -> None:
    spec = resolve_model("openai/gpt-oss-120b")
    q = resolve_quant("auto", spec)
    m = shape_memory(spec, q, 1, 1, 80, 131072, S)
    per_layer = 2 * 8 * 64 * 2  # K+V x 8 KV heads x 64 dims x 2 bytes
    # 18 full layers hold all 131072 tokens; 18 window layers hold
    # (ceil(min(127 + 8192, 131072) / 16) + 1) x 16 = 8336 tokens (vLLM's sliding-window spec)
    expected = 18 * 131072 * per_layer + 18 * 8336 * per_layer
    assert m.request_bytes_per_stage[0] == expected


def test_utilization_bounds_the_pool(kimi_thinking: ModelSpec) -> None:
    q = resolve_quant("int4", kimi_thinking)
    hi = shape_memory(kimi_thinking, q, 8, 1, 141, 131072, S)
    lo = shape_memory(kimi_thinking, q, 8, 1, 141, 131072, MemorySettings(0.8))
    assert hi.stages[0].kv_pool - lo.stages[0].kv_pool == pytest.approx(0.1 * 141 * GIB)


def test_nvls_buffers_only_on_hopper_nvswitch(llama70b: ModelSpec) -> None:
    """NCCL's NVLS (NVLink SHARP) buffers are the bulk of the 4.5 GiB measured on an H100 node
    (vLLM PR #25359); NVLink SHARP arrives with Hopper's third-generation NVSwitch, so an A100
    (sm 80) NVSwitch node allocates ring/tree buffers only, as PCIe does (0.3 GiB). The
    difference sits outside the budget (vLLM >= 0.11): 4.5 - 0.3 = 4.2 GiB."""
    q = resolve_quant("int4", llama70b)
    hopper = shape_memory(llama70b, q, 8, 1, 39.4, 32768, MemorySettings(sm=90))
    ampere = shape_memory(llama70b, q, 8, 1, 39.4, 32768, MemorySettings(sm=80))
    pcie = shape_memory(llama70b, q, 8, 1, 39.4, 32768, MemorySettings(sm=90), nvlink=False)
    gap = (hopper.stages[0].outside - ampere.stages[0].outside) / GIB
    assert gap == pytest.approx(4.5 - 0.3)
    assert ampere.stages[0].outside == pcie.stages[0].outside
    # 8 x A100-40GB (39.4 GiB, 3.94 GiB of headroom at 0.9) now starts: context + 0.3 fits
    assert ampere.stages[0].outside / GIB < 0.1 * 39.4 < hopper.stages[0].outside / GIB
