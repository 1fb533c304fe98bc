"""Llama 4 (Scout, Maverick): MoE every ``interleave_moe_layer_step`` layers with one shared
expert, chunked local attention on RoPE layers and global attention on the NoPE ones, and a
vision tower vLLM loads even when the embedded config keeps only text_config."""

from __future__ import annotations

from typing import Any

from provisioner.core.families.base import Decoder, Family
from provisioner.core.weights import gqa_attention, moe_dims, swiglu

# Llama 4's published vision tower (the same for Scout and Maverick); the embedded configs
# keep only text_config, but vLLM loads the tower, so it counts.
VISION_TOWER = {
    "hidden_size": 1408,
    "intermediate_size": 5632,
    "num_hidden_layers": 34,
    "patch_size": 14,
    "image_size": 336,
    "projector_input_dim": 4096,
    "projector_output_dim": 4096,
    "vision_output_dim": 4096,
}


def build(d: Decoder) -> None:
    h, b, inter = d.h, d.b, d.inter
    n_exp = d.req("num_local_experts")
    topk = d.req("num_experts_per_tok")
    step = max(1, d.opt("interleave_moe_layer_step", 1))
    moe_layers = tuple(range(step - 1, d.n_layers, step))
    d.moe = moe_dims(n_exp, topk, inter, 1, moe_layers, d.model_id)
    dense_inter = d.opt("intermediate_size_mlp", inter)
    chunk = d.opt("attention_chunk_size", 0)
    raw_flags = d.cfg.get("no_rope_layers")
    no_rope: list[Any] = raw_flags if isinstance(raw_flags, list) else []
    bias = bool(d.cfg.get("attention_bias"))
    for i in range(d.n_layers):
        pre = f"model.language_model.layers.{i}"
        # chunked local attention on RoPE layers; every 4th layer (NoPE) is global
        is_global = bool(no_rope[i] == 0) if i < len(no_rope) else (i + 1) % 4 == 0
        if chunk and not is_global:
            d.windows[i] = chunk
        gqa_attention(b, i, h, d.nh, d.nkv, d.hd, bias, False)
        b.add("norm", i, 0, f"{pre}.input_layernorm", "replicate", d.norm_per_layer)
        if i in moe_layers:
            b.add("experts", i, n_exp * swiglu(h, inter), f"{pre}.feed_forward.experts")
            b.add("shared_experts", i, swiglu(h, inter), f"{pre}.feed_forward.shared_expert")
            b.add("router", i, 0, f"{pre}.feed_forward.router", "replicate", n_exp * h)
        else:
            b.add("dense_mlp", i, swiglu(h, dense_inter), f"{pre}.feed_forward.gate_proj")
    d.inter = dense_inter


FAMILY = Family(
    name="llama4",
    model_types=("llama4", "llama4_text"),
    label="llama4",
    build=build,
    vision_tower=VISION_TOWER,
    vision_projector="adapter",
)
