"""A ranked plan: one offer, market and feasible shape with its price, speed, recovery and the
vLLM arguments that run it; and its entry in the JSON contract (provisioner/contract/document.py
reads it back as a `Plan`). A Ranked entry is the same choice before its plan is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provisioner.core.expected_cost import Reclaim
from provisioner.core.layouts import layout_label
from provisioner.core.memory import GIB
from provisioner.core.models import ModelSpec
from provisioner.core.offer import offer_fields, price_age_days
from provisioner.core.perf import PerfEstimate
from provisioner.core.planner.estimates import has_latency_slo, usd_per_mtok
from provisioner.core.planner.shapes import ShapeVerdict
from provisioner.core.quant import QuantScheme
from provisioner.core.request import QuoteRequest
from provisioner.core.spot_risk import spot_risk, spot_risk_info

if TYPE_CHECKING:
    from provisioner.core.offer import Offer
    from provisioner.core.time_to_serve import TimeToServe

# fabrics a multi-node plan's PP hand-offs (or all-to-all) may cross without a warning
FAST_FABRICS = frozenset({"efa", "infiniband", "gpudirect-tcpx", "nvlink"})


@dataclass
class RankedPlan:
    """A ranked plan of `prov quote` (its JSON is a `Plan` of the contract)."""

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
    engine: str = "vllm"  # the format's engine: "llama.cpp" for GGUF plans

    @property
    def layout_label(self) -> str:
        """The layout's one name in every view (provisioner/core/layouts.py layout_label)."""
        m = self.verdict.memory
        return layout_label(self.verdict.layout, m.dcp if m is not None else 1, self.engine)

    @property
    def spot_interruption(self) -> str | None:
        """AWS Spot Instance Advisor bucket (% interrupted per month) of a spot plan's pool."""
        if self.market != "spot":
            return None
        risk = spot_risk(self.offer.cloud, self.offer.region, self.offer.instance_type)
        return risk.label if risk else None

    @property
    def thin_data(self) -> bool:
        """The speed rests on thin data: few runs of the GPU family and regime, or no published
        run of the plan's path at all (perf_coverage); the band's basis says which."""
        e = self.perf
        return bool(e and e.band_info and e.band_info.thin)

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
            "perf_band_thin_data": self.thin_data,
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
            **offer_fields(o),
            "nodes": v.nodes,
            "tp": v.tp,
            "dp": v.dp,
            "ep": v.ep,
            "pp": v.pp,
            "layout": self.layout_label,
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
class Ranked:
    """A ranked distinct choice before its plan is built (plan_quote(distinct=...)): folding
    choices needs only its offer, shape, market and the offers folded into it; `plan(rank)`
    builds the RankedPlan for the few choices shown."""

    offer: Offer
    verdict: ShapeVerdict
    market: str
    also: list[Offer]
    build: Callable[[int], RankedPlan]

    def plan(self, rank: int) -> RankedPlan:
        p = self.build(rank)
        p.also = self.also
        return p


def vllm_args(
    spec: ModelSpec,
    scheme: QuantScheme,
    req: QuoteRequest,
    tp: int,
    pp: int,
    kvb: int,
    dp: int = 1,
    ep: bool = False,
    batched_tokens: int = 8192,
    served_batch: int | None = None,
) -> list[str]:
    """The plan's `vllm serve` flags. `served_batch` (requests in flight on all DP ranks) is the
    batch a latency SLO set: each engine is capped at its share (--max-num-seqs), so requests
    past it wait in the queue instead of slowing every token past the SLO."""
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
        str(batched_tokens),  # the shape's (vLLM's default for its GPU unless given)
    ]
    if req.kv_dtype == "fp8" or kvb == 1:
        args += ["--kv-cache-dtype", "fp8"]
    if scheme.vllm_quantization:
        args += ["--quantization", scheme.vllm_quantization]
    if served_batch is not None and has_latency_slo(req):
        args += ["--max-num-seqs", str(-(-served_batch // dp))]
    if req.dcp > 1:
        args += ["--decode-context-parallel-size", str(req.dcp)]
    if req.cpu_offload_gb:
        args += ["--cpu-offload-gb", f"{req.cpu_offload_gb:g}"]
    if spec.trust_remote_code:
        args += ["--trust-remote-code"]
    return args
