"""Expected cost of a spot plan: its price plus what interruptions cost in restarts.

Pure and light (math only); ``prov quote --risk-adjusted`` ranks by it and ``--explain`` prints
it. The formula, per plan::

    expected $/h = price $/h x (1 + interruptions/h x restart h)

    interruptions/h = nodes x rate,   rate = -ln(1 - p) / 720 h
    restart h       = weight bytes per node / LOAD_BYTES_PER_S_PER_NODE + RESTART_OVERHEAD_S

* ``p`` is the share of a pool's instances interrupted per month. prov takes the upper bound of
  the pool's AWS Spot Instance Advisor bucket (``<5%`` -> 5%, ``5-10%`` -> 10%, ... ``15-20%``
  -> 20%). If each instance is reclaimed as a Poisson process with a constant rate, the chance
  of at least one interruption in a 30-day month (720 h) is ``1 - exp(-720 rate)``; setting that
  to ``p`` gives the rate above. Upper bounds make the estimate pessimistic on purpose.
* ``>20%`` has no upper bound in the advisor data: prov assumes :data:`OPEN_BUCKET_PCT`.
  Spot pools with no bucket (other clouds' spot/preemptible VMs, AWS types the advisor does not
  list such as p5e) use :data:`DEFAULT_INTERRUPTION_PCT`. Both are assumptions, not data.
* A multi-node plan is one vLLM replica: losing any node restarts it, so the expected
  interruptions add up over its nodes (expectation is additive even when pools are correlated).
* A restart reloads the weights: every node loads its share (``weight bytes / nodes``: PP splits
  the layers across nodes) in parallel, then vLLM starts. The whole plan's $/h is paid for that
  time without serving. On-demand plans are never interrupted: expected = price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pricing.spot_risk import spot_risk

if TYPE_CHECKING:
    from pricing.offers import Offer

#: A month as the Spot Instance Advisor counts it: 30 days.
HOURS_PER_MONTH = 720.0
#: Assumed upper bound of the advisor's open ``>20%`` bucket (no bound is published).
OPEN_BUCKET_PCT = 50.0
#: Assumed monthly interruption share of a spot pool without an advisor bucket (other clouds,
#: AWS types missing from the advisor data): as risky as the advisor's 15-20% bucket allows.
DEFAULT_INTERRUPTION_PCT = 20.0
#: Weight load bandwidth per node, bytes/s: 2 GB/s. An assumption between two documented
#: bounds: Amazon S3's performance guidelines give up to 100 Gb/s (12.5 GB/s) per instance with
#: many parallel range GETs, and a single stream gets ~100 MB/s; vLLM's safetensors loader
#: reading from a freshly attached volume or an S3 mount sustains a few GB/s at best. A
#: replacement node starts with an empty instance store, so it cannot read from local NVMe.
LOAD_BYTES_PER_S_PER_NODE = 2.0e9
#: Fixed cost of a restart, seconds: replacement node boot, container image pull and vLLM
#: start-up (engine init, CUDA graph capture) - an assumption of 5 minutes, not a measurement.
RESTART_OVERHEAD_S = 300.0


def monthly_rate_to_hourly(pct: float) -> float:
    """Interruptions per instance-hour when ``pct`` % of instances are interrupted per month."""
    p = min(max(pct, 0.0), 99.999) / 100.0
    return -math.log1p(-p) / HOURS_PER_MONTH


@dataclass(frozen=True)
class RestartRisk:
    """The terms of the expected-cost formula for one plan (market, nodes, offer)."""

    market: str
    pct_per_month: float  # p, in % of instances interrupted per month (0 for on-demand)
    basis: str  # where p comes from, for --explain
    nodes: int
    bytes_per_node: float
    rate_per_node_hour: float

    @property
    def interruptions_per_hour(self) -> float:
        return self.nodes * self.rate_per_node_hour

    @property
    def load_seconds(self) -> float:
        return self.bytes_per_node / LOAD_BYTES_PER_S_PER_NODE

    @property
    def restart_hours(self) -> float:
        return (self.load_seconds + RESTART_OVERHEAD_S) / 3600.0

    def expected_usd_per_hour(self, usd_per_hour: float) -> float:
        """The plan's price plus the expected restart cost per hour."""
        return usd_per_hour * (1.0 + self.interruptions_per_hour * self.restart_hours)


def restart_risk(offer: Offer, market: str, nodes: int, weight_bytes: float) -> RestartRisk:
    """The restart risk of running ``nodes`` of ``offer`` on ``market`` for a model whose
    weights take ``weight_bytes`` in total."""
    per_node = weight_bytes / max(nodes, 1)
    if market != "spot":
        return RestartRisk(market, 0.0, "on-demand: not interrupted", nodes, per_node, 0.0)
    risk = spot_risk(offer.cloud, offer.region, offer.instance_type)
    if risk is None:
        pct = DEFAULT_INTERRUPTION_PCT
        basis = f"no Spot Advisor bucket: assumed {pct:g}%/month"
    elif risk.bucket == 4:
        pct = OPEN_BUCKET_PCT
        basis = f"Spot Advisor {risk.label}: no upper bound published, assumed {pct:g}%/month"
    else:
        pct = float(risk.max_pct)
        basis = f"Spot Advisor {risk.label}: upper bound {pct:g}%/month"
    return RestartRisk(market, pct, basis, nodes, per_node, monthly_rate_to_hourly(pct))
