"""The planner's phases against each other: the shortcuts of the table path must not change an
answer, and the pieces the phases share must order and estimate as the ranking assumes."""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from pricing.offers import load_offers
from provisioner.core.catalog import resolve_model
from provisioner.core.hardware import cuda_memory_gib
from provisioner.core.layouts import Layout
from provisioner.core.memory import GIB, weights_total_bytes
from provisioner.core.offer import Offer
from provisioner.core.planner import plan_quote
from provisioner.core.planner.candidates import Candidate
from provisioner.core.planner.estimates import estimate_speed
from provisioner.core.planner.quote import hardware_classes
from provisioner.core.planner.shapes import HardwareClass, evaluate_shape, weights_cannot_fit
from provisioner.core.quant import kv_bytes, resolve_quant
from provisioner.core.request import QuoteRequest, make_request


@cache
def offers() -> list[Offer]:
    return list(load_offers())


# (model, quant, ctx, extra request fields): MoE int4 and fp8 block, dense bf16, mxfp4 (its
# expert padding grows the weights per GPU), and --cpu-offload-gb (the bound subtracts it)
CASES = [
    ("moonshotai/Kimi-K2-Thinking", "int4", 131072, {}),
    ("deepseek-ai/DeepSeek-V3", "auto", 32768, {}),
    ("meta-llama/Llama-3.1-70B", "bf16", 32768, {}),
    ("openai/gpt-oss-120b", "auto", 131072, {}),
    ("meta-llama/Llama-3.1-70B", "fp8", 32768, {"cpu_offload_gb": 20.0}),
]


def _request(
    model_id: str, quant: str, ctx: int, extra: dict[str, object], top: int = 0
) -> QuoteRequest:
    return make_request(model=model_id, quant=quant, ctx=ctx, top=top, **extra)


@pytest.mark.parametrize(("model_id", "quant", "ctx", "extra"), CASES)
def test_the_weights_bound_only_refuses_what_the_memory_model_refuses(
    model_id: str, quant: str, ctx: int, extra: dict[str, object]
) -> None:
    """weights_cannot_fit skips the memory model on the table path; every shape it refuses
    must be one whose weights the memory model also finds too big (on every class and split)."""
    req = _request(model_id, quant, ctx, extra)
    spec = resolve_model(model_id)
    scheme = resolve_quant(quant, spec)
    weight_bytes = weights_total_bytes(spec, scheme)
    kvb = kv_bytes(req.kv_dtype, spec)
    refused = 0
    for hw in hardware_classes(req, offers()):
        for nodes in (1, 2, 4):
            total = nodes * hw.gpus_per_node
            for tp in (d for d in range(hw.gpus_per_node, 0, -1) if hw.gpus_per_node % d == 0):
                if not weights_cannot_fit(req, hw, total, weight_bytes):
                    continue
                refused += 1
                v = evaluate_shape(spec, scheme, req, hw, nodes, tp, total // tp, kvb)
                assert v.reason is not None, (hw, nodes, tp)
                assert v.memory is None or not v.memory.weights_fit, (hw, nodes, tp, v.reason)
    assert refused > 0  # the bound does refuse something here (the test is not vacuous)


def test_the_weights_bound_by_hand() -> None:
    """Kimi K2 int4 (~594 GB, docs/recovery.md) on 8 x L4 (22.02 GiB as CUDA reports it):
    74 GB a GPU at best, over 0.9 x 22.02 GiB = 21.3 GB; on 8 x H200 (139.8 GiB) 74 GB fits
    the budget of 126 GB, so the bound must leave it to the memory model."""
    req = make_request(model="moonshotai/Kimi-K2-Thinking", quant="int4", ctx=131072)
    spec = resolve_model(req.model)
    w = weights_total_bytes(spec, resolve_quant("int4", spec))
    assert 590e9 < w < 600e9
    l4 = HardwareClass("L4", 8, cuda_memory_gib("L4"), "pcie")
    h200 = HardwareClass("H200-SXM", 8, cuda_memory_gib("H200-SXM"), "nvlink")
    assert weights_cannot_fit(req, l4, 8, w)
    assert not weights_cannot_fit(req, l4, 32, w)  # 18.6 GB a GPU: for the memory model
    assert not weights_cannot_fit(req, h200, 8, w)
    # --cpu-offload-gb moves that much per GPU to host RAM: 74 GB - 60 GiB fits an L4's budget
    offload = make_request(model=req.model, quant="int4", ctx=131072, cpu_offload_gb=60)
    assert w / 8 - 60 * GIB < 0.9 * l4.gpu_memory_gib * GIB
    assert not weights_cannot_fit(offload, l4, 8, w)


@pytest.mark.parametrize(("model_id", "quant", "ctx", "extra"), CASES)
def test_the_table_path_and_the_json_path_rank_the_same_plans(
    model_id: str, quant: str, ctx: int, extra: dict[str, object]
) -> None:
    """Without the rejection list the planner takes shortcuts (the weights bound); the plans,
    their order and the skipped prices must not change."""
    req = _request(model_id, quant, ctx, extra, top=40)
    spec = resolve_model(model_id)
    scheme = resolve_quant(quant, spec)
    table = plan_quote(req, spec, scheme, offers(), collect_rejected=False)
    full = plan_quote(req, spec, scheme, offers(), collect_rejected=True)
    assert full.rejected and not table.rejected
    assert table.feasible_count == full.feasible_count > 0
    assert [p.to_json() for p in table.plans] == [p.to_json() for p in full.plans]
    assert table.skipped_prices == full.skipped_prices
    assert {m: p.to_json() for m, p in table.best_by_market.items()} == {
        m: p.to_json() for m, p in full.best_by_market.items()
    }


def test_a_shape_on_one_node_does_not_cross_the_fabric() -> None:
    """The enumeration estimates a one-node shape once for every fabric (perf_of's key): the
    throughput model must not read the fabric there, and must read it across nodes."""
    spec = resolve_model("moonshotai/Kimi-K2-Thinking")
    scheme = resolve_quant("int4", spec)
    req = make_request(model=spec.id, quant="int4", ctx=131072)
    kvb = kv_bytes(req.kv_dtype, spec)
    h200 = HardwareClass("H200-SXM", 8, cuda_memory_gib("H200-SXM"), "nvlink")
    cache: dict[tuple[int, int], Any] = {}

    def tps(nodes: int, layout: Layout, fabric: str) -> float:
        v = evaluate_shape(spec, scheme, req, h200, nodes, layout.tp, layout.pp, kvb, layout=layout)
        assert v.reason is None, v.reason
        est = estimate_speed(spec, scheme, req, v, fabric, kvb, 8000, 1000, cache)
        assert est is not None
        return est.output_tps

    for layout in (Layout(8, 1, 1), Layout(1, 8, 1, True)):  # TP8; DP8+EP8
        assert tps(1, layout, "efa") == tps(1, layout, "ethernet")
    for layout in (Layout(8, 1, 2), Layout(1, 16, 1, True)):  # TP8xPP2; DP16+EP16
        assert tps(2, layout, "infiniband") != tps(2, layout, "ethernet")


def test_candidates_rank_by_objective_then_price_nodes_and_concurrency() -> None:
    """The order the ranking documents: $/Mtok (or $/h), then $/h, fewer nodes, more
    concurrent requests (stored negated), market, enumeration order."""
    a = Candidate(1.0, 10.0, 1, -5, "spot", 3, 0)
    assert a < Candidate(1.5, 5.0, 1, -5, "spot", 0, 0)  # the objective first
    assert a < Candidate(1.0, 12.0, 1, -5, "spot", 0, 0)  # same $/Mtok: cheaper per hour
    assert a < Candidate(1.0, 10.0, 2, -9, "spot", 0, 0)  # then fewer nodes
    assert a < Candidate(1.0, 10.0, 1, -4, "spot", 0, 0)  # then more requests held
    assert Candidate(1.0, 10.0, 1, -5, "on-demand", 9, 9) < a  # then the market's name
    assert a._replace(offer=7).verdict == 3 and a._replace(offer=7).offer == 7


def test_the_choices_build_plans_only_for_what_is_shown() -> None:
    """plan_quote(distinct=...) ranks every distinct choice but builds no plan; group builds
    the rows shown and the headline's picks below them, each at its rank."""
    from provisioner.core.choices import distinct_by, group

    spec = resolve_model("moonshotai/Kimi-K2-Thinking")
    scheme = resolve_quant("int4", spec)
    req = make_request(model=spec.id, quant="int4", ctx=131072, top=0)
    result = plan_quote(
        req, spec, scheme, offers(), collect_rejected=False, distinct=distinct_by(False)
    )
    assert result.plans == [] and len(result.ranked) > 100
    built: list[int] = []
    for entry in result.ranked:
        make = entry.build

        def counted(rank: int, make: Any = make) -> Any:
            built.append(rank)
            return make(rank)

        entry.build = counted
    choices = group(result, offers(), top=3)
    picks = [c.plan.rank for c in [*choices.rows, *choices.extra]]
    assert [c.plan.rank for c in choices.rows] == [1, 2, 3]
    assert sorted(built) == sorted(picks) and len(built) <= 5
    assert choices.total == len(result.ranked)
    od = choices.cheapest_on_demand
    assert od is not None and od.plan.market == "on-demand"
    assert all(e.market == "spot" for e in result.ranked[: od.plan.rank - 1])
