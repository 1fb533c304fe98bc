"""Reading a config.json safely: typed fields, the family table, bounds on absurd values.

Pure. models.parse_config builds the weight inventory on top of these; everything here raises
ConfigError (exit 2) with a one-line message rather than guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisioner.errors import ConfigError


def req(cfg: Mapping[str, Any], key: str, model_id: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise ConfigError(f"config.json of {model_id} has no '{key}', which its family needs")
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"config.json of {model_id}: '{key}' must be a number, got {value!r}")
    if value <= 0:
        raise ConfigError(f"config.json of {model_id}: '{key}' must be positive, got {value!r}")
    if value != int(value):
        raise ConfigError(f"config.json of {model_id}: '{key}' must be an integer, got {value!r}")
    return int(value)


def opt(cfg: Mapping[str, Any], key: str, default: int, model_id: str = "") -> int:
    value = cfg.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ConfigError(f"config.json of {model_id}: '{key}' must be an integer, got {value!r}")
    if value < 0:
        raise ConfigError(f"config.json of {model_id}: '{key}' must not be negative, got {value!r}")
    return int(value)


def text_config(cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    """Multimodal configs (Llama 4, Kimi K2.5) nest the language model in text_config."""
    text = cfg.get("text_config")
    if isinstance(text, Mapping):
        merged = dict(text)
        # quantization_config / dtype may live at either level
        for key in ("quantization_config", "torch_dtype", "dtype", "tie_word_embeddings"):
            if key not in merged and key in cfg:
                merged[key] = cfg[key]
        return merged
    return cfg


# model_type -> family. Only these are modelled; anything else is refused (exit 2) rather than
# guessed: a hybrid SSM/linear-attention model read as "dense" is off by 10x or more.
FAMILIES: dict[str, str] = {
    "llama": "dense",
    "mistral": "dense",
    "qwen2": "dense",
    "qwen3": "dense",
    "seed_oss": "dense",  # Llama-shaped GQA with q/k/v biases (vLLM SeedOssForCausalLM)
    "deepseek_v3": "deepseek_v3",
    "deepseek_v2": "deepseek_v3",
    "kimi_k2": "deepseek_v3",
    "kimi_k25": "deepseek_v3",
    "llama4": "llama4",
    "llama4_text": "llama4",
    "gpt_oss": "gpt_oss",
    "glm4_moe": "glm4_moe",
    "mixtral": "mixtral",
    "qwen3_moe": "qwen_moe",
    "qwen2_moe": "qwen_moe",
}
# Families vLLM runs that prov knows it cannot model yet (hybrid attention / SSM / sparse MLA).
KNOWN_UNSUPPORTED: dict[str, str] = {
    "qwen3_next": "Qwen3-Next (hybrid Gated-DeltaNet + attention)",
    "jamba": "Jamba (hybrid Mamba + attention)",
    "kimi_linear": "Kimi-Linear (hybrid KDA linear attention + MLA)",
    "deepseek_v32": "DeepSeek-V3.2 (MLA with a sparse indexer cache)",
    "minimax_m2": "MiniMax-M2",
    "falcon_h1": "Falcon-H1 (hybrid Mamba)",
    "nemotron_h": "Nemotron-H (hybrid Mamba)",
    "granitemoehybrid": "Granite 4 hybrid (Mamba)",
    "mamba": "Mamba (SSM)",
    "mamba2": "Mamba2 (SSM)",
}
SUPPORTED_FAMILIES = (
    "llama/mistral/qwen2/qwen3/seed_oss (dense GQA), qwen2_moe/qwen3_moe, mixtral, "
    "deepseek_v2/v3 and kimi_k2 (MLA MoE), gpt_oss, llama4, glm4_moe"
)

# Bounds that keep the work of one estimate small and reject impossible configs.
MAX_LAYERS = 4096
MAX_DIM = 1 << 20  # hidden / intermediate / vocab / context upper bound
MAX_EXPERTS = 8192


def family_of(cfg: Mapping[str, Any]) -> str:
    mt = str(cfg.get("model_type", "")).lower()
    if mt in FAMILIES:
        return FAMILIES[mt]
    if mt in KNOWN_UNSUPPORTED:
        raise ConfigError(
            f"model_type {mt!r} is {KNOWN_UNSUPPORTED[mt]}, which prov cannot model yet; "
            f"supported families: {SUPPORTED_FAMILIES}"
        )
    if not mt and "kv_lora_rank" in cfg:
        return "deepseek_v3"
    raw = cfg.get("architectures")
    archs = ", ".join(str(a) for a in raw) if isinstance(raw, list) and raw else "none"
    raise ConfigError(
        f"unsupported model_type {mt or '(missing)'!r} (architectures: {archs}); "
        f"supported families: {SUPPORTED_FAMILIES}"
    )


def check_bounds(cfg: Mapping[str, Any], model_id: str) -> None:
    """Impossible or absurd values exit 2 before any per-layer work is done."""
    for key, hi in (
        ("num_hidden_layers", MAX_LAYERS),
        ("hidden_size", MAX_DIM),
        ("intermediate_size", MAX_DIM),
        ("moe_intermediate_size", MAX_DIM),
        ("vocab_size", 4 * MAX_DIM),
        ("num_attention_heads", 16384),
        ("num_key_value_heads", 16384),
        ("head_dim", 16384),
        ("n_routed_experts", MAX_EXPERTS),
        ("num_experts", MAX_EXPERTS),
        ("num_local_experts", MAX_EXPERTS),
        ("max_position_embeddings", 1 << 27),
    ):
        v = cfg.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and v > hi:
            raise ConfigError(
                f"config.json of {model_id}: '{key}' = {v:,} is beyond what any model has "
                f"(at most {hi:,}); check the file"
            )
