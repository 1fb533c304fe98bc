"""`prov prices show` and `prov prices refresh`: registered on the main app by provisioner.cli.main.

Module level imports typer and the standard library only; each command imports what it needs
(`prices refresh --cloud aws` alone pulls in boto3).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

REFRESH_CLOUDS = ("aws", "azure", "runpod", "vast", "oci")


def _usage(msg: str) -> None:
    from provisioner.errors import UsageError

    raise UsageError(msg)


def _split(values: list[str] | None) -> tuple[str, ...]:
    out: list[str] = []
    for v in values or []:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return tuple(out)


def _money(value: float | None, doubt: str | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" + ("!" if doubt else "")


def print_prices(
    rows: list[dict[str, Any]],
    *,
    total: int,
    advisor_date: str,
    width: int | None,
    wide: bool = False,
) -> None:
    """One line per offer within `width` (None: no limit): long instance names are shortened
    and then cut with '~' (the full names are under --wide and --json), the notes wrapped."""
    from provisioner.cli.textable import Column, fit, short_gpu, short_instance, wrap

    def instance(r: dict[str, Any]) -> str:
        name = r["instance_type"] if wide else short_instance(r["instance_type"])
        return name + ("*" if r["aliases"] else "")

    risks = [
        r["spot_interruption"] or ("?" if r["spot_usd_per_hour"] is not None else "") for r in rows
    ]
    cols = [
        Column(
            "cloud:zone", [f"{r['cloud']}:{r['zone'] or r['region']}" for r in rows], min_width=14
        ),
        Column("instance", [instance(r) for r in rows], min_width=12, cut_first=True),
        Column(
            "GPUs",
            [f"{r['gpus_per_node']}x{r['gpu'] if wide else short_gpu(r['gpu'])}" for r in rows],
        ),
        Column(
            "od $/h",
            [_money(r["ondemand_usd_per_hour"], r["doubt_ondemand"]) for r in rows],
            right=True,
        ),
        Column(
            "od/GPU",
            [_money(r["ondemand_usd_per_gpu_hour"], r["doubt_ondemand"], 3) for r in rows],
            right=True,
        ),
        Column(
            "spot/GPU",
            [
                _money(r["spot_usd_per_gpu_hour"], r["doubt_spot"], 3)
                + ("~" if r["estimate_spot"] else "")
                for r in rows
            ],
            right=True,
        ),
        Column("risk", risks),
        Column(
            "age",
            ["?" if r["price_age_days"] is None else str(r["price_age_days"]) for r in rows],
            right=True,
        ),
    ]
    limit = None if wide else width
    for line in fit(cols, limit, gap=2 if wide else 1):
        typer.echo(line)
    notes = []
    if any(r["doubt_ondemand"] or r["doubt_spot"] for r in rows):
        notes.append("! a price prov does not rank (see --json 'doubt_ondemand'/'doubt_spot')")
    if any(r["estimate_spot"] for r in rows):
        notes.append("~ an estimated price: ranked, not named Cheapest (--json 'estimate_spot')")
    if any(r["aliases"] for r in rows):
        notes.append("* also sold under another name (--json 'aliases')")
    notes.append(
        f"{len(rows)} of {total} offers shown (--top 0 for all"
        + ("" if wide else ", --wide for full names")
        + "). od/GPU, spot/GPU: $ per GPU-hour on-demand and spot. risk: AWS Spot Instance "
        f"Advisor, % interrupted per month, as of {advisor_date}; ? = unknown "
        "(docs/prices.md). age: days since the price's date."
    )
    for note in notes:
        for line in wrap(note, limit):
            typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add the `prices` group (show, refresh) to `app`, behind the CLI boundary."""
    from pricing.price_dates import DEFAULT_MAX_PRICE_AGE_DAYS
    from provisioner.cli.boundary import boundary, warn

    prices_app = typer.Typer(
        help="Offers: GPU nodes, regions, on-demand and spot prices.", no_args_is_help=True
    )
    app.add_typer(prices_app, name="prices")

    @prices_app.command("show")
    @boundary
    def prices_show(
        gpu: list[str] | None = typer.Option(None, "--gpu", help="Only these GPUs (H200, H100)."),
        cloud: list[str] | None = typer.Option(None, "--cloud", help="Only these clouds."),
        region: list[str] | None = typer.Option(None, "--region", help="Only these regions/zones."),
        spot: bool = typer.Option(False, "--spot", help="Only offers with a spot price, by it."),
        sort: str = typer.Option(
            "on-demand",
            "--sort",
            help="on-demand or spot ($/GPU-h), node-hour, gpu-hour (on-demand, else spot).",
        ),
        top: int = typer.Option(30, "--top", help="Show the N cheapest rows (0 = all)."),
        wide: bool = typer.Option(
            False, "--wide", help="Full instance and GPU names; no width limit."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON rows."),
        prices: Path | None = typer.Option(None, "--prices", help="An offers.csv to use instead."),
        max_price_age: int = typer.Option(
            DEFAULT_MAX_PRICE_AGE_DAYS,
            "--max-price-age",
            help="Warn when a price shown is older than N days.",
        ),
    ) -> None:
        """Every offer for a GPU across clouds and regions: on-demand and spot $/GPU-h."""
        from pricing.offers import current_offers, load_offers
        from pricing.price_dates import price_date_notes
        from pricing.show import price_rows
        from provisioner.core.spot_risk import ADVISOR_DATE

        if top < 0:
            _usage(f"--top {top}: must be 0 (all) or a positive number")
        if max_price_age < 0:
            _usage(f"--max-price-age {max_price_age}: must be a number of days >= 0")
        rows = price_rows(
            load_offers(prices) if prices else current_offers(),
            gpus=_split(gpu),
            clouds=_split(cloud),
            regions=_split(region),
            spot_only=spot,
            sort=sort,
        )
        shown = rows[:top] if top else rows
        date_notes, stale = price_date_notes(
            [(r["cloud"], r["prices_as_of"], r["flags"]) for r in shown],
            max_age_days=max_price_age,
            source=str(prices) if prices else None,
        )
        for warning in stale:
            warn(warning)
        if as_json:
            typer.echo(json.dumps(shown, indent=2))
            return
        from provisioner.cli.textable import terminal_width, wrap

        width = None if wide else terminal_width()
        print_prices(shown, total=len(rows), advisor_date=ADVISOR_DATE, width=width, wide=wide)
        for note in date_notes:
            for line in wrap(f"note: {note}", width):
                typer.echo(line)

    @prices_app.command("refresh")
    @boundary
    def prices_refresh(
        cloud: str = typer.Option(
            "aws",
            "--cloud",
            help=f"{'|'.join(REFRESH_CLOUDS)}|all, or several comma-separated; each cloud "
            "succeeds or fails on its own.",
        ),
        regions: str = typer.Option(
            "all",
            "--regions",
            help="aws/azure: comma-separated regions, or all (aws: the account's enabled "
            "ones; azure: every region the Retail Prices API lists).",
        ),
        families: str | None = typer.Option(
            None,
            "--families",
            help="aws: instance families, e.g. p5,p5en,g6e (default: p5,p5e,p5en,p4d,p4de,"
            "g6e,g6,gr6,g5,p6-b200,p6-b300).",
        ),
        pricing_file: Path | None = typer.Option(
            None,
            "--pricing-file",
            help="aws: on-demand prices from saved `aws pricing get-products` JSON instead of "
            "the Pricing API.",
        ),
        workers: int = typer.Option(8, "--workers", help="aws: regions fetched at once."),
    ) -> None:
        """Fetch live GPU prices into the user cache (quote and prices show prefer it).

        Sources and their auth: aws (your AWS credentials: Pricing API, spot history), azure
        (Retail Prices API, none), runpod (GraphQL, none), vast (bundles, none), oci (price
        list, none). Override an endpoint with PROV_<CLOUD>_PRICES_URL.
        """
        from provisioner.errors import OperationalError

        names = [c.lower() for c in _split([cloud])]
        for name in names:
            if name not in (*REFRESH_CLOUDS, "all"):
                _usage(
                    f"--cloud {name!r}: no live price source; allowed: "
                    f"{', '.join(REFRESH_CLOUDS)}, all"
                )
        if not names:
            _usage("--cloud: name a cloud (or all)")
        chosen = list(REFRESH_CLOUDS) if "all" in names else list(dict.fromkeys(names))
        name = chosen[0] if len(chosen) == 1 else "all"
        failed: list[str] = []
        if "aws" in chosen:
            failed += _refresh_aws(regions, families, pricing_file, workers, alone=name == "aws")
        others = [c for c in chosen if c != "aws"]
        if others:
            from pricing.live_refresh import refresh_cloud, report_lines

            region_list = None
            if regions.strip().lower() != "all":
                region_list = [r for r in _split([regions]) if r]
            results = [
                refresh_cloud(c, regions=region_list if c == "azure" else None) for c in others
            ]
            for line in report_lines(results):
                typer.echo(line)
            failed += [r.cloud for r in results if r.error]
        if failed:
            raise OperationalError(refresh_failure(failed, chosen))


def refresh_failure(failed: list[str], chosen: list[str]) -> str:
    """The one line for failed sources: 'the others were refreshed' only when there are others."""
    if len(chosen) == 1:
        return f"{failed[0]} prices not refreshed; its previous cache is kept"
    head = f"{len(failed)} of {len(chosen)} sources failed ({', '.join(failed)})"
    if len(failed) == len(chosen):
        return f"{head}; every previous cache is kept"
    return f"{head}; their previous cache is kept, the others were refreshed"


def _refresh_aws(
    regions: str, families: str | None, pricing_file: Path | None, workers: int, *, alone: bool
) -> list[str]:
    """The AWS refresh (boto3); returns ["aws"] if any region failed (raised when alone)."""
    from pricing.aws_price_list import PriceListFile
    from pricing.aws_refresh import refresh_aws, report_lines
    from provisioner.errors import OperationalError, ProvError

    try:
        report = refresh_aws(
            regions,
            families,
            ondemand=PriceListFile(pricing_file) if pricing_file else None,
            max_workers=workers,
        )
    except OperationalError as exc:
        if alone:
            raise
        typer.echo(f"aws      FAILED: {exc}; cache unchanged")
        return ["aws"]
    except ProvError:
        raise
    for line in report_lines(report):
        typer.echo(line)
    for warning in report.warnings:
        from provisioner.cli.boundary import warn

        warn(warning)
    if report.failed:
        names = ", ".join(r.region for r in report.failed)
        msg = f"{len(report.failed)} of {len(report.results)} regions failed ({names}): " + (
            "their previous prices are kept"
            if report.offers_path
            else "nothing was written; the cache is unchanged"
        )
        if alone:
            raise OperationalError(msg)
        typer.echo(f"aws      {msg}")
        return ["aws"]
    return []
