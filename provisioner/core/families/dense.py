"""Dense GQA decoders: Llama, Mistral, Qwen2/Qwen3, Seed-OSS (Llama-shaped, q/k/v biases).

Qwen2 puts biases on q/k/v (vLLM Qwen2Attention, qkv_proj bias=True) unless the config says
otherwise; Qwen3 adds per-head q/k RMSNorms; Mistral-style sliding windows apply to every layer
when ``use_sliding_window`` is set.
"""

from __future__ import annotations

from provisioner.core.families.base import Decoder, Family
from provisioner.core.weights import gqa_attention, swiglu


def build(d: Decoder) -> None:
    cfg, b = d.cfg, d.b
    if not d.inter:
        d.inter = d.req("intermediate_size")
    bias = bool(cfg.get("attention_bias", str(cfg.get("model_type")) == "qwen2"))
    qk_norm = str(cfg.get("model_type")) == "qwen3"
    window = d.opt("sliding_window", 0) if cfg.get("use_sliding_window") else 0
    for i in range(d.n_layers):
        if window:
            d.windows[i] = window
        gqa_attention(b, i, d.h, d.nh, d.nkv, d.hd, bias, qk_norm)
        b.add("norm", i, 0, f"model.layers.{i}.input_layernorm", "replicate", d.norm_per_layer)
        b.add("dense_mlp", i, swiglu(d.h, d.inter), f"model.layers.{i}.mlp.gate_proj")


FAMILY = Family(
    name="dense",
    model_types=("llama", "mistral", "qwen2", "qwen3", "seed_oss"),
    label="llama/mistral/qwen2/qwen3/seed_oss (dense GQA)",
    build=build,
)
