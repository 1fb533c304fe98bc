"""Spot interruption frequency buckets from the AWS Spot Instance Advisor (embedded, dated).

Pure and light (csv only). Only AWS publishes these buckets; other clouds' spot pools have none.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from provisioner.errors import DataError

#: Date of the advisor data (the vendored file's last change; see pricing/data/SOURCE.md).
ADVISOR_DATE = "2025-06-28"
#: Bucket index -> (label, upper bound in % of instances interrupted per month).
BUCKETS: dict[int, tuple[str, int]] = {
    0: ("<5%", 5),
    1: ("5-10%", 10),
    2: ("10-15%", 15),
    3: ("15-20%", 20),
    4: (">20%", 100),
}


@dataclass(frozen=True, slots=True)
class SpotRisk:
    bucket: int  # 0..4
    label: str  # "<5%" .. ">20%"
    savings_pct: int  # the advisor's savings vs on-demand

    @property
    def max_pct(self) -> int:
        """Upper bound of the bucket, in % interrupted per month."""
        return BUCKETS[self.bucket][1]


def _text() -> str:
    try:
        return (
            resources.files("provisioner").joinpath("data/spot_advisor_gpu.csv").read_text("utf-8")
        )
    except (OSError, TypeError, ValueError):
        return (Path(__file__).parents[1] / "data" / "spot_advisor_gpu.csv").read_text("utf-8")


@functools.cache
def advisor() -> dict[tuple[str, str], SpotRisk]:
    """(region, instance_type) -> SpotRisk for the embedded AWS GPU rows."""
    table: dict[tuple[str, str], SpotRisk] = {}
    for n, row in enumerate(csv.DictReader(_text().splitlines()), start=2):
        try:
            idx = int(row["InterruptionRangeIndex"])
            risk = SpotRisk(idx, BUCKETS[idx][0], int(row["SavingsPctVsOnDemand"]))
        except (KeyError, ValueError) as e:
            raise DataError(f"spot_advisor_gpu.csv: line {n}: bad row ({e})") from None
        table[(row["Region"], row["InstanceType"])] = risk
    return table


def spot_risk(cloud: str, region: str, instance_type: str) -> SpotRisk | None:
    """The advisor bucket for an AWS spot pool, or None where none is published."""
    if cloud != "aws":
        return None
    return advisor().get((region, instance_type))


#: What each cloud publishes about spot interruptions; anything else is "unknown", never zero.
#: (notice before reclaim, what is known about the rate). docs/prices.md "Spot risk" cites them.
SPOT_TERMS: dict[str, tuple[str | None, str]] = {
    "aws": (
        "2 min",
        "AWS Spot Instance Advisor bucket of % interrupted per month (embedded, "
        f"as of {ADVISOR_DATE})",
    ),
    "azure": (
        "30 s",
        "unknown: Azure shows eviction-rate buckets only to a signed-in subscription (portal, "
        "Resource Graph SpotResources); none is embedded",
    ),
    "gcp": (
        "30 s",
        "unknown: Spot VMs can be preempted at any time; Google publishes no preemption rate",
    ),
    "vast": (None, "unknown: interruptible listings are outbid or stopped by the host at any time"),
    "runpod": (None, "unknown: spot pods can be stopped at any time; no rate is published"),
    "nebius": (None, "unknown: Nebius publishes no preemption rate"),
}


def spot_risk_info(cloud: str, region: str, instance_type: str) -> dict[str, str | None]:
    """What is known about a spot pool: the bucket (AWS) or an explicit "unknown" with why."""
    risk = spot_risk(cloud, region, instance_type)
    notice, basis = SPOT_TERMS.get(cloud, (None, f"unknown: {cloud} publishes no rate"))
    if cloud == "aws" and risk is None:
        basis = "unknown: the Spot Instance Advisor data has no row for this pool"
    return {
        "interruption_per_month": risk.label if risk else "unknown",
        "notice": notice,
        "basis": basis,
    }
