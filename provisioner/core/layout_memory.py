"""Per-GPU memory of a DP / EP layout, built on memory.shape_memory (the TP x PP rules).

One DP rank is a TP x PP engine whose GPUs hold (provisioner/core/layouts.py has the vLLM sources):
  attention, dense layers, embeddings, lm_head   split over the rank's TP group (replicated
                                                 across DP ranks)
  shared experts                                 split over TP, or whole on every GPU under
                                                 sequence-parallel MoE (EP, TP > 1, DP > 1)
  routed experts                                 EP: ceil(E / EP) whole experts per GPU (the
                                                 first E % EP ranks hold one more); no EP:
                                                 every expert split over TP x DP
  KV cache                                       this rank's requests only; vLLM sizes it from
                                                 this GPU's profile, like a TP x PP engine
So the node's KV tokens and concurrent requests are DP x those of one rank. DP > 1 with TP1
still initialises NCCL and all-to-all buffers for a MoE model: it pays the multi-GPU overheads.
A dense model's DP rank is an independent engine (no EP, no all-to-all): its memory is the
TP x PP engine's (docs/ep-dp-layouts.md, dense models).
Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from provisioner.core.layouts import Layout
from provisioner.core.memory import (
    BLOCK_SIZE,
    GIB,
    MemorySettings,
    ShapeMemory,
    concurrent_requests,
    shape_memory,
)
from provisioner.core.models import ModelSpec
from provisioner.core.quant import QuantScheme, expert_padding
from provisioner.core.vllm_rules import VllmRules
from provisioner.core.weight_placement import WeightPlacer
from provisioner.core.weights import WeightGroup


class LayoutPlacer(WeightPlacer):
    """WeightPlacer for one GPU of a DP / EP layout (its `tp` argument is the attention TP)."""

    def __init__(
        self,
        spec: ModelSpec,
        scheme: QuantScheme,
        layout: Layout,
        base: WeightPlacer | None = None,
    ) -> None:
        if base is not None and base.spec is spec and base.scheme is scheme:
            self.spec, self.scheme = spec, scheme
            self._bytes = base._bytes  # group bytes computed once per (model, scheme)
            self._kinds = base._kinds
            self._by_key = {}
        else:
            super().__init__(spec, scheme)
        self.lay = layout

    def _expert_share(self, tp: int) -> float:
        """Fraction of each MoE layer's routed experts on the fullest GPU."""
        lay = self.lay
        if not lay.ep:
            return 1.0 / (tp * lay.dp)
        e = self.spec.moe.n_routed_experts if self.spec.moe else 1
        ep = tp * lay.dp
        return math.ceil(e / ep) / e  # determine_expert_map: the first E % EP ranks get +1

    def _pad(self, tp: int, sm: int | None, rules: VllmRules) -> float:
        moe_tp = 1 if self.lay.ep else tp * self.lay.dp
        return expert_padding(self.spec, self.scheme, moe_tp, sm, rules)

    def _group_bytes(self, tp: int, pad: float) -> Callable[[WeightGroup, float], float]:
        share = self._expert_share(tp)
        dtype = self.scheme.model_dtype_bytes
        whole_shared = self.lay.sequence_parallel_moe

        def on_rank(g: WeightGroup, total: float) -> float:
            if g.kind == "experts":
                extra = g.extra_params * dtype
                return ((total - extra) * pad + extra) * share
            if g.kind == "shared_experts" and whole_shared:
                return total  # disable_tp=True: a full copy on every GPU
            return self._per_rank(g, total, tp)

        return on_rank


def _with_collectives(mem: ShapeMemory, settings: MemorySettings, nvlink: bool) -> ShapeMemory:
    """TP1 x PP1 engines in a DP group still set up NCCL and the all-to-all: charge the same
    in-budget buffers and out-of-budget NCCL memory as a multi-GPU TP engine."""
    cal = settings.calibration
    extra_in = (cal.non_torch_nvlink if nvlink else cal.non_torch_pcie) - cal.non_torch_single
    nccl = 0.0 if settings.vllm.nccl_in_budget else (cal.nccl_nvlink if nvlink else cal.nccl_pcie)
    stages = tuple(
        replace(
            st,
            non_torch=st.non_torch + extra_in * GIB,
            kv_pool=st.kv_pool - extra_in * GIB,
            outside=st.outside + nccl * GIB,
        )
        for st in mem.stages
    )
    blocks = min(
        int(max(0.0, st.kv_pool) // (st.kv_bytes_per_token * mem.dcp * BLOCK_SIZE))
        if st.kv_bytes_per_token
        else 0
        for st in stages
    )
    pairs = list(zip(stages, mem.request_bytes_per_stage, strict=True))
    conc = min(int(max(0.0, st.kv_pool) // r) if r > 0 else 0 for st, r in pairs)
    frac = min((max(0.0, st.kv_pool) / r) if r > 0 else 0.0 for st, r in pairs)
    return replace(
        mem,
        stages=stages,
        kv_cache_tokens=blocks * BLOCK_SIZE * mem.dcp,
        max_concurrent=conc,
        max_concurrency=frac,
    )


def rank_memory(
    spec: ModelSpec,
    scheme: QuantScheme,
    layout: Layout,
    device_gib: float,
    ctx: int,
    settings: MemorySettings,
    *,
    nvlink: bool = True,
    placer: LayoutPlacer | None = None,
    offload_gib: float = 0.0,
    dcp: int = 1,
) -> ShapeMemory:
    """Memory of ONE DP rank's GPUs (its TP x PP engine): KV tokens and requests per rank.
    `dcp` shards each request's KV tokens over that many GPUs of the rank's TP group, as in a
    plain TP engine (vLLM splits every TP group into TP / DCP groups, EP or not)."""
    mem = shape_memory(
        spec,
        scheme,
        layout.tp,
        layout.pp,
        device_gib,
        ctx,
        settings,
        dcp=dcp,
        nvlink=nvlink,
        placer=placer or LayoutPlacer(spec, scheme, layout),
        offload_gib=offload_gib,
    )
    # a dense model's DP ranks never talk to each other (no all-to-all, no step barrier):
    # each is the plain TP x PP engine, memory and all
    if layout.dp > 1 and layout.tp * layout.pp == 1 and spec.moe is not None:
        mem = _with_collectives(mem, settings, nvlink)
    return mem


def layout_memory(
    spec: ModelSpec,
    scheme: QuantScheme,
    layout: Layout,
    device_gib: float,
    ctx: int,
    settings: MemorySettings,
    *,
    nvlink: bool = True,
    placer: LayoutPlacer | None = None,
    offload_gib: float = 0.0,
    dcp: int = 1,
) -> ShapeMemory:
    """The whole layout: per-GPU stages of one rank, KV tokens and requests summed over DP.
    `prov fit` and `prov quote` both size DP / EP layouts here, `dcp` included."""
    mem = rank_memory(
        spec,
        scheme,
        layout,
        device_gib,
        ctx,
        settings,
        nvlink=nvlink,
        placer=placer,
        offload_gib=offload_gib,
        dcp=dcp,
    )
    if layout.dp == 1:
        return mem
    return replace(
        mem,
        kv_cache_tokens=mem.kv_cache_tokens * layout.dp,
        max_concurrent=mem.max_concurrent * layout.dp,
        max_concurrency=mem.max_concurrency * layout.dp,
    )


def layout_concurrent(
    spec: ModelSpec, mem: ShapeMemory, dp: int, tokens: int, settings: MemorySettings
) -> int:
    """Requests of `tokens` tokens the layout holds at once: each DP rank holds its own."""
    return concurrent_requests(spec, mem, tokens, settings) * dp
