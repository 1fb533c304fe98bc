"""A GPU node as a price source lists it, and the rules every source applies to it.

The snapshot builder (pricing.tools) and the live refreshes (pricing.aws_refresh,
pricing.live_sources) turn their rows into ``Node``s, size the GPU memory with
``gpu_memory_gib``, flag the prices with ``price_flags`` and write ``Node.to_offer()``:
one set of rules, so a live row and a snapshot row of one machine agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pricing.interconnect import INTERCONNECT, fabric_for
from provisioner.core.hardware import GpuSpec
from provisioner.core.offer import Offer


@dataclass
class Node:
    """One purchasable GPU node of a source, while its rules are applied (mutable)."""

    cloud: str
    region: str
    zone: str
    instance_type: str
    gpu: str
    gpus_per_node: int
    gpu_memory_gib: float
    vcpus: float
    memory_gib: float
    ondemand: float | None
    spot: float | None
    flags: set[str] = field(default_factory=set)
    multi_node: bool = True
    aliases: list[str] = field(default_factory=list)

    def to_offer(self, prices_as_of: str | None, fabric: str | None = None) -> Offer:
        """The runtime row: interconnect and fabric from pricing.interconnect (or `fabric`)."""
        return Offer(
            self.cloud,
            self.region,
            self.zone,
            self.instance_type,
            self.gpu,
            self.gpus_per_node,
            self.gpu_memory_gib,
            self.vcpus,
            self.memory_gib,
            INTERCONNECT[self.gpu],
            fabric or fabric_for(self.cloud, self.instance_type),
            self.ondemand,
            self.spot,
            prices_as_of,
            tuple(sorted(self.flags)),
            self.multi_node,
            tuple(sorted(self.aliases)),
        )

    def key(self) -> tuple[str, str, str, str, str]:
        return (self.cloud, self.region, self.zone, self.instance_type, self.gpu)


#: How far a catalog's per-GPU memory may sit from gpus.csv's figure and still be read as the
#: device's own (nvidia-smi vs an API: H100 81559 vs 81920 MiB, L40S 46068 vs 45776, 0.4-0.6%).
#: A nominal "GB" written as GiB is 7% off an ECC card's (GCP L4 24576 vs AWS's 22888 MiB):
#: such a figure is the same GPU mis-stated, never a bigger device.
GPU_MEMORY_TOLERANCE = 0.03


def gpu_memory_gib(spec: GpuSpec, catalog_mib: float | None, flags: set[str]) -> float:
    """Per-GPU GiB as the cloud reports it; gpus.csv when absent or implausible (flagged).

    Display only: the planner sizes every offer of a GPU model with one device size
    (provisioner.core.hardware.cuda_memory_gib), whatever its catalog says.
    """
    reference = (spec.memory_mib_cloud / 1024) if spec.memory_mib_cloud else spec.memory_gb
    if catalog_mib:
        gib = catalog_mib / 1024
        if abs(gib - reference) <= GPU_MEMORY_TOLERANCE * reference:
            return round(gib, 1)
        flags.add("gpu_memory_mismatch")
    if spec.memory_mib_cloud:
        return round(spec.memory_mib_cloud / 1024, 1)
    flags.add("gpu_memory_nominal")
    return spec.memory_gb


#: Prices closer than this (USD/h) count as equal (upstream spot prices are rounded).
SAME_PRICE_USD = 0.0005


def price_flags(cloud: str, node: Node) -> None:
    """Zero prices become no price; odd spot/on-demand pairs are flagged, never fixed."""
    od, spot = node.ondemand, node.spot
    if od is not None and od == 0.0:
        node.ondemand = od = None
        node.flags.add("zero_price")
    if spot is not None and spot == 0.0:
        node.spot = spot = None
        node.flags.add("zero_price")
    if od is None and spot is not None:
        node.flags.add("no_ondemand")
    if od is not None and spot is not None:
        # Upstream rounds spot to 4 decimals: 20.0281 vs on-demand 20.02809 is "equal".
        if abs(spot - od) <= SAME_PRICE_USD:
            node.flags.add("spot_eq_ondemand")
        elif spot > od:
            node.flags.add("spot_gt_ondemand")
            if cloud == "runpod":
                node.flags.add("columns_swapped?")
        elif spot < 0.15 * od:
            node.flags.add("spot_over_85pct_off")
