"""Model architecture from a Hugging Face config.json: shapes, parameter inventory, KV layout.

Pure: no I/O here (catalog.py and checkpoint.py read files). ``parse_config`` reads the fields
every family shares and hands the decoder stack to its family's builder (the registry in
provisioner.core.families), which turns the config into a list of ``WeightGroup`` rows. The
rows carry what the memory model needs: which pipeline stage holds them, whether vLLM shards
them over TP ranks or replicates them, and a representative module name so a checkpoint's own
quantization_config can say whether they are quantized.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from provisioner.core.families import Decoder, Family, family_of
from provisioner.core.model_config import check_bounds, opt, req, text_config
from provisioner.core.weights import MlaDims, MoeDims, WeightGroup
from provisioner.errors import ConfigError

QUANTIZABLE_KINDS: frozenset[str] = frozenset(
    {"attn", "attn_latent", "dense_mlp", "experts", "shared_experts"}
)


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


def _vision_params(config: Mapping[str, Any], family: Family) -> int:
    """Approximate parameters of a ViT tower + projector (within a few % of the real ones)."""
    vc = config.get("vision_config")
    if not isinstance(vc, Mapping):
        if family.vision_tower is None:
            return 0
        vc = family.vision_tower
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
    if family.vision_projector == "adapter":  # Llama 4: vision adapter MLP + projector
        proj_out = int(vc.get("projector_output_dim") or proj_in)
        proj = h * 4 * 4 * proj_in + proj_in * proj_out + proj_out * text_h
    else:  # patch-merger: 2x2 merge then two linears to the text width
        merged = proj_in * 4
        proj = merged * merged + merged * text_h
    return tower + proj


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
    inter = opt(cfg, "intermediate_size", 0, model_id)
    d = Decoder(cfg, model_id, h, n_layers, nh, nkv, hd, inter)
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16")
    d.b.add("embed", None, vocab * d.h, "model.embed_tokens")
    family.build(d)  # the family's layers: attention, norms, MLP or MoE
    d.b.add("norm", None, 0, "model.norm", "replicate", d.h)
    if not cfg.get("tie_word_embeddings", False):
        d.b.add("lm_head", None, vocab * d.h, "lm_head")
    vision = _vision_params(config, family)
    if vision:
        d.b.add("vision", None, 0, "vision_model", "shard", vision)
        d.notes.append(f"vision encoder counted: {vision / 1e9:.2f}B params, kept in {dtype}")

    attention: Literal["mla", "gqa", "mha"] = (
        "mla" if d.mla else ("mha" if d.nkv == d.nh else "gqa")
    )
    quant_cfg = cfg.get("quantization_config")
    return ModelSpec(
        id=model_id,
        family=family.name,
        hidden_size=d.h,
        num_layers=d.n_layers,
        vocab_size=vocab,
        num_heads=d.nh,
        num_kv_heads=d.nkv,
        head_dim=d.hd,
        intermediate_size=d.inter,
        max_position_embeddings=max_pos,
        dtype=dtype,
        attention=attention,
        layer_windows=tuple(d.windows),
        groups=tuple(d.b.groups),
        mla=d.mla,
        moe=d.moe,
        quantization_config=quant_cfg if isinstance(quant_cfg, Mapping) else None,
        source=source,
        notes=tuple(d.notes),
        trust_remote_code="auto_map" in config
        or str(config.get("model_type", "")).startswith("kimi"),
    )
