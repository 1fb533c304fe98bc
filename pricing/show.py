"""`prov prices show`: one row per offer, filtered (pricing.offer_filter, as `prov quote`) and
sorted (pure; the CLI renders it)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pricing.offer_filter import OfferFilter
from provisioner.core.offer import Offer, price_age_days, price_doubt, price_estimate
from provisioner.core.spot_risk import spot_risk, spot_risk_info
from provisioner.errors import UsageError

#: --sort keys: on-demand $/GPU-h, spot $/GPU-h, node $/h (on-demand, else spot), and the
#: legacy "gpu-hour" (on-demand $/GPU-h, else spot). Rows without the sorted price go last.
SORTS = ("on-demand", "spot", "node-hour", "gpu-hour")


def _per_gpu(price: float | None, n: int) -> float | None:
    return None if price is None else round(price / n, 4)


def price_rows(
    offers: Sequence[Offer],
    *,
    gpus: Sequence[str] = (),
    clouds: Sequence[str] = (),
    regions: Sequence[str] = (),
    spot_only: bool = False,
    sort: str = "on-demand",
) -> list[dict[str, Any]]:
    """Offers as rows with on-demand and spot $/GPU-h and the spot risk, cheapest first."""
    if sort not in SORTS:
        raise UsageError(f"unknown --sort {sort!r}; allowed: {', '.join(SORTS)}")
    if spot_only:
        sort = "spot"
    where = OfferFilter(tuple(clouds), tuple(regions), tuple(gpus), "spot" if spot_only else "any")
    where.check_names(offers)
    selection = where.select(offers)
    error = selection.empty_error()  # a --region or --gpu that matched nothing, as quote says
    if error is not None:
        raise error
    rows: list[dict[str, Any]] = []
    for o in selection.offers:
        od, sp = o.ondemand_usd_per_hour, o.spot_usd_per_hour
        n = o.gpus_per_node
        risk = spot_risk(o.cloud, o.region, o.instance_type)
        keys = {
            "on-demand": od / n if od is not None else None,
            "spot": sp / n if sp is not None else None,
            "node-hour": od if od is not None else sp,
            "gpu-hour": (od if od is not None else sp or 0.0) / n,
        }
        rows.append(
            {
                "cloud": o.cloud,
                "region": o.region,
                "zone": o.zone or None,
                "instance_type": o.instance_type,
                "aliases": list(o.aliases),
                "gpu": o.gpu,
                "gpus_per_node": n,
                "gpu_memory_gib": o.gpu_memory_gib,
                "ondemand_usd_per_hour": od,
                "spot_usd_per_hour": sp,
                "ondemand_usd_per_gpu_hour": _per_gpu(od, n),
                "spot_usd_per_gpu_hour": _per_gpu(sp, n),
                "usd_per_gpu_hour": round(
                    (keys[sort] if sort != "node-hour" else keys["gpu-hour"]) or 0.0, 4
                ),
                "sort_price": keys[sort],
                "spot_interruption": risk.label if risk else None,
                "spot_risk": spot_risk_info(o.cloud, o.region, o.instance_type)
                if sp is not None
                else None,
                "doubt_ondemand": price_doubt(o, "on-demand") if od is not None else None,
                "doubt_spot": price_doubt(o, "spot") if sp is not None else None,
                "estimate_ondemand": price_estimate(o, "on-demand") if od is not None else None,
                "estimate_spot": price_estimate(o, "spot") if sp is not None else None,
                "doubt": (price_doubt(o, "spot" if spot_only else "on-demand"))
                or (price_doubt(o, "spot") if sp is not None else None),
                "multi_node": o.multi_node,
                "prices_as_of": o.prices_as_of,
                "price_age_days": price_age_days(o.prices_as_of),
                "flags": list(o.flags),
            }
        )
    rows.sort(
        key=lambda r: (
            math.inf if r["sort_price"] is None else r["sort_price"],
            r["cloud"],
            r["region"],
            r["zone"] or "",
            r["instance_type"],
        )
    )
    for r in rows:
        del r["sort_price"]
    return rows
