"""The registry of model families: config.json ``model_type`` -> the builder of its weights.

Pure. Each family's rules live in one small module (dense, gqa_moe, deepseek, gpt_oss, llama4)
as a ``Family``: the model_types it reads and a ``build`` function that walks the decoder
layers. Adding a family is one module and one line in ``REGISTERED``. Only these are modelled;
anything else is refused (exit 2) rather than guessed: a hybrid SSM/linear-attention model read
as "dense" is off by 10x or more.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from provisioner.core.families import deepseek, dense, gpt_oss, gqa_moe, llama4
from provisioner.core.families.base import Decoder, Family
from provisioner.errors import ConfigError

__all__ = ["REGISTERED", "SUPPORTED_FAMILIES", "Decoder", "Family", "family_of"]

# In the order the refusal message lists them.
REGISTERED: tuple[Family, ...] = (
    dense.FAMILY,
    gqa_moe.QWEN_MOE,
    gqa_moe.MIXTRAL,
    deepseek.FAMILY,
    gpt_oss.FAMILY,
    llama4.FAMILY,
    gqa_moe.GLM4_MOE,
)
BY_MODEL_TYPE: dict[str, Family] = {mt: f for f in REGISTERED for mt in f.model_types}

SUPPORTED_FAMILIES = ", ".join(f.label for f in REGISTERED)

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


def family_of(cfg: Mapping[str, Any]) -> Family:
    """The registered family of a (text) config, or ConfigError naming the supported ones."""
    mt = str(cfg.get("model_type", "")).lower()
    if mt in BY_MODEL_TYPE:
        return BY_MODEL_TYPE[mt]
    if mt in KNOWN_UNSUPPORTED:
        raise ConfigError(
            f"model_type {mt!r} is {KNOWN_UNSUPPORTED[mt]}, which prov cannot model yet; "
            f"supported families: {SUPPORTED_FAMILIES}"
        )
    if not mt and "kv_lora_rank" in cfg:
        return deepseek.FAMILY
    raw = cfg.get("architectures")
    archs = ", ".join(str(a) for a in raw) if isinstance(raw, list) and raw else "none"
    raise ConfigError(
        f"unsupported model_type {mt or '(missing)'!r} (architectures: {archs}); "
        f"supported families: {SUPPORTED_FAMILIES}"
    )
