"""Why a quote came back empty, named by the filter, file or limit that emptied it.

"no offer can run X, see the rejections" is no help when there are no rejections: a
`--region mars-1` matched no offer, a price file had only its header, every price was doubtful,
or every feasible shape missed an SLO. The filters are pricing.offer_filter (prices show uses
the same), whose row rules the planner (plan_quote) applies too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from provisioner.core.choices import reason_kind
from provisioner.errors import NoFeasibleShapeError, ProvError, UsageError

if TYPE_CHECKING:
    from provisioner.core.offer import Offer
    from provisioner.core.planner import QuoteResult
    from provisioner.core.request import QuoteRequest

_SLO_FLAGS = ("--max-tpot-ms", "--max-ttft-s", "--min-output-tps", "--cpu-offload-gb")


#: USD per GPU-hour outside this is a data error, not a price (real ones: ~$0.1 to ~$15).
PLAUSIBLE_USD_PER_GPU_HOUR = (0.01, 500.0)


def check_offers(offers: Sequence[Offer], source: str, *, strict: bool = True) -> None:
    """Offers prov can rank: some rows and, for a user's file (`strict`), GPUs prov knows and
    prices that are prices (else exit 2, naming the file and the row)."""
    from provisioner.core.hardware import gpu_specs

    if not offers:
        raise UsageError(f"{source}: no offers in it (a header without rows?); nothing to rank")
    if not strict:
        return
    known = gpu_specs()
    lo, hi = PLAUSIBLE_USD_PER_GPU_HOUR
    for o in offers:
        row = f"{o.cloud} {o.zone or o.region} {o.instance_type}"
        if o.gpu not in known:
            raise UsageError(f"{source}: {row}: unknown GPU {o.gpu!r}; allowed: {', '.join(known)}")
        for market, price in (
            ("on-demand", o.ondemand_usd_per_hour),
            ("spot", o.spot_usd_per_hour),
        ):
            if price is not None and not lo <= price / o.gpus_per_node <= hi:
                raise UsageError(
                    f"{source}: {row}: {market} ${price:g}/h for {o.gpus_per_node} GPUs is not a "
                    f"price prov can rank; allowed: ${lo:g}..${hi:g} per GPU-hour"
                )


def filtered(req: QuoteRequest, offers: Sequence[Offer]) -> list[Offer]:
    """The offers the planner considers after --cloud/--region/--gpu/--market (the filter
    prices show uses too), or the error naming a --region or --gpu that matched nothing."""
    from pricing.offer_filter import OfferFilter

    where = OfferFilter(tuple(req.clouds), tuple(req.regions), tuple(req.gpus), req.market)
    selection = where.select(offers)
    error = selection.empty_error()
    if error is not None:
        raise error
    return selection.offers


def empty_error(req: QuoteRequest, offers: Sequence[Offer], result: QuoteResult) -> ProvError:
    """The error for a quote without plans (offers already passed `filtered`)."""
    what = (
        f"no offer can run {result.model.id} at {result.scheme.name} with {req.ctx}-token requests"
    )
    markets = ("on-demand", "spot") if req.market == "any" else (req.market,)
    priced = any(
        (o.ondemand_usd_per_hour if m == "on-demand" else o.spot_usd_per_hour) is not None
        for o in offers
        for m in markets
    )
    # prices are set aside only for shapes that fit; without a price in the market, the
    # shapes refused (e.g. a DP layout beside a TP one that fits) are not why it is empty
    if not result.rejected or result.skipped_prices or not priced:
        skipped = sum(result.skipped_prices.values())
        market = "" if req.market == "any" else f" {req.market}"
        if skipped:
            top = max(result.skipped_prices.items(), key=lambda kv: kv[1])[0]
            return NoFeasibleShapeError(
                f"{what}: every{market} price of the matching offers was set aside "
                f"({skipped}; e.g. {top})"
            )
        return NoFeasibleShapeError(f"{what}: no matching offer has a{market} price")
    slo = [r for r in result.rejected if any(f in r["reason"] for f in _SLO_FLAGS)]
    if slo:  # these shapes fit in memory: the limit, not the hardware, emptied the quote
        flags = sorted({f for r in slo for f in _SLO_FLAGS if f in r["reason"]})
        return NoFeasibleShapeError(
            f"{what} within {', '.join(flags)}: {len(slo)} shapes fit in memory but miss it "
            f"(e.g. {slo[0]['reason']}); relax it or see --show-rejected"
        )
    kinds = Counter(reason_kind(r["reason"]) for r in result.rejected)
    kind, n = kinds.most_common(1)[0]
    example = next(r for r in result.rejected if reason_kind(r["reason"]) == kind)
    return NoFeasibleShapeError(
        f"{what}: all {len(result.rejected)} shapes rejected; most ({n}) because "
        f"{example['reason']} ({example['shape']}); --show-rejected lists them by reason"
    )
