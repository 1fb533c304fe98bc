"""Properties of the memory model and the planner, checked with hypothesis.

(a) a longer context never raises the number of full-context requests that fit;
(b) more GPU memory never turns a feasible shape infeasible;
(c) every plan's price is nodes x its offer's price, and the filters hold.
"""

from __future__ import annotations

import math
from functools import cache

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pricing.offers import load_offers
from provisioner.core.catalog import catalog_ids, resolve_model
from provisioner.core.hardware import match_gpu
from provisioner.core.memory import MemorySettings, shape_memory
from provisioner.core.models import ModelSpec
from provisioner.core.offer import Offer
from provisioner.core.planner import plan_quote
from provisioner.core.planner.shapes import HardwareClass, ShapeVerdict, evaluate_shape
from provisioner.core.quant import QuantScheme, kv_bytes, resolve_quant
from provisioner.core.request import QuoteRequest, make_request
from provisioner.core.weight_placement import WeightPlacer

MODELS = catalog_ids()
QUANTS = ("auto", "bf16", "fp8", "int4")
TPS = (8, 4, 2, 1)  # big shapes first: hypothesis leans towards the first choices
FEW = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


@cache
def model(mid: str) -> ModelSpec:
    return resolve_model(mid)


@cache
def scheme(mid: str, quant: str) -> QuantScheme:
    return resolve_quant(quant, model(mid))


@cache
def placer(mid: str, quant: str) -> WeightPlacer:
    return WeightPlacer(model(mid), scheme(mid, quant))


@cache
def offers() -> tuple[Offer, ...]:
    return tuple(load_offers())


@cache
def offer_table() -> dict[tuple[str, str, str, str], Offer]:
    return {(o.cloud, o.region, o.zone, o.instance_type): o for o in offers()}


@cache
def real_memory_sizes() -> tuple[float, ...]:
    return tuple(sorted({o.gpu_memory_gib for o in offers()}))


def context_pair(data: st.DataObject, top: int) -> tuple[int, int]:
    """Two context lengths short <= long in [2, top], log-uniform (8 tokens and 1M equally);
    --ctx 1 leaves no room for a prompt and is refused (request.workload_tokens)."""
    a, b = (
        max(2, min(top, round(2 ** data.draw(st.floats(1, math.log2(top)), label=f"log2 ctx {i}"))))
        for i in (1, 2)
    )
    return min(a, b), max(a, b)


@st.composite
def layouts(draw: st.DrawFn) -> tuple[str, str, int, int, int]:
    """(model id, quant, tp, pp, dcp) with dcp dividing tp."""
    mid = draw(st.sampled_from(MODELS))
    quant = draw(st.sampled_from(QUANTS))
    tp = draw(st.sampled_from(TPS))
    pp = draw(st.sampled_from((4, 2, 1, 3)))
    dcp = draw(st.sampled_from([d for d in (1, 2, 4, 8) if tp % d == 0]))
    return mid, quant, tp, pp, dcp


def memory_settings() -> st.SearchStrategy[MemorySettings]:
    return st.builds(
        MemorySettings,
        gpu_memory_utilization=st.sampled_from([0.8, 0.9, 0.95]),
        max_num_batched_tokens=st.sampled_from([2048, 8192, 16384]),
        max_num_seqs=st.sampled_from([256, 1024]),
        kv_bytes=st.sampled_from([1, 2]),
    )


# ---- (a) context ----------------------------------------------------------------------------


@FEW
@given(
    layout=layouts(),
    device=st.floats(16, 200),
    s=memory_settings(),
    data=st.data(),
)
def test_longer_context_never_fits_more_requests(
    layout: tuple[str, str, int, int, int], device: float, s: MemorySettings, data: st.DataObject
) -> None:
    mid, quant, tp, pp, dcp = layout
    spec = model(mid)
    short, long = context_pair(data, spec.max_position_embeddings)
    args = (spec, scheme(mid, quant), tp, pp, device)
    a = shape_memory(*args, short, s, dcp=dcp, placer=placer(mid, quant))
    b = shape_memory(*args, long, s, dcp=dcp, placer=placer(mid, quant))
    assert b.max_concurrent <= a.max_concurrent
    assert all(
        rb >= ra
        for ra, rb in zip(a.request_bytes_per_stage, b.request_bytes_per_stage, strict=True)
    )
    assert b.kv_cache_tokens == a.kv_cache_tokens  # the pool does not depend on max_model_len


@FEW
@given(
    layout=layouts(),
    gpu=st.sampled_from(["H100-SXM", "H200-SXM", "A100-80GB-SXM", "L40S", "MI300X", "B200"]),
    concurrency=st.sampled_from([16, 4, 1, 64]),
    data=st.data(),
)
def test_a_shape_that_fits_a_long_context_fits_every_shorter_one(
    layout: tuple[str, str, int, int, int], gpu: str, concurrency: int, data: st.DataObject
) -> None:
    mid, quant, tp, pp, dcp = layout
    spec = model(mid)
    ladder = sorted({c for _ in range(3) for c in context_pair(data, spec.max_position_embeddings)})
    mem = data.draw(st.sampled_from(real_memory_sizes()[::-1]), label="GiB per GPU")
    hw = HardwareClass(gpu, 8, mem, "nvlink")
    sch, kvb = scheme(mid, quant), kv_bytes("auto", spec)
    nodes = max(1, tp * pp // 8)

    def verdict(ctx: int) -> ShapeVerdict:
        req = make_request(model=mid, ctx=ctx, dcp=dcp, concurrency=concurrency)
        return evaluate_shape(spec, sch, req, hw, nodes, tp, pp, kvb, placer=placer(mid, quant))

    # Also probe around the context the KV pool can hold `concurrency` times, where it flips.
    probe = verdict(2).memory
    if probe is not None and probe.kv_cache_tokens:
        edge = probe.kv_cache_tokens // concurrency
        for i in range(3):
            near = edge + data.draw(st.integers(-64, 64), label=f"near edge {i}")
            ladder.append(max(2, min(spec.max_position_embeddings, near)))
        ladder = sorted(set(ladder))
    verdicts = [verdict(c).reason is None for c in ladder]
    event(
        "contexts: "
        + ("all fit" if all(verdicts) else "none fit" if not any(verdicts) else "some fit")
    )
    # feasible for a prefix of the ascending contexts, then infeasible for good
    assert verdicts == sorted(verdicts, reverse=True), list(zip(ladder, verdicts, strict=True))


# ---- (b) memory -----------------------------------------------------------------------------


@FEW
@given(
    layout=layouts(),
    small=st.floats(8, 192),
    extra=st.floats(0, 128),
    s=memory_settings(),
    data=st.data(),
)
def test_more_gpu_memory_never_hurts_the_memory_model(
    layout: tuple[str, str, int, int, int],
    small: float,
    extra: float,
    s: MemorySettings,
    data: st.DataObject,
) -> None:
    mid, quant, tp, pp, dcp = layout
    spec = model(mid)
    ctx, _ = context_pair(data, spec.max_position_embeddings)
    args = (spec, scheme(mid, quant), tp, pp)
    a = shape_memory(*args, small, ctx, s, dcp=dcp, placer=placer(mid, quant))
    b = shape_memory(*args, small + extra, ctx, s, dcp=dcp, placer=placer(mid, quant))
    if a.weights_fit:
        assert b.weights_fit
    assert b.max_concurrent >= a.max_concurrent
    assert b.kv_cache_tokens >= a.kv_cache_tokens
    for sa, sb in zip(a.stages, b.stages, strict=True):
        assert sb.kv_pool >= sa.kv_pool


@FEW
@given(
    layout=layouts(),
    gpu=st.sampled_from(["H100-SXM", "H200-SXM", "A100-80GB-SXM", "L40S", "L4", "MI300X"]),
    gmu=st.sampled_from([0.8, 0.9, 0.95]),
    concurrency=st.integers(1, 4),
    data=st.data(),
)
def test_more_gpu_memory_never_makes_a_feasible_shape_infeasible(
    layout: tuple[str, str, int, int, int],
    gpu: str,
    gmu: float,
    concurrency: int,
    data: st.DataObject,
) -> None:
    # Every memory size the offers carry, smallest first. Not arbitrary sizes: vLLM's default
    # max_num_seqs jumps from 256 to 1024 at 70 GiB (a bigger sampler peak), so a 69.9 -> 70.0
    # GiB step can lose KV; between real GPU sizes the extra budget always outweighs it.
    mid, quant, tp, pp, dcp = layout
    spec = model(mid)
    ctx, _ = context_pair(data, spec.max_position_embeddings)
    req = make_request(
        model=mid, ctx=ctx, dcp=dcp, concurrency=concurrency, gpu_memory_utilization=gmu
    )
    sch, kvb = scheme(mid, quant), kv_bytes("auto", spec)
    nodes = max(1, tp * pp // 8)

    def fits(mem: float) -> bool:
        hw = HardwareClass(gpu, 8, mem, "nvlink")
        v = evaluate_shape(spec, sch, req, hw, nodes, tp, pp, kvb, placer=placer(mid, quant))
        return v.reason is None

    sizes = real_memory_sizes()
    verdicts = [fits(m) for m in sizes]
    event("fits from " + (f"{sizes[verdicts.index(True)]:g} GiB" if any(verdicts) else "never"))
    # infeasible below some size, feasible from there on
    assert verdicts == sorted(verdicts), list(zip(sizes, verdicts, strict=True))


# ---- (c) prices -----------------------------------------------------------------------------


@cache
def clouds() -> tuple[str, ...]:
    return tuple(sorted({o.cloud for o in offers()}))


@st.composite
def requests(draw: st.DrawFn) -> QuoteRequest:
    mid = draw(st.sampled_from(MODELS))
    top = model(mid).max_position_embeddings
    ctx = min(top, draw(st.sampled_from([4096, 32768, 131072])))
    return make_request(
        model=mid,
        ctx=ctx,
        concurrency=draw(st.integers(1, 4)),
        max_nodes=draw(st.integers(1, 4)),
        market=draw(st.sampled_from(["any", "spot", "on-demand"])),
        clouds=tuple(draw(st.lists(st.sampled_from(clouds()), max_size=3, unique=True))),
        gpus=tuple(
            draw(
                st.lists(
                    st.sampled_from(["H100", "H200", "A100", "L40S", "L4", "B200", "MI300X"]),
                    max_size=3,
                    unique=True,
                )
            )
        ),
        top=draw(st.sampled_from([1, 5, 25])),
        objective=draw(st.sampled_from(["usd-per-hour", "usd-per-mtok"])),
    )


@settings(max_examples=30, deadline=None, derandomize=True)
@given(req=requests())
def test_every_plan_costs_nodes_times_its_offer(req: QuoteRequest) -> None:
    spec = model(req.model)
    sch = scheme(req.model, "auto")
    result = plan_quote(req, spec, sch, offers(), collect_rejected=False)
    full = plan_quote(
        req.model_copy(update={"top": 0}), spec, sch, offers(), collect_rejected=False
    )
    assert len(result.plans) == min(req.top, full.feasible_count)
    event(f"plans: {'none' if not result.plans else len(result.plans)}")
    # --top N is the head of the full ranking
    head = full.plans[: req.top]
    assert [p.usd_per_hour for p in result.plans] == [p.usd_per_hour for p in head]
    wanted_gpus = {n for g in req.gpus for n in match_gpu(g)}
    table = offer_table()
    previous = 0.0
    for rank, p in enumerate(result.plans, start=1):
        doc = p.to_json()
        assert doc["rank"] == rank
        o = table[(doc["cloud"], doc["region"], doc["zone"] or "", doc["instance_type"])]
        node_price = o.price(doc["market"])
        assert node_price is not None
        assert doc["usd_per_hour"] == pytest.approx(doc["nodes"] * node_price, abs=1e-4)
        # the ranking key never decreases: $/h, or $/Mtok of output tokens
        key = doc["usd_per_hour"] if req.objective == "usd-per-hour" else doc["usd_per_mtok"]
        assert key >= previous
        previous = key
        assert doc["tp"] * doc["dp"] * doc["pp"] == doc["nodes"] * doc["gpus_per_node"]
        assert doc["nodes"] <= req.max_nodes
        assert doc["max_concurrent_full_ctx"] >= req.concurrency
        if req.market != "any":
            assert doc["market"] == req.market
        if req.clouds:
            assert doc["cloud"] in req.clouds
        if wanted_gpus:
            assert doc["gpu"] in wanted_gpus
