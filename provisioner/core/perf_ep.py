"""Throughput of DP / EP layouts: the perf model's step for one DP rank, plus the EP terms. Pure.

A DP x EP deployment (provisioner/core/layouts.py) runs DP engines in lockstep: every MoE layer
gathers the tokens of all DP ranks, each GPU runs its own E / EP experts on them, and the
results go back (vLLM's dummy forward passes keep idle ranks in step). So one decode step of a
rank with b requests, when the DP ranks batch B = b x DP requests in all, is perf.estimate's
step for a TP engine holding only the dense part of the model, plus, per GPU:

  expert memory   = local expert bytes x (1 - (1 - k/E)^B) / (HBM x hbm_eff x moe_eff)
                    (all B tokens route into this GPU's experts, not only its own b)
  expert compute  = 2 x local expert params x (B x k / E x imbalance + touched x pad) / TFLOPs
  imbalance       = 1 + sqrt(2 ln EP / m): the expected fullest of EP GPUs receiving m = B k / EP
                    token-expert pairs on average (uniform routing; real routing is more skewed
                    and vLLM's EPLB, off by default, rebalances it)
  all-to-all      = per MoE layer, dispatch + combine. vLLM v0.18.0's default backend
                    allgather_reducescatter (what `prov deploy` runs) gathers every token on
                    every GPU: (EP - 1) / EP x B x hidden x 2 bytes each way. A token-routed
                    backend (DeepEP, what the published large-scale runs use) moves each of
                    a GPU's own tokens to its k experts only: tokens x k x hidden x (1 byte
                    fp8 dispatch + 2 bytes bf16 combine). NVLink/NVSwitch inside a node; the
                    share that crosses nodes goes over the GPU's own NIC (EP_FABRIC_GBPS)
  DP sync         = one small all-reduce latency per step (the DP coordinator's step barrier)

TP x EP with DP = 1 has no all-to-all (vLLM combines through the TP all-reduce); its experts are
whole per GPU, so only the imbalance differs from plain TP. Deployment tokens/s = DP x a rank's.
The EP terms are not fitted (no published vLLM EP measurement matches prov's calibration
workloads): plans carry a wider band (EP_EXTRA_BAND) and docs/ep-dp-layouts.md compares them
with the published EP numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from provisioner.core.hardware import GpuSpec
from provisioner.core.layouts import Layout
from provisioner.core.models import ModelSpec
from provisioner.core.perf import (
    PerfEstimate,
    StepBreakdown,
    Workload,
    _packaged_cal,
    _StageWeights,
    estimate,
    sized_groups,
)
from provisioner.core.perf_data import (
    CURRENT_ERA,
    arch_class,
    calibration_data,
    calibration_for,
    compute_tflops,
    fabric_link,
    intra_link,
)
from provisioner.core.quant import QuantScheme
from provisioner.core.weight_placement import pp_partition
from provisioner.core.weights import WeightGroup

EP_EXTRA_BAND = 0.25  # added to the calibrated band: the EP terms are modelled, not fitted
ACT_BYTES = 2  # dispatch/combine in bf16 (the default backend does not quantize activations)
BACKENDS = ("allgather_reducescatter", "deepep")
# Per-GPU network bandwidth for all-to-all across nodes, GB/s per direction, at ~80% of the
# line rate (assumptions from the vendors' specs): AWS p5/p5en EFA 3200 Gbps per 8-GPU node
# = 400 Gbps per GPU; InfiniBand NDR one 400 Gbps rail per GPU (Azure ND H100/H200 v5,
# Nebius); GCP A3 GPUDirect-TCPX 200 Gbps per GPU; plain ethernet: 100 Gbps per NODE.
EP_FABRIC_GBPS = {"efa": 40.0, "infiniband": 40.0, "gpudirect-tcpx": 20.0, "nvlink": 360.0}
ETHERNET_NODE_GBPS = 10.0


@dataclass(frozen=True)
class EpTerms:
    """What the EP terms added to the slowest stage's step, for --explain."""

    layout: Layout
    batch_all_ranks: int
    expert_memory_s: float
    expert_compute_s: float
    all_to_all_s: float
    imbalance: float
    sync_s: float


def _dense_stages(
    spec: ModelSpec,
    scheme: QuantScheme,
    lay: Layout,
    sized: list[tuple[WeightGroup, float]] | None = None,
) -> tuple[list[_StageWeights], list[tuple[float, float, float, int]]]:
    """Stage weights of one rank GPU without the routed experts, and per stage the local routed
    experts (bytes, params, params one token activates on this GPU on average, MoE layers).
    Shared experts are whole under sequence-parallel MoE."""
    e = spec.moe.n_routed_experts if spec.moe else 1
    k_over_e = spec.moe.experts_per_tok / e if spec.moe else 1.0
    share = math.ceil(e / lay.ep_size) / e if lay.ep else 1.0 / lay.moe_tp
    spread = lay.ep_size if lay.ep else lay.moe_tp  # GPUs a token's expert work spreads over
    tp, pp = lay.tp, lay.pp
    stages, experts = [], []
    for s, (lo, hi) in enumerate(pp_partition(spec.num_layers, pp)):
        other = active = eb = ep_params = head = 0.0
        moe_layers = 0
        for g, nbytes in sized or [(g, scheme.group_bytes(g)) for g in spec.groups]:
            if g.layer is None:
                if g.kind == "lm_head" and s == pp - 1:
                    other += nbytes / tp
                    active += g.total_params / tp
                    head = g.total_params / tp
                continue
            if not lo <= g.layer < hi:
                continue
            if g.kind == "experts":
                eb += nbytes * share
                ep_params += g.total_params * share
                moe_layers += 1
                continue
            div = 1 if g.tp == "replicate" else tp
            if g.kind == "shared_experts" and lay.sequence_parallel_moe:
                div = 1
            other += nbytes / div
            active += g.total_params / div
        # a token's expert FLOPs on this GPU, on average: perf.estimate's prefill sums active
        # params; the decode step's share is replaced in moe_step
        eact = ep_params / share * k_over_e / spread
        stages.append(_StageWeights((lo, hi), 0.0, other, active + eact, moe_layers, 0.0, head))
        experts.append((eb, ep_params, eact, moe_layers))
    return stages, experts


def imbalance(ep_size: int, pairs_per_gpu: float) -> float:
    """Expected fullest GPU over the mean when EP GPUs share token-expert pairs uniformly."""
    if ep_size <= 1 or pairs_per_gpu <= 0:
        return 1.0
    return 1.0 + math.sqrt(2 * math.log(ep_size) / pairs_per_gpu)


def estimate_layout(
    spec: ModelSpec,
    scheme: QuantScheme,
    gpu: GpuSpec,
    layout: Layout,
    *,
    workload: Workload,
    dcp: int = 1,
    offload_gib_per_gpu: float = 0.0,
    pcie_gbps: float = 25.0,
    layout_cache: dict[Any, Any] | None = None,
    backend: str = "allgather_reducescatter",
    **kw: Any,
) -> tuple[PerfEstimate, EpTerms]:
    """TPOT, TTFT and tokens/s of any vLLM layout, and the one place that picks its path:

      DP 1 without EP      perf.estimate: one TP x PP engine
      dense model, DP > 1  estimate_dense_dp: DP independent TP x PP engines
      MoE, DP > 1 or EP    estimate_ep: ranks in lockstep plus the EP terms (module docstring)

    Every path takes the engine's own knobs, as every DP rank is an engine: DCP (each rank's
    TP group split into TP / DCP groups) and --cpu-offload-gb's weights read over the host link
    (pcie_gbps) on every forward pass, per GPU (vLLM v0.18.0 `config/offload.py`: "per GPU";
    each worker's UVAOffloader has its own budget; lockstep MoE ranks run a pass every step).
    `layout_cache` is the planner's per model/scheme cache, `backend` the EP all-to-all's;
    workload.concurrency is the deployment's requests in flight (spread over the DP ranks)."""
    engine: dict[str, Any] = {
        "dcp": dcp,
        "offload_gib_per_gpu": offload_gib_per_gpu,
        "pcie_gbps": pcie_gbps,
    }
    if (layout.dp == 1 and not layout.ep) or spec.moe is None:
        engine["stage_cache"] = layout_cache
        if layout.dp == 1:
            est = estimate(
                spec, scheme, gpu, tp=layout.tp, pp=layout.pp, workload=workload, **engine, **kw
            )
        else:  # independent engines: no EP terms
            est = estimate_dense_dp(spec, scheme, gpu, layout, workload=workload, **engine, **kw)
        return est, EpTerms(layout, est.batch, 0.0, 0.0, 0.0, 1.0, 0.0)
    return estimate_ep(
        spec, scheme, gpu, layout, workload=workload, layout_cache=layout_cache, backend=backend,
        **engine, **kw,
    )  # fmt: skip


def estimate_ep(
    spec: ModelSpec,
    scheme: QuantScheme,
    gpu: GpuSpec,
    layout: Layout,
    *,
    gpus_per_node: int,
    interconnect: str,
    fabric: str,
    workload: Workload,
    kv_bytes: int = 2,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int = 8192,
    data: dict[str, Any] | None = None,
    layout_cache: dict[Any, Any] | None = None,
    backend: str = "allgather_reducescatter",
    **kw: Any,
) -> tuple[PerfEstimate, EpTerms]:
    """A MoE model's DP / EP layout: ranks in lockstep (module docstring); workload.concurrency
    is the deployment's requests in flight, spread over the DP ranks. estimate_layout is the
    entry point; this path alone returns non-zero EP terms."""
    assert spec.moe is not None, "dense layouts are estimate_layout's engine paths"
    packaged = data is None  # the packaged calibration's factors are cached (perf.py)
    data = data or calibration_data()
    lay = layout
    arch = arch_class(spec)
    cal = (
        _packaged_cal(gpu, "vllm", arch, CURRENT_ERA)
        if packaged
        else calibration_for(gpu, "vllm", data, arch)
    )
    dp = lay.dp
    big_b = max(1, workload.concurrency)  # requests in flight over all ranks
    if max_num_seqs:
        big_b = min(big_b, max_num_seqs * dp)  # --max-num-seqs applies per DP rank
    per_rank = math.ceil(big_b / dp)  # the busiest rank; idle ranks run dummy passes
    if layout_cache is None:
        stages, experts = _dense_stages(spec, scheme, lay)
    else:  # the planner reuses one model/scheme across hundreds of hardware classes
        hit = layout_cache.get(("ep", lay))
        if hit is None:
            sized = sized_groups(spec, scheme, layout_cache)
            hit = layout_cache[("ep", lay)] = _dense_stages(spec, scheme, lay, sized)
        stages, experts = hit
    bw = gpu.hbm_tbps * 1e12 * cal.hbm_eff
    tf = compute_tflops(gpu, scheme) * 1e12 * cal.gemm_eff
    e, k = spec.moe.n_routed_experts, spec.moe.experts_per_tok
    touched = 1 - (1 - k / e) ** big_b
    ep_size = lay.ep_size if lay.ep else 1
    imb = imbalance(ep_size, big_b * k / max(1, ep_size)) if lay.ep else 1.0
    nvl = intra_link(gpu, interconnect, data, max(2, min(lay.tp * dp, gpus_per_node)))
    net = fabric_link(fabric, data)
    nodes = max(1, math.ceil(lay.gpus / gpus_per_node))
    local = min(gpus_per_node, lay.gpus)
    nic = EP_FABRIC_GBPS.get(fabric, ETHERNET_NODE_GBPS / local)  # GB/s per GPU
    terms: dict[int, tuple[float, float, float]] = {}

    def a2a_layer() -> float:
        """Seconds of dispatch + combine per MoE layer, per GPU."""
        if not lay.all_to_all:
            return 0.0
        h = spec.hidden_size
        if backend == "deepep":  # own tokens (split over TP by SP-MoE) to their k experts
            mine = per_rank / lay.tp
            vol = mine * min(k, ep_size) * h * (1 + ACT_BYTES) * (ep_size - 1) / ep_size
        else:  # every GPU ends with all B tokens, both ways
            vol = 2 * (ep_size - 1) / ep_size * big_b * h * ACT_BYTES
        cross = (nodes - 1) / nodes if nodes > 1 else 0.0
        intra = (1 - cross) * vol / (nvl.gbps * 1e9) + 2 * nvl.latency_us * 1e-6
        inter = cross * vol / (nic * 1e9) + 2 * net.latency_us * 1e-6 if cross else 0.0
        return max(intra, inter)

    a2a = a2a_layer()

    def moe_step(step: StepBreakdown, sw: _StageWeights, b: int) -> StepBreakdown:
        i = next(j for j, s in enumerate(stages) if s.layers == sw.layers)
        eb, eparams, eact, moe_layers = experts[i]
        if not moe_layers:
            return step
        wbw = bw * cal.lowbit_mem_eff if scheme.bits < 16 else bw  # as perf.decode_stage
        mem_s = eb * touched / (wbw * cal.moe_eff)
        pairs = big_b * k / e  # tokens per expert, on average
        exact = 2 * eparams * (pairs * imb + touched * cal.moe_tok_half) / tf
        # perf.estimate's step counted the rank's own b tokens through the experts as active
        # params (right for prefill); replace that with the term for all B tokens
        comp_s = exact - 2 * eact * b / tf
        sync = nvl.latency_us * 1e-6 if dp > 1 else 0.0
        comm = a2a * moe_layers + sync
        terms[i] = (mem_s, comp_s, comm)
        return replace(
            step,
            memory_s=step.memory_s + mem_s,
            compute_s=step.compute_s + comp_s,
            comm_s=step.comm_s + comm,
            bytes_read=step.bytes_read + eb * touched,
            expert_fraction=touched,
            tokens_per_expert=pairs / touched if touched else 0.0,
        )

    est = estimate(
        spec,
        scheme,
        gpu,
        tp=lay.tp,
        pp=lay.pp,
        gpus_per_node=gpus_per_node,
        interconnect=interconnect,
        fabric=fabric,
        workload=Workload(workload.isl, workload.osl, per_rank),
        kv_bytes=kv_bytes,
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        data=None if packaged else data,
        stages=stages,
        moe_step=moe_step,
        **kw,
    )
    slow = max(terms.values(), key=sum, default=(0.0, 0.0, 0.0))
    est = replace(
        est,
        output_tps=est.output_tps * big_b / per_rank,
        total_tps=est.total_tps * big_b / per_rank,
        batch=big_b,
        band=est.band + EP_EXTRA_BAND,
        requested_concurrency=workload.concurrency,
    )
    return est, EpTerms(lay, big_b, slow[0], slow[1], slow[2], imb, 0.0)


def estimate_dense_dp(
    spec: ModelSpec,
    scheme: QuantScheme,
    gpu: GpuSpec,
    layout: Layout,
    *,
    workload: Workload,
    max_num_seqs: int | None = None,
    **kw: Any,
) -> PerfEstimate:
    """DP independent engines of a dense model (vLLM --data-parallel-size without EP): each
    is perf.estimate's TP x PP engine with its share of the requests, each batching up to its
    own KV cache and --max-num-seqs. No all-to-all, no lockstep: a dense rank never waits for
    the others (docs/serving/data_parallel_deployment.md), so tokens/s = the engines' sum.

    The band is the engine's own: the only term added to the calibrated TP x PP model is the
    sum over engines that share nothing but the node (no unfitted communication term, unlike
    EP_EXTRA_BAND's all-to-all). With B requests not a multiple of DP the busiest engine's
    rate is counted for all (slightly low)."""
    dp = layout.dp
    big_b = max(1, workload.concurrency)
    if max_num_seqs:
        big_b = min(big_b, max_num_seqs * dp)  # --max-num-seqs applies per DP rank
    per_rank = math.ceil(big_b / dp)
    est = estimate(
        spec,
        scheme,
        gpu,
        tp=layout.tp,
        pp=layout.pp,
        workload=Workload(workload.isl, workload.osl, per_rank),
        max_num_seqs=max_num_seqs,
        **kw,
    )
    return replace(
        est,
        output_tps=est.output_tps * big_b / per_rank,
        total_tps=est.total_tps * big_b / per_rank,
        batch=big_b,
        requested_concurrency=workload.concurrency,
    )
