"""Throughput model: decode step, prefill, TPOT, TTFT and tokens/s of a vLLM shape. Pure.

Decode step of one pipeline stage for a micro-batch of b requests at context c:
    memory  = (experts touched + dense/attention weights + b x c x KV bytes) / (HBM x mem_eff)
              experts touched per MoE layer = E x (1 - (1 - k/E)^b)
    compute = (2 x active params x b + attention FLOPs) / (TFLOPs x compute_eff)
    comm    = 2 all-reduces per layer over the TP link (latency + ring volume / bandwidth)
    stage   = max(memory, compute) + comm + layers x a per-layer latency floor
Pipeline: min(B, PP) micro-batches circulate, so TPOT = PP x stage(ceil(B / min(B, PP)))
          + (PP - 1) hand-offs + a fixed per-step overhead.
Prefill is compute-bound: 2 x active params x isl + the causal attention term.
Steady state with B requests in flight, each isl in and osl out: every cycle of B requests costs
osl decode steps plus B prefills (pipelined over the stages), so
    output tokens/s = B x osl / (osl x TPOT + B x prefill_pipelined).
The efficiency factors and overheads live in data/perf_calibration.json, fitted to published
measurements (benchmarks/accuracy.py prints the fit).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from provisioner.hardware import GpuSpec
from provisioner.memory import pp_partition
from provisioner.models import ModelSpec
from provisioner.quant import QuantScheme


@dataclass(frozen=True, slots=True)
class Link:
    """One communication path: per-direction bandwidth (GB/s) and per-message latency (us)."""

    gbps: float
    latency_us: float


@dataclass(frozen=True, slots=True)
class Calibration:
    mem_eff: float  # fraction of HBM bandwidth a decode step reaches
    compute_eff: float  # fraction of dense tensor TFLOPs reached (decode)
    prefill_eff: float  # fraction of dense tensor TFLOPs reached in prefill
    step_overhead_ms: float  # scheduler, sampler, launch per decode step
    layer_overhead_us: float  # latency floor of one layer's kernels (routing, norms, small GEMMs)
    multinode_pp_ms: float  # per decode step and node boundary crossed by PP (Ray/NCCL hops)
    pp_stage_ms: float  # per decode step and PP boundary inside a node (assumption, see data)
    band: float  # +- relative error of the estimate (the calibration's median abs error)
    calibrated: bool  # False: factors borrowed from another family (wider band)


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


@dataclass(frozen=True)
class PerfEstimate:
    tpot_s: float  # time per output token a user sees (decode step + interleaved prefills)
    step_s: float  # one decode step of the whole pipeline
    ttft_s: float  # prefill of one request on an idle deployment
    output_tps: float  # output tokens/s of the deployment
    total_tps: float  # input + output tokens/s
    band: float  # relative +- of the estimate
    stage: StepBreakdown  # the slowest stage's decode step
    handoff_s: float
    overhead_s: float
    batch: int
    offload_s: float = 0.0  # per decode step, all stages

    def interval(self, value: float) -> tuple[float, float]:
        return value * (1 - self.band), value * (1 + self.band)


# ---- data ------------------------------------------------------------------------------------


@cache
def calibration_data() -> dict[str, Any]:
    text = resources.files("provisioner").joinpath("data/perf_calibration.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def calibration_for(
    gpu: GpuSpec, engine: str = "vllm", data: dict[str, Any] | None = None
) -> Calibration:
    data = data or calibration_data()
    families = data["families"]
    fam = data["arch_family"].get(gpu.arch, "hopper")
    row = families.get(fam) or families["hopper"]
    if "inherit" in row:  # uncalibrated family: another family's fitted factors, scaled
        row = {
            **families[row["inherit"]],
            "band": row["band"],
            "calibrated": False,
            "_scale": row.get("scale", 1.0),
        }
    scale = data["engines"].get(engine, 1.0) * row.get("_scale", 1.0)
    return Calibration(
        mem_eff=min(1.0, row["mem_eff"] * scale),
        compute_eff=min(1.0, row["compute_eff"] * scale),
        prefill_eff=min(1.0, row["prefill_eff"] * scale),
        step_overhead_ms=row["step_overhead_ms"] / scale,
        layer_overhead_us=row["layer_overhead_us"] / scale,
        multinode_pp_ms=row["multinode_pp_ms"] / scale,
        pp_stage_ms=row["pp_stage_ms"] / scale,
        band=row["band"],
        calibrated=bool(row.get("calibrated", False)),
    )


def intra_link(
    gpu: GpuSpec, interconnect: str, data: dict[str, Any] | None = None, tp: int = 2
) -> Link:
    """The TP link inside a node (table in perf_calibration.json, bandwidth from gpus.csv)."""
    links = (data or calibration_data())["links"]
    if interconnect == "nvlink-bridge" and tp > 2:  # bridges join pairs: beyond TP2 it is PCIe
        row = links["pcie"]
        return Link(row["default_gbps_bidir"] / 2 * row["efficiency"], row["latency_us"])
    row = links.get(interconnect) or links["pcie"]
    bidir = gpu.intra_node_gbps or row["default_gbps_bidir"]
    return Link(bidir / 2 * row["efficiency"], row["latency_us"])


def fabric_link(fabric: str, data: dict[str, Any] | None = None) -> Link:
    """The network between nodes, per node (documented table in perf_calibration.json)."""
    fabrics = (data or calibration_data())["fabrics"]
    row = fabrics.get(fabric) or fabrics["ethernet"]
    return Link(row["gbps"], row["latency_us"])


def compute_tflops(gpu: GpuSpec, scheme: QuantScheme) -> float:
    """Dense TFLOPs for the scheme's matmul dtype; weight-only formats compute in bf16."""
    bf16 = gpu.bf16_tflops or (gpu.fp8_tflops or 100.0) / 2
    if scheme.compute == "fp8" and gpu.fp8_tflops:
        return gpu.fp8_tflops
    if scheme.compute == "int8" and gpu.int8_tops:
        return gpu.int8_tops
    if scheme.compute == "fp4":
        return gpu.fp4_tflops or gpu.fp8_tflops or bf16
    return bf16


# ---- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StageWeights:
    layers: tuple[int, int]
    expert_bytes: float  # routed experts, per rank, all MoE layers of the stage
    other_bytes: float  # everything else read every step (per rank)
    active_params: float  # params touched per token, per rank
    moe_layers: int


def _stage_weights(spec: ModelSpec, scheme: QuantScheme, tp: int, pp: int) -> list[_StageWeights]:
    k_over_e = spec.moe.experts_per_tok / spec.moe.n_routed_experts if spec.moe else 1.0
    out = []
    for k, (lo, hi) in enumerate(pp_partition(spec.num_layers, pp)):
        expert = other = active = 0.0
        moe_layers = 0
        for g in spec.groups:
            if g.layer is None:
                if g.kind == "lm_head" and k == pp - 1:
                    other += scheme.group_bytes(g) / tp
                    active += g.total_params / tp
                continue
            if not lo <= g.layer < hi:
                continue
            div = 1 if g.tp == "replicate" else tp
            if g.kind == "experts":
                expert += scheme.group_bytes(g) / div
                active += g.total_params * k_over_e / div
                moe_layers += 1
            else:
                other += scheme.group_bytes(g) / div
                active += g.total_params / div
        out.append(_StageWeights((lo, hi), expert, other, active, moe_layers))
    return out


def _attn_dim(spec: ModelSpec) -> int:
    """Per-head width the attention kernels stream per cached token."""
    if spec.mla is not None:  # absorbed MLA decode: scores and values against the 576-wide latent
        return spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim
    return spec.head_dim


def _kv_tokens(spec: ModelSpec, lo: int, hi: int, ctx: float) -> float:
    """Cached tokens read per request per step over layers [lo, hi), windows capped."""
    return sum(min(ctx, w) if w else ctx for w in spec.layer_windows[lo:hi])


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
    frac = 1.0
    if spec.moe is not None:
        e, k = spec.moe.n_routed_experts, spec.moe.experts_per_tok
        frac = 1 - (1 - k / e) ** b  # share of experts touched by b tokens
    kv_per_layer = spec.kv_elems_per_token_per_layer(tp) * kv_bytes
    kv_read = b * _kv_tokens(spec, lo, hi, ctx) * kv_per_layer / dcp
    bytes_read = sw.expert_bytes * frac + sw.other_bytes + kv_read
    memory_s = bytes_read / (gpu.hbm_tbps * 1e12 * cal.mem_eff)
    heads = max(1, spec.num_heads // tp)
    attn_flops = b * _kv_tokens(spec, lo, hi, ctx) * 4 * heads * _attn_dim(spec) / dcp
    flops = 2 * sw.active_params * b + attn_flops
    compute_s = flops / (compute_tflops(gpu, scheme) * 1e12 * cal.compute_eff)
    comm_s = 0.0
    if tp > 1:
        msg = b * spec.hidden_size * 2  # bf16 activations
        per = ring_hops * tp_link.latency_us * 1e-6 + 2 * (tp - 1) / tp * msg / (tp_link.gbps * 1e9)
        comm_s = 2 * (hi - lo) * per
    return StepBreakdown(memory_s, compute_s, comm_s, bytes_read, flops)


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
    offload_gib_per_gpu: float = 0.0,
    pcie_gbps: float = 25.0,
    data: dict[str, Any] | None = None,
    stage_cache: dict[tuple[int, int], Any] | None = None,
) -> PerfEstimate:
    """TPOT, TTFT and tokens/s of TP x PP on `gpu` for `workload` (see the module docstring).

    `data` replaces the packaged calibration (benchmarks/accuracy.py fits with it).
    """
    cal = calibration_for(gpu, engine, data)
    # TP beyond one node (used only to reproduce published multi-node TP runs) crosses the fabric
    # (NCCL then runs a ring: 2 (TP - 1) latency hops instead of a one-shot custom all-reduce)
    tp_link = (
        intra_link(gpu, interconnect, data, tp)
        if tp <= gpus_per_node
        else fabric_link(fabric, data)
    )
    hops = 1 if tp <= gpus_per_node else 2 * (tp - 1)
    net = fabric_link(fabric, data)
    if stage_cache is None:
        stages = _stage_weights(spec, scheme, tp, pp)
    else:  # the planner reuses one model/scheme across hundreds of shapes
        stages = stage_cache.get((tp, pp)) or stage_cache.setdefault(
            (tp, pp), _stage_weights(spec, scheme, tp, pp)
        )
    b_total = max(1, workload.concurrency)
    micro = min(b_total, pp)
    b = math.ceil(b_total / micro)
    ctx = workload.isl + workload.osl / 2  # average cached context during decode
    steps = [
        decode_stage(spec, scheme, gpu, cal, sw, tp, b, ctx, kv_bytes, tp_link, dcp, hops)
        for sw in stages
    ]
    offload_s = offload_gib_per_gpu * 2**30 / (pcie_gbps * 1e9)  # weights streamed each step
    stage_times = [
        max(s.memory_s, s.compute_s)
        + s.comm_s
        + offload_s
        + cal.layer_overhead_us * 1e-6 * (sw.layers[1] - sw.layers[0])
        for s, sw in zip(steps, stages, strict=True)
    ]
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
    overhead = cal.step_overhead_ms / 1000
    if micro >= pp:  # stages overlap: a token per micro-batch every PP slowest-stage times
        step_s = pp * stage_times[slow] + handoff + overhead
    else:  # fewer micro-batches than stages: one request walks through every stage in turn
        step_s = sum(stage_times) + handoff + overhead

    # prefill: compute-bound on the tp GPUs of each stage, stages in sequence for one request
    tf = compute_tflops(gpu, scheme) * 1e12 * cal.prefill_eff
    isl = workload.isl
    active = sum(sw.active_params for sw in stages)  # per rank, summed over stages
    layers = spec.num_layers
    heads = max(1, spec.num_heads // tp)
    # causal attention: isl^2 / 2 pairs x 2 FLOPs x (qk + v widths) per head and layer
    attn = isl * isl * layers * heads * _attn_dim_prefill(spec)
    prefill_flops = 2 * active * isl + attn
    comm_prefill = 0.0
    if tp > 1:
        msg = isl * spec.hidden_size * 2
        comm_prefill = (
            2
            * layers
            * (hops * tp_link.latency_us * 1e-6 + 2 * (tp - 1) / tp * msg / (tp_link.gbps * 1e9))
        )
    ttft = prefill_flops / tf + comm_prefill + handoff + overhead + offload_s * pp
    prefill_pipelined = ttft / pp  # stages work on different requests' chunks at once

    cycle = workload.osl * step_s + b_total * prefill_pipelined
    output_tps = b_total * workload.osl / cycle
    total_tps = output_tps * (workload.isl + workload.osl) / workload.osl
    return PerfEstimate(
        tpot_s=cycle / workload.osl,
        step_s=step_s,
        ttft_s=ttft,
        output_tps=output_tps,
        total_tps=total_tps,
        band=cal.band,
        stage=steps[slow],
        handoff_s=handoff,
        overhead_s=overhead,
        batch=b_total,
        offload_s=offload_s * pp,
    )


def _attn_dim_prefill(spec: ModelSpec) -> int:
    """Per-head QK + PV width in prefill (MLA prefill runs un-absorbed: qk 192, v 128)."""
    if spec.mla is not None:
        return spec.mla.qk_nope_head_dim + spec.mla.qk_rope_head_dim + spec.mla.v_head_dim
    return 2 * spec.head_dim
