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
_PRICE, _FIRST = itemgetter(2), itemgetter(0)


class Block(NamedTuple):
    """The candidates of `prices` (by market) on `nodes` nodes of one shape (verdict `vi`)."""

    prices: dict[str, list[Entry]]
    nodes: int
    neg_conc: int
    vi: int
    key: int  # PER_MTOK, NO_SPEED or PER_HOUR
    per_s: float  # output tokens/s x 3600 (PER_MTOK)


def block_rows(b: Block, prices: list[Entry]) -> list[Row]:
    """The rows of `prices` (some of the block's) in `b`, as candidates.py made them."""
    nodes, neg_conc, vi = b.nodes, b.neg_conc, b.vi
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


# one market's prices in one block, with the key of the cheapest: no row of it ranks lower
Head = tuple[float, str, Block, list[Entry]]


class CandidateRows:
    """Every candidate of a quote: blocks of prices, and single rows (the timed path)."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.loose: list[Row] = []
        self.count = 0
        self._cheapest: dict[int, float] = {}  # id(prices of one market) -> lowest price
        self._by_price: dict[int, list[Entry]] = {}  # id(prices of one market) -> sorted
        self._heads: list[Head] | None = None

    def __len__(self) -> int:
        return self.count

    def add_block(self, b: Block) -> None:
        if b.prices:
            self.blocks.append(b)
            self.count += sum(map(len, b.prices.values()))
            self._heads = None

    def add(self, row: Row) -> None:
        self.loose.append(row)
        self.count += 1

    def every(self) -> list[Row]:
        """Every row, made."""
        out: list[Row] = []
        for b in self.blocks:
            for s in b.prices.values():
                out += block_rows(b, s)
        return out + self.loose

    def heads(self) -> list[Head]:
        """Each block's prices of each market, with the key of the cheapest."""
        if self._heads is None:
            cheapest = self._cheapest
            self._heads = []
            for b in self.blocks:
                for m, s in b.prices.items():
                    low = cheapest.get(id(s))
                    if low is None:  # blocks that share prices share it
                        low = cheapest[id(s)] = min(map(_PRICE, s))
                    self._heads.append((rank_key(b, low), m, b, s))
        return self._heads

    def by_price(self, s: list[Entry]) -> list[Entry]:
        """`s` sorted by price (once): the keys of its rows never decrease along it."""
        found = self._by_price.get(id(s))
        if found is None:
            found = self._by_price[id(s)] = sorted(s, key=_PRICE)
        return found

    def smallest(self, n: int) -> list[Row]:
        """The `n` smallest rows, in order (as heapq.nsmallest over every row)."""
        bound = math.inf  # the n-th key of a list seen: rows keyed above rank after n
        pool = list(self.loose)
        for low, _, b, s in sorted(self.heads(), key=_FIRST):
            if low > bound:
                break
            s = self.by_price(s)
            if len(s) >= n:
                bound = min(bound, rank_key(b, s[n - 1][2]))
            pool += block_rows(b, s[: _upto(b, s, bound)])
        return heapq.nsmallest(n, pool)

    def best(self, market: str) -> Row | None:
        """The smallest row in `market`, or None."""
        pool = [r for r in self.loose if r[4] == market]
        heads = [h for h in self.heads() if h[1] == market]
        least = min((h[0] for h in heads), default=math.inf)
        for low, _, b, s in heads:
            if low == least:  # the rows keyed as the cheapest hold the best
                s = self.by_price(s)
                pool += block_rows(b, s[: _upto(b, s, least)])
        return min(pool, default=None)

    def count_below(self, row: Row) -> int:
        """How many rows rank before `row` (are smaller)."""
        below = sum(map(row.__gt__, self.loose))
        k = row[0]
        for low, _, b, s in self.heads():
            if low <= k:
                s = self.by_price(s)
                lo = _under(b, s, k)  # keyed lower: smaller whatever follows
                hi = _upto(b, s, k, lo)
                below += lo + sum(map(row.__gt__, block_rows(b, s[lo:hi])))
        return below
