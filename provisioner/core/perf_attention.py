"""What attention reads and computes per cached token and per prompt, for provisioner/core/perf.py.
Pure: MLA's absorbed decode against the latent, sliding windows capped, causal prefill pairs."""

from __future__ import annotations

from provisioner.core.models import ModelSpec


def attn_dim(spec: ModelSpec) -> int:
    """Per-head width the attention kernels stream per cached token."""
    if spec.mla is not None:  # absorbed MLA decode: scores and values against the 576-wide latent
        return spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim
    return spec.head_dim


_WINDOWED: dict[int, tuple[object, bool]] = {}  # id(layer_windows) -> (it, any window?)


def has_windows(spec: ModelSpec) -> bool:
    key = id(spec.layer_windows)
    hit = _WINDOWED.get(key)
    if hit is None or hit[0] is not spec.layer_windows:
        hit = _WINDOWED[key] = (spec.layer_windows, any(spec.layer_windows))
    return hit[1]


def kv_tokens(spec: ModelSpec, lo: int, hi: int, ctx: float) -> float:
    """Cached tokens read per request per step over layers [lo, hi), windows capped."""
    if not has_windows(spec):
        return (hi - lo) * ctx
    return sum(min(ctx, w) if w else ctx for w in spec.layer_windows[lo:hi])


def causal_pairs(isl: int, window: int | None) -> float:
    """(query, key) pairs a causal prefill of isl tokens computes on one layer."""
    if not window or window >= isl:
        return isl * isl / 2
    return isl * window - window * window / 2


def attn_dim_prefill(spec: ModelSpec) -> int:
    """Per-head QK + PV width in prefill (MLA prefill runs un-absorbed: qk 192, v 128)."""
    if spec.mla is not None:
        return spec.mla.qk_nope_head_dim + spec.mla.qk_rope_head_dim + spec.mla.v_head_dim
    return 2 * spec.head_dim
