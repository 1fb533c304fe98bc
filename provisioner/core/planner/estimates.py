"""The speed and price of a candidate: tokens/s of a feasible shape on a fabric, the SLO and
availability checks, and the arithmetic of $/Mtok.

Pure helpers the enumeration (provisioner/core/planner/candidates.py) and the plans
(ranked_plan.py) share; the throughput model itself is provisioner/core/perf.py (TP x PP) and
perf_ep.py (DP/EP layouts, and estimate_layout, which picks a layout's path).
"""

from __future__ import annotations

import math
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
    verdict's settings; perf_ep.estimate_layout decides which speed path the layout takes."""
    if scheme.engine != "vllm":
        return None
    gpu = gpu_specs()[v.hw.gpu]
    est, _ = estimate_layout(  # picks the path: one engine, dense DP engines, or MoE DP/EP
        spec,
        scheme,
        gpu,
        v.layout,
        gpus_per_node=v.hw.gpus_per_node,
        interconnect=v.hw.interconnect,
        fabric=fabric,
        workload=Workload(isl, osl, throughput_batch(req, v)),
        kv_bytes=kvb,
        max_num_seqs=v.max_num_seqs,
        max_num_batched_tokens=v.max_num_batched_tokens,
        dcp=req.dcp,
        offload_gib_per_gpu=req.cpu_offload_gb,
        pcie_gbps=host_link_gbps(gpu),
        layout_cache=stage_cache,
    )
    return est


def slo_violation(req: QuoteRequest, est: PerfEstimate | None) -> str | None:
    """Why an estimate misses --max-tpot-ms / --max-ttft-s / --min-output-tps, or None."""
    if est is None:
        return None
    if req.max_tpot_ms is not None and est.tpot_s * 1000 > req.max_tpot_ms:
        return f"TPOT {est.tpot_s * 1000:.0f} ms exceeds --max-tpot-ms {req.max_tpot_ms:g}"
    if req.max_ttft_s is not None and est.ttft_s > req.max_ttft_s:
        return f"TTFT {est.ttft_s:.2f} s exceeds --max-ttft-s {req.max_ttft_s:g}"
    if req.min_output_tps is not None and est.output_tps < req.min_output_tps:
        return f"{est.output_tps:.0f} output tok/s is below --min-output-tps {req.min_output_tps:g}"
    return None


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
