"""The prices a quote may rank an offer at, and a replacement replica's time to serve on it:
the memoised, per-offer half of the enumeration (provisioner/core/planner/candidates.py).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from provisioner.core.memory import weights_total_bytes
from provisioner.core.models import ModelSpec
from provisioner.core.offer import beyond_doubt, price_doubt
from provisioner.core.quant import QuantScheme
from provisioner.core.request import QuoteRequest
from provisioner.core.spot_risk import spot_risk

if TYPE_CHECKING:
    from provisioner.core.offer import Offer
    from provisioner.core.time_to_serve import TimeToServe


class OfferPrices:
    """Usable prices and times to serve, memoised per offer for one quote; doubtful prices
    are counted in `skipped` (reason -> (offer, market))."""

    def __init__(
        self, req: QuoteRequest, spec: ModelSpec, scheme: QuantScheme, markets: tuple[str, ...]
    ) -> None:
        self.req, self.spec, self.scheme = req, spec, scheme
        self.markets = markets
        self.weight_bytes = weights_total_bytes(spec, scheme)  # a replacement loads them all
        self.skipped: dict[str, set[tuple[int, str]]] = defaultdict(set)  # distinct prices
        self.price_memo: dict[int, list[tuple[str, float]]] = {}
        self.tts_memo: dict[tuple[Any, ...], TimeToServe] = {}

    def tts_of(self, o: Offer, nodes: int) -> TimeToServe | None:
        """A replacement replica's time to serve on this instance type when the weights are
        split over ``nodes`` (cached); None for llama.cpp plans (the terms are vLLM's)."""
        if self.scheme.engine != "vllm":
            return None
        key = (o.cloud, o.instance_type, o.gpus_per_node, o.vcpus, nodes)
        found = self.tts_memo.get(key)
        if found is None:
            from provisioner.core.time_to_serve import Replica, time_to_serve

            replica = Replica(o.cloud, o.instance_type, o.gpus_per_node, o.vcpus, nodes,
                              self.weight_bytes, self.spec.moe is not None)  # fmt: skip
            found = self.tts_memo[key] = time_to_serve(replica, self.req.weights)
        return found

    def usable_prices(self, o: Offer) -> list[tuple[str, float]]:
        """(market, node $/h) this offer may be ranked on; doubtful prices are counted once."""
        found = self.price_memo.get(id(o))
        if found is not None:
            return found
        found = []
        limit = self.req.max_interruption
        for market in self.markets:
            price = o.price(market)
            if price is None:
                continue
            doubt = price_doubt(o, market)
            if doubt is None and market == "spot" and limit is not None:
                # a pool without a published rate cannot be shown to stay under the limit
                # (the same rule as --min-availability)
                risk = spot_risk(o.cloud, o.region, o.instance_type)
                if risk is None:
                    doubt = (
                        f"spot pool without a published interruption rate: {limit}%/month unproven"
                    )
                elif risk.max_pct > limit:
                    doubt = f"spot pool interrupted more than {limit}%/month"
            if doubt:
                self.skipped[doubt].add((id(o), market))
            else:
                found.append((market, price))
        self.price_memo[id(o)] = found
        return found

    def doubtless(self, o: Offer) -> bool:
        """True when usable_prices(o) is every price listed in the markets (no doubt to count)."""
        return self.req.max_interruption is None and beyond_doubt(o)

    def priced(self, rows: list[tuple[int, Offer]]) -> dict[str, list[tuple[int, str, float]]]:
        """(offer index, market, node $/h) of every usable price of `rows`, in order, by market
        (markets with a price only): as usable_prices, without its per-offer work on the (many)
        offers beyond doubt."""
        spot: list[tuple[int, str, float]] = []
        ondemand: list[tuple[int, str, float]] = []
        by_market = {"spot": spot, "on-demand": ondemand}
        want_spot, want_ondemand = "spot" in self.markets, "on-demand" in self.markets
        plain = self.req.max_interruption is None  # self.doubtless, inline
        for oi, o in rows:
            if plain and beyond_doubt(o):
                if want_spot and o.spot_usd_per_hour is not None:
                    spot.append((oi, "spot", o.spot_usd_per_hour))
                if want_ondemand and o.ondemand_usd_per_hour is not None:
                    ondemand.append((oi, "on-demand", o.ondemand_usd_per_hour))
            else:
                for m, p in self.usable_prices(o):
                    by_market[m].append((oi, m, p))
        return {m: by_market[m] for m in self.markets if by_market[m]}
