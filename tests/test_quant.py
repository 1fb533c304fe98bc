"""Bits per weight and what stays unquantized, per scheme and per checkpoint."""

from __future__ import annotations

import pytest

from provisioner.core.catalog import resolve_model
from provisioner.core.memory import weights_total_bytes
from provisioner.core.models import ModelSpec
from provisioner.core.quant import GGUF_BITS, kv_bytes, resolve_quant
from provisioner.errors import UsageError


def test_kimi_thinking_native_int4_g32(kimi_thinking: ModelSpec) -> None:
    q = resolve_quant("int4", kimi_thinking)
    assert q.native and q.group_size == 32
    assert q.bits == 4 + 16 / 32  # one bf16 scale per 32 int4 weights, symmetric (no zero point)
    assert resolve_quant("auto", kimi_thinking).label == q.label


def test_kimi_thinking_keeps_attention_shared_dense_and_head_in_bf16(
    kimi_thinking: ModelSpec,
) -> None:
    q = resolve_quant("int4", kimi_thinking)
    quantized = {g.kind for g in kimi_thinking.groups if q.is_quantized(g)}
    assert quantized == {"experts"}


def test_kimi_thinking_int4_weights_594_gb(kimi_thinking: ModelSpec) -> None:
    # PARAMS.md: 1014.7B routed x 4.5 bits + 11.7B bf16 others = ~594 GB
    total = weights_total_bytes(kimi_thinking, resolve_quant("int4", kimi_thinking))
    assert total == pytest.approx(594e9, rel=0.01)


def test_generic_int4_is_awq_group_128_and_skips_embeddings() -> None:
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    q = resolve_quant("int4", spec)
    assert not q.native
    assert q.bits == pytest.approx(4 + 20 / 128)  # fp16 scale + 4-bit zero per 128
    kinds = {g.kind for g in spec.groups if q.is_quantized(g)}
    assert kinds == {"attn", "dense_mlp"}


def test_deepseek_native_fp8_block_128() -> None:
    spec = resolve_model("deepseek-ai/DeepSeek-V3")
    q = resolve_quant("auto", spec)
    assert q.name == "fp8" and q.native
    assert q.bits == pytest.approx(8 + 32 / (128 * 128))
    # the router (MoE gate) is never quantized in vLLM
    assert not any(q.is_quantized(g) for g in spec.groups if g.kind == "router")


def test_gpt_oss_mxfp4_only_experts() -> None:
    spec = resolve_model("openai/gpt-oss-120b")
    q = resolve_quant("auto", spec)
    assert (q.name, q.bits) == ("mxfp4", 4.25)  # 4-bit + one e8m0 scale per 32
    assert {g.kind for g in spec.groups if q.is_quantized(g)} == {"experts"}


def test_qwen_fp8_checkpoint_leaves_routers_and_norms() -> None:
    spec = resolve_model("Qwen/Qwen3-235B-A22B-FP8")
    q = resolve_quant("fp8", spec)
    assert q.native
    assert {g.kind for g in spec.groups if q.is_quantized(g)} == {"attn", "experts"}


@pytest.mark.parametrize("name, bits", [("nvfp4", 4.5), ("mxfp4", 4.25), ("bf16", 16.0)])
def test_generic_bits(name: str, bits: float) -> None:
    assert resolve_quant(name, resolve_model("llama-3.1-70b")).bits == bits


def test_gguf_is_memory_only_llama_cpp() -> None:
    spec = resolve_model("llama-3.1-70b")
    for name in GGUF_BITS:
        q = resolve_quant(name, spec)
        assert q.engine == "llama.cpp"
        assert any("llama.cpp" in n for n in q.notes)
    assert resolve_quant("q8_0", spec).bits == 8.5  # 32 int8 + one fp16 scale


def test_bf16_of_an_int4_checkpoint_says_so(kimi_thinking: ModelSpec) -> None:
    q = resolve_quant("bf16", kimi_thinking)
    assert any("published one is int4" in n for n in q.notes)


def test_unknown_quant_lists_the_allowed() -> None:
    with pytest.raises(UsageError, match="int4"):
        resolve_quant("int5", resolve_model("llama-3.1-8b"))


def test_kv_dtype(kimi_thinking: ModelSpec) -> None:
    assert kv_bytes("auto", kimi_thinking) == 2
    assert kv_bytes("fp8", kimi_thinking) == 1
    with pytest.raises(UsageError):
        kv_bytes("int4", kimi_thinking)


def test_gpt_oss_mxfp4_padding_follows_the_kernel_path() -> None:
    from provisioner.core.quant import expert_padding
    from provisioner.core.vllm_rules import rules_for

    spec = resolve_model("openai/gpt-oss-120b")  # hidden 2880, expert width 2880
    q = resolve_quant("auto", spec)
    old, new = rules_for("0.10.1"), rules_for("0.14.1")
    # Marlin (Ampere/Ada, and Hopper before triton): width -> 2944 (x128), hidden -> 3072 (x256)
    assert expert_padding(spec, q, 1, 80, new) == pytest.approx(3072 * 2944 / 2880**2)
    assert expert_padding(spec, q, 1, 90, old) == pytest.approx(3072 * 2944 / 2880**2)
    # Hopper triton: hidden -> 3072 only; Blackwell FlashInfer: both -> 3072
    assert expert_padding(spec, q, 1, 90, new) == pytest.approx(3072 / 2880)
    assert expert_padding(spec, q, 1, 100, new) == pytest.approx(3072**2 / 2880**2)
    assert expert_padding(spec, resolve_quant("bf16", spec), 1, 90, new) == 1.0


@pytest.mark.parametrize(
    "qc, message",
    [
        ({"quant_method": "fp8", "weight_block_size": [0, 0]}, "weight_block_size"),
        ({"quant_method": "awq", "bits": "x"}, "'bits'"),
        ({"quant_method": "compressed-tensors", "config_groups": "x"}, "config_groups"),
        ({"quant_method": "fp8", "ignore": 5}, "ignore list"),
        ({"quant_method": "awq", "modules_to_not_convert": ["re:(("]}, "pattern"),
    ],
)
def test_malformed_quantization_config_is_a_config_error(qc: dict, message: str) -> None:
    import json
    from pathlib import Path

    from provisioner.core.models import parse_config
    from provisioner.errors import ConfigError

    path = Path(__file__).parents[1] / "provisioner/data/models/meta-llama__Llama-3.1-8B.json"
    cfg = {**json.loads(path.read_text()), "quantization_config": qc}
    spec = parse_config(cfg, "broken")
    with pytest.raises(ConfigError, match=message):
        resolve_quant("auto", spec)


def test_meta_fp8_405b_keeps_attention_and_end_layers_in_bf16() -> None:
    # Meta's FP8 405B (fbgemm_fp8): the Llama 3 paper (arXiv 2407.21783, sec. 6.2) quantizes the
    # FFN layers only, and not in the first and last layers; vLLM issue #6746 logs "Loading model
    # weights took 57.7520 GB" (GiB) per GPU at TP8 for meta-llama/Meta-Llama-3.1-405B-Instruct-FP8.
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks/models/meta-llama__Llama-3.1-405B-FP8.json"
    spec = resolve_model(str(path))
    q = resolve_quant("auto", spec)
    assert (q.name, q.native) == ("fp8", True)
    fp8 = {(g.kind, g.layer) for g in spec.groups if q.is_quantized(g)}
    assert {k for k, _ in fp8} == {"dense_mlp"}
    assert {layer for _, layer in fp8} == set(range(1, 125))
    per_gpu_gib = sum(q.group_bytes(g) / (1 if g.tp == "replicate" else 8) for g in spec.groups)
    assert abs(per_gpu_gib / 2**30 / 57.752 - 1) < 0.03
