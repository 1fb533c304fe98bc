"""Distinct choices: the ranked plans folded into one row per thing a person would choose.

The planner ranks every (offer, market) on which a shape is feasible, so one machine shows up
once per region, zone and SKU alias. A person chooses a cloud, a hardware (GPU x count per node),
a node count, a TP x DP x PP layout and a market; where inside the cloud is a detail. The key
here (``distinct_by``) makes the planner rank one entry per (cloud, GPU, GPUs per node, GPU
memory, nodes, TP, PP, DP, EP, DCP, market), kept at its best-ranked (cheapest) place, with the
other places and SKU names it is also offered under; ``group`` builds the plans of the choices
shown only. Instance types with the same GPUs are one hardware here, whether or not the
price data has already collapsed their names (``Standard_ND96is_MI300X_v5`` and
``Standard_ND96isr_MI300X_v5`` rank as one choice). ``all_zones`` keeps one row per place.

The headline names the cheapest choice, the cheapest one ``prov deploy`` can run (the rule of
provisioner/core/deployable.py) and the cheapest on-demand one, each at an observed price: a
choice whose price is an estimate (offer.price_estimate) stays in the table at its rank but is
named only when no choice of that kind has an observed price. Pure: called after ranking.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provisioner.core.deployable import DeployFacts, not_deployable_reason
from provisioner.core.offer import first_observed, price_estimate
from provisioner.core.planner import QuoteResult, RankedPlan
from provisioner.core.planner.ranked_plan import Ranked
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
    # when no choice is deployable: the commonest reason and how many choices it stops
    why_none_deployable: tuple[str, int] | None = None


def place_of(p: RankedPlan) -> str:
    return p.offer.zone or p.offer.region


def distinct_by(all_zones: bool) -> Callable[[Offer, ShapeVerdict], tuple[Any, ...]]:
    """The key for plan_quote(distinct=...), less the market (the planner adds it): the
    planner then ranks one entry per choice."""
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


def deploy_reason(
    o: Offer, result: QuoteResult, region_zones: dict[tuple[str, str], int]
) -> str | None:
    facts = DeployFacts(
        cloud=o.cloud,
        gpu=o.gpu,
        zone=o.zone or None,
        runs_vllm=result.scheme.engine == "vllm",  # planner.vllm_args is empty otherwise
        region_zones=region_zones.get((o.cloud, o.region), 0),
        model=result.model.id,
        scheme=result.scheme,
    )
    return not_deployable_reason(facts)


def _choice(entry: Ranked, rank: int, not_deployable: str | None) -> Choice:
    """The choice of one ranked entry, its plan built at `rank`, with the other places and SKU
    names of the offers folded into it."""
    c = Choice(entry.plan(rank), not_deployable=not_deployable)
    for o in entry.also:
        place = o.zone or o.region
        if place != c.place and place not in c.other_places:
            c.other_places.append(place)
        if o.instance_type != c.plan.offer.instance_type and o.instance_type not in c.aliases:
            c.aliases.append(o.instance_type)
    return c


def group(
    result: QuoteResult,
    offers: Sequence[Offer],
    *,
    top: int,
) -> Choices:
    """The distinct choices of `result.ranked` (plan_quote(distinct=distinct_by(...)), best
    first): the first `top` (all when 0), plus the cheapest deployable and cheapest on-demand
    choice when they rank below; plans are built for those only."""
    ranked = result.ranked
    region_zones = zones_by_region(offers)
    shown = len(ranked) if not top else min(top, len(ranked))
    reasons: dict[int, str | None] = {}

    def reason(i: int) -> str | None:
        if i not in reasons:
            reasons[i] = deploy_reason(ranked[i].offer, result, region_zones)
        return reasons[i]

    rows = [_choice(e, i + 1, reason(i)) for i, e in enumerate(ranked[:shown])]
    # a headline pick rests on an observed price: an estimated one (offer.price_estimate) is
    # named only when no choice of that kind has an observed price
    observed = [price_estimate(e.offer, e.market) is None for e in ranked].__getitem__
    cheapest_i = first_observed(range(len(ranked)), observed)
    deployable_i = first_observed((i for i in range(len(ranked)) if reason(i) is None), observed)
    on_demand_i = first_observed(
        (i for i, e in enumerate(ranked) if e.market == "on-demand"), observed
    )
    extra: list[Choice] = []
    picks: dict[int, Choice] = dict(enumerate(rows))
    for i in (cheapest_i, deployable_i, on_demand_i):
        if i is not None and i not in picks:
            picks[i] = _choice(ranked[i], i + 1, reason(i))
            extra.append(picks[i])
    why_none = None
    if ranked and deployable_i is None:  # every reason was computed looking for one
        counts = Counter(r for r in reasons.values() if r is not None)
        why_none = counts.most_common(1)[0] if counts else None
    return Choices(
        why_none_deployable=why_none,
        rows=rows,
        total=len(ranked),
        cheapest=picks[cheapest_i] if cheapest_i is not None else None,
        cheapest_deployable=picks[deployable_i] if deployable_i is not None else None,
        cheapest_on_demand=picks[on_demand_i] if on_demand_i is not None else None,
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
