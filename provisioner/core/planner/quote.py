"""plan_quote: check the request, group the offers into hardware classes, then the two phases
(candidates.py: enumerate and price; ranking.py: order and build the plans shown).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from operator import attrgetter
from typing import TYPE_CHECKING

from provisioner.core.hardware import cuda_memory_gib, gpu_specs, match_gpu
from provisioner.core.layouts import Layout, layout_label
from provisioner.core.models import ModelSpec
from provisioner.core.planner import ranking
from provisioner.core.planner.candidates import Enumeration
from provisioner.core.planner.ranking import Distinct
from provisioner.core.planner.result import QuoteResult
from provisioner.core.planner.shapes import HardwareClass
from provisioner.core.quant import QuantScheme
from provisioner.core.request import QuoteRequest
from provisioner.errors import UsageError

if TYPE_CHECKING:
    from provisioner.core.offer import Offer


def _check_request(req: QuoteRequest, spec: ModelSpec, scheme: QuantScheme) -> None:
    if req.ctx > spec.max_position_embeddings:
        raise UsageError(
            f"--ctx {req.ctx} exceeds {spec.id}'s maximum context "
            f"{spec.max_position_embeddings} (max_position_embeddings); vLLM rejects it"
        )


def _check_filters(req: QuoteRequest, offers: Sequence[Offer]) -> None:
    if req.clouds:  # (the clouds of every offer: only when a --cloud is to be checked)
        clouds = sorted({o.cloud for o in offers})
        for c in req.clouds:
            if c.lower() not in clouds:
                raise UsageError(f"unknown --cloud {c!r}; allowed: {', '.join(clouds)}")
    for g in req.gpus:
        if not match_gpu(g):
            vendors = sorted({s.vendor.lower() for s in gpu_specs().values()})
            raise UsageError(f"unknown --gpu {g!r}; allowed: {', '.join([*vendors, *gpu_specs()])}")


def _check_layout(req: QuoteRequest, spec: ModelSpec, scheme: QuantScheme) -> None:
    if req.layout == "dp-ep" and (scheme.engine != "vllm" or req.dcp > 1):
        why = (
            "--dcp > 1 with DP is not modelled"
            if req.dcp > 1
            else f"{scheme.name} is served by {scheme.engine}"
        )
        raise UsageError(f"--layout dp-ep needs vLLM without --dcp ({why}); use --layout tp")


_CLASS_FIELDS = attrgetter("gpu", "gpus_per_node", "interconnect")


def hardware_classes(
    req: QuoteRequest, offers: Sequence[Offer]
) -> dict[HardwareClass, list[Offer]]:
    """The offers --cloud/--region/--gpu keep, grouped by what the memory model sees of them
    (GPU, GPUs per node, memory as CUDA reports it, interconnect), in first-seen order."""
    wanted_gpus = {n for g in req.gpus for n in match_gpu(g)}
    clouds = {c.lower() for c in req.clouds}
    regions = {r.lower() for r in req.regions}
    kept = offers
    if clouds or regions or wanted_gpus:
        kept = [
            o
            for o in offers
            if not (clouds and o.cloud not in clouds)
            and not (
                regions
                and o.region.lower() not in regions
                and (o.zone or "").lower() not in regions
            )
            and not (wanted_gpus and o.gpu not in wanted_gpus)
        ]
    classes: dict[HardwareClass, list[Offer]] = defaultdict(list)
    # a plain tuple finds the class's list (hashing the frozen dataclass costs more); the
    # memory CUDA reports is one size per GPU model, on any cloud
    buckets: dict[tuple[str, int, str], list[Offer]] = {}
    for o, key in zip(kept, map(_CLASS_FIELDS, kept), strict=True):
        bucket = buckets.get(key)
        if bucket is None:
            gpu, per_node, link = key
            hw = HardwareClass(gpu, per_node, cuda_memory_gib(gpu), link)
            bucket = buckets[key] = classes[hw]
        bucket.append(o)
    return classes


def plan_quote(
    req: QuoteRequest,
    spec: ModelSpec,
    scheme: QuantScheme,
    offers: Sequence[Offer],
    *,
    collect_rejected: bool = True,
    distinct: Distinct | None = None,
) -> QuoteResult:
    """Rank every feasible shape in `offers` by the request's objective ($/Mtok or $/h).

    With `distinct` (provisioner/core/choices.py), only the best candidate of each
    (distinct(offer, shape), market) is ranked, as `QuoteResult.ranked` entries whose plans are
    built on demand; the group's other offers ride along in `Ranked.also`.
    """
    _check_request(req, spec, scheme)
    _check_filters(req, offers)
    _check_layout(req, spec, scheme)
    markets = ("spot", "on-demand") if req.market == "any" else (req.market,)
    classes = hardware_classes(req, offers)
    node_counts = [req.nodes] if req.nodes else list(range(1, req.max_nodes + 1))
    if scheme.engine == "llama.cpp":
        node_counts = [1]

    found = Enumeration(req, spec, scheme, markets, collect_rejected)
    found.run(classes, node_counts)
    if scheme.engine == "llama.cpp":  # refused GGUF shapes: llama.cpp's layer split, not TPxPP
        for r in found.rejected:
            lay = Layout(r["tp"], 1, r["pp"])
            r["shape"] = r["shape"].removesuffix(layout_label(lay)) + layout_label(
                lay, engine=scheme.engine
            )

    top, also = ranking.order(found, distinct, req.top)
    if distinct is None:
        plans = [ranking.make_plan(found, rank, cand) for rank, cand in enumerate(top, start=1)]
        ranked = []
    else:  # the caller shows a few of these: their plans are built when it picks them
        plans, ranked = [], ranking.entries(found, top, also)
    offers_ranked = [p.offer for p in plans] + [r.offer for r in ranked]
    # the oldest known date among the plans ranked (not every offer considered)
    dates = sorted({o.prices_as_of for o in offers_ranked if o.prices_as_of})
    notes: list[str] = list(spec.notes)
    if scheme.engine == "llama.cpp":
        notes.append(
            "GGUF formats run on llama.cpp, not vLLM: plans are memory-only estimates "
            "(layout layers/N: llama.cpp splits the layers over the node's N GPUs, no tensor "
            "parallelism)"
        )
    return QuoteResult(
        request=req,
        model=spec,
        scheme=scheme,
        kv_dtype_bytes=found.kvb,
        plans=plans,
        feasible_count=len(found.candidates),
        rejected=found.rejected,
        skipped_prices={k: len(v) for k, v in found.skipped.items()},
        skipped_price_rows=found.skipped_rows() if collect_rejected else [],
        prices_as_of=dates[0] if dates else None,
        best_by_market=ranking.best_by_market(found, top),
        notes=notes,
        layout_alternatives=ranking.layout_alternatives(found, top),
        ranked=ranked,
    )
