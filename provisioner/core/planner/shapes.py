"""One shape on one hardware class: does it start under vLLM, and what does each GPU hold?

A hardware class is what the memory model sees of an offer (GPU, GPUs per node, memory as CUDA
reports it, interconnect); a shape is nodes x TP x PP, or a DP/EP layout
(provisioner/core/layouts.py). `evaluate_shape` applies the rules of provisioner/core/
shape_rules.py and the memory model of the pinned vLLM version (vllm_rules.VLLM_VERSION), and
returns a ShapeVerdict: feasible with its memory and concurrency, or the reason it is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provisioner.core.hardware import estimated_memory_note, gpu_specs
from provisioner.core.layout_memory import LayoutPlacer, layout_concurrent, layout_memory
from provisioner.core.layouts import (
    Layout,
    expert_width_violation,
    layout_label,
    unmodelled_layout,
)
from provisioner.core.memory import (
    GIB,
    MemorySettings,
    ShapeMemory,
    concurrent_requests,
    distinct_gib,
    shape_memory,
)
from provisioner.core.models import ModelSpec
from provisioner.core.planner.shape_rules import shape_rule_violation
from provisioner.core.quant import QuantScheme
from provisioner.core.request import QuoteRequest, workload_tokens
from provisioner.core.vllm_rules import VLLM_VERSION, rules_for, scheduler_defaults
from provisioner.core.weight_placement import WeightPlacer


@dataclass(frozen=True)
class HardwareClass:
    gpu: str
    gpus_per_node: int
    gpu_memory_gib: float
    interconnect: str


@dataclass(frozen=True)
class ShapeVerdict:
    """The outcome for one hardware class x nodes x TP x PP."""

    hw: HardwareClass
    nodes: int
    tp: int
    pp: int
    memory: ShapeMemory | None
    reason: str | None  # None = feasible
    warnings: tuple[str, ...] = ()
    workload_concurrency: int = 0  # requests of isl+osl tokens the KV cache holds at once
    max_num_seqs: int = 256  # vLLM's default batch cap on this GPU (per DP rank)
    dp: int = 1  # data-parallel ranks (provisioner/core/layouts.py)
    ep: bool = False  # --enable-expert-parallel
    too_heavy: bool = False  # refused by weights_cannot_fit, without the memory model
    max_num_batched_tokens: int = 8192  # the prefill chunk vLLM runs with (default per GPU)

    @property
    def layout(self) -> Layout:
        return Layout(self.tp, self.dp, self.pp, self.ep)

    def on(self, hw: HardwareClass, nodes: int) -> ShapeVerdict:
        """The same verdict for another class with this GPU, memory and link (as
        dataclasses.replace, at a third of its cost: the planner makes hundreds)."""
        return ShapeVerdict(
            hw, nodes, self.tp, self.pp, self.memory, self.reason, self.warnings,
            self.workload_concurrency, self.max_num_seqs, self.dp, self.ep, self.too_heavy,
            self.max_num_batched_tokens,
        )  # fmt: skip

    def warned(self, warning: str) -> ShapeVerdict:
        """The same verdict with one more warning (as dataclasses.replace, cheaper)."""
        return ShapeVerdict(
            self.hw, self.nodes, self.tp, self.pp, self.memory, self.reason,
            (*self.warnings, warning), self.workload_concurrency, self.max_num_seqs, self.dp,
            self.ep, self.too_heavy, self.max_num_batched_tokens,
        )  # fmt: skip

    @property
    def weights_overflow(self) -> bool:
        """Refused because the weights alone do not fit (not a rule, not the KV cache)."""
        return self.too_heavy or (self.memory is not None and not self.memory.weights_fit)


def memory_settings(
    req: QuoteRequest, spec: ModelSpec, hw: HardwareClass, kvb: int
) -> MemorySettings:
    """The same vLLM rules `prov fit` applies (provisioner/core/vllm_rules.py, VLLM_VERSION):
    vLLM's own max_num_batched_tokens and max_num_seqs for this GPU unless the user set the
    token budget (scheduler_defaults, as fit.evaluate)."""
    rules = rules_for(VLLM_VERSION)
    gpu = gpu_specs().get(hw.gpu)
    tokens, seqs = scheduler_defaults(
        rules, hw.gpu, hw.gpu_memory_gib, req.ctx, None, req.max_num_batched_tokens
    )
    return MemorySettings(
        gpu_memory_utilization=req.gpu_memory_utilization,
        max_num_batched_tokens=tokens,
        max_num_seqs=seqs,
        kv_bytes=kvb,
        sm=gpu.sm if gpu is not None else None,
        rules=rules,
    )


def weights_cannot_fit(
    req: QuoteRequest, hw: HardwareClass, gpus: int, weight_bytes: float
) -> bool:
    """True when `weight_bytes` cannot fit on `gpus` GPUs of this class whatever the split.

    Sound, and much cheaper than the memory model: every split puts at least the average share
    of the checkpoint on its heaviest GPU (sharded groups divide, replicated ones repeat, padding
    only adds), less --cpu-offload-gb; a GPU whose weights exceed vLLM's budget has no KV pool
    (memory.shape_memory). The margin keeps float rounding on the safe side."""
    budget = req.gpu_memory_utilization * hw.gpu_memory_gib * GIB
    return weight_bytes / gpus - req.cpu_offload_gb * GIB > budget * (1 + 1e-9)


def _fmt_gib(x: float) -> str:
    return f"{x / GIB:.1f} GiB"


def evaluate_shape(
    spec: ModelSpec,
    scheme: QuantScheme,
    req: QuoteRequest,
    hw: HardwareClass,
    nodes: int,
    tp: int,
    pp: int,
    kvb: int,
    placer: WeightPlacer | None = None,
    layout: Layout | None = None,
    settings: MemorySettings | None = None,
) -> ShapeVerdict:
    """Feasibility of one shape on one hardware class, with the reason when it fails.

    `layout` (DP and/or EP, provisioner/core/layouts.py) replaces the plain TP x PP shape;
    `settings`, when given, is memory_settings(req, spec, hw, kvb) (the planner keeps them)."""
    lay = layout or Layout(tp, 1, pp)
    dp, ep = lay.dp, lay.ep
    rule = shape_rule_violation(spec, scheme, tp, pp, req.dcp, ep=ep)
    if not rule and (dp > 1 or ep):
        limit = unmodelled_layout(lay, req.dcp)
        rule = f"{limit} is not modelled" if limit else expert_width_violation(spec, scheme, lay)
    if rule:
        return ShapeVerdict(hw, nodes, tp, pp, None, rule, dp=dp, ep=ep)
    nvlink = hw.interconnect in {"nvlink", "xgmi", "nvlink-bridge"}
    settings = settings or memory_settings(req, spec, hw, kvb)
    if dp > 1 or ep:
        mem = layout_memory(
            spec,
            scheme,
            lay,
            hw.gpu_memory_gib,
            req.ctx,
            settings,
            nvlink=nvlink,
            placer=placer if isinstance(placer, LayoutPlacer) else None,
            offload_gib=req.cpu_offload_gb,
            dcp=req.dcp,
        )
    else:
        mem = shape_memory(
            spec,
            scheme,
            tp,
            pp,
            hw.gpu_memory_gib,
            req.ctx,
            settings,
            dcp=req.dcp,
            nvlink=nvlink,
            placer=placer,
            offload_gib=req.cpu_offload_gb,
        )

    def held_of(tokens: int) -> int:
        if dp > 1:
            return layout_concurrent(spec, mem, dp, tokens, settings)
        return concurrent_requests(spec, mem, tokens, settings)

    def reject(reason: str) -> ShapeVerdict:
        return ShapeVerdict(
            hw, nodes, tp, pp, mem, reason, dp=dp, ep=ep,
            max_num_batched_tokens=settings.max_num_batched_tokens,
        )  # fmt: skip

    w = max(mem.stages, key=lambda s: s.weights)
    if not mem.weights_fit:
        bad = min(mem.stages, key=lambda s: s.kv_pool)
        total, budget = distinct_gib(bad.weights + bad.activations + bad.overhead, bad.budget)
        return reject(
            f"weights+activations+overhead {total} per GPU exceed "
            f"{req.gpu_memory_utilization:g} x {hw.gpu_memory_gib:g} GiB = {budget}",
        )
    if mem.max_concurrent < 1:
        k = mem.short_stage
        st = mem.stages[k]
        needed, left = distinct_gib(mem.request_bytes_per_stage[k], max(0.0, st.kv_pool))
        return reject(
            f"one {req.ctx}-token request needs {needed} of KV per GPU but only {left} is "
            f"left after weights {_fmt_gib(st.weights)} (vLLM refuses to start)",
        )
    worst = mem.worst
    if worst.at_startup > worst.device - worst.budget:  # as prov fit (core/fit.py) refuses
        return reject(
            f"the CUDA context and NCCL buffers (~{_fmt_gib(worst.at_startup)}) do not fit "
            f"the {_fmt_gib(worst.device - worst.budget)} left by --gpu-memory-utilization "
            f"{req.gpu_memory_utilization:g} (vLLM refuses to start: 'Free memory on device')"
        )
    isl, osl, explicit = workload_tokens(req)
    per_request = isl + osl if explicit else req.ctx  # what each concurrent request holds
    held = held_of(per_request) if per_request != req.ctx else mem.max_concurrent
    if req.concurrency is not None and held < req.concurrency:
        return reject(
            f"only {held} concurrent {per_request}-token requests fit in "
            f"the KV cache; --concurrency asks for {req.concurrency}",
        )
    # requests of the workload's size the cache holds: sizes the batch at saturation
    workload_held = held if per_request == isl + osl else held_of(max(1, isl + osl))
    warnings: list[str] = []
    headroom = w.device - w.budget
    if w.outside > headroom:
        warnings.append(
            f"CUDA context, NCCL and graphs (~{_fmt_gib(w.outside)}) may not fit the "
            f"{_fmt_gib(headroom)} left by --gpu-memory-utilization "
            f"{req.gpu_memory_utilization:g}; lower it if vLLM fails to start"
        )
    if tp > 1 and hw.interconnect == "pcie":
        warnings.append(f"TP{tp} all-reduce runs over PCIe (no NVLink)")
    estimated = estimated_memory_note(hw.gpu, hw.gpu_memory_gib)
    if estimated:
        warnings.append(estimated)
    return ShapeVerdict(
        hw, nodes, tp, pp, mem, None, tuple(warnings), workload_held, settings.max_num_seqs, dp, ep,
        max_num_batched_tokens=settings.max_num_batched_tokens,
    )  # fmt: skip


def rejection_row(v: ShapeVerdict, cloud: str, itype: str, reason: str) -> dict[str, Any]:
    return {
        # the layout as the quote table names it (a GGUF row's is relabelled by plan_quote)
        "shape": f"{v.nodes}x {cloud}:{itype} ({v.hw.gpus_per_node}x{v.hw.gpu}) "
        + layout_label(v.layout),
        "cloud": cloud,
        "instance_type": itype,
        "gpu": v.hw.gpu,
        "nodes": v.nodes,
        "tp": v.tp,
        "pp": v.pp,
        **({"dp": v.dp, "ep": v.ep} if v.dp > 1 or v.ep else {}),
        "reason": reason,
    }
