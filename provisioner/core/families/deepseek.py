"""MLA MoE decoders: DeepSeek-V2/V3/R1 and Kimi K2 / K2.5 (DeepseekV3ForCausalLM in vLLM).

Attention is multi-head latent attention: the down-projections to the q and kv latents are
ReplicatedLinear in vLLM (full on every TP rank), the up-projections shard over heads. The first
``first_k_dense_replace`` layers are dense; MoE layers carry routed + shared experts and a router
with an e_score_correction_bias.
"""

from __future__ import annotations

from provisioner.core.families.base import Decoder, Family
from provisioner.core.weights import MlaDims, mlp_block, moe_dims


def build(d: Decoder) -> None:
    h, nh, b = d.h, d.nh, d.b
    kv_lora = d.req("kv_lora_rank")
    rope = d.req("qk_rope_head_dim")
    nope = d.req("qk_nope_head_dim")
    vdim = d.req("v_head_dim")
    q_lora = d.opt("q_lora_rank", 0) or None
    d.mla = MlaDims(kv_lora, rope, nope, vdim, q_lora)
    n_exp = d.req("n_routed_experts")
    topk = d.req("num_experts_per_tok")
    moe_inter = d.req("moe_intermediate_size")
    n_shared = d.opt("n_shared_experts", 0)
    first_dense = d.opt("first_k_dense_replace", 0)
    freq = max(1, d.opt("moe_layer_freq", 1))
    moe_layers = tuple(i for i in range(d.n_layers) if i >= first_dense and i % freq == 0)
    d.moe = moe_dims(n_exp, topk, moe_inter, n_shared, moe_layers, d.model_id)
    d.hd = nope + rope
    for i in range(d.n_layers):
        pre = f"model.layers.{i}"
        # Down-projections to the latents: ReplicatedLinear in vLLM (full on every rank).
        latent = h * (kv_lora + rope) + (h * q_lora if q_lora else 0)
        b.add("attn_latent", i, latent, f"{pre}.self_attn.kv_a_proj_with_mqa", "replicate")
        up = (q_lora * nh * (nope + rope)) if q_lora else h * nh * (nope + rope)
        up += kv_lora * nh * (nope + vdim) + nh * vdim * h
        b.add("attn", i, up, f"{pre}.self_attn.kv_b_proj")
        latent_norms = kv_lora + (q_lora or 0)
        b.add("norm", i, 0, f"{pre}.input_layernorm", "replicate", d.norm_per_layer + latent_norms)
        router = n_exp * h + n_exp  # router weight + e_score_correction_bias
        moe = (n_exp, moe_inter, n_shared * moe_inter, router) if i in moe_layers else None
        mlp_block(b, i, pre, h, d.inter, moe)
    if d.opt("num_nextn_predict_layers", 0):
        d.notes.append(
            "MTP (next-token prediction) layer not counted: vLLM loads it only for "
            "speculative decoding"
        )


FAMILY = Family(
    name="deepseek_v3",
    model_types=("deepseek_v3", "deepseek_v2", "kimi_k2", "kimi_k25"),
    label="deepseek_v2/v3 and kimi_k2 (MLA MoE)",
    build=build,
)
