"""The rows of a parameter inventory (``WeightGroup``) and the blocks families build them from.

Pure. A family builder (provisioner.core.families) walks the decoder layers and adds one row
per kind of weight per layer through ``GroupBuilder``; the blocks here (GQA attention, a
SwiGLU MLP or MoE block) are the parts several families share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from provisioner.errors import ConfigError

# How a group is laid out over tensor-parallel ranks in vLLM.
#   shard:     ColumnParallel/RowParallel/VocabParallel layers and fused MoE (1/TP per rank)
#   replicate: ReplicatedLinear, norms, routers, and the MLA down-projections (full on every rank)
TpLayout = Literal["shard", "replicate"]

# What a group is, which decides whether a generic quantization touches it.
Kind = Literal[
    "embed",  # token embedding (first PP stage)
    "lm_head",  # output projection (last PP stage)
    "attn",  # q/k/v/o projections, sharded over heads
    "attn_latent",  # MLA q_a/kv_a down-projections: replicated on every TP rank in vLLM
    "dense_mlp",  # gate/up/down of a dense layer
    "experts",  # routed experts of a MoE layer
    "shared_experts",  # always-on experts of a MoE layer
    "router",  # MoE gate
    "norm",  # RMSNorm weights and biases, attention sinks
    "vision",  # vision encoder + projector of a multimodal checkpoint (first PP stage)
]


@dataclass(frozen=True, slots=True)
class WeightGroup:
    """A set of weights of one kind in one place (a layer, or embed/lm_head)."""

    kind: Kind
    layer: int | None  # decoder layer index; None for embed / lm_head / final norm
    params: int  # matrix weights: these are what a quantization compresses
    module: str  # representative HF module name, matched against quantization ignore lists
    tp: TpLayout = "shard"
    extra_params: int = 0  # biases etc.: always kept in the model dtype
    exact_bytes: int | None = None  # from safetensors headers, when a snapshot was read

    @property
    def total_params(self) -> int:
        return self.params + self.extra_params


@dataclass(frozen=True, slots=True)
class MlaDims:
    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    q_lora_rank: int | None


@dataclass(frozen=True, slots=True)
class MoeDims:
    n_routed_experts: int
    experts_per_tok: int
    moe_intermediate_size: int
    n_shared_experts: int
    moe_layers: tuple[int, ...]


def moe_dims(
    n_exp: int, topk: int, inter: int, shared: int, layers: tuple[int, ...], model_id: str
) -> MoeDims:
    """MoeDims after the checks no config.json of a real model fails."""
    if topk > n_exp:
        raise ConfigError(
            f"config.json of {model_id}: {topk} experts per token but only {n_exp} experts"
        )
    if inter < 1:
        raise ConfigError(f"config.json of {model_id}: the expert width must be positive")
    return MoeDims(n_exp, topk, inter, shared, layers)


class GroupBuilder:
    """Accumulates weight groups layer by layer (empty groups are skipped)."""

    def __init__(self) -> None:
        self.groups: list[WeightGroup] = []

    def add(
        self,
        kind: Kind,
        layer: int | None,
        params: int,
        module: str,
        tp: TpLayout = "shard",
        extra: int = 0,
    ) -> None:
        if params or extra:
            self.groups.append(WeightGroup(kind, layer, params, module, tp, extra))


def swiglu(h: int, inter: int) -> int:
    """Parameters of a gate/up/down SwiGLU MLP of width ``inter`` on hidden size ``h``."""
    return 3 * h * inter


def gqa_attention(
    b: GroupBuilder, i: int, h: int, nh: int, nkv: int, hd: int, bias: bool, qk_norm: bool
) -> None:
    """q/k/v/o projections of one GQA (or MHA) layer, with optional biases and q/k norms."""
    q, kv, o = h * nh * hd, 2 * h * nkv * hd, nh * hd * h
    extra = (nh * hd + 2 * nkv * hd) if bias else 0
    b.add("attn", i, q + kv + o, f"model.layers.{i}.self_attn.q_proj", extra=extra)
    if qk_norm:
        b.add("norm", i, 0, f"model.layers.{i}.self_attn.q_norm", "replicate", extra=2 * hd)


def mlp_block(
    b: GroupBuilder,
    i: int,
    pre: str,
    h: int,
    dense_inter: int,
    moe: tuple[int, int, int, int] | None,
) -> None:
    """A layer's MLP: dense SwiGLU, or (experts, expert width, shared width, router params)."""
    if moe is None:
        b.add("dense_mlp", i, swiglu(h, dense_inter), f"{pre}.mlp.gate_proj")
        return
    n_exp, width, shared_width, router = moe
    b.add("experts", i, n_exp * swiglu(h, width), f"{pre}.mlp.experts.0.gate_proj")
    b.add("shared_experts", i, swiglu(h, shared_width), f"{pre}.mlp.shared_experts.gate_proj")
    b.add("router", i, 0, f"{pre}.mlp.gate", "replicate", router)
