"""Rentable shapes only: the rules for rows that cannot be rented as listed.

Pure (no I/O). The snapshot builder (pricing.tools) applies them all; the live refreshes
(pricing.live_refresh) the ones that concern their sources, and the offers.csv parser takes a
row's default ``multi_node`` from here. Each rule drops or rewrites nodes and counts what it did,
so the build summary in pricing/data/SOURCE.md shows every row a rule touched. docs/prices.md
("Rentable shapes only") states the rules for users.

* Capacity-block-only instance types are never offered as spot or on-demand.
* Single-machine marketplace rows (Vast, RunPod) are marked ``multi_node = False``.
* SKU aliases of one machine (the same hardware at the same price in the same place under
  two names) are collapsed into one node that keeps the other names in ``aliases``.
* Clouds whose catalog lists every instance type in every region without availability
  (Lambda) get one node per instance type in the region ``any``, flagged ``region_unverified``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from provisioner.core.offer import CAPACITY_BLOCK_ONLY

if TYPE_CHECKING:
    from pricing.nodes import Node

#: Clouds whose catalog rows are single machines with no private network to the next one
#: (marketplace hosts, pods): never combined into multi-node plans unless a row says
#: ``multi_node`` (docs/prices.md, "Rentable shapes only").
SINGLE_MACHINE_CLOUDS: dict[str, str] = {
    "vast": "a Vast.ai listing is one host of one seller; hosts share no cluster fabric",
    "runpod": "a RunPod pod is one machine; pods share no cluster fabric (Instant Clusters "
    "are a separate product the catalog does not list)",
}


def default_multi_node(cloud: str) -> bool:
    """Whether nodes of this cloud can be joined into one multi-node deployment by default."""
    return cloud not in SINGLE_MACHINE_CLOUDS


#: The builder's drop counter: drop(reason, name, n).
Drop = Callable[[str, str, int], None]

#: Capacity-block-only families (provisioner.core.offer.CAPACITY_BLOCK_ONLY, with its source) are
#: dropped: no spot or on-demand market exists, and a `capacity-block` market would need the
#: block price, which no catalog here carries.
#: Checked and NOT capacity-block-only in the data: p5en, p6-b200 and p6-b300 all carry an
#: on-demand Price in aws_2026.csv (the AWS price list), so they stay.


#: Clouds whose upstream catalog writes every instance type into every region with the
#: same price, i.e. carries no availability (prices/SOURCE.md: "Lambda: one row per region
#: (17 regions) even where capacity may not exist").
REGIONLESS_CATALOGS: frozenset[str] = frozenset({"lambda"})
ANY_REGION = "any"


def drop_capacity_block_only(nodes: Sequence[Node], drop: Drop) -> list[Node]:
    kept = []
    for node in nodes:
        families = CAPACITY_BLOCK_ONLY.get(node.cloud, ())
        if node.instance_type.split(".", 1)[0] in families:
            drop("capacity_block_only", node.instance_type, 1)
            continue
        kept.append(node)
    return kept


def mark_single_machine(nodes: Sequence[Node]) -> None:
    for node in nodes:
        node.multi_node = default_multi_node(node.cloud)


_AZURE_FEATURES = re.compile(r"^(Standard_N[CDV]\d+)([a-z]+)(_.+)$")


def alias_family(cloud: str, instance_type: str) -> str:
    """A name shared by SKU aliases of one machine.

    Azure: the RDMA letter 'r' in the additive features is dropped (ND96is_MI300X_v5 and
    ND96isr_MI300X_v5 are one VM size listed under two names; Azure's sizes naming
    conventions page). Elsewhere the instance type itself.
    """
    if cloud == "azure":
        m = _AZURE_FEATURES.match(instance_type)
        if m:
            return m.group(1) + m.group(2).replace("r", "") + m.group(3)
    return instance_type


_FABRIC_RANK = {"efa": 3, "infiniband": 3, "gpudirect-tcpx": 2, "ethernet": 0}


def collapse_aliases(
    nodes: Sequence[Node], drop: Drop, fabric: Callable[[Node], str]
) -> list[Node]:
    """One node per machine: names with the same alias family, GPU, count and prices collapse.

    The name kept is the one with the faster fabric (the RDMA-capable 'r' size), then the
    alphabetically first; the others go into ``aliases``. Rows whose prices differ are kept
    apart: a different price is a different offer, whatever the name.
    """
    groups: dict[tuple[object, ...], list[Node]] = defaultdict(list)
    for node in nodes:
        key = (
            node.cloud,
            node.region,
            node.zone,
            alias_family(node.cloud, node.instance_type),
            node.gpu,
            node.gpus_per_node,
            node.ondemand,
            node.spot,
        )
        groups[key].append(node)
    out = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        group.sort(key=lambda n: (-_FABRIC_RANK.get(fabric(n), 0), n.instance_type))
        keep = group[0]
        for other in group[1:]:
            keep.aliases.append(other.instance_type)
            keep.flags |= {"sku_alias"}
            drop("sku_alias_collapsed", f"{other.instance_type} -> {keep.instance_type}", 1)
        out.append(keep)
    return out


def collapse_regionless(nodes: Sequence[Node], drop: Drop) -> list[Node]:
    """Lambda: one node per instance type in the region ``any`` when every region agrees.

    If regions disagree on a type's price the rows are kept as they are (flagged), since
    then the catalog does say something about regions.
    """
    by_type: dict[tuple[str, str], list[Node]] = defaultdict(list)
    out: list[Node] = []
    for node in nodes:
        if node.cloud in REGIONLESS_CATALOGS:
            by_type[(node.cloud, node.instance_type)].append(node)
        else:
            out.append(node)
    for (_cloud, itype), group in by_type.items():
        prices = {(n.ondemand, n.spot) for n in group}
        if len(prices) == 1:
            keep = group[0]
            keep.region, keep.zone = ANY_REGION, ""
            keep.flags |= {"region_unverified"}
            out.append(keep)
            if len(group) > 1:
                drop("region_copies_collapsed", itype, len(group) - 1)
        else:
            for n in group:
                n.flags |= {"region_unverified"}
            out.extend(group)
    return out
