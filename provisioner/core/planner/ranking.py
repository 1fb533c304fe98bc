"""Phase 2 of plan_quote: order the candidates, fold them into distinct choices when asked, and
build the plans that are shown (the top, the best of each market, the layouts of the best).

A Candidate is a few numbers and two indices; a RankedPlan adds what a person reads (speed,
time to serve, reclaims, vLLM arguments, warnings). Plans are built only for what is returned,
and rows only for what is ranked: the top N and the best of each market come from the
enumeration's blocks of prices (candidate_rows.py); the full order (--top 0, the distinct
choices) makes every row.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from functools import partial
from typing import TYPE_CHECKING

from provisioner.core.expected_cost import reclaim
from provisioner.core.offer import price_estimate
from provisioner.core.perf_coverage import with_coverage
from provisioner.core.planner.candidates import Candidate, Enumeration
from provisioner.core.planner.estimates import weight_split
from provisioner.core.planner.ranked_plan import FAST_FABRICS, Ranked, RankedPlan, vllm_args
from provisioner.core.planner.shapes import ShapeVerdict

if TYPE_CHECKING:
    from provisioner.core.offer import Offer

Distinct = Callable[["Offer", ShapeVerdict], Hashable]
# a row's market, verdict and offer are its fields 4, 5 and 6 (rows are Candidate's fields)
assert Candidate._fields[4:] == ("market", "verdict", "offer")


def order(
    found: Enumeration, distinct: Distinct | None, top: int
) -> tuple[list[Candidate], dict[int, list[Offer]]]:
    """The candidates to make plans of, best first, and (with `distinct`) the other offers
    each one stands for, by its position.

    With `distinct`, one candidate per (distinct(offer, shape), market) in rank order (--top
    is the caller's); without, the `top` best (all when 0)."""
    rows = found.candidates
    also: dict[int, list[Offer]] = {}
    if distinct is None:  # the top rows only are made (candidate_rows.py)
        best = rows.smallest(top) if top else sorted(rows.every())
        return [Candidate._make(r) for r in best], also
    verdicts, class_offers = found.verdicts, found.class_offers
    # each distinct(offer, shape) numbered once per offer x verdict (a list per verdict), and a
    # group numbered with its market: the loop over the rows hashes small ints only
    bases: dict[Hashable, int] = {}
    numbers: list[list[int] | None] = [None] * len(verdicts)
    market_at = {m: i for i, m in enumerate(found.markets)}
    width = len(market_at)
    firsts: dict[int, int] = {}  # group -> its position in shown
    shown: list[Candidate] = []
    for row in sorted(rows.every()):
        vi, oi = row[5], row[6]
        per = numbers[vi]
        if per is None:
            per = numbers[vi] = [-1] * len(class_offers[vi])
        base = per[oi]
        if base < 0:
            key = distinct(class_offers[vi][oi], verdicts[vi])
            base = per[oi] = bases.setdefault(key, len(bases))
        group = base * width + market_at[row[4]]
        first = firsts.get(group)
        if first is not None:
            also[first].append(class_offers[vi][oi])
        else:
            firsts[group] = len(shown)
            also[len(shown)] = []
            shown.append(Candidate._make(row))
    return shown, also


def make_plan(found: Enumeration, rank: int, cand: Candidate) -> RankedPlan:
    """The plan a person reads for one candidate."""
    spec, scheme, req = found.spec, found.scheme, found.req
    v = found.verdicts[cand.verdict]
    o = found.class_offers[cand.verdict][cand.offer]
    market, price = cand.market, cand.usd_per_hour
    warnings = [*v.warnings, *scheme.notes, *filter(None, [price_estimate(o, market)])]
    if v.nodes > 1 and o.fabric not in FAST_FABRICS:
        # what crosses the nodes: PP stages hand activations on; EP ranks all-to-all the tokens
        crossing = [
            *(["PP hand-offs between stages"] if v.pp > 1 else []),
            *(["the EP all-to-all in every MoE layer"] if v.ep else []),
        ]
        warnings.append(
            f"{o.instance_type} has no EFA/InfiniBand: "
            f"{' and '.join(crossing) or 'the traffic between nodes'} over ethernet"
        )
    tts = found.tts_of(o, weight_split(v))
    loss = reclaim(o, market, v.nodes, tts) if tts else None
    # thin data where no published vLLM run has this path: marked on the plans a person reads
    # (the ranking does not read it; marking every estimate cost the planner ~3 ms)
    perf = with_coverage(found.perf_of(v, o.fabric), spec, scheme, found.specs[v.hw.gpu], v.layout)
    args = vllm_args(
        spec, scheme, req, v.tp, v.pp, found.kvb, v.dp, v.ep, v.max_num_batched_tokens,
        served_batch=perf.batch if perf is not None else None,
    )  # fmt: skip
    return RankedPlan(
        rank,
        o,
        v,
        market,
        price,
        args,
        list(dict.fromkeys(warnings)),
        perf,
        expected_usd_per_hour=(
            loss.expected_usd_per_hour(price) if loss and req.risk_adjusted else None
        ),
        tts=tts,
        reclaim=loss if market == "spot" else None,
        engine=scheme.engine,
    )


def _plan_at(found: Enumeration, cand: Candidate, rank: int) -> RankedPlan:
    return make_plan(found, rank, cand)


def entries(found: Enumeration, top: list[Candidate], also: dict[int, list[Offer]]) -> list[Ranked]:
    """`top` as Ranked entries whose plans are built on demand."""
    verdicts, class_offers = found.verdicts, found.class_offers
    return [
        Ranked(
            class_offers[c.verdict][c.offer],
            verdicts[c.verdict],
            c.market,
            also.get(i, []),
            partial(_plan_at, found, c),
        )
        for i, c in enumerate(top)
    ]


def best_by_market(found: Enumeration, top: list[Candidate]) -> dict[str, RankedPlan]:
    """The best plan of each market, with its rank among all candidates."""
    rows = found.candidates
    out: dict[str, RankedPlan] = {}
    for m in found.markets:
        row = rows.best(m)
        if row is not None:
            best = Candidate._make(row)
            rank = top.index(best) + 1 if best in top else 1 + rows.count_below(row)
            out[m] = make_plan(found, rank, best)
    return out


def layout_alternatives(found: Enumeration, top: list[Candidate]) -> list[RankedPlan]:
    """Every feasible layout on the best plan's offer and market, for --explain (rank 0 when
    that layout is not among `top`)."""
    if not top:
        return []
    c0 = top[0]
    v0 = found.verdicts[c0.verdict]
    ranked = {(c.verdict, c.offer, c.market): i for i, c in enumerate(top, start=1)}
    seen: set[str] = set()
    out: list[RankedPlan] = []
    for vi, v in enumerate(found.verdicts):
        label = v.layout.label
        if v.hw == v0.hw and v.nodes == v0.nodes and label not in seen:
            seen.add(label)
            cand = c0._replace(verdict=vi)
            out.append(make_plan(found, ranked.get((vi, c0.offer, c0.market), 0), cand))
    return out
