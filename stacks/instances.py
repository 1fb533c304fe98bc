"""What the offers snapshot knows about a plan's node: its CPUs and RAM, and its alternatives.

The plan names one instance type in one zone. A spot pool is more likely to get (and keep)
capacity when it may also use the same GPU shape in other types and zones of the region, so
the pool lists every offer with the same GPU, GPU count and GPU memory that has a price prov
would rank in the plan's market. Pure: reads the packaged snapshot only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from provisioner.contract.document import Plan
from provisioner.core.offer import Offer, price_doubt


@dataclass(frozen=True, slots=True)
class NodeShape:
    """The smallest CPU and RAM among the instance types a pool may launch."""

    vcpus: float
    memory_gib: float


@dataclass(frozen=True, slots=True)
class Alternatives:
    instance_types: tuple[str, ...]  # the plan's first, then by cheapest price
    zones: tuple[str, ...]  # the plan's first, then by cheapest price (then name)
    node: NodeShape | None  # None when the snapshot does not know the instance type


def _same_shape(o: Offer, plan: Plan, gpu_memory: float | None) -> bool:
    return (
        o.cloud == plan.cloud
        and o.region == plan.region
        and o.gpu == plan.gpu
        and o.gpus_per_node == plan.gpus_per_node
        and (gpu_memory is None or o.gpu_memory_gib == gpu_memory)
    )


def alternatives(plan: Plan, offers: Sequence[Offer], *, single_zone: bool) -> Alternatives:
    """Instance types and zones a pool for `plan` may use (single_zone: only the plan's zone).

    Spot plans take every same-shape offer with a rankable spot price; on-demand plans keep
    their one instance type (only the zones vary).
    """
    own = [o for o in offers if o.cloud == plan.cloud and o.instance_type == plan.instance_type]
    gpu_memory = own[0].gpu_memory_gib if own else None
    usable = [
        o
        for o in offers
        if _same_shape(o, plan, gpu_memory)
        and o.price(plan.market) is not None
        and price_doubt(o, plan.market) is None
        and (plan.market == "spot" or o.instance_type == plan.instance_type)
        and (not single_zone or o.zone == plan.zone)
    ]
    cheapest: dict[str, float] = {}
    for o in usable:
        price = o.price(plan.market)
        assert price is not None
        cheapest[o.instance_type] = min(price, cheapest.get(o.instance_type, price))
    others = sorted((t for t in cheapest if t != plan.instance_type), key=lambda t: cheapest[t])
    types = (plan.instance_type, *others)
    # the other zones cheapest first (the plan's type's price there, then any type's), so the
    # daemon's fallback order (it reads fleet.ZONES) follows the plan's prices
    in_zone: dict[str, tuple[float, float]] = {}
    for o in usable:
        if o.zone and o.zone != plan.zone:
            price = o.price(plan.market)
            assert price is not None
            own_price = price if o.instance_type == plan.instance_type else math.inf
            was = in_zone.get(o.zone, (math.inf, math.inf))
            in_zone[o.zone] = (min(was[0], own_price), min(was[1], price))
    zones = ((plan.zone,) if plan.zone else ()) + tuple(
        sorted(in_zone, key=lambda z: (*in_zone[z], z))
    )
    shapes = [o for o in offers if o.cloud == plan.cloud and o.instance_type in types]
    node = (
        NodeShape(min(o.vcpus for o in shapes), min(o.memory_gib for o in shapes))
        if any(o.instance_type == plan.instance_type for o in shapes)
        else None
    )
    return Alternatives(types, zones, node)


def other_zone(plan: Plan, offers: Sequence[Offer], taken: Sequence[str]) -> str | None:
    """Another zone of the plan's region (EKS wants subnets in two zones), or None."""
    zones = sorted({o.zone for o in offers if o.cloud == plan.cloud and o.region == plan.region})
    return next((z for z in zones if z and z not in taken), None)


#: GPU instance types with an Elastic Fabric Adapter (EC2 DescribeInstanceTypes,
#: NetworkInfo.EfaSupported, as recorded in moto 5's instance_types.json; AWS's "Supported
#: instance types" list for EFA says the same). Small sizes of the g families have none: a launch
#: template with an EFA interface fails on them, so a pool that uses EFA keeps to these.
EFA_TYPES = frozenset(
    {
        "g4dn.8xlarge", "g4dn.12xlarge", "g4dn.16xlarge", "g4dn.metal",
        "g5.8xlarge", "g5.12xlarge", "g5.16xlarge", "g5.24xlarge", "g5.48xlarge",
        "g6.8xlarge", "g6.12xlarge", "g6.16xlarge", "g6.24xlarge", "g6.48xlarge",
        "g6e.8xlarge", "g6e.12xlarge", "g6e.16xlarge", "g6e.24xlarge", "g6e.48xlarge",
        "g7.8xlarge", "g7.12xlarge", "g7.24xlarge", "g7.48xlarge",
        "g7e.8xlarge", "g7e.12xlarge", "g7e.24xlarge", "g7e.48xlarge",
        "gr6.8xlarge", "p3dn.24xlarge", "p4d.24xlarge", "p4de.24xlarge",
        "p5.4xlarge", "p5.48xlarge", "p5e.48xlarge", "p5en.48xlarge",
        "p6-b200.48xlarge", "p6-b300.48xlarge",
    }
)  # fmt: skip


def efa_capable(instance_type: str) -> bool:
    return instance_type in EFA_TYPES


def offer_contradiction(plan: Plan, offers: Sequence[Offer], eks: bool) -> str | None:
    """What the plan's cloud, region and zone say against the offers data (a hand edit), or
    None. A type or zone the data does not know at all is not refused: a plan quoted with
    `--prices FILE` may name one (build_spec warns about a type it has no CPU/RAM for)."""
    clouds = {o.cloud for o in offers if o.instance_type == plan.instance_type}
    if clouds and plan.cloud not in clouds:
        return f"{plan.instance_type} is sold on {', '.join(sorted(clouds))}, not {plan.cloud}"
    ours = [o for o in offers if o.cloud == plan.cloud]
    regions = {o.region for o in ours if plan.zone and o.zone == plan.zone}
    if regions and plan.region not in regions:
        return f"zone {plan.zone} is in {', '.join(sorted(regions))}, not {plan.region}"
    if not eks:
        return None
    zones = sorted({o.zone for o in ours if o.region == plan.region and o.zone})
    if not zones:
        return f"prov knows no {plan.cloud} region {plan.region!r} (no prices there)"
    prefixes = {z.rsplit("-az", 1)[0] for z in zones if "-az" in z}  # AWS zone ids: use2-az3
    if plan.zone and prefixes and plan.zone.rsplit("-az", 1)[0] not in prefixes:
        return f"zone {plan.zone} is not one of {plan.region}'s ({', '.join(zones)})"
    return None
