"""Distinct choices: the ranked plans folded into one row per thing a person would choose.

The planner ranks every (offer, market) on which a shape is feasible, so one machine shows up
once per region, zone and SKU alias. A person chooses a cloud, a hardware (GPU x count per node),
a node count, a TP x PP layout and a market; where inside the cloud is a detail. Here the ranked
plans become one choice per (cloud, GPU, GPUs per node, GPU memory, nodes, TP, PP, DCP, market),
kept at its best-ranked (cheapest) place, with the other places and SKU names it is also
offered under. Instance types with the same GPUs are one hardware here, whether or not the
price data has already collapsed their names (``Standard_ND96is_MI300X_v5`` and
``Standard_ND96isr_MI300X_v5`` rank as one choice). ``all_zones`` keeps one row per place.

The headline names the cheapest choice, the cheapest one ``prov deploy`` can run (the rule of
provisioner/core/deployable.py) and the cheapest on-demand one. Pure: called after ranking.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from provisioner.core.deployable import DeployFacts, not_deployable_reason
from provisioner.core.planner import QuoteResult, RankedPlan
from provisioner.core.planner.shapes import ShapeVerdict

if TYPE_CHECKING:
    from provisioner.core.offer import Offer


@dataclass
class Choice:
    """One distinct choice: its best plan, and where else the same choice is offered."""

    plan: RankedPlan
    other_places: list[str] = field(default_factory=list)  # region or zone names, by rank
    aliases: list[str] = field(default_factory=list)  # other SKU names of the same hardware
    not_deployable: str | None = None

    @property
    def place(self) -> str:
        return place_of(self.plan)


@dataclass
class Choices:
    rows: list[Choice]  # shown (the first --top), renumbered 1..N
    total: int  # distinct choices before --top
    cheapest: Choice | None
    cheapest_deployable: Choice | None
    cheapest_on_demand: Choice | None
    extra: list[Choice] = field(default_factory=list)  # headline picks beyond --top


def place_of(p: RankedPlan) -> str:
    return p.offer.zone or p.offer.region


def choice_key(p: RankedPlan, all_zones: bool) -> tuple[Any, ...]:
    return offer_key(p.offer, p.verdict, p.market, all_zones)


def distinct_by(all_zones: bool) -> Callable[[Offer, ShapeVerdict], tuple[Any, ...]]:
    """The key for plan_quote(distinct=...), less the market (the planner adds it): the
    planner then makes one plan per choice."""
    return lambda o, v: offer_key(o, v, "", all_zones)


def offer_key(o: Offer, v: ShapeVerdict, market: str, all_zones: bool) -> tuple[Any, ...]:
    dcp = v.memory.dcp if v.memory is not None else 1
    key: tuple[Any, ...] = (
        o.cloud,
        o.gpu,
        o.gpus_per_node,
        o.gpu_memory_gib,
        v.nodes,
        v.tp,
        v.pp,
        v.dp,
        v.ep,
        dcp,
        market,
    )
    return (*key, o.region, o.zone) if all_zones else key


def zones_by_region(offers: Sequence[Offer]) -> dict[tuple[str, str], int]:
    """Distinct zones prov knows per (cloud, region): EKS needs two."""
    seen: dict[tuple[str, str], set[str]] = {}
    for o in offers:
        if o.zone:
            seen.setdefault((o.cloud, o.region), set()).add(o.zone)
    return {k: len(v) for k, v in seen.items()}


def deploy_reason(p: RankedPlan, region_zones: dict[tuple[str, str], int]) -> str | None:
    o = p.offer
    facts = DeployFacts(
        cloud=o.cloud,
        gpu=o.gpu,
        zone=o.zone or None,
        runs_vllm=bool(p.vllm_args),
        region_zones=region_zones.get((o.cloud, o.region), 0),
    )
    return not_deployable_reason(facts)


def group(
    result: QuoteResult,
    offers: Sequence[Offer],
    *,
    top: int,
    all_zones: bool = False,
) -> Choices:
    """Fold `result.plans` (every ranked plan, best first) into distinct choices."""
    groups: dict[tuple[Any, ...], Choice] = {}
    for p in result.plans:
        key = choice_key(p, all_zones)
        c = groups.get(key)
        if c is None:
            c = groups[key] = Choice(p)
            others = p.also  # what plan_quote(distinct=...) folded into this plan
        else:
            others = [p.offer, *p.also]
        for o in others:
            place = o.zone or o.region
            if place != c.place and place not in c.other_places:
                c.other_places.append(place)
            if o.instance_type != c.plan.offer.instance_type and o.instance_type not in c.aliases:
                c.aliases.append(o.instance_type)
    ranked = list(groups.values())
    region_zones = zones_by_region(offers)
    for rank, c in enumerate(ranked, start=1):
        c.plan = replace(c.plan, rank=rank)
        c.not_deployable = deploy_reason(c.plan, region_zones)
    shown = ranked[:top] if top else ranked
    deployable = next((c for c in ranked if c.not_deployable is None), None)
    on_demand = next((c for c in ranked if c.plan.market == "on-demand"), None)
    extra: list[Choice] = []
    for c in (deployable, on_demand):
        if c is not None and all(c is not s for s in [*shown, *extra]):
            extra.append(c)
    return Choices(
        rows=shown,
        total=len(ranked),
        cheapest=ranked[0] if ranked else None,
        cheapest_deployable=deployable,
        cheapest_on_demand=on_demand,
        extra=extra,
    )


def choice_json(c: Choice) -> dict[str, Any]:
    """A plan of the JSON contract, with what the grouping adds."""
    doc = c.plan.to_json()
    doc["deployable"] = c.not_deployable is None
    doc["not_deployable_reason"] = c.not_deployable
    doc["other_places"] = list(c.other_places)
    doc["instance_aliases"] = list(c.aliases)
    return doc


def headline_json(ch: Choices) -> dict[str, int | None]:
    def rank(c: Choice | None) -> int | None:
        return c.plan.rank if c is not None else None

    return {
        "cheapest": rank(ch.cheapest),
        "cheapest_deployable": rank(ch.cheapest_deployable),
        "cheapest_on_demand": rank(ch.cheapest_on_demand),
    }


def reason_kind(reason: str) -> str:
    """A rejection reason with its numbers blanked: shapes that fail the same way group."""
    return re.sub(r"\d[\d.,]*", "N", reason)
