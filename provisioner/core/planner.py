"""The planner: offers x nodes x TP x PP -> vLLM rules + memory -> ranked plans.

Pure: it takes a model, a scheme and a list of offers and returns a QuoteResult. Offers are
grouped into hardware classes (same GPU, count, memory and link) so the memory model runs once
per class and shape, not once per region; prices are applied to every offer of the class
afterwards. Only the top plans are materialised.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from provisioner.core.expected_cost import Reclaim, reclaim
from provisioner.core.hardware import GpuSpec, cuda_memory_gib, gpu_specs, match_gpu
from provisioner.core.layout_memory import LayoutPlacer, layout_concurrent, layout_memory
from provisioner.core.layouts import (
    Layout,
    dp_ep_layouts,
    ep_kernel_verdict,
    expert_width_violation,
    layout_violation,
)
from provisioner.core.memory import (
    GIB,
    MemorySettings,
    ShapeMemory,
    WeightPlacer,
    concurrent_requests,
    shape_memory,
)
from provisioner.core.models import ModelSpec
from provisioner.core.offer import price_age_days, price_doubt
from provisioner.core.perf import PerfEstimate, Workload, estimate
from provisioner.core.quant import QuantScheme, kv_bytes
from provisioner.core.request import QuoteRequest, workload_tokens
from provisioner.core.spot_risk import spot_risk, spot_risk_info
from provisioner.core.vllm_rules import VLLM_VERSION, batch_defaults, rules_for
from provisioner.errors import UsageError

if TYPE_CHECKING:
    from provisioner.core.offer import Offer
    from provisioner.core.time_to_serve import TimeToServe

SCHEMA_VERSION = 1  # of the `prov quote --json` document; bump on an incompatible change
FAST_FABRICS = frozenset({"efa", "infiniband", "gpudirect-tcpx", "nvlink"})


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

    @property
    def layout(self) -> Layout:
        return Layout(self.tp, self.dp, self.pp, self.ep)


@dataclass
class Plan:
    rank: int
    offer: Offer
    verdict: ShapeVerdict
    market: str
    usd_per_hour: float
    vllm_args: list[str]
    warnings: list[str]
    perf: PerfEstimate | None = None
    expected_usd_per_hour: float | None = None  # --risk-adjusted: price + expected restarts
    also: list[Offer] = field(default_factory=list)  # `distinct`: the group's other offers

    tts: TimeToServe | None = None  # a replacement replica's time to serve (--weights path)
    reclaim: Reclaim | None = None  # spot plans: capacity lost to reclaims

    @property
    def spot_interruption(self) -> str | None:
        """AWS Spot Instance Advisor bucket (% interrupted per month) of a spot plan's pool."""
        if self.market != "spot":
            return None
        risk = spot_risk(self.offer.cloud, self.offer.region, self.offer.instance_type)
        return risk.label if risk else None

    def _perf_json(self) -> dict[str, Any]:
        e = self.perf
        if e is None:
            return {"tokens_per_s": None, "usd_per_mtok": None}
        lo, hi = e.interval(e.output_tps)
        return {
            "tokens_per_s": round(e.output_tps, 3),
            "tokens_per_s_band": [round(lo, 1), round(hi, 1)],
            "total_tokens_per_s": round(e.total_tps, 1),
            "usd_per_mtok": round(usd_per_mtok(self.usd_per_hour, e.output_tps), 4),
            "usd_per_mtok_blended": round(usd_per_mtok(self.usd_per_hour, e.total_tps), 4),
            "tpot_ms": round(e.tpot_s * 1000, 2),
            "ttft_s": round(e.ttft_s, 3),
            "concurrency": e.batch,
            "perf_band": e.band,
            "perf_band_thin_data": bool(e.band_info and e.band_info.thin),
            "perf_band_basis": e.band_info.basis if e.band_info else "",
        }

    def _recovery_json(self) -> dict[str, Any]:
        """time_to_serve_s, its breakdown and (spot plans) what reclaims cost."""
        if self.tts is None:  # llama.cpp plans: not modelled
            return {"time_to_serve_s": None}
        r = self.reclaim
        return {
            "time_to_serve_s": round(self.tts.total_s),
            "time_to_serve": self.tts.to_json(),
            "reclaim": r.to_json(self.usd_per_hour, self.ondemand_usd_per_hour()) if r else None,
        }

    def ondemand_usd_per_hour(self) -> float | None:
        price = self.offer.ondemand_usd_per_hour
        return None if price is None else price * self.verdict.nodes

    def to_json(self) -> dict[str, Any]:
        v, o, m = self.verdict, self.offer, self.verdict.memory
        assert m is not None
        w = m.worst
        return {
            "rank": self.rank,
            "cloud": o.cloud,
            "region": o.region,
            "zone": o.zone or None,
            "instance_type": o.instance_type,
            "gpu": o.gpu,
            "gpus_per_node": o.gpus_per_node,
            "nodes": v.nodes,
            "tp": v.tp,
            "dp": v.dp,
            "ep": v.ep,
            "pp": v.pp,
            "layout": v.layout.label,
            "dcp": m.dcp,
            "market": self.market,
            "usd_per_hour": round(self.usd_per_hour, 4),
            "usd_per_gpu_hour": round(self.usd_per_hour / (v.nodes * o.gpus_per_node), 4),
            **(
                {"expected_usd_per_hour": round(self.expected_usd_per_hour, 4)}
                if self.expected_usd_per_hour is not None
                else {}
            ),
            "memory_gib_per_gpu": {
                "device": round(w.device / GIB, 2),
                "weights": round(w.weights / GIB, 2),
                "kv_cache": round(max(0.0, w.kv_pool) / GIB, 2),
                "activations": round(w.activations / GIB, 2),
                "overhead": round(w.overhead / GIB, 2),
                "outside_budget": round(w.outside / GIB, 2),
                "free": round(w.free / GIB, 2),
            },
            "kv_cache_tokens": m.kv_cache_tokens,
            "max_concurrent_full_ctx": m.max_concurrent,
            **self._perf_json(),
            "interconnect": o.interconnect,
            "fabric": o.fabric,
            "prices_as_of": o.prices_as_of,
            "price_age_days": price_age_days(o.prices_as_of),
            "spot_interruption": self.spot_interruption,
            "spot_risk": (
                spot_risk_info(o.cloud, o.region, o.instance_type)
                if self.market == "spot"
                else None
            ),
            "multi_node": o.multi_node,
            "aliases": list(o.aliases),
            "price_flags": list(o.flags),
            "warnings": self.warnings,
            "vllm_args": self.vllm_args,
            **self._recovery_json(),
        }


@dataclass
class QuoteResult:
    request: QuoteRequest
    model: ModelSpec
    scheme: QuantScheme
    kv_dtype_bytes: int
    plans: list[Plan]
    feasible_count: int  # plans before --top
    rejected: list[dict[str, Any]]
    skipped_prices: dict[str, int]
    prices_as_of: str | None
    notes: list[str] = field(default_factory=list)
    best_by_market: dict[str, Plan] = field(default_factory=dict)
    # the cheapest plan of each layout on the best plan's hardware and node count (--explain)
    layout_alternatives: list[Plan] = field(default_factory=list)

    @property
    def best(self) -> Plan | None:
        return self.plans[0] if self.plans else None


def _divisors_desc(n: int) -> list[int]:
    return [d for d in range(n, 0, -1) if n % d == 0]


def shape_rule_violation(
    spec: ModelSpec, scheme: QuantScheme, tp: int, pp: int, dcp: int, ep: bool = False
) -> str | None:
    """vLLM's start-up checks on a parallel layout, as one reason or None.

    With expert parallelism (ep) whole experts sit on each rank, so the per-rank expert-width
    rules (fp8 block, Marlin MoE) do not apply."""
    if spec.num_heads % tp:
        return f"TP{tp} does not divide the {spec.num_heads} attention heads"
    if spec.mla is None:
        kvh = spec.num_kv_heads
        if tp <= kvh and kvh % tp:
            return f"TP{tp} does not divide the {kvh} KV heads"
        if tp > kvh and tp % kvh:
            return f"TP{tp} is not a multiple of the {kvh} KV heads"
    if pp > spec.num_layers:
        return f"PP{pp} exceeds the {spec.num_layers} layers"
    if dcp > 1:
        if tp % dcp:
            return f"DCP{dcp} does not divide TP{tp}"
        if spec.mla is None and dcp > max(1, tp // spec.num_kv_heads):
            return f"DCP{dcp} exceeds TP/KV-heads ({tp}/{spec.num_kv_heads}) for GQA"
    if spec.moe is not None and not ep and scheme.engine == "vllm" and scheme.bits < 16:
        inter = spec.moe.moe_intermediate_size
        if inter % tp:
            return f"TP{tp} does not divide the expert width {inter}"
        part = inter // tp
        if scheme.name == "fp8" and "block" in scheme.label and part % 128:
            return f"fp8 block-128 experts need width/TP % 128 == 0 ({inter}/{tp} = {part})"
        if scheme.name == "int4":
            need = max(64, scheme.group_size or 128)
            if part % need:
                return (
                    f"int4 Marlin MoE needs expert width/TP % {need} == 0 ({inter}/{tp} = {part})"
                )
    return None


def kernel_verdict(scheme: QuantScheme, gpu: GpuSpec) -> tuple[str | None, str | None]:
    """(rejection, warning) for running this quant format on this GPU generation."""
    k = scheme.kernels
    if k is None:
        return None, None
    if not gpu.is_nvidia:
        if not k.amd:
            return f"no ROCm kernels for {scheme.name} on {gpu.name}", None
        if scheme.name == "int4":
            return None, "int4 on ROCm runs Triton kernels (Marlin is CUDA-only): slower"
        return None, None
    sm = gpu.sm or 0
    if sm >= k.min_sm:
        return None, None
    if k.fallback_sm is not None and sm >= k.fallback_sm:
        return None, k.fallback_note or f"{scheme.name} runs through a fallback kernel here"
    return (
        f"no vLLM {scheme.name} kernels on {gpu.name} ({gpu.arch}, SM {sm / 10:.1f}; "
        f"needs SM {k.min_sm / 10:.1f}+)"
    ), None


def _settings(req: QuoteRequest, spec: ModelSpec, hw: HardwareClass, kvb: int) -> MemorySettings:
    """The same vLLM rules `prov fit` applies (provisioner/core/vllm_rules.py, VLLM_VERSION)."""
    rules = rules_for(VLLM_VERSION)
    gpu = gpu_specs().get(hw.gpu)
    return MemorySettings(
        gpu_memory_utilization=req.gpu_memory_utilization,
        max_num_batched_tokens=req.max_num_batched_tokens,
        max_num_seqs=batch_defaults(rules, hw.gpu, hw.gpu_memory_gib)[1],
        kv_bytes=kvb,
        sm=gpu.sm if gpu is not None else None,
        rules=rules,
    )


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
) -> ShapeVerdict:
    """Feasibility of one shape on one hardware class, with the reason when it fails.

    `layout` (DP and/or EP, provisioner/core/layouts.py) replaces the plain TP x PP shape."""
    lay = layout or Layout(tp, 1, pp)
    dp, ep = lay.dp, lay.ep
    rule = shape_rule_violation(spec, scheme, tp, pp, req.dcp, ep=ep) or (
        layout_violation(spec, scheme, lay, req.dcp) if dp > 1 or ep else None
    )
    if rule:
        return ShapeVerdict(hw, nodes, tp, pp, None, rule, dp=dp, ep=ep)
    nvlink = hw.interconnect in {"nvlink", "xgmi", "nvlink-bridge"}
    settings = _settings(req, spec, hw, kvb)
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
        return ShapeVerdict(hw, nodes, tp, pp, mem, reason, dp=dp, ep=ep)

    w = max(mem.stages, key=lambda s: s.weights)
    if not mem.weights_fit:
        bad = min(mem.stages, key=lambda s: s.kv_pool)
        need = bad.weights + bad.activations + bad.overhead
        return reject(
            f"weights+activations+overhead {_fmt_gib(need)} per GPU exceed "
            f"{req.gpu_memory_utilization:g} x {hw.gpu_memory_gib:g} GiB = "
            f"{_fmt_gib(bad.budget)}",
        )
    if mem.max_concurrent < 1:
        k = max(
            range(len(mem.stages)),
            key=lambda i: mem.request_bytes_per_stage[i] - mem.stages[i].kv_pool,
        )
        st = mem.stages[k]
        return reject(
            f"one {req.ctx}-token request needs {_fmt_gib(mem.request_bytes_per_stage[k])} "
            f"of KV per GPU but only {_fmt_gib(max(0.0, st.kv_pool))} is left after "
            f"weights {_fmt_gib(st.weights)} (vLLM refuses to start)",
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
            f"CUDA context + NCCL (~{_fmt_gib(w.outside)}) may not fit the "
            f"{_fmt_gib(headroom)} left by --gpu-memory-utilization "
            f"{req.gpu_memory_utilization:g}; lower it if vLLM fails to start"
        )
    if tp > 1 and hw.interconnect == "pcie":
        warnings.append(f"TP{tp} all-reduce runs over PCIe (no NVLink)")
    return ShapeVerdict(
        hw, nodes, tp, pp, mem, None, tuple(warnings), workload_held, settings.max_num_seqs, dp, ep
    )


def _rejection(v: ShapeVerdict, cloud: str, itype: str, reason: str) -> dict[str, Any]:
    return {
        "shape": f"{v.nodes}x {cloud}:{itype} ({v.hw.gpus_per_node}x{v.hw.gpu}) "
        f"TP{v.tp}xPP{v.pp}" + (f" ({v.layout.label})" if v.dp > 1 or v.ep else ""),
        "cloud": cloud,
        "instance_type": itype,
        "gpu": v.hw.gpu,
        "nodes": v.nodes,
        "tp": v.tp,
        "pp": v.pp,
        **({"dp": v.dp, "ep": v.ep} if v.dp > 1 or v.ep else {}),
        "reason": reason,
    }


# Host memory vLLM needs besides offloaded weights (process, pinned buffers, the OS): assumption.
HOST_RAM_RESERVE_GIB = 32


def host_ram_needed(req: QuoteRequest, gpus_per_node: int) -> float:
    """Host RAM a node needs for --cpu-offload-gb on every GPU, plus a documented reserve."""
    return req.cpu_offload_gb * gpus_per_node + HOST_RAM_RESERVE_GIB


def host_link_gbps(gpu: GpuSpec) -> float:
    """Effective host-to-GPU copy bandwidth in GB/s: PCIe Gen5 x16 on Hopper/Blackwell hosts,
    Gen4 x16 otherwise, at ~80% of the link's 64 / 32 GB/s per direction (assumption)."""
    return 50.0 if (gpu.sm or 0) >= 90 else 25.0


def throughput_batch(req: QuoteRequest, v: ShapeVerdict) -> int:
    """Requests in flight for the estimate: --concurrency, or what the KV cache and
    vLLM's max_num_seqs allow (saturation). The estimate caps either at max_num_seqs; more
    requests than the KV cache holds queue (or are preempted), so they add no throughput."""
    if req.concurrency is not None:
        return max(1, min(req.concurrency, v.workload_concurrency or req.concurrency))
    return max(1, min(v.workload_concurrency, v.max_num_seqs * v.dp))  # max_num_seqs per rank


def _estimate(
    spec: ModelSpec,
    scheme: QuantScheme,
    req: QuoteRequest,
    v: ShapeVerdict,
    fabric: str,
    kvb: int,
    isl: int,
    osl: int,
    stage_cache: dict[tuple[int, int], Any],
) -> PerfEstimate | None:
    if scheme.engine != "vllm":
        return None
    if v.dp > 1 or v.ep:
        from provisioner.core.perf_ep import estimate_layout

        return estimate_layout(
            spec,
            scheme,
            gpu_specs()[v.hw.gpu],
            v.layout,
            gpus_per_node=v.hw.gpus_per_node,
            interconnect=v.hw.interconnect,
            fabric=fabric,
            workload=Workload(isl, osl, throughput_batch(req, v)),
            kv_bytes=kvb,
            max_num_seqs=v.max_num_seqs,
            max_num_batched_tokens=req.max_num_batched_tokens,
            layout_cache=stage_cache,
        )[0]
    return estimate(
        spec,
        scheme,
        gpu_specs()[v.hw.gpu],
        tp=v.tp,
        pp=v.pp,
        gpus_per_node=v.hw.gpus_per_node,
        interconnect=v.hw.interconnect,
        fabric=fabric,
        workload=Workload(isl, osl, throughput_batch(req, v)),
        max_num_seqs=v.max_num_seqs,
        max_num_batched_tokens=req.max_num_batched_tokens,
        kv_bytes=kvb,
        dcp=req.dcp,
        stage_cache=stage_cache,
        offload_gib_per_gpu=req.cpu_offload_gb,
        pcie_gbps=host_link_gbps(gpu_specs()[v.hw.gpu]),
    )


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


def vllm_args(
    spec: ModelSpec,
    scheme: QuantScheme,
    req: QuoteRequest,
    tp: int,
    pp: int,
    kvb: int,
    dp: int = 1,
    ep: bool = False,
) -> list[str]:
    if scheme.engine != "vllm":
        return []
    args = [
        "--model",
        spec.id,
        "--tensor-parallel-size",
        str(tp),
        "--pipeline-parallel-size",
        str(pp),
        *(["--data-parallel-size", str(dp)] if dp > 1 else []),
        *(["--enable-expert-parallel"] if ep else []),
        "--max-model-len",
        str(req.ctx),
        "--gpu-memory-utilization",
        f"{req.gpu_memory_utilization:g}",
        "--max-num-batched-tokens",
        str(req.max_num_batched_tokens),
    ]
    if req.kv_dtype == "fp8" or kvb == 1:
        args += ["--kv-cache-dtype", "fp8"]
    if scheme.vllm_quantization:
        args += ["--quantization", scheme.vllm_quantization]
    if req.dcp > 1:
        args += ["--decode-context-parallel-size", str(req.dcp)]
    if req.cpu_offload_gb:
        args += ["--cpu-offload-gb", f"{req.cpu_offload_gb:g}"]
    if spec.trust_remote_code:
        args += ["--trust-remote-code"]
    return args


def _check_filters(req: QuoteRequest, offers: Sequence[Offer]) -> None:
    clouds = sorted({o.cloud for o in offers})
    for c in req.clouds:
        if c.lower() not in clouds:
            raise UsageError(f"unknown --cloud {c!r}; allowed: {', '.join(clouds)}")
    for g in req.gpus:
        if not match_gpu(g):
            vendors = sorted({s.vendor.lower() for s in gpu_specs().values()})
            raise UsageError(f"unknown --gpu {g!r}; allowed: {', '.join([*vendors, *gpu_specs()])}")


def plan_quote(
    req: QuoteRequest,
    spec: ModelSpec,
    scheme: QuantScheme,
    offers: Sequence[Offer],
    *,
    collect_rejected: bool = True,
    distinct: Callable[[Offer, ShapeVerdict], Hashable] | None = None,
) -> QuoteResult:
    """Rank every feasible shape in `offers` by the request's objective ($/Mtok or $/h).

    With `distinct` (provisioner/core/choices.py), only the best plan of each (distinct(offer,
    shape), market) is made and ranked; the group's other offers ride along in `Plan.also`.
    """
    if req.ctx > spec.max_position_embeddings:
        raise UsageError(
            f"--ctx {req.ctx} exceeds {spec.id}'s maximum context "
            f"{spec.max_position_embeddings} (max_position_embeddings); vLLM rejects it"
        )
    _check_filters(req, offers)
    if req.layout == "dp-ep" and (spec.moe is None or scheme.engine != "vllm" or req.dcp > 1):
        why = "--dcp > 1" if req.dcp > 1 else f"{spec.id} is not a MoE model served by vLLM"
        raise UsageError(
            f"--layout dp-ep needs a MoE model on vLLM without --dcp ({why}); use --layout tp"
        )
    kvb = kv_bytes(req.kv_dtype, spec)
    specs = gpu_specs()
    wanted_gpus = {n for g in req.gpus for n in match_gpu(g)}
    clouds = {c.lower() for c in req.clouds}
    regions = {r.lower() for r in req.regions}
    markets = ("spot", "on-demand") if req.market == "any" else (req.market,)

    classes: dict[HardwareClass, list[Offer]] = defaultdict(list)
    device_gib: dict[tuple[str, float], float] = {}
    buckets: dict[tuple[str, int, float, str], list[Offer]] = {}
    for o in offers:
        if clouds and o.cloud not in clouds:
            continue
        if regions and o.region.lower() not in regions and (o.zone or "").lower() not in regions:
            continue
        if wanted_gpus and o.gpu not in wanted_gpus:
            continue
        stated = (o.gpu, o.gpu_memory_gib)
        device = device_gib.get(stated)
        if device is None:  # as CUDA reports it, on any cloud
            device = device_gib[stated] = cuda_memory_gib(o.gpu, o.gpu_memory_gib)
        # a plain tuple finds the class's list (hashing the frozen dataclass costs more)
        hw_key = (o.gpu, o.gpus_per_node, device, o.interconnect)
        bucket = buckets.get(hw_key)
        if bucket is None:
            bucket = buckets[hw_key] = classes[HardwareClass(*hw_key)]
        bucket.append(o)

    node_counts = [req.nodes] if req.nodes else list(range(1, req.max_nodes + 1))
    if scheme.engine == "llama.cpp":
        node_counts = [1]
    rejected: list[dict[str, Any]] = []
    # (rank key, $/h, nodes, -concurrency, market, verdict index, offer index)
    candidates: list[tuple[float, float, int, int, str, int, int]] = []
    verdicts: list[ShapeVerdict] = []
    class_offers: list[list[Offer]] = []
    skipped: dict[str, set[tuple[int, str]]] = defaultdict(set)  # distinct offer prices
    memo: dict[tuple[Any, ...], ShapeVerdict] = {}
    placer = WeightPlacer(spec, scheme)
    from provisioner.core.memory import weights_total_bytes
    from provisioner.core.time_to_serve import Replica, time_to_serve

    weight_bytes = weights_total_bytes(spec, scheme)  # a replacement loads them all
    tts_memo: dict[tuple[Any, ...], TimeToServe] = {}

    def tts_of(o: Offer, nodes: int) -> TimeToServe | None:
        """A replacement replica's time to serve on this instance type when the weights are
        split over ``nodes`` (cached); None for llama.cpp plans (the terms are vLLM's)."""
        if scheme.engine != "vllm":
            return None
        key = (o.cloud, o.instance_type, o.gpus_per_node, o.vcpus, nodes)
        if key not in tts_memo:
            replica = Replica(o.cloud, o.instance_type, o.gpus_per_node, o.vcpus, nodes,
                              weight_bytes, spec.moe is not None)  # fmt: skip
            tts_memo[key] = time_to_serve(replica, req.weights)
        return tts_memo[key]

    by_hour = req.objective == "usd-per-hour" or scheme.engine != "vllm"
    timed = req.risk_adjusted or req.min_availability is not None  # rank by time to serve
    isl, osl, _explicit = workload_tokens(req)
    perf_memo: dict[tuple[int, str], PerfEstimate | None] = {}
    stage_cache: dict[tuple[int, int], Any] = {}
    offer_misses: dict[tuple[int, str], str] = {}
    lone: set[tuple[int, str, str]] = set()  # (nodes, cloud, type) single machines refused

    price_memo: dict[int, list[tuple[str, float]]] = {}

    def usable_prices(o: Offer) -> list[tuple[str, float]]:
        """(market, node $/h) this offer may be ranked on; doubtful prices are counted once."""
        found = price_memo.get(id(o))
        if found is not None:
            return found
        found = []
        for market in markets:
            price = o.price(market)
            if price is None:
                continue
            doubt = price_doubt(o, market)
            if doubt is None and market == "spot" and req.max_interruption is not None:
                risk = spot_risk(o.cloud, o.region, o.instance_type)
                if risk is not None and risk.max_pct > req.max_interruption:
                    doubt = f"spot pool interrupted more than {req.max_interruption}%/month"
            if doubt:
                skipped[doubt].add((id(o), market))
            else:
                found.append((market, price))
        price_memo[id(o)] = found
        return found

    def perf_of(v: ShapeVerdict, fabric: str) -> PerfEstimate | None:
        """Throughput of a feasible shape on one fabric (cached; None for llama.cpp)."""
        k = (id(v), fabric)
        if k not in perf_memo:
            perf_memo[k] = _estimate(spec, scheme, req, v, fabric, kvb, isl, osl, stage_cache)
        return perf_memo[k]

    # a verdict depends on the class only through the GPU, its memory and the interconnect:
    # classes that differ in GPUs per node (or node count) share it for the same layout
    same_gpu: dict[tuple[str, float, str, Layout], ShapeVerdict] = {}

    def verdict_of(hw: HardwareClass, nodes: int, lay: Layout) -> ShapeVerdict:
        key = (hw, nodes, lay)
        v = memo.get(key)
        if v is not None:
            return v
        shared = (hw.gpu, hw.gpu_memory_gib, hw.interconnect, lay)
        v = same_gpu.get(shared)
        if v is not None:
            v = memo[key] = replace(v, hw=hw, nodes=nodes)
            return v
        plain = lay.dp == 1 and not lay.ep
        pl = placer if plain else placers.get(lay)
        if pl is None:
            pl = placers[lay] = LayoutPlacer(spec, scheme, lay, base=placer)
        ep_bad, ep_warn = ep_kernel_verdict(scheme, specs[hw.gpu]) if lay.ep else (None, None)
        if ep_bad:
            v = ShapeVerdict(hw, nodes, lay.tp, lay.pp, None, ep_bad, dp=lay.dp, ep=lay.ep)
        else:
            v = evaluate_shape(
                spec, scheme, req, hw, nodes, lay.tp, lay.pp, kvb, placer=pl, layout=lay
            )
        if v.reason is None and ep_warn:
            v = replace(v, warnings=(*v.warnings, ep_warn))
        memo[key] = same_gpu[shared] = v
        return v

    def add_candidates(hw_offers: list[Offer], nodes: int, fits: list[ShapeVerdict]) -> None:
        """One candidate per offer and market: the fastest of `fits` meeting the SLOs."""
        first_vi = len(verdicts)
        fastest: dict[str, tuple[int, PerfEstimate | None, int]] = {}  # and -concurrency
        verdicts.extend(fits)
        class_offers.extend([hw_offers] * len(fits))
        for oi, o in enumerate(hw_offers):
            if nodes > 1 and not o.multi_node:  # a single machine: no cluster to join
                if collect_rejected and (nodes, o.cloud, o.instance_type) not in lone:
                    lone.add((nodes, o.cloud, o.instance_type))
                    rejected.append(
                        _rejection(
                            fits[0],
                            o.cloud,
                            o.instance_type,
                            f"{o.instance_type} is a single machine on {o.cloud}: the "
                            "catalog declares no cluster fabric to join several",
                        )
                    )
                continue
            if req.cpu_offload_gb and o.memory_gib < host_ram_needed(req, o.gpus_per_node):
                offer_misses[(first_vi, o.fabric)] = (
                    f"--cpu-offload-gb {req.cpu_offload_gb:g} x {o.gpus_per_node} GPUs needs "
                    f"{host_ram_needed(req, o.gpus_per_node):g} GiB of host RAM; "
                    f"{o.instance_type} has {o.memory_gib:g}"
                )
                continue
            # among this node count's feasible splits, the fastest one meeting the SLOs (it
            # depends on the offer only through its fabric)
            hit = fastest.get(o.fabric)
            if hit is None:
                best_vi, est = -1, None
                for k, v in enumerate(fits):
                    e = perf_of(v, o.fabric)
                    miss = slo_violation(req, e)
                    if miss:
                        offer_misses.setdefault((first_vi + k, o.fabric), miss)
                    elif best_vi < 0 or (e and est and e.output_tps > est.output_tps):
                        best_vi, est = first_vi + k, e
                neg_conc = 0
                if best_vi >= 0:
                    offer_misses.pop((best_vi, o.fabric), None)
                    mem = verdicts[best_vi].memory
                    neg_conc = -mem.max_concurrent if mem else 0
                hit = fastest[o.fabric] = (best_vi, est, neg_conc)
            best_vi, est, neg_conc = hit
            if best_vi < 0:
                continue
            prices = price_memo.get(id(o))
            if prices is None:
                prices = usable_prices(o)
            for market, price in prices:
                usd = price * nodes
                rank_key = usd if by_hour or est is None else usd_per_mtok(usd, est.output_tps)
                # the time to serve only matters to the rank with these flags
                tts = tts_of(o, weight_split(verdicts[best_vi])) if timed else None
                if tts:
                    loss = reclaim(o, market, nodes, tts)
                    miss = availability_miss(req, loss)
                    if miss:
                        skipped[miss].add((id(o), market))
                        continue
                    if req.risk_adjusted:  # rank per hour of serving: / availability
                        rank_key = loss.expected_usd_per_hour(rank_key)
                candidates.append((rank_key, usd, nodes, neg_conc, market, best_vi, oi))

    moe_vllm = spec.moe is not None and scheme.engine == "vllm"
    placers: dict[Layout, LayoutPlacer] = {}
    dp_found: set[HardwareClass] = set()

    for hw, hw_offers in classes.items():
        gpu = specs[hw.gpu]
        kernel_reject, kernel_warn = kernel_verdict(scheme, gpu)
        for nodes in node_counts:
            total = nodes * hw.gpus_per_node
            splits = (
                [(1, total)]
                if scheme.engine == "llama.cpp"
                else [(tp, total // tp) for tp in _divisors_desc(hw.gpus_per_node)]
            )
            fits: list[ShapeVerdict] = []
            fails: list[ShapeVerdict] = []
            tp_ep = req.layout == "dp-ep" and moe_vllm  # dp-ep: TP x PP shapes only with EP
            for tp, pp in splits if req.layout != "dp-ep" or tp_ep else ():
                if kernel_reject:
                    v = ShapeVerdict(hw, nodes, tp, pp, None, kernel_reject)
                else:
                    v = verdict_of(hw, nodes, Layout(tp, 1, pp, tp_ep and tp > 1))
                    if (
                        v.reason
                        and req.layout == "auto"
                        and moe_vllm
                        and expert_width_violation(spec, scheme, Layout(tp, 1, pp))
                    ):  # the fp8-block / Marlin width rule: vLLM runs it with EP
                        v = verdict_of(hw, nodes, Layout(tp, 1, pp, True))
                if v.reason is None:
                    fits.append(
                        replace(v, warnings=(*v.warnings, kernel_warn)) if kernel_warn else v
                    )
                    # vLLM's canonical layout is TP inside a node, PP across nodes: smaller TP with
                    # PP inside the node only when that fails, or when --explore-splits asks
                    # (in-node PP is outside the throughput model's calibration)
                    if by_hour or not req.explore_splits:
                        break
                else:
                    fails.append(v)
            # each group gives one candidate per offer and market, its fastest member: the
            # layouts of one offer share its price, so the fastest has the lowest $/Mtok
            groups = [fits] if fits else []
            dp_fits: list[ShapeVerdict] = []
            # bounded: DP/EP only on the fewest nodes where one fits (more nodes scale price
            # and tokens/s alike, plus all-to-all over the fabric), unless --nodes is given
            if (
                req.layout != "tp"
                and moe_vllm
                and req.dcp == 1
                and not kernel_reject
                and hw not in dp_found
                # DP replicates what TP x PP splits: when no TP x PP split holds the weights
                # on these GPUs, no DP layout does either
                and not (
                    fails
                    and not fits
                    and all(f.memory is not None and not f.memory.weights_fit for f in fails)
                )
            ):
                for lay in dp_ep_layouts(spec, hw.gpus_per_node, nodes):
                    v = verdict_of(hw, nodes, lay)
                    if v.reason is None:
                        dp_fits.append(
                            replace(v, warnings=(*v.warnings, kernel_warn)) if kernel_warn else v
                        )
                    else:
                        fails.append(v)
            if dp_fits:
                groups.append(dp_fits)
                dp_found.add(hw)
            if collect_rejected:
                instances = sorted({(o.cloud, o.instance_type) for o in hw_offers})
                for v in fails:
                    for cloud, itype in instances:
                        rejected.append(_rejection(v, cloud, itype, v.reason or ""))
            for group in groups:
                add_candidates(hw_offers, nodes, group)

    if collect_rejected:
        for (vi, fabric), reason in offer_misses.items():
            v = verdicts[vi]
            for cloud, itype in sorted(
                {(o.cloud, o.instance_type) for o in class_offers[vi] if o.fabric == fabric}
            ):
                rejected.append(_rejection(v, cloud, itype, reason))
    feasible = len(candidates)
    also: dict[int, list[Offer]] = {}
    if distinct is not None:  # one candidate per key, in rank order; --top is the caller's
        firsts: dict[Hashable, int] = {}
        keys: dict[tuple[int, int], Hashable] = {}  # per offer x verdict; the market is added
        top: list[tuple[float, float, int, int, str, int, int]] = []
        for cand in sorted(candidates):
            vi, oi = cand[5], cand[6]
            o = class_offers[vi][oi]
            base = keys.get((vi, oi))
            if base is None:
                base = keys[(vi, oi)] = distinct(o, verdicts[vi])
            group_key = (base, cand[4])
            if group_key in firsts:
                also[firsts[group_key]].append(o)
            else:
                firsts[group_key] = len(top)
                also[len(top)] = []
                top.append(cand)
    else:
        top = heapq.nsmallest(req.top, candidates) if req.top else sorted(candidates)

    def make_plan(rank: int, cand: tuple[float, float, int, int, str, int, int]) -> Plan:
        _key, price, _n, _c, market, vi, oi = cand
        v = verdicts[vi]
        o = class_offers[vi][oi]
        warnings = list(v.warnings) + list(scheme.notes)
        if v.nodes > 1 and o.fabric not in FAST_FABRICS:
            warnings.append(f"{o.instance_type} has no EFA/InfiniBand: PP hand-offs over ethernet")
        tts = tts_of(o, weight_split(v))
        loss = reclaim(o, market, v.nodes, tts) if tts else None
        return Plan(
            rank,
            o,
            v,
            market,
            price,
            vllm_args(spec, scheme, req, v.tp, v.pp, kvb, v.dp, v.ep),
            list(dict.fromkeys(warnings)),
            perf_of(v, o.fabric),
            expected_usd_per_hour=(
                loss.expected_usd_per_hour(price) if loss and req.risk_adjusted else None
            ),
            tts=tts,
            reclaim=loss if market == "spot" else None,
        )

    plans = [make_plan(rank, cand) for rank, cand in enumerate(top, start=1)]
    for i, others in also.items():
        plans[i].also = others
    best_by_market: dict[str, Plan] = {}
    for m in markets:
        in_market = [c for c in candidates if c[4] == m]
        if in_market:
            best = min(in_market)
            rank = top.index(best) + 1 if best in top else 1 + sum(c < best for c in candidates)
            best_by_market[m] = make_plan(rank, best)
    alternatives: list[Plan] = []
    if top:  # every feasible layout on the best plan's offer and market, for --explain
        c0 = top[0]
        v0 = verdicts[c0[5]]
        ranked = {(c[5], c[6], c[4]): i for i, c in enumerate(top, start=1)}
        seen: set[str] = set()
        for vi, v in enumerate(verdicts):
            label = v.layout.label
            if v.hw == v0.hw and v.nodes == v0.nodes and label not in seen:
                seen.add(label)
                cand = (c0[0], c0[1], c0[2], c0[3], c0[4], vi, c0[6])
                alternatives.append(make_plan(ranked.get((vi, c0[6], c0[4]), 0), cand))
    # the oldest known date among the plans shown (not every offer considered)
    dates = sorted({p.offer.prices_as_of for p in plans if p.offer.prices_as_of})
    notes: list[str] = list(spec.notes)
    if scheme.engine == "llama.cpp":
        notes.append(
            "GGUF formats run on llama.cpp, not vLLM: plans are memory-only estimates "
            "(layer split across the node's GPUs, no tensor parallelism)"
        )
    return QuoteResult(
        request=req,
        model=spec,
        scheme=scheme,
        kv_dtype_bytes=kvb,
        plans=plans,
        feasible_count=feasible,
        rejected=rejected,
        skipped_prices={k: len(v) for k, v in skipped.items()},
        prices_as_of=dates[0] if dates else None,
        best_by_market=best_by_market,
        notes=notes,
        layout_alternatives=alternatives,
    )


def result_to_json(result: QuoteResult) -> dict[str, Any]:
    """The JSON contract of DESIGN.md (extended, never broken)."""
    spec, scheme = result.model, result.scheme
    from provisioner.core.memory import weights_total_bytes

    weights = weights_total_bytes(spec, scheme)
    return {
        "schema_version": SCHEMA_VERSION,
        "request": result.request.model_dump(mode="json"),
        "model": {
            "id": spec.id,
            "params_total": spec.params_total,
            "params_active": spec.params_active,
            "attention": spec.attention,
            "family": spec.family,
            "layers": spec.num_layers,
            "max_context": spec.max_position_embeddings,
            "quant": scheme.name,
            "quant_label": scheme.label,
            "engine": scheme.engine,
            "weight_bytes": int(weights),
            "kv_bytes_per_token": spec.kv_bytes_per_token(result.kv_dtype_bytes, 1),
            "kv_tp_sharded": spec.mla is None,
        },
        "plans": [p.to_json() for p in result.plans],
        "workload": dict(
            zip(("isl", "osl", "explicit"), workload_tokens(result.request), strict=True)
        ),
        "feasible_plans": result.feasible_count,
        "rejected": result.rejected,
        "skipped_prices": result.skipped_prices,
        "notes": result.notes,
        "prices_as_of": result.prices_as_of,
    }
