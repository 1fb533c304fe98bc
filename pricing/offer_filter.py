"""One filter of offers by --cloud, --region, --gpu and market, for `prov quote` and
`prov prices show`: the same flags select the same rows in both commands.

Pure. ``OfferFilter.check_names`` refuses a cloud no offer has or a GPU prov does not know
(exit 2). ``OfferFilter.select`` applies the filters in the order a user reads them and
records the first one that left nothing, so a command can name it (``Selection.empty_error``:
quote and prices show both do). The planner (provisioner.core.planner, a
layer below pricing) applies the same row rules to the offers it ranks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from provisioner.core.hardware import gpu_specs, match_gpu
from provisioner.core.offer import Offer
from provisioner.errors import NoFeasibleShapeError, ProvError, UsageError

#: market -> which rows it keeps: "any" a row with some price, else a row with that price.
MARKETS = ("any", "spot", "on-demand")


def some(values: Sequence[str], n: int = 8) -> str:
    """Up to n distinct values, sorted, and how many more there are; separated by '; ' when a
    value holds a comma (Vast's regions are 'Michigan, US, NA')."""
    vals = sorted(set(values))
    sep = "; " if any("," in v for v in vals) else ", "
    return sep.join(vals[:n]) + (f" (and {len(vals) - n} more)" if len(vals) > n else "")


def _regions(offers: Sequence[Offer]) -> str:
    """The regions of one cloud, or with several clouds how many each has (mixing AWS's names
    with Vast's free-text locations read as noise): --cloud then lists one cloud's."""
    by_cloud: dict[str, set[str]] = {}
    for o in offers:
        by_cloud.setdefault(o.cloud, set()).add(o.region)
    if len(by_cloud) == 1:
        return some([o.region for o in offers])
    counts = ", ".join(f"{cloud} {len(by_cloud[cloud])}" for cloud in sorted(by_cloud))
    return f"{counts} (add --cloud to list one cloud's)"


@dataclass(frozen=True)
class Selection:
    """The offers a filter kept, and the first filter that left none (with what it was given)."""

    offers: list[Offer]
    where: OfferFilter
    emptied_by: str | None = None  # "--cloud", "--region", "--gpu" or "market"
    before: tuple[Offer, ...] = ()  # the offers that filter was given

    def empty_error(self) -> ProvError | None:
        """The error naming a --region or --gpu that matched nothing (None otherwise)."""
        f = self.where
        if self.emptied_by == "--region":
            scope = f" of --cloud {','.join(f.clouds)}" if f.clouds else ""
            return UsageError(
                f"--region {','.join(f.regions)} matches no offer{scope}; regions with offers: "
                + _regions(self.before)
            )
        if self.emptied_by == "--gpu":
            flags = (("--cloud", f.clouds), ("--region", f.regions))
            scope = " ".join(f"{flag} {','.join(v)}" for flag, v in flags if v)
            return NoFeasibleShapeError(
                f"--gpu {','.join(f.gpus)}: no such offer"
                + (f" with {scope}" if scope else "")
                + f"; GPUs offered there: {some([o.gpu for o in self.before])}"
            )
        return None


@dataclass(frozen=True)
class OfferFilter:
    """--cloud, --region (a region or a zone), --gpu (a name, prefix or vendor) and a market."""

    clouds: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    gpus: tuple[str, ...] = ()
    market: str = "any"

    def check_names(self, offers: Sequence[Offer]) -> None:
        """UsageError for a --cloud no offer has, a --gpu prov does not know, a bad market."""
        if self.market not in MARKETS:
            raise UsageError(f"unknown --market {self.market!r}; allowed: {', '.join(MARKETS)}")
        from pricing.offers import LIVE_CLOUDS

        known = sorted({o.cloud for o in offers})
        for c in self.clouds:
            if c.lower() in LIVE_CLOUDS and c.lower() not in known:  # OCI: a live source only
                raise UsageError(
                    f"--cloud {c}: no {c.lower()} prices among the offers yet; "
                    f"prov prices refresh --cloud {c.lower()} fetches them"
                )
            if c.lower() not in known:
                raise UsageError(f"unknown --cloud {c!r}; allowed: {', '.join(known)}")
        for g in self.gpus:
            if not match_gpu(g):
                vendors = sorted({s.vendor.lower() for s in gpu_specs().values()})
                raise UsageError(
                    f"unknown --gpu {g!r}; allowed: {', '.join([*vendors, *gpu_specs()])}"
                )

    def select(self, offers: Sequence[Offer]) -> Selection:
        """The offers every filter keeps; an empty result says which filter emptied it."""
        clouds = {c.lower() for c in self.clouds}
        regions = {r.lower() for r in self.regions}
        gpus = {n for g in self.gpus for n in match_gpu(g)}
        market = self.market
        steps: tuple[tuple[str, bool, Callable[[Offer], bool]], ...] = (
            ("--cloud", bool(clouds), lambda o: o.cloud in clouds),
            (
                "--region",
                bool(regions),
                lambda o: o.region.lower() in regions or (o.zone or "").lower() in regions,
            ),
            ("--gpu", bool(gpus), lambda o: o.gpu in gpus),
            (
                "market",
                True,
                lambda o: (
                    o.price(market) is not None
                    if market != "any"
                    else o.ondemand_usd_per_hour is not None or o.spot_usd_per_hour is not None
                ),
            ),
        )
        out = list(offers)
        for flag, active, keep in steps:
            if not active:
                continue
            kept = [o for o in out if keep(o)]
            if not kept and out:
                return Selection([], self, flag, tuple(out))
            out = kept
        return Selection(out, self)
