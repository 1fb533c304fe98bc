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
from operator import itemgetter
from typing import NamedTuple

# A Candidate's fields (candidates.py) as a plain tuple: a quote keeps tens of thousands
# (Llama-3.1-8B: 20,900), and making each a Candidate costs twice the tuple.
Row = tuple[float, float, int, int, str, int, int]
Entry = tuple[int, str, float]  # (offer index, market, node $/h)

PER_MTOK, NO_SPEED, PER_HOUR = 0, 1, 2  # a block's rank key: $/Mtok, infinite $/Mtok, $/h
_MARKET, _MARKET_PRICE = itemgetter(1), itemgetter(1, 2)


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


def rank_key(b: Block, price: float) -> float:
    """The first field of the row of `price` in `b` (block_rows' operations)."""
    if b.key == PER_MTOK:
        return price * b.nodes / b.per_s * 1e6
    return math.inf if b.key == NO_SPEED else price * b.nodes


def _upto(b: Block, s: list[Entry], key: float, lo: int = 0) -> int:
    """The end of the entries of `s` (by price) whose rows are keyed `key` or lower."""
    return bisect_right(s, key, lo=lo, key=lambda e: rank_key(b, e[2]))


def _under(b: Block, s: list[Entry], key: float) -> int:
    """The end of the entries of `s` (by price) whose rows are keyed below `key`."""
    return bisect_left(s, key, key=lambda e: rank_key(b, e[2]))


class CandidateRows:
    """Every candidate of a quote: blocks of prices, and single rows (the timed path)."""

    def __init__(self, markets: tuple[str, ...]) -> None:
        self.markets = markets
        self.blocks: list[Block] = []
        self.loose: list[Row] = []
        self.count = 0
        self._split: dict[int, dict[str, list[Entry]]] = {}  # id(prices) -> by market, by price

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

    def by_market(self, b: Block) -> dict[str, list[Entry]]:
        """The block's prices of each market, by price (blocks that share prices share it)."""
        found = self._split.get(id(b.prices))
        if found is None:
            s = sorted(b.prices, key=_MARKET_PRICE)
            found = self._split[id(b.prices)] = {}
            for m in self.markets:
                lo = bisect_left(s, m, key=_MARKET)
                hi = bisect_right(s, m, lo=lo, key=_MARKET)
                if hi > lo:
                    found[m] = s[lo:hi]
        return found

    def _lists(self) -> list[tuple[Block, list[Entry]]]:
        return [(b, s) for b in self.blocks for s in self.by_market(b).values()]

    def smallest(self, n: int) -> list[Row]:
        """The `n` smallest rows, in order (as heapq.nsmallest over every row)."""
        lists = self._lists()
        # any list's n-th key bounds the n-th smallest of all: rows keyed above rank after n
        bound = min((rank_key(b, s[n - 1][2]) for b, s in lists if len(s) >= n), default=math.inf)
        pool = list(self.loose)
        for b, s in lists:
            if rank_key(b, s[0][2]) <= bound:
                pool += block_rows(b, s[: _upto(b, s, bound)])
        return heapq.nsmallest(n, pool)

    def best(self, market: str) -> Row | None:
        """The smallest row in `market`, or None."""
        pool = [r for r in self.loose if r[4] == market]
        firsts = [
            (rank_key(b, s[0][2]), b, s)
            for b in self.blocks
            if (s := self.by_market(b).get(market)) is not None
        ]
        low = min((k for k, _, _ in firsts), default=math.inf)
        for k, b, s in firsts:
            if k == low:  # the block's rows keyed as its first hold its best
                pool += block_rows(b, s[: _upto(b, s, low)])
        return min(pool, default=None)

    def count_below(self, row: Row) -> int:
        """How many rows rank before `row` (are smaller)."""
        below = sum(map(row.__gt__, self.loose))
        k = row[0]
        for b, s in self._lists():
            if rank_key(b, s[0][2]) > k:
                continue
            lo = _under(b, s, k)  # keyed lower: smaller whatever follows
            hi = _upto(b, s, k, lo)
            below += lo + sum(map(row.__gt__, block_rows(b, s[lo:hi])))
        return below
