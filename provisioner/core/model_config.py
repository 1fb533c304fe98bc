"""Reading a config.json safely: typed fields, text_config, bounds on absurd values.

Pure. models.parse_config and the family builders (provisioner.core.families) build the
weight inventory on top of these; everything here raises
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


# Bounds that keep the work of one estimate small and reject impossible configs.
MAX_LAYERS = 4096
MAX_DIM = 1 << 20  # hidden / intermediate / vocab / context upper bound
MAX_EXPERTS = 8192


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
