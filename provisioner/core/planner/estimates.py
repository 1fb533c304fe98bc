"""The speed and price of a candidate: tokens/s of a feasible shape on a fabric, the SLO and
availability checks, and the arithmetic of $/Mtok.

Pure helpers the enumeration (provisioner/core/planner/candidates.py) and the plans
(ranked_plan.py) share; the throughput model itself is provisioner/core/perf.py (TP x PP) and
perf_ep.py (DP/EP layouts, and estimate_layout, which picks a layout's path).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from provisioner.core.expected_cost import Reclaim
from provisioner.core.hardware import GpuSpec, gpu_specs
from provisioner.core.models import ModelSpec
from provisioner.core.perf import PerfEstimate, Workload
from provisioner.core.perf_ep import estimate_layout
from provisioner.core.planner.shapes import ShapeVerdict
from provisioner.core.quant import QuantScheme
from provisioner.core.request import QuoteRequest

# Host memory vLLM needs besides offloaded weights (process, pinned buffers, the OS): assumption.
HOST_RAM_RESERVE_GIB = 32


def host_ram_needed(req: QuoteRequest, gpus_per_node: int) -> float:
    """Host RAM a node needs for --cpu-offload-gb on every GPU, plus a documented reserve."""
    return req.cpu_offload_gb * gpus_per_node + HOST_RAM_RESERVE_GIB


# GPUs on PCIe Gen5 x16 host links besides NVIDIA SM 9.0+: AMD CDNA3 (MI300X, MI325X), per
# AMD's MLPerf Inference v5.1 system descriptions ("accelerator_host_interconnect": "PCIe Gen5
# x16", mlcommons/inference_results_v5.1 closed/AMD/systems/8xMI300X_2xEPYC_9575F.json).
GEN5_HOST_ARCHS = frozenset({"CDNA3"})


def host_link_gbps(gpu: GpuSpec) -> float:
    """Effective host-to-GPU copy bandwidth in GB/s: PCIe Gen5 x16 on Hopper/Blackwell and
    CDNA3 hosts, Gen4 x16 otherwise, at ~80% of the link's 64 / 32 GB/s per direction
    (assumption)."""
    return 50.0 if (gpu.sm or 0) >= 90 or gpu.arch in GEN5_HOST_ARCHS else 25.0


def throughput_batch(req: QuoteRequest, v: ShapeVerdict) -> int:
    """Requests in flight for the estimate: --concurrency, or what the KV cache and
    vLLM's max_num_seqs allow (saturation). The estimate caps either at max_num_seqs; more
    requests than the KV cache holds queue (or are preempted), so they add no throughput."""
    if req.concurrency is not None:
        return max(1, min(req.concurrency, v.workload_concurrency or req.concurrency))
    return max(1, min(v.workload_concurrency, v.max_num_seqs * v.dp))  # max_num_seqs per rank


def estimate_speed(
    spec: ModelSpec,
    scheme: QuantScheme,
    req: QuoteRequest,
    v: ShapeVerdict,
    fabric: str,
    kvb: int,
    isl: int,
    osl: int,
    stage_cache: dict[Any, Any],
) -> PerfEstimate | None:
    """Tokens/s of a feasible vLLM shape on `fabric` (None for llama.cpp): the request's and
    verdict's settings; perf_ep.estimate_layout decides which speed path the layout takes.

    At throughput_batch, or, with a latency SLO (--max-tpot-ms / --max-ttft-s) the shape misses
    there, at the largest batch below it that meets the SLO (slo_batch), or the largest
    multiple of DP x PP below that when it gives more tok/s; at batch 1 when even that misses
    (slo_violation then gives the reason)."""
    if scheme.engine != "vllm":
        return None
    gpu = gpu_specs()[v.hw.gpu]

    def at(batch: int) -> PerfEstimate:
        est, _ = estimate_layout(  # picks the path: one engine, dense DP engines, or MoE DP/EP
            spec,
            scheme,
            gpu,
            v.layout,
            gpus_per_node=v.hw.gpus_per_node,
            interconnect=v.hw.interconnect,
            fabric=fabric,
            workload=Workload(isl, osl, batch),
            kv_bytes=kvb,
            max_num_seqs=v.max_num_seqs,
            max_num_batched_tokens=v.max_num_batched_tokens,
            dcp=req.dcp,
            offload_gib_per_gpu=req.cpu_offload_gb,
            pcie_gbps=host_link_gbps(gpu),
            layout_cache=stage_cache,
        )
        return est

    top = throughput_batch(req, v)
    est = at(top)
    if not has_latency_slo(req) or meets_latency(req, est):
        return est
    # below the batch at which every PP stage has a micro-batch, a request walks the stages
    # alone (perf.py): TPOT falls there as the batch grows, so the search starts on that side
    knee = (v.pp - 1) * v.dp + 1 if v.pp > 1 else 1
    est = slo_batch(req, at, est, knee)
    # a batch just past a multiple of DP x PP leaves ranks (or stages) part-idle: tok/s falls
    # (up to 13% per request on dense DP): the multiple below may serve more at a lower TPOT
    unit = v.dp * v.pp
    if unit > 1 and est.batch > unit and est.batch % unit and meets_latency(req, est):
        whole = at(est.batch // unit * unit)
        if whole.output_tps > est.output_tps and meets_latency(req, whole):
            return whole
    return est


def latency_excess(req: QuoteRequest, est: PerfEstimate) -> float:
    """How far an estimate is over the latency SLO, as the worse of TPOT / --max-tpot-ms and
    TTFT / --max-ttft-s, minus 1: <= 0 meets it."""
    ratio = 0.0
    if req.max_tpot_ms is not None:
        ratio = est.tpot_s * 1000 / req.max_tpot_ms
    if req.max_ttft_s is not None:
        ratio = max(ratio, est.ttft_s / req.max_ttft_s)
    return ratio - 1


def meets_latency(req: QuoteRequest, est: PerfEstimate) -> bool:
    """Whether an estimate meets --max-tpot-ms and --max-ttft-s (those given)."""
    return (req.max_tpot_ms is None or est.tpot_s * 1000 <= req.max_tpot_ms) and (
        req.max_ttft_s is None or est.ttft_s <= req.max_ttft_s
    )


def slo_batch(
    req: QuoteRequest, at: Callable[[int], PerfEstimate], missed: PerfEstimate, knee: int = 1
) -> PerfEstimate:
    """The estimate at the largest batch below `missed.batch` (which misses the latency SLO)
    that meets it; at batch 1 when even that misses.

    The modelled TPOT and TTFT rise with the batch (every decode-step term grows with it)
    except at a PP shape's `knee`, the batch from which every stage has a micro-batch: TPOT
    drops there (stages overlap) and rises again above it, so the knee is tried first and the
    search runs on its side. Where the prefill budget sets the steps of a cycle (B x (isl +
    osl) > max_num_batched_tokens x osl) TPOT can also fall slowly (<= 0.3% per request): the
    batch found may be a few short of the largest there (docs/quote.md has the survey).

    The search keeps a bracket (lo meets, hi misses) and tries the batch where the latency
    excess interpolates to zero (TPOT is near-linear in the batch: ~3 estimates), halving
    the bracket instead when interpolating did not halve it (at most ~2 log2 steps). Every
    batch returned was evaluated and meets the SLO."""
    hi, g_hi = missed.batch, latency_excess(req, missed)
    if hi <= 1:
        return missed
    lo_est: PerfEstimate | None = None
    if 1 < knee < hi:
        e = at(knee)
        if meets_latency(req, e):
            lo_est = e
        else:
            hi, g_hi = knee, latency_excess(req, e)
    if lo_est is None:
        lo_est = at(1)
        if not meets_latency(req, lo_est):
            return lo_est
    lo, g_lo = lo_est.batch, latency_excess(req, lo_est)
    halve = False
    while hi - lo > 1:
        width = hi - lo
        if halve or g_hi <= g_lo:
            mid = (lo + hi) // 2
        else:  # where the excess, linear between lo and hi, crosses zero (floor: meets side)
            mid = min(hi - 1, max(lo + 1, int(lo - g_lo * width / (g_hi - g_lo))))
        e = at(mid)
        g = latency_excess(req, e)
        if meets_latency(req, e):
            lo, g_lo, lo_est = mid, g, e
        else:
            hi, g_hi = mid, g
        halve = not halve and hi - lo > width // 2  # interpolation did not halve: bisect
    return lo_est


def slo_violation(req: QuoteRequest, est: PerfEstimate | None) -> str | None:
    """Why an estimate misses --max-tpot-ms / --max-ttft-s / --min-output-tps, or None. A
    latency miss below saturation is at batch 1 (slo_batch): the reason says so."""
    if est is None:
        return None
    at_one = " at 1 request in flight" if est.batch == 1 and est.requested_concurrency == 1 else ""
    if req.max_tpot_ms is not None and est.tpot_s * 1000 > req.max_tpot_ms:
        return f"TPOT {est.tpot_s * 1000:.0f} ms{at_one} exceeds --max-tpot-ms {req.max_tpot_ms:g}"
    if req.max_ttft_s is not None and est.ttft_s > req.max_ttft_s:
        return f"TTFT {est.ttft_s:.2f} s{at_one} exceeds --max-ttft-s {req.max_ttft_s:g}"
    if req.min_output_tps is not None and est.output_tps < req.min_output_tps:
        return f"{est.output_tps:.0f} output tok/s is below --min-output-tps {req.min_output_tps:g}"
    return None


SLO_NOTE_PLANS = 10  # plans named in slo_batch_note


def has_latency_slo(req: QuoteRequest) -> bool:
    """Whether --max-tpot-ms or --max-ttft-s is given (the plan is served at the SLO's batch)."""
    return req.max_tpot_ms is not None or req.max_ttft_s is not None


def latency_slo(req: QuoteRequest) -> str | None:
    """The latency SLO flags given ('--max-tpot-ms 50 and --max-ttft-s 2'), or None."""
    flags = [
        f"{flag} {value:g}"
        for flag, value in (("--max-tpot-ms", req.max_tpot_ms), ("--max-ttft-s", req.max_ttft_s))
        if value is not None
    ]
    return " and ".join(flags) or None


def slo_load_label(req: QuoteRequest) -> str | None:
    """The workload line's load under a latency SLO (the table's header), or None."""
    slo = latency_slo(req)
    if slo is None:
        return None
    cap = f" up to concurrency {req.concurrency}" if req.concurrency else ""
    return f"tok/s at the largest batch{cap} meeting {slo}"


def slo_batch_note(req: QuoteRequest, plans: Sequence[Any]) -> str | None:
    """Which plans shown (RankedPlans) are estimated below their saturation batch because the
    latency SLO is missed there, and at which batch: the load their TPOT/TTFT hold at."""
    slo = latency_slo(req)
    if slo is None:
        return None
    below = []
    for p in plans:
        e, v = p.perf, p.verdict
        if e is None:
            continue
        full = min(throughput_batch(req, v), v.max_num_seqs * v.dp)
        if e.batch < full:
            below.append(f"#{p.rank} at {e.batch:,} of {full:,}")
    if not below:
        return None
    if len(below) > SLO_NOTE_PLANS:  # --top 0: the rest are in --json
        below[SLO_NOTE_PLANS:] = [f"{len(below) - SLO_NOTE_PLANS} more"]
    than = "--concurrency" if req.concurrency else "saturation"
    return (
        f"{slo} {'are' if ' and ' in slo else 'is'} met at fewer requests in flight than "
        f"{than}: {', '.join(below)} (--json 'concurrency'); tok/s and $/Mtok are at that "
        "batch: keep the load at or under it to hold the SLO"
    )


def weight_split(v: ShapeVerdict) -> int:
    """Nodes that share the weights: PP stages on separate nodes load their layers; data-parallel
    nodes (DP/EP layouts) each read the whole checkpoint (the streamer reads every tensor)."""
    return max(1, min(v.nodes, v.pp))


def availability_miss(req: QuoteRequest, loss: Reclaim) -> str | None:
    """Why a plan cannot be shown to meet --min-availability, or None."""
    target = req.min_availability
    if target is None or loss.market != "spot":
        return None
    if not loss.known:
        return f"spot pool without a published interruption rate: {target:g} availability unproven"
    if loss.availability < target:
        return f"spot availability below --min-availability {target:g} (reclaims x time to serve)"
    return None


def usd_per_mtok(usd_per_hour: float, tokens_per_s: float) -> float:
    """Dollars per million tokens at a sustained rate."""
    return usd_per_hour / (tokens_per_s * 3600) * 1e6 if tokens_per_s > 0 else math.inf
