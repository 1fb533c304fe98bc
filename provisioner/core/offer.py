"""One rentable GPU node and its price, as the planner sees it: the offer row and its rules.

The row type of the offers table (pricing/offers.py reads and writes the table; the planner,
the choices and the stacks read rows). Pure: the price rules here need nothing but the row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, TypeVar

from provisioner.errors import UsageError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Offer:
    """One purchasable node. Prices are USD per hour for the whole node."""

    cloud: str
    region: str
    zone: str
    instance_type: str
    gpu: str
    gpus_per_node: int
    gpu_memory_gib: float
    vcpus: float
    memory_gib: float
    interconnect: str
    fabric: str
    ondemand_usd_per_hour: float | None
    spot_usd_per_hour: float | None
    prices_as_of: str | None
    flags: tuple[str, ...]
    #: True when several of these nodes can be rented as one cluster (a shared network);
    #: False for single-machine marketplace rows (``SINGLE_MACHINE_CLOUDS``).
    multi_node: bool = True
    #: Other names of the same hardware at the same price (SKU aliases collapsed into this row).
    aliases: tuple[str, ...] = ()

    def price(self, market: str) -> float | None:
        """Node price in USD/h for ``market`` ("spot" or "on-demand"); None if not offered."""
        if market == "spot":
            return self.spot_usd_per_hour
        if market == "on-demand":
            return self.ondemand_usd_per_hour
        raise UsageError(f"unknown market {market!r}; allowed: spot, on-demand")


# Price flags (set by pricing.tools.build_snapshot) under which a price is not ranked:
# flag -> (market it applies to: "spot", "on-demand" or "both"; why).
_DOUBTFUL = {
    "columns_swapped?": ("both", "spot/on-demand columns look swapped upstream"),
    "spot_eq_ondemand": ("spot", "spot equal to on-demand (spot not really offered)"),
    "spot_gt_ondemand": ("spot", "spot above on-demand"),
    "spot_over_85pct_off": ("spot", "spot more than 85% below on-demand"),
    # GCP: a GPU row whose spot is above its on-demand says that "on-demand" cell is not the
    # list price (H200 x8: $36.60 in europe-west4 vs $74.49 in us-central1); its siblings
    # carry the same figure. The spot price (GPU + host row) stays usable.
    "gpu_row_spot_gt_ondemand": (
        "on-demand",
        "GCP's GPU-only price row has on-demand below spot (not list; node prices add the host)",
    ),
    "gpu_row_ondemand_suspect": (
        "on-demand",
        "same GCP GPU-only on-demand figure as rows whose spot is above it",
    ),
}

# Price flags under which a price is ranked but is an estimate, not an observed price:
# flag -> (market, what it is). Never the headline's "Cheapest" while an observed price
# ranks (provisioner/core/choices.py; docs/prices.md "Doubtful prices and estimated prices").
_ESTIMATED = {
    "spot_default_ratio": (
        "spot",
        "exactly 18.48% of on-demand, as in 599 of 895 upstream Azure rows (a filled-in "
        "default discount, not an observed price); not named while an observed price ranks",
    ),
}


#: cloud -> instance families sold only as capacity blocks (reserved 1-182 day blocks): no
#: spot or on-demand market exists. AWS p5e: "P5e instances are available through Amazon EC2
#: Capacity Blocks for ML" (AWS P5 instance page); both AWS catalogs agree (no on-demand Price
#: in any p5e row). The builder and the AWS refresh drop such rows (pricing/rentable.py);
#: ``price_doubt`` refuses them from any other source (a --prices file, an older cache).
CAPACITY_BLOCK_ONLY: dict[str, tuple[str, ...]] = {"aws": ("p5e",)}


def beyond_doubt(offer: Offer) -> bool:
    """True when no rule of price_doubt applies to any market of this offer (most rows)."""
    return _DOUBTFUL.keys().isdisjoint(offer.flags) and (
        offer.cloud not in CAPACITY_BLOCK_ONLY
        or offer.instance_type.split(".", 1)[0] not in CAPACITY_BLOCK_ONLY[offer.cloud]
    )


def price_doubt(offer: Offer, market: str) -> str | None:
    """Why this offer's price in `market` is not to be ranked, or None if it is usable."""
    if beyond_doubt(offer):
        return None
    if offer.instance_type.split(".", 1)[0] in CAPACITY_BLOCK_ONLY.get(offer.cloud, ()):
        return f"{market} price not used: sold as capacity blocks only (no {market} market)"
    for flag in offer.flags:
        rule = _DOUBTFUL.get(flag)
        if rule and rule[0] in ("both", market):
            return f"{market} price not used: {rule[1]}"
    return None


def offer_fields(o: Offer) -> dict[str, Any]:
    """Where and what an offer is, as the JSON contract names it (plans and skipped prices)."""
    return {
        "cloud": o.cloud,
        "region": o.region,
        "zone": o.zone or None,
        "instance_type": o.instance_type,
        "gpu": o.gpu,
        "gpus_per_node": o.gpus_per_node,
    }


def price_estimate(offer: Offer, market: str) -> str | None:
    """Why this offer's price in `market` is an estimate (ranked, marked), or None."""
    return estimated_by(offer.flags, market)


def first_observed(items: Iterable[T], observed: Callable[[T], bool]) -> T | None:
    """The first of `items` at an observed price, else the first of them, else None: a pick
    (the headline's, the break-even's) rests on an observed price, and names an estimate
    (price_estimate) only when nothing observed is among them."""
    first = None
    for item in items:
        if observed(item):
            return item
        if first is None:
            first = item
    return first


def estimated_by(flags: Iterable[str], market: str) -> str | None:
    """price_estimate from a row's flags (a plan file's `price_flags` and `market`)."""
    for flag in flags:
        rule = _ESTIMATED.get(flag)
        if rule and rule[0] == market:
            return f"{market} price is an estimate: {rule[1]}"
    return None


def utc_today() -> date:
    from datetime import UTC, datetime

    return datetime.now(UTC).date()


def price_age_days(as_of: str | None, today: date | None = None) -> int | None:
    """Whole days since ``as_of`` (YYYY-MM-DD, UTC), or None for an undated price."""
    if not as_of:
        return None
    return max(0, ((today or utc_today()) - date.fromisoformat(as_of)).days)
