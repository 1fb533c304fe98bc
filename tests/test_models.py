"""Parameter counts and KV layout from config.json, against published or hand-derived values."""

from __future__ import annotations

import json

import pytest

from provisioner.core.catalog import catalog_ids, resolve_model
from provisioner.core.models import ModelSpec, parse_config
from provisioner.errors import ConfigError, UnknownModelError

# Published totals from shared/data/models/PARAMS.md (model cards via the vLLM recipes metadata).
# Kimi: the Hugging Face page's 1.03T (the "1T" headline is rounded).
PUBLISHED_TOTAL = {
    "moonshotai/Kimi-K2-Instruct": 1.03e12,
    "moonshotai/Kimi-K2-Thinking": 1.03e12,
    "moonshotai/Kimi-K2.5": 1.03e12,
    "deepseek-ai/DeepSeek-V3": 671e9,
    "deepseek-ai/DeepSeek-R1": 671e9,
    "Qwen/Qwen3-235B-A22B": 235e9,
    "Qwen/Qwen3-235B-A22B-FP8": 235e9,
    "Qwen/Qwen3-Coder-480B-A35B-Instruct": 480e9,
    "meta-llama/Llama-3.1-405B": 405e9,
    "meta-llama/Llama-3.1-70B": 70e9,
    "meta-llama/Llama-3.1-8B": 8e9,
    "meta-llama/Llama-4-Maverick-17B-128E-Instruct": 400e9,
    "meta-llama/Llama-4-Scout-17B-16E-Instruct": 109e9,
    "mistralai/Mixtral-8x22B-v0.1": 141e9,
    "openai/gpt-oss-120b": 117e9,
    "openai/gpt-oss-20b": 21e9,
    "zai-org/GLM-4.5": 355e9,
}


def test_every_catalog_model_has_a_published_total() -> None:
    assert set(catalog_ids()) == set(PUBLISHED_TOTAL)


@pytest.mark.parametrize("model_id", sorted(PUBLISHED_TOTAL))
def test_param_count_within_1pct_of_published(model_id: str) -> None:
    spec = resolve_model(model_id)
    published = PUBLISHED_TOTAL[model_id]
    assert abs(spec.params_total - published) / published < 0.01, spec.params_total


def test_kimi_k2_total_matches_hand_derivation(kimi_thinking: ModelSpec) -> None:
    # PARAMS.md: routed experts 384 x 3 x 7168 x 2048 x 60 MoE layers = 1014.7B, rest 11.7B.
    assert kimi_thinking.params_routed_experts == 384 * 3 * 7168 * 2048 * 60
    assert kimi_thinking.params_total == pytest.approx(1026.4e9, rel=0.005)


def test_active_params_of_moe_models() -> None:
    # Kimi: 11.7B always-on + 8/384 of 1014.7B routed = 32.9B (PARAMS.md ~32.9B)
    assert resolve_model("kimi-k2-instruct").params_active == pytest.approx(32.9e9, rel=0.01)
    # DeepSeek-V3: 37.6B derived in PARAMS.md (37B published, which excludes embeddings)
    assert resolve_model("DeepSeek-V3").params_active == pytest.approx(37.6e9, rel=0.01)
    # Dense models: everything is active
    dense = resolve_model("llama-3.1-8b")
    assert dense.params_active == dense.params_total


def test_llama_8b_exact_count() -> None:
    # 32 layers x (2*4096*4096 + 2*4096*1024 + 3*4096*14336 + 2*4096) + 2*128256*4096 + 4096
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    expected = 32 * layer + 2 * 128256 * 4096 + 4096
    assert resolve_model("meta-llama/Llama-3.1-8B").params_total == expected


def test_mla_kv_bytes_per_token_not_split_by_tp(kimi_thinking: ModelSpec) -> None:
    # (kv_lora_rank 512 + qk_rope_head_dim 64) x 61 layers x 2 bytes
    for tp in (1, 2, 8, 16):
        assert kimi_thinking.kv_bytes_per_token(2, tp) == 70_272
    assert kimi_thinking.kv_bytes_per_token(1, 8) == 35_136  # fp8 KV halves it


def test_gqa_kv_bytes_per_token_split_over_tp(llama70b: ModelSpec) -> None:
    # 2 (K,V) x 80 layers x 8 KV heads x 128 head_dim x 2 bytes
    assert llama70b.kv_bytes_per_token(2, 1) == 327_680
    assert llama70b.kv_bytes_per_token(2, 8) == 327_680 // 8
    # TP16 > 8 KV heads: each rank keeps one (replicated) head, so no further split
    assert llama70b.kv_bytes_per_token(2, 16) == 327_680 // 8


def test_sliding_window_layers_of_gpt_oss() -> None:
    spec = resolve_model("openai/gpt-oss-120b")
    assert spec.layer_windows.count(128) == 18
    assert spec.layer_windows.count(None) == 18


def test_llama4_chunked_attention_every_fourth_layer_global() -> None:
    spec = resolve_model("meta-llama/Llama-4-Scout-17B-16E-Instruct")
    assert [i for i, w in enumerate(spec.layer_windows) if w is None][:3] == [3, 7, 11]


def test_aliases_and_case() -> None:
    assert resolve_model("KIMI-K2-THINKING").id == "moonshotai/Kimi-K2-Thinking"
    assert resolve_model("moonshotai/kimi-k2-thinking").id == "moonshotai/Kimi-K2-Thinking"


def test_unknown_model_suggests_close_matches() -> None:
    with pytest.raises(UnknownModelError, match="Kimi-K2-Thinking"):
        resolve_model("kimi-k2-thinkin")


def test_config_path_and_folder(tmp_path) -> None:
    cfg = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 512,
        "vocab_size": 1000,
        "max_position_embeddings": 4096,
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    by_file = resolve_model(str(path))
    by_folder = resolve_model(str(tmp_path))
    # 2 x (2*256*256 + 2*256*128 + 3*256*512 + 2*256) + 2*1000*256 + 256
    expected = 2 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 512 + 2 * 256) + 2 * 1000 * 256 + 256
    assert by_file.params_total == by_folder.params_total == expected


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"model_type": "llama", "hidden_size": 64}, "num_hidden_layers"),
        ({"model_type": "llama", "hidden_size": "big", "num_hidden_layers": 2}, "hidden_size"),
        ({"model_type": "bert"}, "unsupported model_type"),
        ([1, 2], "JSON object"),
    ],
)
def test_partial_or_malformed_config_is_a_config_error(bad: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(bad, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"num_experts_per_tok": 300}, "experts per token"),
        ({"moe_intermediate_size": 0}, "positive"),
        ({"num_hidden_layers": 10**9}, "beyond what any model has"),
        ({"decoder_sparse_step": "two"}, "integer"),
        ({"num_experts": 1.5}, "must be a number|integer"),
    ],
)
def test_impossible_moe_values_are_config_errors(patch: dict, message: str) -> None:
    base = {
        "model_type": "qwen3_moe",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 100,
        "max_position_embeddings": 128,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
    }
    parse_config(base, "tiny")  # the base itself is fine
    with pytest.raises(ConfigError, match=message):
        parse_config({**base, **patch}, "tiny")
