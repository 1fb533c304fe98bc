"""Self-hosting vs a hosted API: price per Mtok and the sustained load where self-hosting wins.

Pure. Hosted prices come from the embedded, dated data/api_prices.csv.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass
from datetime import date
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from provisioner.core.offer import first_observed, price_estimate

if TYPE_CHECKING:
    from provisioner.core.planner import QuoteResult


@dataclass(frozen=True, slots=True)
class ApiPrice:
    provider: str
    model: str
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    as_of: str
    source: str

    def usd_per_request(self, isl: int, osl: int) -> float:
        return (isl * self.input_usd_per_mtok + osl * self.output_usd_per_mtok) / 1e6

    def blended_usd_per_mtok(self, isl: int, osl: int) -> float:
        """Price per million tokens (input + output) at this request shape."""
        return self.usd_per_request(isl, osl) / (isl + osl) * 1e6


@cache
def api_prices() -> tuple[ApiPrice, ...]:
    text = resources.files("provisioner").joinpath("data/api_prices.csv").read_text("utf-8")
    return tuple(
        ApiPrice(
            r["provider"],
            r["model"],
            float(r["input_usd_per_mtok"]),
            float(r["output_usd_per_mtok"]),
            r["as_of"],
            r["source"],
        )
        for r in csv.DictReader(text.splitlines())
    )


def api_price_for(model_id: str) -> ApiPrice | None:
    """The hosted price of this very model, if one is embedded (case-insensitive id)."""
    for p in api_prices():
        if p.model.lower() == model_id.lower():
            return p
    return None


@dataclass(frozen=True, slots=True)
class BreakEven:
    market: str
    usd_per_hour: float
    self_usd_per_mtok_blended: float  # at the estimated sustained throughput
    api_usd_per_mtok_blended: float
    capacity_requests_per_day: float  # what the deployment sustains
    breakeven_requests_per_day: float  # daily API bill = daily rent from here on

    @property
    def self_host_wins_at_capacity(self) -> bool:
        return self.breakeven_requests_per_day <= self.capacity_requests_per_day


def break_even(
    api: ApiPrice, usd_per_hour: float, output_tps: float, isl: int, osl: int, market: str
) -> BreakEven:
    """Requests/day at which renting this deployment costs what the API would charge.

    Rent is paid whether or not the deployment is busy: usd_per_hour x 24 per day. The API
    costs (isl x input + osl x output) / 1e6 per request. Self-hosting is cheaper above
    rent / API-cost-per-request requests a day, if the deployment can sustain that many
    (capacity = output tokens/s x 86,400 / osl).
    """
    per_request = api.usd_per_request(isl, osl)
    capacity = output_tps * 86_400 / osl
    total_tps = output_tps * (isl + osl) / osl
    return BreakEven(
        market=market,
        usd_per_hour=usd_per_hour,
        self_usd_per_mtok_blended=usd_per_hour / (total_tps * 3600) * 1e6,
        api_usd_per_mtok_blended=api.blended_usd_per_mtok(isl, osl),
        capacity_requests_per_day=capacity,
        breakeven_requests_per_day=usd_per_hour * 24 / per_request,
    )


def price_age_days(as_of: str, today: date) -> int | None:
    """Days since a hosted price's "as of" (YYYY-MM counts from the month's first day, the
    oldest the price can be); None when the date cannot be read."""
    try:
        parts = [int(x) for x in as_of.split("-")]
        then = date(parts[0], parts[1], parts[2] if len(parts) > 2 else 1)
    except (ValueError, IndexError):
        return None
    return (today - then).days


def api_comparison(result: QuoteResult, max_age_days: int = 90) -> dict[str, Any]:
    """`--compare-api`: the hosted price of the model and the break-even per market. A hosted
    price older than ``max_age_days`` (the quote's --max-price-age) gets a note, as cloud
    prices do."""
    from provisioner.core.offer import utc_today
    from provisioner.core.request import workload_tokens

    spec, req = result.model, result.request
    isl, osl, _ = workload_tokens(req)
    api = api_price_for(spec.id)
    out: dict[str, Any] = {"model": spec.id, "isl": isl, "osl": osl, "api": None, "markets": {}}
    if api is None:
        out["note"] = f"no hosted API price embedded for {spec.id}"
        return out
    age = price_age_days(api.as_of, utc_today())
    out["api"] = {
        **asdict(api),
        "blended_usd_per_mtok": round(api.blended_usd_per_mtok(isl, osl), 4),
        "price_age_days": age,
    }
    if age is not None and age > max_age_days:
        out["note"] = (
            f"{api.provider}'s price is as of {api.as_of} ({age} days old, more than "
            f"--max-price-age {max_age_days}): check its current price"
        )
    for market, best in result.best_by_market.items():
        # the headline's rule: an estimated price gives way to the best plan of this market
        # at an observed price; kept (and marked) when none ranks
        same = (p for p in result.plans if p.market == market)
        plan = (
            first_observed([best, *same], lambda p: price_estimate(p.offer, p.market) is None)
            or best
        )
        if plan.perf is None:
            continue
        be = break_even(api, plan.usd_per_hour, plan.perf.output_tps, isl, osl, market)
        out["markets"][market] = {
            "plan": f"{plan.verdict.nodes}x {plan.offer.cloud}:{plan.offer.instance_type} "
            f"{plan.offer.zone or plan.offer.region}",
            "usd_per_hour": round(plan.usd_per_hour, 4),
            "price_estimate": price_estimate(plan.offer, market),
            "output_tokens_per_s": round(plan.perf.output_tps, 1),
            "self_usd_per_mtok_blended": round(be.self_usd_per_mtok_blended, 4),
            "capacity_requests_per_day": round(be.capacity_requests_per_day),
            "breakeven_requests_per_day": round(be.breakeven_requests_per_day),
            "self_host_wins_at_capacity": be.self_host_wins_at_capacity,
        }
    return out
