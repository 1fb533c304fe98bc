"""Throughput model: decode step, prefill, TPOT, TTFT and tokens/s of a vLLM shape. Pure.

Decode step of one pipeline stage for a micro-batch of b requests at context c (factors: perf_data):
    memory  = dense/attention weights / (HBM x hbm_eff x lowbit) + b x c x KV / (HBM x hbm_eff)
              + experts touched / (HBM x hbm_eff x lowbit x moe_eff)
              (lowbit < 1 for sub-16-bit weights: dequantising GEMMs stream below bf16's fraction)
              experts touched per MoE layer = E x (1 - (1 - k/E)^b)
    compute = (2 x dense active params x b + attention FLOPs) / (TFLOPs x gemm_eff)
              + 2 x expert params touched x (tokens per expert + pad) / (TFLOPs x gemm_eff)
              (a grouped GEMM pads each expert's few tokens to a tile: the "pad" term)
    comm    = 2 all-reduces per layer over the TP link (latency + ring volume / bandwidth)
    stage   = max(memory, compute) + comm + layers x floor(architecture class)
              + b x k x MoE layers x routing cost
Pipeline: min(B, PP) micro-batches circulate, so a step = PP x stage(ceil(B / min(B, PP)))
          + (PP - 1) hand-offs + a per-step overhead + B x a per-sequence overhead
          (+ an older engine's CPU time, per step and per sequence, / --num-scheduler-steps).
B = min(concurrency, max_num_seqs): vLLM never batches more than max_num_seqs requests.
Prefill is compute-bound: 2 x (active params - lm_head) x isl + 2 x lm_head (logits of the last
prompt token only) / (TFLOPs x prefill_eff) + the causal attention FLOPs / (bf16 TFLOPs x
attn_prefill_eff): FlashAttention runs in bf16 at its own share of peak.
TTFT (no queueing) = prefill + its all-reduces + one decode step at the batch (the token comes
out of a step shared with the others; at concurrency 1 the idle TTFT) + layers x a fitted
per-layer floor (eager launches of the prefill's kernels, with the API server's and scheduler's
time folded in).
Chunked prefill: vLLM mixes prefill chunks into decode steps (max_num_batched_tokens per step); a
mixed step reads the weights once, so a chunk's FLOPs fill that one step's memory-bound slack and
the rest adds serially (a chunk of thousands of tokens is compute-bound, it does not spread):
    steps per cycle = max(osl, B x (isl + osl) / max_num_batched_tokens)
    chunk steps = B x isl / (max_num_batched_tokens - B + 1)
    cycle = steps x fixed + max(steps x memory, osl x compute) + B x prefill - hidden + comm
    hidden = min(B x prefill, chunk steps x (step memory - step compute) x (B - 1) / B)
SGLang (without --enable-mixed-chunk) and vLLM's V0 engine without chunked prefill run prefills
as steps of their own: nothing hidden.
    output tokens/s = B x osl / cycle;  TPOT = (cycle - own prefill) / steps
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from provisioner.core.hardware import GpuSpec
from provisioner.core.models import ModelSpec
from provisioner.core.perf_attention import (
    attn_dim,
    attn_dim_prefill,
    causal_pairs,
    has_windows,
    kv_tokens,
)
from provisioner.core.perf_data import (
    CURRENT_ERA,
    Band,
    Calibration,
    Link,
    arch_class,
    band_for,
    calibration_data,
    calibration_for,
    compute_dtype,
    compute_tflops,
    fabric_link,
    intra_link,
)
from provisioner.core.quant import QuantScheme
from provisioner.core.weight_placement import pp_partition
from provisioner.core.weights import WeightGroup

__all__ = [  # the model and, for its callers, the factor helpers of perf_data
    *("Band", "Calibration", "Link", "PerfEstimate", "StepBreakdown", "Workload"),
    *("arch_class", "calibration_data", "calibration_for", "compute_dtype", "compute_tflops"),
    *("decode_stage", "estimate", "fabric_link", "intra_link"),
]


@dataclass(frozen=True, slots=True)
class Workload:
    isl: int  # input tokens per request
    osl: int  # output tokens per request
    concurrency: int  # requests in flight


@dataclass(frozen=True, slots=True)
class StepBreakdown:
    memory_s: float
    compute_s: float
    comm_s: float
    bytes_read: float
    flops: float
    floor_s: float = 0.0  # layers x per-layer latency floor
    moe_route_s: float = 0.0  # b x k x MoE layers x routing cost
    expert_fraction: float = 1.0  # share of routed experts a step touches
    tokens_per_expert: float = 0.0


@dataclass(frozen=True)
class PerfEstimate:
    tpot_s: float  # time per output token a user sees (decode step + others' prefill chunks)
    step_s: float  # one pure decode step of the whole pipeline
    ttft_s: float  # prefill of one request on an idle deployment
    output_tps: float  # output tokens/s of the deployment
    total_tps: float  # input + output tokens/s
    band: float  # relative +- of the estimate (see interval)
    stage: StepBreakdown  # the slowest stage's decode step
    handoff_s: float
    overhead_s: float  # per step: fixed + per-sequence
    batch: int  # requests batched (after the max_num_seqs cap)
    offload_s: float = 0.0  # per decode step, all stages
    prefill_s: float = 0.0  # prefill compute of one request (all stages)
    prefill_hidden: float = 0.0  # share of the cycle's prefill hidden in decode's compute slack
    prefill_comm_s: float = 0.0  # the prefill's TP all-reduces (serial, in TTFT)
    ttft_floor_s: float = 0.0  # layers x the fitted per-layer TTFT floor
    steps_per_cycle: float = 0.0
    band_info: Band | None = None
    compute_dtype: str = "bf16"
    arch: str = "dense"
    calibration: Calibration | None = None
    requested_concurrency: int = 0

    def interval(self, value: float) -> tuple[float, float]:
        """value / (1 + band) .. value x (1 + band): symmetric in ratio, as errors are."""
        return value / (1 + self.band), value * (1 + self.band)


# ---- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StageWeights:
    layers: tuple[int, int]
    expert_bytes: float  # routed experts, per rank, all MoE layers of the stage
    other_bytes: float  # everything else read every step (per rank)
    active_params: float  # params touched per token, per rank
    moe_layers: int
    expert_params: float = 0.0  # routed expert params per rank, all MoE layers of the stage
    # lm_head params per rank (in active_params): a decode token needs its logits, a prompt
    # only its last token's (vLLM computes logits at each request's last scheduled position)
    head_params: float = 0.0


# the key under which a planner's stage cache keeps [(group, bytes in the scheme)] (pure in the
# model and scheme it is made for: the planner's cache serves one of each)
GROUP_BYTES_KEY = ("ep", "bytes")


def sized_groups(
    spec: ModelSpec, scheme: QuantScheme, cache: dict[Any, Any] | None
) -> list[tuple[WeightGroup, float]]:
    """Every weight group with its bytes in `scheme`, kept in `cache` when given."""
    sized = cache.get(GROUP_BYTES_KEY) if cache is not None else None
    if sized is None:
        sized = [(g, scheme.group_bytes(g)) for g in spec.groups]
        if cache is not None:
            cache[GROUP_BYTES_KEY] = sized
    return sized


def _stage_weights(
    spec: ModelSpec,
    scheme: QuantScheme,
    tp: int,
    pp: int,
    sized: list[tuple[WeightGroup, float]] | None = None,
) -> list[_StageWeights]:
    k_over_e = spec.moe.experts_per_tok / spec.moe.n_routed_experts if spec.moe else 1.0
    bounds = pp_partition(spec.num_layers, pp)
    stage_of = {layer: k for k, (lo, hi) in enumerate(bounds) for layer in range(lo, hi)}
    # one pass over the groups; each stage sums its groups in the groups' order
    # [expert bytes, other bytes, active params, expert params, MoE layers, lm_head params]
    acc = [[0.0, 0.0, 0.0, 0.0, 0, 0.0] for _ in bounds]
    for g, nbytes in sized if sized is not None else sized_groups(spec, scheme, None):
        if g.layer is None:
            if g.kind == "lm_head":
                a = acc[pp - 1]
                a[1] += nbytes / tp
                a[2] += g.total_params / tp
                a[5] += g.total_params / tp
            continue
        k = stage_of.get(g.layer)
        if k is None:
            continue
        a = acc[k]
        div = 1 if g.tp == "replicate" else tp
        if g.kind == "experts":
            a[0] += nbytes / div
            a[3] += g.total_params / div
            a[2] += g.total_params * k_over_e / div
            a[4] += 1
        else:
            a[1] += nbytes / div
            a[2] += g.total_params / div
    return [
        _StageWeights(b, a[0], a[1], a[2], int(a[4]), a[3], a[5])
        for b, a in zip(bounds, acc, strict=True)
    ]


def decode_stage(
    spec: ModelSpec,
    scheme: QuantScheme,
    gpu: GpuSpec,
    cal: Calibration,
    sw: _StageWeights,
    tp: int,
    b: int,
    ctx: float,
    kv_bytes: int,
    tp_link: Link,
    dcp: int = 1,
    ring_hops: int = 1,
) -> StepBreakdown:
    lo, hi = sw.layers
    bw = gpu.hbm_tbps * 1e12 * cal.hbm_eff
    tf = compute_tflops(gpu, scheme) * 1e12 * cal.gemm_eff
    frac, per_expert, k = 1.0, 0.0, 1
    if spec.moe is not None and sw.moe_layers:
        e, k = spec.moe.n_routed_experts, spec.moe.experts_per_tok
        frac = 1 - (1 - k / e) ** b  # share of experts touched by b tokens
        per_expert = b * k / (e * frac)  # tokens each touched expert sees
    kv_per_layer = spec.kv_elems_per_token_per_layer(tp) * kv_bytes
    cached = kv_tokens(spec, lo, hi, ctx)
    kv_read = b * cached * kv_per_layer / dcp
    expert_read = sw.expert_bytes * frac
    bytes_read = expert_read + sw.other_bytes + kv_read
    # quantized weights stream through dequantising GEMM kernels at a lower HBM fraction
    wbw = bw * cal.lowbit_mem_eff if scheme.bits < 16 else bw
    memory_s = sw.other_bytes / wbw + kv_read / bw + expert_read / (wbw * cal.moe_eff)
    heads = max(1, spec.num_heads // tp)
    attn_flops = b * cached * 4 * heads * attn_dim(spec) / dcp
    dense_active = sw.active_params - (
        sw.expert_params * spec.moe.experts_per_tok / spec.moe.n_routed_experts if spec.moe else 0
    )
    expert_flops = 2 * sw.expert_params * frac * (per_expert + cal.moe_tok_half) if frac else 0
    flops = 2 * dense_active * b + attn_flops + (expert_flops if spec.moe else 0.0)
    compute_s = flops / tf
    comm_s = 0.0
    if tp > 1:
        msg = b * spec.hidden_size * 2  # bf16 activations
        per = ring_hops * tp_link.latency_us * 1e-6 + 2 * (tp - 1) / tp * msg / (tp_link.gbps * 1e9)
        comm_s = 2 * (hi - lo) * per
    floor_s = cal.layer_us * 1e-6 * (hi - lo)
    route_s = cal.moe_tok_ns * 1e-9 * b * k * sw.moe_layers if spec.moe else 0.0
    return StepBreakdown(
        memory_s, compute_s, comm_s, bytes_read, flops, floor_s, route_s, frac, per_expert
    )


def estimate(
    spec: ModelSpec,
    scheme: QuantScheme,
    gpu: GpuSpec,
    *,
    tp: int,
    pp: int,
    gpus_per_node: int,
    interconnect: str,
    fabric: str,
    workload: Workload,
    kv_bytes: int = 2,
    dcp: int = 1,
    engine: str = "vllm",
    era: str = CURRENT_ERA,
    scheduler_steps: int = 1,
    offload_gib_per_gpu: float = 0.0,
    pcie_gbps: float = 25.0,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int = 8192,
    chunked_prefill: bool = True,
    data: dict[str, Any] | None = None,
    stage_cache: dict[tuple[int, int], Any] | None = None,
    stages: list[_StageWeights] | None = None,
    moe_step: Callable[[StepBreakdown, _StageWeights, int], StepBreakdown] | None = None,
) -> PerfEstimate:
    """TPOT, TTFT and tokens/s of TP x PP on `gpu` for `workload` (see the module docstring).

    `data` replaces the packaged calibration (benchmarks/accuracy.py fits with it). `era` is an
    older engine's era (perf_data.engine_era; prov's own plans run a current engine) and
    `scheduler_steps` its --num-scheduler-steps (V0 multi-step: CPU work once per n steps).
    `stages` and `moe_step` are the hook of the DP / EP layouts (provisioner/core/perf_ep.py): the
    stage weights of one DP rank's GPU, and the EP terms added to each stage's decode step.
    """
    packaged = data is None
    data = data or calibration_data()
    arch = arch_class(spec)
    cal = (
        _packaged_cal(gpu, engine, arch, era)
        if packaged
        else calibration_for(gpu, engine, data, arch, era)
    )
    # TP beyond one node (used only to reproduce published multi-node TP runs) crosses the fabric
    # (NCCL then runs a ring: 2 (TP - 1) latency hops instead of a one-shot custom all-reduce)
    tp_link = (
        intra_link(gpu, interconnect, data, tp)
        if tp <= gpus_per_node
        else fabric_link(fabric, data)
    )
    hops = 1 if tp <= gpus_per_node else 2 * (tp - 1)
    net = fabric_link(fabric, data)
    if stages is not None:
        pass
    elif stage_cache is None:
        stages = _stage_weights(spec, scheme, tp, pp)
    else:  # the planner reuses one model/scheme across hundreds of shapes
        stages = stage_cache.get((tp, pp))
        if stages is None:
            sized = sized_groups(spec, scheme, stage_cache)
            stages = stage_cache[(tp, pp)] = _stage_weights(spec, scheme, tp, pp, sized)
    asked = max(1, workload.concurrency)
    b_total = min(asked, max_num_seqs) if max_num_seqs else asked
    micro = min(b_total, pp)
    b = math.ceil(b_total / micro)
    ctx = workload.isl + workload.osl / 2  # average cached context during decode
    steps = [
        decode_stage(spec, scheme, gpu, cal, sw, tp, b, ctx, kv_bytes, tp_link, dcp, hops)
        for sw in stages
    ]
    if moe_step is not None:
        steps = [moe_step(s, sw, b) for s, sw in zip(steps, stages, strict=True)]
    offload_s = offload_gib_per_gpu * 2**30 / (pcie_gbps * 1e9)  # weights streamed each step
    fixed = [s.comm_s + offload_s + s.floor_s + s.moe_route_s for s in steps]
    stage_times = [max(s.memory_s, s.compute_s) + f for s, f in zip(steps, fixed, strict=True)]
    slow = max(range(pp), key=lambda i: stage_times[i])
    handoff = 0.0
    if pp > 1:
        msg = b * spec.hidden_size * 2
        crosses = tp * pp > gpus_per_node  # PP inside one node hands off over the TP link
        link = net if crosses else tp_link
        handoff = (pp - 1) * (link.latency_us * 1e-6 + msg / (link.gbps * 1e9))
        node_boundaries = math.ceil(tp * pp / gpus_per_node) - 1 if crosses else 0
        handoff += node_boundaries * cal.multinode_pp_ms / 1000
        handoff += (pp - 1 - node_boundaries) * cal.pp_stage_ms / 1000
    overhead = cal.step_overhead_ms / 1000 + b_total * cal.seq_overhead_us * 1e-6
    # an older engine's CPU work on the critical path: scheduling and input preparation, per
    # step and per sequence (block tables, input tensors), once per scheduled step: multi-step
    # scheduling runs n GPU steps per schedule (output processing runs async beside the GPU)
    era_cpu = cal.era_step_ms / 1000 + b_total * cal.era_seq_us * 1e-6
    overhead += era_cpu / max(1, scheduler_steps)
    if micro >= pp:  # stages overlap: a token per micro-batch every PP slowest-stage times
        mem = pp * steps[slow].memory_s
        cmp = pp * steps[slow].compute_s
        fix = pp * fixed[slow]
    else:  # fewer micro-batches than stages: one request walks through every stage in turn
        mem = sum(s.memory_s for s in steps)
        cmp = sum(s.compute_s for s in steps)
        fix = sum(fixed)
    fix += handoff + overhead
    step_s = max(mem, cmp) + fix

    # prefill: compute-bound on the tp GPUs of each stage, stages in sequence for one request
    tf = compute_tflops(gpu, scheme) * 1e12 * cal.prefill_eff
    isl = workload.isl
    active = sum(sw.active_params for sw in stages)  # per rank, summed over stages
    head = sum(sw.head_params for sw in stages)  # the lm_head: the last prompt token only
    linear = 2 * ((active - head) * isl + head)
    layers = spec.num_layers
    heads = max(1, spec.num_heads // tp)
    # causal attention: 2 FLOPs x (qk + v widths) per (query, key) pair per head and layer;
    # isl^2 / 2 pairs on a full layer, about isl x window on a sliding-window layer
    if has_windows(spec):
        pairs = sum(causal_pairs(isl, w) for w in spec.layer_windows)
    else:
        pairs = layers * isl * isl / 2
    attn = 2 * pairs * heads * attn_dim_prefill(spec)
    if cal.attn_prefill_eff > 0:  # attention runs in its own kernel, in bf16, at its own share
        attn_tf = (gpu.bf16_tflops or compute_tflops(gpu, scheme)) * 1e12 * cal.attn_prefill_eff
        prefill_s = linear / tf + attn / attn_tf
    else:
        prefill_s = (linear + attn) / tf
    comm_prefill = 0.0
    if tp > 1:
        msg = isl * spec.hidden_size * 2
        comm_prefill = (
            2
            * layers
            * (hops * tp_link.latency_us * 1e-6 + 2 * (tp - 1) / tp * msg / (tp_link.gbps * 1e9))
        )
    # the prefill rides in one engine step: that step also reads the weights and pays the floors;
    # plus the per-layer TTFT floor (eager launches, API and scheduling time; fitted)
    ttft_floor = layers * cal.prefill_layer_us * 1e-6
    ttft = prefill_s + comm_prefill + step_s + ttft_floor

    # steady state: B requests cycle through prefill + osl decode steps; prefill chunks ride in
    # the decode steps (chunked prefill), filling the compute slack of memory-bound steps
    osl = workload.osl
    budget = max(max_num_batched_tokens, b_total + 1)
    n_steps = max(float(osl), b_total * (isl + osl) / budget)
    pp_div = pp if micro >= pp else 1  # stages work on different requests' chunks at once
    prefill_work = b_total * prefill_s / pp_div
    serial = b_total * comm_prefill / pp_div
    # a chunk rides in one mixed step, which reads the weights once for the chunk and the
    # others' decodes: only those steps' memory-bound slack hides prefill, one step per
    # (budget - decodes) prompt tokens; a request's own prefill cannot overlap its own decode
    chunk_steps = min(n_steps, b_total * isl / max(1, budget - b_total + 1))
    slack = chunk_steps * max(0.0, mem - cmp) * (b_total - 1) / b_total
    hidden_s = min(prefill_work, slack) if chunked_prefill else 0.0
    cycle = n_steps * fix + max(n_steps * mem, osl * cmp) + prefill_work - hidden_s + serial
    hidden = hidden_s / prefill_work if prefill_work > 0 else 1.0
    own = (prefill_work - hidden_s + serial) / b_total
    tpot = max(step_s, (cycle - own) / n_steps)
    output_tps = b_total * osl / cycle
    total_tps = output_tps * (isl + osl) / osl
    band = (
        _packaged_band(gpu, b_total, engine) if packaged else band_for(gpu, b_total, data, engine)
    )
    return PerfEstimate(
        tpot_s=tpot,
        step_s=step_s,
        ttft_s=ttft,
        output_tps=output_tps,
        total_tps=total_tps,
        band=band.rel,
        stage=steps[slow],
        handoff_s=handoff,
        overhead_s=overhead,
        batch=b_total,
        offload_s=offload_s * pp,
        prefill_s=prefill_s,
        prefill_hidden=hidden,
        prefill_comm_s=comm_prefill,
        ttft_floor_s=ttft_floor,
        steps_per_cycle=n_steps,
        band_info=band,
        compute_dtype=compute_dtype(gpu, scheme),
        arch=arch,
        calibration=cal,
        requested_concurrency=asked,
    )


@lru_cache(maxsize=256)
def _packaged_cal(gpu: GpuSpec, engine: str, arch: str, era: str) -> Calibration:
    return calibration_for(gpu, engine, None, arch, era)


@lru_cache(maxsize=1024)
def _packaged_band(gpu: GpuSpec, batch: int, engine: str) -> Band:
    return band_for(gpu, batch, None, engine)
