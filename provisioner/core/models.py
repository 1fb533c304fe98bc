"""Model architecture from a Hugging Face config.json: shapes, parameter inventory, KV layout.

Pure: no I/O here (catalog.py and checkpoint.py read files). Every family in the embedded
catalog is described by one config parser that turns the config into a list of
``WeightGroup`` rows. The rows carry what the memory model needs: which pipeline stage holds
them, whether vLLM shards them over TP ranks or replicates them, and a representative module
name so a checkpoint's own quantization_config can say whether they are quantized.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from provisioner.core.model_config import check_bounds, family_of, opt, req, text_config
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

QUANTIZABLE_KINDS: frozenset[str] = frozenset(
    {"attn", "attn_latent", "dense_mlp", "experts", "shared_experts"}
)

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "bf16": 2, "fp16": 2}


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


@dataclass(frozen=True)
class ModelSpec:
    """What prov knows about a model: enough for memory, shapes and (later) throughput."""

    id: str
    family: str
    hidden_size: int
    num_layers: int
    vocab_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    max_position_embeddings: int
    dtype: str
    attention: Literal["mla", "gqa", "mha"]
    # Per decoder layer: None = full attention, N = sliding/chunked window of N tokens.
    layer_windows: tuple[int | None, ...]
    groups: tuple[WeightGroup, ...]
    mla: MlaDims | None = None
    moe: MoeDims | None = None
    quantization_config: Mapping[str, Any] | None = None
    source: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    trust_remote_code: bool = False  # the checkpoint ships its own modelling/tokenizer code

    # ---- parameter counts -------------------------------------------------------------
    @cached_property
    def params_total(self) -> int:
        return sum(g.total_params for g in self.groups)

    @property
    def params_routed_experts(self) -> int:
        return sum(g.total_params for g in self.groups if g.kind == "experts")

    @property
    def params_active(self) -> int:
        """Parameters touched per token: everything except the routed experts not chosen."""
        if self.moe is None:
            return self.params_total
        routed = self.params_routed_experts
        frac = self.moe.experts_per_tok / self.moe.n_routed_experts
        return self.params_total - routed + round(routed * frac)

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES.get(self.dtype, 2)

    # ---- KV cache layout ----------------------------------------------------------------
    def kv_elems_per_token_per_layer(self, tp: int) -> int:
        """KV-cache elements one token needs in one layer on one TP rank.

        MLA caches a single latent of kv_lora_rank + qk_rope_head_dim that vLLM does not shard
        over TP: every rank holds all of it. MHA/GQA cache K and V per KV head; heads are split
        over TP ranks and replicated when TP exceeds the number of KV heads.
        """
        if self.mla is not None:
            return self.mla.kv_lora_rank + self.mla.qk_rope_head_dim
        kv_heads_per_rank = max(1, self.num_kv_heads // tp)
        return 2 * kv_heads_per_rank * self.head_dim

    def kv_bytes_per_token(self, kv_bytes: int = 2, tp: int = 1) -> int:
        """Bytes per token over all layers on one TP rank (full-attention accounting)."""
        return self.num_layers * self.kv_elems_per_token_per_layer(tp) * kv_bytes


# ---- config parsing ----------------------------------------------------------------------


def _moe(
    n_exp: int, topk: int, inter: int, shared: int, layers: tuple[int, ...], model_id: str
) -> MoeDims:
    if topk > n_exp:
        raise ConfigError(
            f"config.json of {model_id}: {topk} experts per token but only {n_exp} experts"
        )
    if inter < 1:
        raise ConfigError(f"config.json of {model_id}: the expert width must be positive")
    return MoeDims(n_exp, topk, inter, shared, layers)


class _Builder:
    """Accumulates weight groups layer by layer."""

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


def _gqa_attention(
    b: _Builder, i: int, h: int, nh: int, nkv: int, hd: int, bias: bool, qk_norm: bool
) -> None:
    q, kv, o = h * nh * hd, 2 * h * nkv * hd, nh * hd * h
    extra = (nh * hd + 2 * nkv * hd) if bias else 0
    b.add("attn", i, q + kv + o, f"model.layers.{i}.self_attn.q_proj", extra=extra)
    if qk_norm:
        b.add("norm", i, 0, f"model.layers.{i}.self_attn.q_norm", "replicate", extra=2 * hd)


# Llama 4's published vision tower (the same for Scout and Maverick); the embedded configs
# keep only text_config, but vLLM loads the tower, so it counts.
_LLAMA4_VISION = {
    "hidden_size": 1408,
    "intermediate_size": 5632,
    "num_hidden_layers": 34,
    "patch_size": 14,
    "image_size": 336,
    "projector_input_dim": 4096,
    "projector_output_dim": 4096,
    "vision_output_dim": 4096,
}


def _vision_params(config: Mapping[str, Any], family: str) -> int:
    """Approximate parameters of a ViT tower + projector (within a few % of the real ones)."""
    vc = config.get("vision_config")
    if not isinstance(vc, Mapping):
        if family != "llama4":
            return 0
        vc = _LLAMA4_VISION
    h = int(vc.get("hidden_size") or vc.get("vt_hidden_size") or 0)
    inter = int(vc.get("intermediate_size") or vc.get("vt_intermediate_size") or 0)
    layers = int(vc.get("num_hidden_layers") or vc.get("vt_num_hidden_layers") or 0)
    if not (h and inter and layers):
        return 0
    patch = int(vc.get("patch_size") or 14)
    per_layer = 4 * h * h + 2 * h * inter + 4 * h + inter + 4 * h  # attn, mlp, biases, norms
    tower = layers * per_layer + 3 * patch * patch * h
    text_h = int(text_config(config).get("hidden_size") or 0)
    proj_in = int(vc.get("projector_input_dim") or vc.get("mm_hidden_size") or h)
    if family == "llama4":  # vision adapter MLP + projector
        proj_out = int(vc.get("projector_output_dim") or proj_in)
        proj = h * 4 * 4 * proj_in + proj_in * proj_out + proj_out * text_h
    else:  # patch-merger: 2x2 merge then two linears to the text width
        merged = proj_in * 4
        proj = merged * merged + merged * text_h
    return tower + proj


def _swiglu(h: int, inter: int) -> int:
    return 3 * h * inter


def _mlp_block(
    b: _Builder,
    i: int,
    pre: str,
    h: int,
    dense_inter: int,
    moe: tuple[int, int, int, int] | None,
) -> None:
    """A layer's MLP: dense SwiGLU, or (experts, expert width, shared width, router params)."""
    if moe is None:
        b.add("dense_mlp", i, _swiglu(h, dense_inter), f"{pre}.mlp.gate_proj")
        return
    n_exp, width, shared_width, router = moe
    b.add("experts", i, n_exp * _swiglu(h, width), f"{pre}.mlp.experts.0.gate_proj")
    b.add("shared_experts", i, _swiglu(h, shared_width), f"{pre}.mlp.shared_experts.gate_proj")
    b.add("router", i, 0, f"{pre}.mlp.gate", "replicate", router)


def parse_config(config: Mapping[str, Any], model_id: str, source: str = "") -> ModelSpec:
    """Turn a config.json into a ModelSpec. Raises ConfigError on a malformed or partial config."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"config.json of {model_id} is not a JSON object")
    cfg = text_config(config)
    family = family_of(cfg)
    check_bounds(cfg, model_id)
    h = req(cfg, "hidden_size", model_id)
    n_layers = req(cfg, "num_hidden_layers", model_id)
    vocab = req(cfg, "vocab_size", model_id)
    nh = req(cfg, "num_attention_heads", model_id)
    nkv = opt(cfg, "num_key_value_heads", nh, model_id)
    hd = opt(cfg, "head_dim", h // nh, model_id)
    if nkv < 1 or nh % nkv:
        raise ConfigError(
            f"config.json of {model_id}: num_key_value_heads = {nkv} must be >= 1 and divide "
            f"num_attention_heads = {nh}"
        )
    if hd < 1:
        raise ConfigError(f"config.json of {model_id}: head_dim must be positive, got {hd}")
    max_pos = req(cfg, "max_position_embeddings", model_id)
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    tied = bool(cfg.get("tie_word_embeddings", False))
    inter = opt(cfg, "intermediate_size", 0, model_id)
    b = _Builder()
    b.add("embed", None, vocab * h, "model.embed_tokens")
    mla: MlaDims | None = None
    moe: MoeDims | None = None
    windows: list[int | None] = [None] * n_layers
    notes: list[str] = []
    norm_per_layer = 2 * h

    if family == "deepseek_v3":
        kv_lora = req(cfg, "kv_lora_rank", model_id)
        rope = req(cfg, "qk_rope_head_dim", model_id)
        nope = req(cfg, "qk_nope_head_dim", model_id)
        vdim = req(cfg, "v_head_dim", model_id)
        q_lora = opt(cfg, "q_lora_rank", 0, model_id) or None
        mla = MlaDims(kv_lora, rope, nope, vdim, q_lora)
        n_exp = req(cfg, "n_routed_experts", model_id)
        topk = req(cfg, "num_experts_per_tok", model_id)
        moe_inter = req(cfg, "moe_intermediate_size", model_id)
        n_shared = opt(cfg, "n_shared_experts", 0, model_id)
        first_dense = opt(cfg, "first_k_dense_replace", 0, model_id)
        freq = max(1, opt(cfg, "moe_layer_freq", 1, model_id))
        moe_layers = tuple(i for i in range(n_layers) if i >= first_dense and i % freq == 0)
        moe = _moe(n_exp, topk, moe_inter, n_shared, moe_layers, model_id)
        hd = nope + rope
        for i in range(n_layers):
            pre = f"model.layers.{i}"
            # Down-projections to the latents: ReplicatedLinear in vLLM (full on every rank).
            latent = h * (kv_lora + rope) + (h * q_lora if q_lora else 0)
            b.add("attn_latent", i, latent, f"{pre}.self_attn.kv_a_proj_with_mqa", "replicate")
            up = (q_lora * nh * (nope + rope)) if q_lora else h * nh * (nope + rope)
            up += kv_lora * nh * (nope + vdim) + nh * vdim * h
            b.add("attn", i, up, f"{pre}.self_attn.kv_b_proj")
            latent_norms = kv_lora + (q_lora or 0)
            b.add(
                "norm", i, 0, f"{pre}.input_layernorm", "replicate", norm_per_layer + latent_norms
            )
            # router weight + e_score_correction_bias
            router = n_exp * h + n_exp
            _mlp_block(
                b,
                i,
                pre,
                h,
                inter,
                (n_exp, moe_inter, n_shared * moe_inter, router) if i in moe_layers else None,
            )
        if opt(cfg, "num_nextn_predict_layers", 0, model_id):
            notes.append(
                "MTP (next-token prediction) layer not counted: vLLM loads it only for "
                "speculative decoding"
            )
    elif family in {"qwen_moe", "mixtral", "glm4_moe"}:
        n_exp = req(
            cfg,
            "n_routed_experts"
            if family == "glm4_moe"
            else ("num_local_experts" if family == "mixtral" else "num_experts"),
            model_id,
        )
        topk = req(cfg, "num_experts_per_tok", model_id)
        if family == "mixtral":
            moe_inter = inter
            moe_layers = tuple(range(n_layers))
            n_shared = 0
        elif family == "glm4_moe":
            moe_inter = req(cfg, "moe_intermediate_size", model_id)
            first_dense = opt(cfg, "first_k_dense_replace", 0, model_id)
            moe_layers = tuple(range(first_dense, n_layers))
            n_shared = opt(cfg, "n_shared_experts", 0, model_id)
        else:
            moe_inter = req(cfg, "moe_intermediate_size", model_id)
            step = max(1, opt(cfg, "decoder_sparse_step", 1, model_id))
            raw_only = cfg.get("mlp_only_layers") or []
            mlp_only = set(raw_only) if isinstance(raw_only, list) else set()
            moe_layers = tuple(
                i for i in range(n_layers) if i not in mlp_only and (i + 1) % step == 0
            )
            n_shared = 0
            if cfg.get("shared_expert_intermediate_size"):  # qwen2_moe
                n_shared = 1
        moe = _moe(n_exp, topk, moe_inter, n_shared, moe_layers, model_id)
        bias = bool(cfg.get("attention_bias", family == "glm4_moe"))
        qk_norm = family == "qwen_moe" or bool(cfg.get("use_qk_norm", False))
        shared_inter = opt(cfg, "shared_expert_intermediate_size", moe_inter, model_id)
        for i in range(n_layers):
            pre = f"model.layers.{i}"
            _gqa_attention(b, i, h, nh, nkv, hd, bias, qk_norm)
            b.add("norm", i, 0, f"{pre}.input_layernorm", "replicate", norm_per_layer)
            router = n_exp * h + (n_exp if family == "glm4_moe" else 0)
            _mlp_block(
                b,
                i,
                pre,
                h,
                inter,
                (n_exp, moe_inter, n_shared * shared_inter, router) if i in moe_layers else None,
            )
        if family == "glm4_moe" and opt(cfg, "num_nextn_predict_layers", 0, model_id):
            notes.append("MTP layer not counted: vLLM loads it only for speculative decoding")
    elif family == "gpt_oss":
        n_exp = req(cfg, "num_local_experts", model_id)
        topk = req(cfg, "num_experts_per_tok", model_id)
        moe_inter = inter
        moe = _moe(n_exp, topk, moe_inter, 0, tuple(range(n_layers)), model_id)
        layer_types = cfg.get("layer_types")
        layer_types = layer_types if isinstance(layer_types, list) else []
        window = opt(cfg, "sliding_window", 0, model_id)
        for i in range(n_layers):
            pre = f"model.layers.{i}"
            if i < len(layer_types) and layer_types[i] == "sliding_attention" and window:
                windows[i] = window
            _gqa_attention(b, i, h, nh, nkv, hd, bias=True, qk_norm=False)
            b.add("norm", i, 0, f"{pre}.input_layernorm", "replicate", norm_per_layer + nh)  # sinks
            # fused gate_up (h x 2I, bias 2I) and down (I x h, bias h) per expert
            b.add(
                "experts",
                i,
                n_exp * 3 * h * moe_inter,
                f"{pre}.mlp.experts.gate_up_proj",
                extra=n_exp * (2 * moe_inter + h),
            )
            b.add("router", i, 0, f"{pre}.mlp.router", "replicate", n_exp * h + n_exp)
    elif family == "llama4":
        n_exp = req(cfg, "num_local_experts", model_id)
        topk = req(cfg, "num_experts_per_tok", model_id)
        step = max(1, opt(cfg, "interleave_moe_layer_step", 1, model_id))
        moe_layers = tuple(range(step - 1, n_layers, step))
        moe = _moe(n_exp, topk, inter, 1, moe_layers, model_id)
        dense_inter = opt(cfg, "intermediate_size_mlp", inter, model_id)
        chunk = opt(cfg, "attention_chunk_size", 0, model_id)
        raw_flags = cfg.get("no_rope_layers")
        no_rope: list[Any] = raw_flags if isinstance(raw_flags, list) else []
        for i in range(n_layers):
            pre = f"model.language_model.layers.{i}"
            # chunked local attention on RoPE layers; every 4th layer (NoPE) is global
            is_global = bool(no_rope[i] == 0) if i < len(no_rope) else (i + 1) % 4 == 0
            if chunk and not is_global:
                windows[i] = chunk
            _gqa_attention(b, i, h, nh, nkv, hd, bool(cfg.get("attention_bias")), False)
            b.add("norm", i, 0, f"{pre}.input_layernorm", "replicate", norm_per_layer)
            if i in moe_layers:
                b.add("experts", i, n_exp * _swiglu(h, inter), f"{pre}.feed_forward.experts")
                b.add("shared_experts", i, _swiglu(h, inter), f"{pre}.feed_forward.shared_expert")
                b.add("router", i, 0, f"{pre}.feed_forward.router", "replicate", n_exp * h)
            else:
                b.add("dense_mlp", i, _swiglu(h, dense_inter), f"{pre}.feed_forward.gate_proj")
        inter = dense_inter
    else:  # dense llama / qwen / mistral
        if not inter:
            inter = req(cfg, "intermediate_size", model_id)
        bias = bool(cfg.get("attention_bias", str(cfg.get("model_type")) == "qwen2"))
        qk_norm = str(cfg.get("model_type")) == "qwen3"
        window = opt(cfg, "sliding_window", 0, model_id) if cfg.get("use_sliding_window") else 0
        for i in range(n_layers):
            if window:
                windows[i] = window
            _gqa_attention(b, i, h, nh, nkv, hd, bias, qk_norm)
            b.add("norm", i, 0, f"model.layers.{i}.input_layernorm", "replicate", norm_per_layer)
            b.add("dense_mlp", i, _swiglu(h, inter), f"model.layers.{i}.mlp.gate_proj")

    b.add("norm", None, 0, "model.norm", "replicate", h)
    if not tied:
        b.add("lm_head", None, vocab * h, "lm_head")
    vision = _vision_params(config, family)
    if vision:
        b.add("vision", None, 0, "vision_model", "shard", vision)
        notes.append(f"vision encoder counted: {vision / 1e9:.2f}B params, kept in {dtype}")

    attention: Literal["mla", "gqa", "mha"] = "mla" if mla else ("mha" if nkv == nh else "gqa")
    quant_cfg = cfg.get("quantization_config")
    return ModelSpec(
        id=model_id,
        family=family,
        hidden_size=h,
        num_layers=n_layers,
        vocab_size=vocab,
        num_heads=nh,
        num_kv_heads=nkv,
        head_dim=hd,
        intermediate_size=inter,
        max_position_embeddings=max_pos,
        dtype=dtype,
        attention=attention,
        layer_windows=tuple(windows),
        groups=tuple(b.groups),
        mla=mla,
        moe=moe,
        quantization_config=quant_cfg if isinstance(quant_cfg, Mapping) else None,
        source=source,
        notes=tuple(notes),
        trust_remote_code="auto_map" in config
        or str(config.get("model_type", "")).startswith("kimi"),
    )
