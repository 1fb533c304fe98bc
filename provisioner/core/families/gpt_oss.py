"""gpt-oss: GQA with attention sinks and q/k/v/o biases, alternating sliding/full layers, every
layer MoE with fused gate_up experts (biases included) and a biased router."""

from __future__ import annotations

from provisioner.core.families.base import Decoder, Family
from provisioner.core.weights import gqa_attention, moe_dims


def build(d: Decoder) -> None:
    h, b = d.h, d.b
    n_exp = d.req("num_local_experts")
    topk = d.req("num_experts_per_tok")
    moe_inter = d.inter
    d.moe = moe_dims(n_exp, topk, moe_inter, 0, tuple(range(d.n_layers)), d.model_id)
    raw_types = d.cfg.get("layer_types")
    layer_types = raw_types if isinstance(raw_types, list) else []
    window = d.opt("sliding_window", 0)
    for i in range(d.n_layers):
        pre = f"model.layers.{i}"
        if i < len(layer_types) and layer_types[i] == "sliding_attention" and window:
            d.windows[i] = window
        gqa_attention(b, i, h, d.nh, d.nkv, d.hd, bias=True, qk_norm=False)
        b.add("norm", i, 0, f"{pre}.input_layernorm", "replicate", d.norm_per_layer + d.nh)  # sinks
        # fused gate_up (h x 2I, bias 2I) and down (I x h, bias h) per expert
        b.add(
            "experts",
            i,
            n_exp * 3 * h * moe_inter,
            f"{pre}.mlp.experts.gate_up_proj",
            extra=n_exp * (2 * moe_inter + h),
        )
        b.add("router", i, 0, f"{pre}.mlp.router", "replicate", n_exp * h + n_exp)


FAMILY = Family(name="gpt_oss", model_types=("gpt_oss",), label="gpt_oss", build=build)
