"""The candidates of one quote, kept as blocks of prices and made into rows when asked.

The enumeration (candidates.py) prices a list of (offer index, market, node $/h) at one shape:
the rows of such a block differ only in the price, the market and the offer index, and their
rank key ($/Mtok or $/h) never decreases as the price grows (products and quotients of
positive numbers, each correctly rounded, keep their order; offers_csv and check_offers refuse
prices that are not finite and positive). So the rows a quote shows (its top, the best of
each market, how many rank before it) come from each block's prices sorted once; only the full
ranking (--top 0, the distinct choices) makes every row. Every row made is the same tuple,
computed by the same operations in the same order, as when all were made.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from operator import itemgetter
from typing import NamedTuple

# A Candidate's fields (candidates.py) as a plain tuple: a quote keeps tens of thousands
# (Llama-3.1-8B: 20,900), and making each a Candidate costs twice the tuple.
Row = tuple[float, float, int, int, str, int, int]
Entry = tuple[int, str, float]  # (offer index, market, node $/h)

PER_MTOK, NO_SPEED, PER_HOUR = 0, 1, 2  # a block's rank key: $/Mtok, infinite $/Mtok, $/h
_PRICE = itemgetter(2)


class Block(NamedTuple):
    """The candidates of `prices` on `nodes` nodes of one shape (verdict index `vi`)."""

    prices: list[Entry]
    nodes: int
    neg_conc: int
    vi: int
    key: int  # PER_MTOK, NO_SPEED or PER_HOUR
    per_s: float  # output tokens/s x 3600 (PER_MTOK)


def block_rows(b: Block, prices: list[Entry] | None = None) -> list[Row]:
    """The rows of `b` (or of the part `prices` of its prices), as candidates.py made them."""
    nodes, neg_conc, vi = b.nodes, b.neg_conc, b.vi
    if prices is None:
        prices = b.prices
    if b.key == PER_MTOK:  # as estimates.usd_per_mtok, inline (same operations, same order)
        per_s = b.per_s
        return [(p * nodes / per_s * 1e6, p * nodes, nodes, neg_conc, m, vi, oi)
                for oi, m, p in prices]  # fmt: skip
    inf = b.key == NO_SPEED  # no tokens/s: $/Mtok is infinite
    return [(math.inf if inf else p * nodes, p * nodes, nodes, neg_conc, m, vi, oi)
            for oi, m, p in prices]  # fmt: skip


def rank_key(b: Block) -> Callable[[Entry], float]:
    """The first field of an entry's row (non-decreasing along the prices sorted)."""
    nodes, per_s = b.nodes, b.per_s
    if b.key == PER_MTOK:
        return lambda e: e[2] * nodes / per_s * 1e6
    if b.key == NO_SPEED:
        return lambda e: math.inf
    return lambda e: e[2] * nodes


class CandidateRows:
    """Every candidate of a quote: blocks of prices, and single rows (the timed path)."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.loose: list[Row] = []
        self.count = 0
        self._by_price: dict[int, list[Entry]] = {}  # id(prices) -> prices sorted by price

    def __len__(self) -> int:
        return self.count

    def add_block(self, b: Block) -> None:
        if b.prices:
            self.blocks.append(b)
            self.count += len(b.prices)

    def add(self, row: Row) -> None:
        self.loose.append(row)
        self.count += 1

    def every(self) -> list[Row]:
        """Every row, made."""
        out: list[Row] = []
        for b in self.blocks:
            out += block_rows(b)
        return out + self.loose

    def sorted_prices(self, b: Block) -> list[Entry]:
        """The block's prices by price (blocks that share a price list sort it once)."""
        found = self._by_price.get(id(b.prices))
        if found is None:
            found = self._by_price[id(b.prices)] = sorted(b.prices, key=_PRICE)
        return found

    def smallest(self, n: int) -> list[Row]:
        """The `n` smallest rows, in order (as heapq.nsmallest over every row)."""
        pool = list(self.loose)
        for b in self.blocks:
            s = self.sorted_prices(b)
            if len(s) > n:  # the rows keyed up to the n-th's key hold the block's n smallest
                key = rank_key(b)
                s = s[: bisect_right(s, key(s[n - 1]), lo=n, key=key)]
            pool += block_rows(b, s)
        return heapq.nsmallest(n, pool)

    def best(self, market: str) -> Row | None:
        """The smallest row in `market`, or None."""
        pool = [r for r in self.loose if r[4] == market]
        for b in self.blocks:
            s = self.sorted_prices(b)
            first = next((i for i, e in enumerate(s) if e[1] == market), None)
            if first is None:
                continue
            key = rank_key(b)  # the rows keyed as the first of the market's hold its best
            end = bisect_right(s, key(s[first]), lo=first, key=key)
            pool += block_rows(b, [e for e in s[first:end] if e[1] == market])
        return min(pool, default=None)

    def count_below(self, row: Row) -> int:
        """How many rows rank before `row` (are smaller)."""
        below = sum(map(row.__gt__, self.loose))
        for b in self.blocks:
            s = self.sorted_prices(b)
            key = rank_key(b)
            lo = bisect_left(s, row[0], key=key)  # keyed lower: smaller whatever follows
            hi = bisect_right(s, row[0], lo=lo, key=key)
            below += lo + sum(map(row.__gt__, block_rows(b, s[lo:hi])))
        return below
