"""`prov prices show`: one row per offer, filtered and sorted (pure; the CLI renders it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pricing.offers import Offer, price_doubt
from pricing.spot_risk import spot_risk
from provisioner.errors import UsageError
from provisioner.hardware import gpu_specs, match_gpu

SORTS = ("gpu-hour", "node-hour")


def price_rows(
    offers: Sequence[Offer],
    *,
    gpus: Sequence[str] = (),
    clouds: Sequence[str] = (),
    regions: Sequence[str] = (),
    spot_only: bool = False,
    sort: str = "gpu-hour",
) -> list[dict[str, Any]]:
    """Offers as rows with $/GPU-h and the spot interruption bucket, cheapest first."""
    if sort not in SORTS:
        raise UsageError(f"unknown --sort {sort!r}; allowed: {', '.join(SORTS)}")
    known_clouds = sorted({o.cloud for o in offers})
    for c in clouds:
        if c.lower() not in known_clouds:
            raise UsageError(f"unknown --cloud {c!r}; allowed: {', '.join(known_clouds)}")
    wanted: set[str] = set()
    for g in gpus:
        names = match_gpu(g)
        if not names:
            raise UsageError(f"unknown --gpu {g!r}; allowed: {', '.join(gpu_specs())}")
        wanted.update(names)
    cloud_set = {c.lower() for c in clouds}
    region_set = {r.lower() for r in regions}
    rows: list[dict[str, Any]] = []
    for o in offers:
        if wanted and o.gpu not in wanted:
            continue
        if cloud_set and o.cloud not in cloud_set:
            continue
        if region_set and o.region.lower() not in region_set and o.zone.lower() not in region_set:
            continue
        price = (
            o.spot_usd_per_hour if spot_only else (o.ondemand_usd_per_hour or o.spot_usd_per_hour)
        )
        if price is None:
            continue
        risk = spot_risk(o.cloud, o.region, o.instance_type)
        rows.append(
            {
                "cloud": o.cloud,
                "region": o.region,
                "zone": o.zone or None,
                "instance_type": o.instance_type,
                "gpu": o.gpu,
                "gpus_per_node": o.gpus_per_node,
                "gpu_memory_gib": o.gpu_memory_gib,
                "ondemand_usd_per_hour": o.ondemand_usd_per_hour,
                "spot_usd_per_hour": o.spot_usd_per_hour,
                "usd_per_gpu_hour": round(price / o.gpus_per_node, 4),
                "sort_price": price,
                "spot_interruption": risk.label if risk else None,
                "doubt": price_doubt(o, "spot" if spot_only else "on-demand")
                or (price_doubt(o, "spot") if o.spot_usd_per_hour is not None else None),
                "prices_as_of": o.prices_as_of,
                "flags": list(o.flags),
            }
        )
    key = "usd_per_gpu_hour" if sort == "gpu-hour" else "sort_price"
    rows.sort(key=lambda r: (r[key], r["cloud"], r["region"], r["zone"] or "", r["instance_type"]))
    for r in rows:
        del r["sort_price"]
    return rows
