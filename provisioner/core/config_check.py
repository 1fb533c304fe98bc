"""Plausibility of a user's config.json before it is parsed: types, signs and bounds.

The parser (provisioner/core/models.py) trusts the numbers it reads; a config.json from disk is user
input and may hold a negative size, a string, 4096.5 heads or 200 million layers (which once
hung `prov quote`). Each key is checked where present: a whole number (4096.0 is fine, 4096.5 and
true are not), at least its floor, at most a bound far above any released model; a few
relations vLLM itself needs (heads shared evenly by KV heads, top-k within the experts).
Raises ConfigError naming the key, the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisioner.errors import ConfigError

_K = 1024
_M = 1024 * 1024
#: key -> (floor, bound). Bounds: ~4-16x the largest released model (a typo guard, not a fit).
INT_KEYS: dict[str, tuple[int, int]] = {
    "hidden_size": (1, _M),
    "num_hidden_layers": (1, 4 * _K),
    "vocab_size": (1, 16 * _M),
    "num_attention_heads": (1, 16 * _K),
    "num_key_value_heads": (1, 16 * _K),
    "head_dim": (1, 16 * _K),
    "intermediate_size": (1, 4 * _M),
    "max_position_embeddings": (1, 2**31),
    "kv_lora_rank": (1, 64 * _K),
    "q_lora_rank": (1, 64 * _K),
    "qk_rope_head_dim": (1, 16 * _K),
    "qk_nope_head_dim": (1, 16 * _K),
    "v_head_dim": (1, 16 * _K),
    "n_routed_experts": (1, 64 * _K),
    "num_local_experts": (1, 64 * _K),
    "num_experts": (1, 64 * _K),
    "num_experts_per_tok": (1, 64 * _K),
    "moe_intermediate_size": (1, 4 * _M),
    "n_shared_experts": (0, 1 * _K),
    "first_k_dense_replace": (0, 4 * _K),
    "moe_layer_freq": (1, 4 * _K),
    "sliding_window": (1, 2**31),
}
OBJECT_KEYS = ("quantization_config", "text_config", "rope_scaling")


def _whole(where: str, key: str, value: Any) -> int:
    floor, bound = INT_KEYS[key]
    ok = not isinstance(value, bool) and (
        isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    )
    if not ok:
        raise ConfigError(
            f"{where}: '{key}' must be a whole number (got {value!r}); allowed: {floor}..{bound}"
        )
    if not floor <= value <= bound:
        raise ConfigError(
            f"{where}: '{key}' = {value!r} is out of range; allowed: {floor}..{bound}"
        )
    return int(value)


def check_config(cfg: Mapping[str, Any], where: str) -> None:
    """Refuse a config.json whose numbers no model has (ConfigError naming the key)."""
    for key in OBJECT_KEYS:
        value = cfg.get(key)
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(
                f"{where}: '{key}' must be a JSON object, got {type(value).__name__} {value!r:.40}"
            )
    levels = [cfg]
    if isinstance(cfg.get("text_config"), Mapping):
        levels.append(cfg["text_config"])
    for level in levels:
        n = {k: _whole(where, k, level[k]) for k in INT_KEYS if level.get(k) is not None}
        heads, kv = n.get("num_attention_heads"), n.get("num_key_value_heads")
        if heads and kv and (kv > heads or heads % kv):
            raise ConfigError(
                f"{where}: 'num_key_value_heads' = {kv} must divide 'num_attention_heads' = "
                f"{heads} (each KV head serves an equal group of query heads)"
            )
        experts = n.get("n_routed_experts") or n.get("num_local_experts") or n.get("num_experts")
        topk = n.get("num_experts_per_tok")
        if experts and topk and topk > experts:
            raise ConfigError(
                f"{where}: 'num_experts_per_tok' = {topk} exceeds the {experts} experts"
            )
