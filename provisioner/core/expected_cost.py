"""What a spot reclaim costs: capacity lost per month from the time to serve a replacement.

Pure and light (math only); the planner attaches it to every spot plan, ``prov quote
--risk-adjusted`` ranks by it, ``--min-availability`` filters by it and ``--explain`` prints it.
Per plan (one replica of ``nodes`` nodes)::

    interruptions/month = nodes x 720 h x rate,      rate = -ln(1 - p) / 720 h
    downtime/reclaim    = time to serve if it exceeds the notice, else 0  (replacement asked
                          at the notice; the replica leaves the load balancers then)
    lost h/month        = interruptions/month x downtime / 3600
    availability        = 1 - lost / 720
    expected $/h        = price / availability      (= $ per hour of capacity actually serving)
    expected $/Mtok     = $/Mtok / availability

* ``p`` is the share of a pool's instances interrupted per 30-day month: the upper bound of the
  pool's AWS Spot Instance Advisor bucket (``<5%`` -> 5%, ... ``15-20%`` -> 20%); the open
  ``>20%`` bucket is taken as :data:`OPEN_BUCKET_PCT`. With each instance reclaimed as a Poisson
  process, ``P(at least one in 720 h) = 1 - exp(-720 rate) = p`` gives the rate. Upper bounds
  make it pessimistic on purpose.
* Other clouds' spot pools, and AWS pools the advisor does not list, have **no published rate**:
  the plan says "unknown" (never zero); ``--risk-adjusted`` ranks them at the assumed
  :data:`DEFAULT_INTERRUPTION_PCT` (said so), ``--min-availability`` drops them (an unknown rate
  cannot show that a target is met).
* Time to serve comes from :func:`provisioner.core.time_to_serve.time_to_serve` (the same number the
  startup probe, the daemon's prewarm decision and the spare math use). A multi-node plan is one
  replica: losing any node restarts it, so interruptions add up over its nodes.
* Alternatives, for one replica of demand: **N+1** (a second spot replica serving, 2x the price),
  a **warm spare** (a second spot replica loaded but out of traffic, the daemon's
  ``--spare-replicas 1``: same price) - with either, capacity is lost only when the second one
  is down too: ``1 - f^2`` if the pools reclaim independently (e.g. other AZs; correlated reclaims
  do worse); an **on-demand floor** (the replica on-demand: never reclaimed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from provisioner.core.spot_risk import ADVISOR_DATE, spot_risk

if TYPE_CHECKING:
    from provisioner.core.offer import Offer
    from provisioner.core.time_to_serve import TimeToServe

#: A month as the Spot Instance Advisor counts it: 30 days.
HOURS_PER_MONTH = 720.0
#: Assumed upper bound of the advisor's open ``>20%`` bucket (no bound is published).
OPEN_BUCKET_PCT = 50.0
#: Assumed monthly interruption share where no rate is published (other clouds, AWS types missing
#: from the advisor data), used only to rank with --risk-adjusted: as risky as 15-20% allows.
DEFAULT_INTERRUPTION_PCT = 20.0


def monthly_rate_to_hourly(pct: float) -> float:
    """Interruptions per instance-hour when ``pct`` % of instances are interrupted per month."""
    p = min(max(pct, 0.0), 99.999) / 100.0
    return -math.log1p(-p) / HOURS_PER_MONTH


@dataclass(frozen=True)
class Reclaim:
    """What reclaims cost one plan (market, nodes, pool), from its time to serve."""

    market: str
    pct_per_month: float | None  # p in % per month; None = no published rate (unknown)
    basis: str  # where p comes from, for --explain and the JSON
    nodes: int
    tts: TimeToServe
    notice_s: float

    @property
    def known(self) -> bool:
        return self.market != "spot" or self.pct_per_month is not None

    @property
    def ranked_pct(self) -> float:
        """p as --risk-adjusted ranks it: the published bound, or the stated assumption."""
        if self.market != "spot":
            return 0.0
        return DEFAULT_INTERRUPTION_PCT if self.pct_per_month is None else self.pct_per_month

    @property
    def rate_per_node_hour(self) -> float:
        return monthly_rate_to_hourly(self.ranked_pct)

    @property
    def interruptions_per_month(self) -> float:
        return self.nodes * self.rate_per_node_hour * HOURS_PER_MONTH

    @property
    def downtime_s(self) -> float:
        return self.tts.downtime_per_reclaim_s(self.notice_s)

    @property
    def lost_hours_per_month(self) -> float:
        return self.interruptions_per_month * self.downtime_s / 3600.0

    @property
    def lost_fraction(self) -> float:
        return min(1.0, self.lost_hours_per_month / HOURS_PER_MONTH)

    @property
    def availability(self) -> float:
        """Share of the month the replica serves (reclaims only; 1.0 on-demand)."""
        return 1.0 - self.lost_fraction

    def expected_usd_per_hour(self, usd_per_hour: float) -> float:
        """$ per hour of serving capacity: the price over the availability."""
        a = self.availability
        return usd_per_hour / a if a > 0 else math.inf

    def alternatives(
        self, spot_usd_per_hour: float, ondemand_usd_per_hour: float | None
    ) -> dict[str, Any]:
        """$/h and availability of keeping one replica's capacity another way."""
        pair = 1.0 - self.lost_fraction**2  # both replicas down at once, if independent
        return {
            "n_plus_1": {"usd_per_hour": round(2 * spot_usd_per_hour, 4),
                         "availability": round(pair, 6)},
            "warm_spare": {"usd_per_hour": round(2 * spot_usd_per_hour, 4),
                           "availability": round(pair, 6)},
            "on_demand_floor": (
                {"usd_per_hour": round(ondemand_usd_per_hour, 4), "availability": 1.0}
                if ondemand_usd_per_hour is not None else None
            ),
        }  # fmt: skip

    def to_json(self, usd_per_hour: float, ondemand_usd_per_hour: float | None) -> dict[str, Any]:
        """The plan's "reclaim" object: unknown stays unknown (nulls), never zero."""
        known = self.pct_per_month is not None
        return {
            "interruption_pct_per_month": self.pct_per_month,
            "basis": self.basis,
            "rate_as_of": ADVISOR_DATE if known and self.market == "spot" else None,
            "rate_age_days": rate_age_days() if known and self.market == "spot" else None,
            "notice_s": self.notice_s,
            "downtime_per_reclaim_s": round(self.downtime_s),
            "interruptions_per_month": round(self.interruptions_per_month, 4) if known else None,
            "capacity_lost_h_per_month": round(self.lost_hours_per_month, 4) if known else None,
            "availability": round(self.availability, 6) if known else None,
            "expected_usd_per_hour": (
                round(self.expected_usd_per_hour(usd_per_hour), 4) if known else None
            ),
            "alternatives": self.alternatives(usd_per_hour, ondemand_usd_per_hour)
            if known
            else None,
        }


def rate_age_days(today: date | None = None) -> int:
    """Days since the embedded Spot Advisor data was taken."""
    return ((today or date.today()) - date.fromisoformat(ADVISOR_DATE)).days


def reclaim(offer: Offer, market: str, nodes: int, tts: TimeToServe) -> Reclaim:
    """The reclaim cost of running ``nodes`` of ``offer`` on ``market``, replaced in ``tts``."""
    from provisioner.core.time_to_serve import spot_notice_s

    notice = spot_notice_s(offer.cloud)
    if market != "spot":
        return Reclaim(market, 0.0, "on-demand: not reclaimed", nodes, tts, notice)
    risk = spot_risk(offer.cloud, offer.region, offer.instance_type)
    if risk is None:
        where = (
            "the Spot Advisor data has no row for this pool"
            if offer.cloud == "aws"
            else f"{offer.cloud} publishes no interruption rate"
        )
        basis = f"unknown: {where} (--risk-adjusted ranks it at an assumed "
        basis += f"{DEFAULT_INTERRUPTION_PCT:g}%/month)"
        return Reclaim(market, None, basis, nodes, tts, notice)
    if risk.bucket == 4:
        pct = OPEN_BUCKET_PCT
        basis = f"Spot Advisor {risk.label}: no upper bound published, assumed {pct:g}%/month"
    else:
        pct = float(risk.max_pct)
        basis = f"Spot Advisor {risk.label}: upper bound {pct:g}%/month"
    return Reclaim(market, pct, basis, nodes, tts, notice)
