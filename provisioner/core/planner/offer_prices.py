"""The offers of a class that can run a replica, the prices a quote may rank them at, and a
replacement replica's time to serve on them: the memoised, per-offer half of the enumeration
(provisioner/core/planner/candidates.py).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from provisioner.core.memory import weights_total_bytes
from provisioner.core.models import ModelSpec
from provisioner.core.offer import beyond_doubt, offer_fields, price_doubt
from provisioner.core.planner.candidate_rows import Entry
from provisioner.core.planner.estimates import host_ram_needed
from provisioner.core.quant import QuantScheme
from provisioner.core.request import QuoteRequest
from provisioner.core.spot_risk import spot_risk

if TYPE_CHECKING:
    from provisioner.core.offer import Offer
    from provisioner.core.time_to_serve import TimeToServe


_ROW_ORDER = ("cloud", "region", "zone", "instance_type", "market")


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
        self.skipped_offers: dict[int, Offer] = {}  # id -> offer of every skipped price
        self.price_memo: dict[int, list[tuple[str, float]]] = {}
        self.tts_memo: dict[tuple[Any, ...], TimeToServe] = {}
        self.timed = req.risk_adjusted or req.min_availability is not None  # rank by serve time
        # per class (id of its offer list) and whether the replica has several nodes
        self.eligible_memo: dict[tuple[int, bool], dict[str, list[tuple[int, Offer]]]] = {}
        self.notable_memo: dict[tuple[int, bool], list[tuple[int, Offer]]] = {}
        self.priced_memo: dict[int, dict[str, list[Entry]]] = {}  # id(eligible rows) -> prices
        self.clusters: dict[int, list[tuple[int, Offer]]] = {}  # id(one-node rows) -> clusters

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
                self.skip(doubt, o, market)
            else:
                found.append((market, price))
        self.price_memo[id(o)] = found
        return found

    def skip(self, reason: str, o: Offer, market: str) -> None:
        """Count one price not ranked, and keep its offer to name it (skipped_rows)."""
        self.skipped[reason].add((id(o), market))
        self.skipped_offers[id(o)] = o

    def skipped_rows(self) -> list[dict[str, Any]]:
        """Every skipped price named: place, instance, both prices, the market not used and
        the rule (--show-rejected and --json), by rule, then cloud, place and instance."""
        rows = []
        for reason, prices in self.skipped.items():
            for oid, market in prices:
                o = self.skipped_offers[oid]
                rows.append(
                    {
                        **offer_fields(o),
                        "market": market,
                        "ondemand_usd_per_hour": o.ondemand_usd_per_hour,
                        "spot_usd_per_hour": o.spot_usd_per_hour,
                        "reason": reason,
                    }
                )
        order = {r: i for i, r in enumerate(self.skipped)}
        rows.sort(key=lambda r: tuple(str(r[k] or "") for k in _ROW_ORDER))
        rows.sort(key=lambda r: order[str(r["reason"])])  # stable: by rule, then place
        return rows

    def doubtless(self, o: Offer) -> bool:
        """True when usable_prices(o) is every price listed in the markets (no doubt to count)."""
        return self.req.max_interruption is None and beyond_doubt(o)

    def notable(self, hw_offers: list[Offer], several: bool) -> list[tuple[int, Offer]]:
        """The class's offers, with their index, on which the offer loop of the enumeration
        (candidates.py, with the rejection list) does something: without --risk-adjusted,
        --min-availability and --cpu-offload-gb, the first single machine of each type
        (several nodes), the first offer of each fabric and the offers with a doubtful price;
        the others repeat what these did (cached per class)."""
        key = (id(hw_offers), several)
        found = self.notable_memo.get(key)
        if found is None:
            found = self.notable_memo[key] = []
            if self.timed or self.req.cpu_offload_gb:
                found += enumerate(hw_offers)
                return found
            lone: set[tuple[str, str]] = set()
            fabrics: set[str] = set()
            for oi, o in enumerate(hw_offers):
                if several and not o.multi_node:
                    if (o.cloud, o.instance_type) not in lone:
                        lone.add((o.cloud, o.instance_type))
                        found.append((oi, o))
                elif o.fabric not in fabrics:
                    fabrics.add(o.fabric)
                    found.append((oi, o))
                elif not self.doubtless(o):
                    found.append((oi, o))
        return found

    def eligible(self, hw_offers: list[Offer], several: bool) -> dict[str, list[tuple[int, Offer]]]:
        """The class's offers that can run a replica (of several nodes: only clusters; with
        --cpu-offload-gb: enough host RAM), with their index, by fabric (both made in one pass,
        cached per class)."""
        found = self.eligible_memo.get((id(hw_offers), several))
        if found is None:
            req = self.req
            one: dict[str, list[tuple[int, Offer]]] = {}
            many: dict[str, list[tuple[int, Offer]]] = {}
            for oi, o in enumerate(hw_offers):
                if req.cpu_offload_gb and o.memory_gib < host_ram_needed(req, o.gpus_per_node):
                    continue
                row = (oi, o)
                one.setdefault(o.fabric, []).append(row)
                if o.multi_node:
                    many.setdefault(o.fabric, []).append(row)
            self.eligible_memo[(id(hw_offers), False)] = one
            self.eligible_memo[(id(hw_offers), True)] = many
            for fabric, rows in one.items():
                if fabric in many:
                    self.clusters[id(rows)] = many[fabric]
            found = many if several else one
        return found

    def prices_of(self, rows: list[tuple[int, Offer]]) -> dict[str, list[Entry]]:
        """priced(rows) for rows of `eligible` (cached): pricing the one-node rows of a fabric
        prices its clusters too (a subset, in the same order)."""
        found = self.priced_memo.get(id(rows))
        if found is None:
            many = self.clusters.get(id(rows))
            if many is None or id(many) in self.priced_memo:
                found = self.priced(rows)
            else:
                found, self.priced_memo[id(many)] = self._priced(rows, True)
            self.priced_memo[id(rows)] = found
        return found

    def priced(self, rows: list[tuple[int, Offer]]) -> dict[str, list[Entry]]:
        """(offer index, market, node $/h) of every usable price of `rows`, in order, by market
        (markets with a price only): as usable_prices, without its per-offer work on the (many)
        offers beyond doubt."""
        return self._priced(rows, False)[0]

    def _priced(
        self, rows: list[tuple[int, Offer]], clusters: bool
    ) -> tuple[dict[str, list[Entry]], dict[str, list[Entry]]]:
        """priced(rows), and (with `clusters`) the same of the rows' multi-node offers."""
        lists: dict[str, list[Entry]] = {"spot": [], "on-demand": []}
        sub: dict[str, list[Entry]] = {"spot": [], "on-demand": []}
        spot, ondemand = lists["spot"], lists["on-demand"]
        sub_spot, sub_ondemand = sub["spot"], sub["on-demand"]
        want_spot, want_ondemand = "spot" in self.markets, "on-demand" in self.markets
        plain = self.req.max_interruption is None  # self.doubtless, inline
        for oi, o in rows:
            multi = clusters and o.multi_node
            if plain and beyond_doubt(o):
                if want_spot and o.spot_usd_per_hour is not None:
                    spot.append(e := (oi, "spot", o.spot_usd_per_hour))
                    if multi:
                        sub_spot.append(e)
                if want_ondemand and o.ondemand_usd_per_hour is not None:
                    ondemand.append(e := (oi, "on-demand", o.ondemand_usd_per_hour))
                    if multi:
                        sub_ondemand.append(e)
            else:
                for m, p in self.usable_prices(o):
                    lists[m].append(e := (oi, m, p))
                    if multi:
                        sub[m].append(e)
        return (
            {m: lists[m] for m in self.markets if lists[m]},
            {m: sub[m] for m in self.markets if sub[m]},
        )
