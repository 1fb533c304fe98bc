"""`prov fit`: will one explicit vLLM shape start, and how much KV cache will it have?

Pure: a FitRequest (model spec, scheme, GPU, flags) -> vLLM's defaults for that GPU and version
-> memory.shape_memory -> a FitResult with the breakdown vLLM logs at start-up and a verdict.
The planner (`prov quote`) calls the same memory code with the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from provisioner.core.hardware import cuda_memory_gib, estimated_memory_note, gpu_specs
from provisioner.core.layouts import Layout, layout_label
from provisioner.core.memory import (
    GIB,
    MemorySettings,
    ShapeMemory,
    StageMemory,
    distinct_gib,
    shape_memory,
)
from provisioner.core.models import ModelSpec
from provisioner.core.quant import QuantScheme
from provisioner.core.vllm_rules import VllmRules, rules_warning, scheduler_defaults
from provisioner.errors import UsageError

USAGE_CONTEXTS = ("serve", "llm")  # `vllm serve` or the offline LLM class (bigger batches)


@dataclass(frozen=True)
class FitRequest:
    spec: ModelSpec
    scheme: QuantScheme
    rules: VllmRules
    ctx: int  # max_model_len
    gpu: str | None = None  # canonical name from the GPU table, or None with device_gib
    device_gib: float | None = None  # overrides the table (memory as CUDA reports it)
    tp: int = 1
    pp: int = 1
    dcp: int = 1
    expert_parallel: bool = False
    dp: int = 1  # --data-parallel-size: engines of TP x PP GPUs (provisioner/core/layouts.py)
    kv_bytes: int = 2
    gpu_memory_utilization: float | None = None  # None: the version's default
    max_num_seqs: int | None = None  # None: vLLM's default for the GPU
    max_num_batched_tokens: int | None = None
    enforce_eager: bool = False
    nvlink: bool | None = None  # None: from the GPU table
    usage: str = "serve"
    # the most GPUs one node of this GPU has in the price data `prov quote` ranks (the CLI
    # reads it; None: unknown): a TP group larger than that spans nodes
    node_gpus: int | None = None

    @property
    def layout(self) -> Layout:
        return Layout(self.tp, self.dp, self.pp, self.expert_parallel)


@dataclass(frozen=True)
class FitResult:
    request: FitRequest
    device_gib: float
    settings: MemorySettings
    memory: ShapeMemory | None
    fits: bool
    reason: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)  # the CLI prints them on stderr

    @property
    def requests_per_rank(self) -> int:
        """Whole max_model_len requests one DP rank (one vLLM engine) holds at once."""
        return self.memory.max_concurrent // self.request.dp if self.memory else 0

    @property
    def concurrency_per_rank(self) -> float:
        """vLLM's "Maximum concurrency for N tokens per request: X" of one engine (DP rank)."""
        return self.memory.max_concurrency / self.request.dp if self.memory else 0.0

    @property
    def scheme_label(self) -> str:
        """The format as vLLM runs it on this GPU (fp8 on an A100 is weight-only: W8A16)."""
        from provisioner.core.planner.shape_rules import label_on

        r = self.request
        return label_on(r.scheme, gpu_specs().get(r.gpu) if r.gpu else None)

    @property
    def layout_label(self) -> str:
        """The shape's name as `prov quote` spells it (provisioner/core/layouts.py)."""
        r = self.request
        return layout_label(r.layout, r.dcp)

    @property
    def tp_nodes(self) -> int:
        """Nodes one TP group spans (1 when TP stays inside a node or the node size is unknown)."""
        n = self.request.node_gpus
        return -(-self.request.tp // n) if n else 1

    def to_json(self) -> dict[str, Any]:
        r, m = self.request, self.memory
        w = m.worst if m is not None else None

        def gib(x: float | None) -> float | None:
            return None if x is None else round(x / GIB, 3)

        return {
            "model": r.spec.id,
            "quant": r.scheme.name,
            "gpu": r.gpu,
            "device_gib": round(self.device_gib, 2),
            "vllm_version": r.rules.label,
            "install": r.rules.install,
            "sampler_path": r.rules.sampler,
            "mxfp4_hopper_backend": "triton" if r.rules.triton_mxfp4_on_hopper else "marlin",
            "tp": r.tp,
            "pp": r.pp,
            "dcp": r.dcp,
            "dp": r.dp,
            "enable_expert_parallel": r.expert_parallel,
            "gpus": r.tp * r.dp * r.pp,
            "layout": self.layout_label,
            "max_model_len": r.ctx,
            "gpu_memory_utilization": self.settings.gpu_memory_utilization,
            "max_num_seqs": self.settings.max_num_seqs,
            "max_num_batched_tokens": self.settings.max_num_batched_tokens,
            "kv_cache_dtype_bytes": self.settings.kv_bytes,
            "budget_gib": gib(w.budget if w else None),
            "weights_gib_per_gpu": gib(max(s.weights for s in m.stages) if m else None),
            "activation_peak_gib": gib(w.activations if w else None),
            "non_torch_gib": gib(w.non_torch if w else None),
            "cuda_graph_gib": gib(w.cuda_graphs if w else None),
            "cuda_graph_in_budget": r.rules.cudagraph_in_budget,
            "outside_budget_gib": gib(w.outside if w else None),
            "kv_cache_gib": gib(max(0.0, w.kv_pool) if w else None),
            "kv_cache_tokens": m.kv_cache_tokens if m else 0,
            "kv_cache_tokens_per_rank": m.kv_cache_tokens // r.dp if m else 0,
            # per DP rank, as each engine logs it; whole requests as `prov quote` counts them
            "max_concurrency": round(self.concurrency_per_rank, 2),
            "max_concurrent_full_ctx_per_rank": self.requests_per_rank,
            "max_concurrent_full_ctx": m.max_concurrent if m else 0,
            "node_gpus": r.node_gpus,
            "tp_nodes": self.tp_nodes,
            "stages": [
                {
                    "stage": s.stage,
                    "layers": list(s.layers),
                    "weights_gib": gib(s.weights),
                    "kv_cache_gib": gib(max(0.0, s.kv_pool)),
                }
                for s in (m.stages if m else ())
            ],
            "fits": self.fits,
            "reason": self.reason,
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }


def _layout_refusal(r: FitRequest) -> str | None:
    """vLLM's start-up refusal of the parallel layout (the planner's checks, with EP), or None.
    A layout vLLM starts that prov does not model is not a verdict: bad input (exit 2)."""
    from provisioner.core.planner.shape_rules import shape_rule_violation  # the one copy

    if r.pp > r.spec.num_layers:
        return f"vLLM rejects the layout: PP{r.pp} exceeds the {r.spec.num_layers} layers"
    bad = shape_rule_violation(r.spec, r.scheme, r.tp, r.pp, r.dcp, ep=r.expert_parallel)
    if not bad and (r.dp > 1 or r.expert_parallel):
        from provisioner.core.layouts import expert_width_violation, unmodelled_layout

        limit = unmodelled_layout(r.layout, r.dcp)
        if limit:
            raise UsageError(
                f"prov fit cannot check {limit}: vLLM v0.18.0 starts it, prov does not model "
                "it yet (docs/ep-dp-layouts.md)"
            )
        bad = expert_width_violation(r.spec, r.scheme, r.layout)
    return f"vLLM rejects the layout: {bad}" if bad else None


def _without_idle_ep(r: FitRequest) -> tuple[FitRequest, list[str]]:
    """--enable-expert-parallel on a dense model acts on nothing (vLLM applies it to FusedMoE
    layers only): the shape is checked without it, and a note says so."""
    if not r.expert_parallel or r.spec.moe is not None:
        return r, []
    plain = replace(r, expert_parallel=False)
    return plain, [
        f"--enable-expert-parallel has no experts to act on in a dense model (vLLM applies it "
        f"to MoE layers only): checked as {layout_label(plain.layout, plain.dcp)}"
    ]


def evaluate(r: FitRequest) -> FitResult:
    """The memory breakdown and verdict of one shape."""
    r, idle_ep = _without_idle_ep(r)
    gpu = gpu_specs().get(r.gpu) if r.gpu else None
    if r.device_gib is not None:
        device = r.device_gib
    elif r.gpu is not None:
        device = cuda_memory_gib(r.gpu)
    else:
        raise UsageError("give --gpu NAME or --gpu-memory-gib X")
    if r.usage not in USAGE_CONTEXTS:
        raise UsageError(f"unknown usage context {r.usage!r}; allowed: serve, llm")
    tokens, seqs = scheduler_defaults(
        r.rules, r.gpu or "", device, r.ctx, r.max_num_seqs, r.max_num_batched_tokens, r.usage
    )
    settings = MemorySettings(
        gpu_memory_utilization=r.gpu_memory_utilization or r.rules.gpu_memory_utilization,
        max_num_batched_tokens=tokens,
        max_num_seqs=seqs,
        kv_bytes=r.kv_bytes,
        enforce_eager=r.enforce_eager,
        sm=gpu.sm if gpu is not None else None,
        rules=r.rules,
    )
    if settings.max_num_batched_tokens < settings.max_num_seqs:
        raise UsageError(
            f"max_num_batched_tokens ({settings.max_num_batched_tokens}) is smaller than "
            f"max_num_seqs ({settings.max_num_seqs}); vLLM refuses that (SchedulerConfig)"
        )
    notes: list[str] = list(r.spec.notes) + list(r.scheme.notes) + idle_ep
    estimated = estimated_memory_note(r.gpu, device) if r.device_gib is None and r.gpu else None
    if estimated:
        notes.append(
            f"{estimated} (pass --gpu-memory-gib with torch.cuda.mem_get_info()[1] / 2**30)"
        )
    if r.gpu is None and None in (r.max_num_seqs, r.max_num_batched_tokens):
        notes += _batch_class_note(r, device)
    if r.ctx > r.spec.max_position_embeddings:
        raise UsageError(
            f"--ctx {r.ctx} exceeds the model's max_position_embeddings "
            f"({r.spec.max_position_embeddings}); vLLM refuses it"
        )
    warned = rules_warning(r.rules.version)
    warnings: tuple[str, ...] = (warned,) if warned else ()
    if r.node_gpus and r.tp > r.node_gpus:
        notes.append(_tp_across_nodes(r, r.node_gpus))
    reason = _layout_refusal(r)
    if reason:
        return FitResult(r, device, settings, None, False, reason, tuple(notes), warnings)
    if gpu is not None:  # the quote's kernel rule: no kernels is a refusal, a fallback a warning
        from provisioner.core.planner.shape_rules import kernel_verdict

        no_kernels, fallback = kernel_verdict(r.scheme, gpu)
        if no_kernels:
            reason = f"vLLM cannot run it: {no_kernels}"
            return FitResult(r, device, settings, None, False, reason, tuple(notes), warnings)
        warnings += (fallback,) if fallback else ()
    nvlink = r.nvlink
    if nvlink is None:
        link = gpu.interconnect.lower() if gpu is not None else ""
        nvlink = link.startswith("nvlink") or link.startswith("infinity fabric")
    if r.dp > 1 or r.expert_parallel:  # per-GPU memory of one DP rank, totals over DP
        from provisioner.core.layout_memory import layout_memory

        mem = layout_memory(
            r.spec, r.scheme, r.layout, device, r.ctx, settings, nvlink=nvlink, dcp=r.dcp
        )
    else:
        mem = shape_memory(
            r.spec, r.scheme, r.tp, r.pp, device, r.ctx, settings, dcp=r.dcp, nvlink=nvlink
        )
    fits, reason = _verdict(mem, settings, r.ctx, r.dp)
    return FitResult(r, device, settings, mem, fits, reason, tuple(notes), warnings)


def _batch_class_note(r: FitRequest, device: float) -> list[str]:
    """vLLM's batch defaults depend on the GPU's name as well as its size (an A100 keeps the
    small GPU's); with only --gpu-memory-gib, say which class was assumed."""
    rules = r.rules
    if device < rules.big_gpu_gib:
        return []
    small = f"{rules.max_num_batched_tokens_small} / {rules.max_num_seqs_small}"
    return [
        f"no --gpu: vLLM's defaults for a GPU of {rules.big_gpu_gib:g}+ GiB other than an A100 "
        f"assumed (an A100 gets {small} batched tokens / seqs): pass --gpu, or "
        "--max-num-seqs and --max-num-batched-tokens"
    ]


def _tp_across_nodes(r: FitRequest, node: int) -> str:
    """The note for a TP group larger than the largest node. vLLM starts it (Ray, TP = all GPUs
    of all machines), but its docs advise TP = GPUs per node and PP = nodes, the rule `prov
    quote` ranks by and `prov deploy` enforces (docs.vllm.ai serving/distributed_serving)."""
    nodes = -(-r.tp // node)
    gpus = r.tp * r.pp
    shape = layout_label(Layout(node, 1, gpus // node))  # named as quote's table names it
    alt = f" ({shape} for {gpus} GPUs)" if r.tp % node == 0 else ""
    return (
        f"TP{r.tp} spans {nodes} nodes: the largest {r.gpu} node in the price data has {node} "
        "GPUs. vLLM runs it (multi-node, Ray), but every layer's all-reduce crosses the "
        f"network; prov quote keeps TP inside a node{alt} and prov deploy refuses TP across "
        "nodes"
    )


def _capacity(mem: ShapeMemory, ctx: int, dp: int) -> str:
    """KV tokens and concurrent requests: vLLM's per-engine figure and whole requests."""
    if dp == 1:
        return (
            f"{mem.kv_cache_tokens:,} KV tokens, {mem.max_concurrency:.2f} x {ctx:,}-token "
            "requests at once"
        )
    return (
        f"{mem.kv_cache_tokens:,} KV tokens, {mem.max_concurrent} x {ctx:,}-token requests "
        f"at once ({mem.max_concurrent // dp} on each of {dp} DP ranks; each engine logs "
        f"{mem.max_concurrency / dp:.2f}x)"
    )


def _verdict(mem: ShapeMemory, s: MemorySettings, ctx: int, dp: int = 1) -> tuple[bool, str]:
    worst_pool = min(mem.stages, key=lambda st: st.kv_pool)
    if worst_pool.kv_pool <= 0:
        return False, _no_kv_room(worst_pool, s)
    if mem.max_concurrent < 1:
        k = mem.short_stage
        st = mem.stages[k]
        need, have = distinct_gib(mem.request_bytes_per_stage[k], st.kv_pool)
        return False, (
            f"one {ctx:,}-token request needs {need} of KV cache per GPU but {have} is "
            "available (vLLM: '... KV cache is needed, which is larger than the available KV "
            "cache memory'; lower --ctx or add GPUs)"
        )
    w = mem.worst
    headroom = w.device - w.budget
    startup = w.at_startup
    graphs_outside = w.outside - startup
    if startup > headroom:
        # vLLM checks free memory >= utilization x total once the CUDA context (and, from
        # v0.11, NCCL) exist: what they hold must fit the headroom or it refuses to start.
        return False, (
            f"the CUDA context and NCCL buffers (~{startup / GIB:.2f} GiB) do not fit the "
            f"{headroom / GIB:.2f} GiB left by --gpu-memory-utilization "
            f"{s.gpu_memory_utilization:g} (vLLM: 'Free memory on device ... is less than "
            "desired GPU memory utilization'); lower it"
        )
    if w.outside > headroom:
        return True, (
            f"{_capacity(mem, ctx, dp)}; but CUDA graphs (~{graphs_outside / GIB:.2f} GiB, "
            f"captured after the KV cache) may not fit the {headroom / GIB:.2f} GiB headroom: "
            "--enforce-eager or a lower --gpu-memory-utilization if capture runs out of memory"
        )
    return True, _capacity(mem, ctx, dp)


def _no_kv_room(st: StageMemory, s: MemorySettings) -> str:
    """Why no KV cache is left, worded as vLLM fails: the weights load first, on the whole
    device; then the profile run (dummy forward + sampler warm-up) allocates its peak; only
    then is the budget checked (docs/fit.md "How vLLM fails" has the sources)."""
    present = st.at_startup  # CUDA context (+ NCCL from v0.11) before loading
    if st.weights + present > st.device:
        w, room = distinct_gib(st.weights, st.device - present)
        return (
            f"stage {st.stage}: weights {w} per GPU do not fit the {room} of the device left "
            "by the CUDA context and NCCL: vLLM runs out of CUDA memory while loading them "
            "(vLLM: 'CUDA out of memory', reported as 'Failed to load model - not enough GPU "
            "memory')"
        )
    profiled = st.weights + st.activations + st.non_torch
    if profiled + present > st.device:
        need, room = distinct_gib(profiled, st.device - present)
        if st.weights + st.overhead < st.budget:
            fix = "lower --max-num-seqs or --max-num-batched-tokens, or add GPUs"
        else:  # a smaller warm-up only moves the failure to the budget check
            fix = (
                "add GPUs or raise --gpu-memory-utilization: weights + non-torch alone "
                f"exceed the {st.budget / GIB:.2f} GiB "
                "budget ('No available memory for the cache blocks' with a smaller warm-up)"
            )
        return (
            f"stage {st.stage}: weights + profile-run peak + non-torch = {need} per GPU "
            f"exceed the {room} of the device left by the CUDA context and NCCL: vLLM runs "
            "out of CUDA memory in the profile run (the sampler warm-up says 'CUDA out of "
            f"memory occurred when warming up sampler'); {fix}"
        )
    n, b = distinct_gib(st.weights + st.activations + st.overhead, st.budget)
    return (
        f"stage {st.stage}: weights {st.weights / GIB:.2f} + activations "
        f"{st.activations / GIB:.2f} + overhead {st.overhead / GIB:.2f} = {n} per GPU "
        f"exceed the budget {s.gpu_memory_utilization:g} x {st.device / GIB:.2f} = {b} "
        "(vLLM: 'No available memory for the cache blocks'; raise "
        "--gpu-memory-utilization or add GPUs)"
    )
