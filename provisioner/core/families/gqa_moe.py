"""GQA attention with MoE MLPs: Qwen2-MoE / Qwen3-MoE, Mixtral, GLM-4.5 (glm4_moe).

The three share the layer walk (``_moe_layers``) and differ in where the config keeps the expert
count, which layers are MoE, shared experts, biases and q/k norms, and the router's bias.
"""

from __future__ import annotations

from provisioner.core.families.base import Decoder, Family
from provisioner.core.weights import gqa_attention, mlp_block, moe_dims


def _moe_layers(
    d: Decoder,
    n_exp: int,
    topk: int,
    moe_inter: int,
    n_shared: int,
    moe_layers: tuple[int, ...],
    *,
    attention_bias: bool,
    qk_norm: bool,
    router_bias: bool,
) -> None:
    """Every layer: GQA attention, norms, then the MoE block on ``moe_layers`` (dense elsewhere).

    ``attention_bias`` is the family's default when the config does not say; ``qk_norm`` is
    on for the family or when the config sets ``use_qk_norm``.
    """
    cfg, b = d.cfg, d.b
    d.moe = moe_dims(n_exp, topk, moe_inter, n_shared, moe_layers, d.model_id)
    bias = bool(cfg.get("attention_bias", attention_bias))
    qk_norm = qk_norm or bool(cfg.get("use_qk_norm", False))
    shared_inter = d.opt("shared_expert_intermediate_size", moe_inter)
    for i in range(d.n_layers):
        pre = f"model.layers.{i}"
        gqa_attention(b, i, d.h, d.nh, d.nkv, d.hd, bias, qk_norm)
        b.add("norm", i, 0, f"{pre}.input_layernorm", "replicate", d.norm_per_layer)
        router = n_exp * d.h + (n_exp if router_bias else 0)
        moe = (n_exp, moe_inter, n_shared * shared_inter, router) if i in moe_layers else None
        mlp_block(b, i, pre, d.h, d.inter, moe)


def build_qwen_moe(d: Decoder) -> None:
    """Qwen MoE: MoE every ``decoder_sparse_step`` layers except ``mlp_only_layers``; q/k norms.

    Qwen2-MoE has one shared expert of ``shared_expert_intermediate_size``; Qwen3-MoE none.
    """
    n_exp = d.req("num_experts")
    topk = d.req("num_experts_per_tok")
    moe_inter = d.req("moe_intermediate_size")
    step = max(1, d.opt("decoder_sparse_step", 1))
    raw_only = d.cfg.get("mlp_only_layers") or []
    mlp_only = set(raw_only) if isinstance(raw_only, list) else set()
    moe_layers = tuple(i for i in range(d.n_layers) if i not in mlp_only and (i + 1) % step == 0)
    n_shared = 1 if d.cfg.get("shared_expert_intermediate_size") else 0  # qwen2_moe
    _moe_layers(
        d,
        n_exp,
        topk,
        moe_inter,
        n_shared,
        moe_layers,
        attention_bias=False,
        qk_norm=True,
        router_bias=False,
    )


def build_mixtral(d: Decoder) -> None:
    """Mixtral: every layer MoE, experts as wide as ``intermediate_size``, no shared expert."""
    n_exp = d.req("num_local_experts")
    topk = d.req("num_experts_per_tok")
    _moe_layers(
        d,
        n_exp,
        topk,
        d.inter,
        0,
        tuple(range(d.n_layers)),
        attention_bias=False,
        qk_norm=False,
        router_bias=False,
    )


def build_glm4_moe(d: Decoder) -> None:
    """GLM-4.5: dense first ``first_k_dense_replace`` layers, shared experts, q/k/v biases,
    a router with an e_score_correction_bias; its MTP layer is not loaded for serving."""
    n_exp = d.req("n_routed_experts")
    topk = d.req("num_experts_per_tok")
    moe_inter = d.req("moe_intermediate_size")
    first_dense = d.opt("first_k_dense_replace", 0)
    moe_layers = tuple(range(first_dense, d.n_layers))
    n_shared = d.opt("n_shared_experts", 0)
    _moe_layers(
        d,
        n_exp,
        topk,
        moe_inter,
        n_shared,
        moe_layers,
        attention_bias=True,
        qk_norm=False,
        router_bias=True,
    )
    if d.opt("num_nextn_predict_layers", 0):
        d.notes.append("MTP layer not counted: vLLM loads it only for speculative decoding")


QWEN_MOE = Family(
    name="qwen_moe",
    model_types=("qwen3_moe", "qwen2_moe"),
    label="qwen2_moe/qwen3_moe",
    build=build_qwen_moe,
)
MIXTRAL = Family(name="mixtral", model_types=("mixtral",), label="mixtral", build=build_mixtral)
GLM4_MOE = Family(
    name="glm4_moe", model_types=("glm4_moe",), label="glm4_moe", build=build_glm4_moe
)
