"""The enumeration's shortcuts against the long way round: the candidate blocks
(provisioner/core/planner/candidate_rows.py) make only the rows the ranking asks for, so the
top, the best of each market and how many rows rank before it must be what the same questions
answer over every row made (heapq.nsmallest, min, a count); the --json path's offer loop visits
only the notable offers, so it must find what visiting every offer finds."""

from __future__ import annotations

import heapq
import json
import math
import random
from dataclasses import replace

import pytest

from pricing.offers import load_offers
from provisioner.core.catalog import resolve_model
from provisioner.core.offer import Offer
from provisioner.core.planner import plan_quote, result_to_json
from provisioner.core.planner.candidate_rows import (
    NO_SPEED,
    PER_HOUR,
    PER_MTOK,
    Block,
    CandidateRows,
    Entry,
    Row,
)
from provisioner.core.planner.candidates import Enumeration
from provisioner.core.planner.offer_prices import OfferPrices
from provisioner.core.planner.quote import hardware_classes
from provisioner.core.quant import resolve_quant
from provisioner.core.request import QuoteRequest, make_request

MARKETS = ("spot", "on-demand")


def _check_against_every_row(rows: CandidateRows, sizes: list[int]) -> None:
    every = rows.every()
    assert len(rows) == len(every)
    for n in sizes:
        assert rows.smallest(n) == heapq.nsmallest(n, every), n
    for m in MARKETS:
        best = rows.best(m)
        assert best == min((r for r in every if r[4] == m), default=None), m
        if best is not None:
            assert rows.count_below(best) == sum(r < best for r in every)
    for r in random.Random(7).sample(every, min(40, len(every))):
        assert rows.count_below(r) == sum(x < r for x in every)


def _random_rows(seed: int) -> CandidateRows:
    """Blocks whose prices repeat and sit one float apart, so that rows tie on the key (and
    on the key and $/h): the order then rests on the market and the offer index."""
    rnd = random.Random(seed)
    base = [rnd.choice([0.5, 1.1, 3.0, 7.77, 12.0, 98.3]) for _ in range(4)]
    pool = [p for b in base for p in (b, math.nextafter(b, math.inf), math.nextafter(b, 0.0))]
    shared: list[dict[str, list[Entry]]] = []
    rows = CandidateRows()
    for vi in range(rnd.randint(1, 30)):
        if shared and rnd.random() < 0.4:  # blocks of several shapes share a price list
            prices = rnd.choice(shared)
        else:
            offers = range(rnd.randint(0, 25))
            listed = {m: [(oi, m, rnd.choice(pool)) for oi in offers if rnd.random() < 0.8]
                      for m in MARKETS}  # fmt: skip
            prices = {m: es for m, es in listed.items() if es}
            shared.append(prices)
        key = rnd.choice([PER_MTOK, PER_MTOK, PER_MTOK, PER_HOUR, NO_SPEED])
        per_s = rnd.choice([3600.0, 7.0 * 3600, 1234.5 * 3600, 3.0]) if key == PER_MTOK else 0.0
        nodes = rnd.randint(1, 4)
        rows.add_block(Block(prices, nodes, -rnd.randint(0, 3), vi, key, per_s))
    return rows


@pytest.mark.parametrize("seed", range(60))
def test_random_blocks_answer_as_every_row_does(seed: int) -> None:
    rows = _random_rows(seed)
    _check_against_every_row(rows, [1, 2, 3, 7, 20, len(rows), len(rows) + 5])


def test_the_random_blocks_hold_rows_that_tie_on_the_key_at_other_prices() -> None:
    # what makes the bound and the bisections above worth testing: equal keys whose rows
    # differ in $/h, and equal keys and $/h from one price list at several node counts
    ties = 0
    for seed in range(60):
        every = _random_rows(seed).every()
        by_key: dict[float, set[float]] = {}
        for r in every:
            by_key.setdefault(r[0], set()).add(r[1])
        ties += sum(len(v) > 1 for k, v in by_key.items() if k != math.inf)
    assert ties > 0


def test_a_dearer_price_with_the_same_key_and_price_per_hour_ranks_by_offer_index() -> None:
    # 98.3 and the float just below it make the same $/h on 3 nodes (rounding): the rows tie
    # on the key and $/h, so offer 0 (the dearer node) ranks first although it sorts second
    low = math.nextafter(98.3, 0.0)
    assert low * 3 == 98.3 * 3
    for key, per_s in ((PER_MTOK, 5000.0 * 3600), (PER_HOUR, 0.0)):
        rows = CandidateRows()
        rows.add_block(Block({"spot": [(0, "spot", 98.3), (1, "spot", low)]}, 3, 0, 0, key, per_s))
        assert [r[6] for r in rows.smallest(1)] == [0]
        assert rows.best("spot") == rows.smallest(1)[0]
        assert rows.count_below(max(rows.every())) == 1
        _check_against_every_row(rows, [1, 2])


def test_loose_rows_mix_with_blocks() -> None:
    rows = _random_rows(3)
    loose: list[Row] = [(0.001, 5.0, 1, 0, "spot", 99, 0), (1e9, 1e9, 4, 0, "on-demand", 99, 1)]
    for r in loose:
        rows.add(r)
    _check_against_every_row(rows, [1, 2, 10, len(rows)])


@pytest.mark.parametrize(
    ("model_id", "quant", "ctx", "extra"),
    [
        ("meta-llama/Llama-3.1-8B", "bf16", 32768, {}),
        ("meta-llama/Llama-3.1-8B", "bf16", 32768, {"objective": "usd-per-hour"}),
        ("moonshotai/Kimi-K2-Thinking", "int4", 131072, {}),
    ],
)
def test_the_offers_table_answers_as_every_row_does(
    model_id: str, quant: str, ctx: int, extra: dict[str, object]
) -> None:
    req = make_request(model=model_id, quant=quant, ctx=ctx, **extra)
    spec = resolve_model(model_id)
    scheme = resolve_quant(quant, spec)
    found = Enumeration(req, spec, scheme, MARKETS, collect_rejected=False)
    found.run(hardware_classes(req, load_offers()), [1, 2, 3, 4])
    assert len(found.candidates.blocks) > 100  # the table path keeps blocks, not rows
    _check_against_every_row(found.candidates, [1, 10, 70, 1000])


def _json_both_ways(
    req: QuoteRequest, offers: list[Offer], monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """The --json document (and the best of each market) as plan_quote answers, and as it
    answers when the offer loop visits every offer of a class for every shape group (as it
    did before OfferPrices.notable): refusals, SLO misses and doubtful prices, in order."""
    spec = resolve_model(req.model)
    scheme = resolve_quant(req.quant, spec)

    def answer() -> str:
        res = plan_quote(req, spec, scheme, offers)
        doc = result_to_json(res)
        doc["best_by_market"] = {m: p.to_json() for m, p in res.best_by_market.items()}
        return json.dumps(doc)

    fast = answer()
    with monkeypatch.context() as m:
        m.setattr(OfferPrices, "notable", lambda self, offers, several: enumerate(offers))
        return fast, answer()


@pytest.mark.parametrize(
    ("model_id", "quant", "ctx", "extra"),
    [
        ("meta-llama/Llama-3.1-8B", "bf16", 32768, {}),
        ("meta-llama/Llama-3.1-8B", "bf16", 32768, {"nodes": 2, "max_interruption": 10}),
        ("moonshotai/Kimi-K2-Thinking", "int4", 131072, {"max_tpot_ms": 60.0}),
        ("deepseek-ai/DeepSeek-V3", "auto", 131072, {"market": "spot"}),
    ],
)
def test_the_json_path_finds_on_the_notable_offers_what_every_offer_finds(
    model_id: str, quant: str, ctx: int, extra: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    req = make_request(model=model_id, quant=quant, ctx=ctx, top=0, **extra)
    fast, slow = _json_both_ways(req, list(load_offers()), monkeypatch)
    assert fast == slow
    assert '"rejected": []' not in fast  # the loop had refusals to note


def test_doubtful_prices_are_counted_in_offer_order(monkeypatch: pytest.MonkeyPatch) -> None:
    # one class, two fabrics: the second offer (efa, not its fabric's first) has a doubtful
    # spot price before the third (the first on ethernet): its reason is counted first
    base = next(o for o in load_offers() if o.fabric == "efa" and o.instance_type == "g5.12xlarge")
    offers = [
        replace(base, zone="z0", flags=(), spot_usd_per_hour=5.0, ondemand_usd_per_hour=8.0),
        replace(base, zone="z1", flags=("spot_over_85pct_off",), spot_usd_per_hour=0.5),
        replace(base, zone="z2", fabric="ethernet", flags=("spot_gt_ondemand",),
                spot_usd_per_hour=9.0, ondemand_usd_per_hour=8.0),
    ]  # fmt: skip
    req = make_request(model="meta-llama/Llama-3.1-8B", quant="bf16", ctx=32768, top=0)
    fast, slow = _json_both_ways(req, offers, monkeypatch)
    assert fast == slow
    skipped = list(json.loads(fast)["skipped_prices"])
    assert skipped == [
        "spot price not used: spot more than 85% below on-demand",
        "spot price not used: spot above on-demand",
    ]
