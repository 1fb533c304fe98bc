"""The one CLI boundary: parse flags, call the core, print; errors become exit codes.

Bad input (ProvError with exit_code 2, or click's own usage errors) exits 2 with one line;
operational failures exit 1; tracebacks only with --debug. SDK-heavy commands import their
adapters inside the command so `prov quote` stays fast.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

from provisioner import __version__
from provisioner.errors import ProvError


class _OneLineErrors(TyperGroup):
    """Click's usage errors (a missing value, an unknown option) as one 'prov: error:' line,
    like every other error, instead of typer's framed panel."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        standalone = kwargs.get("standalone_mode", True)
        kwargs["standalone_mode"] = False
        if not standalone:
            return super().main(*args, **kwargs)
        try:
            rv = super().main(*args, **kwargs)
        except Exception as e:  # click's own classes (typer may vendor click): by shape
            name = type(e).__name__
            ctx = getattr(e, "ctx", None)
            if name == "NoArgsIsHelpError" and ctx is not None:
                typer.echo(ctx.get_help())
                sys.exit(0)
            if hasattr(e, "format_message") and hasattr(e, "exit_code"):
                _err(_usage_line(e))
                sys.exit(e.exit_code)
            if name == "Abort":
                _err("aborted")
                sys.exit(1)
            raise
        sys.exit(rv if isinstance(rv, int) else 0)


def _usage_line(e: Any) -> str:
    msg = " ".join(e.format_message().split())
    ctx = getattr(e, "ctx", None)
    return f"{msg} (see '{ctx.command_path} --help')" if ctx is not None else msg


app = typer.Typer(
    cls=_OneLineErrors,
    name="prov",
    help="Cheapest cloud GPU shape that really runs a large LLM under vLLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
prices_app = typer.Typer(
    help="Offers: GPU nodes, regions, on-demand and spot prices.", no_args_is_help=True
)

_state = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])


def _err(msg: str) -> None:
    sys.stderr.write(f"prov: error: {msg}\n")


def boundary(fn: F) -> F:
    """Turn ProvError into a one-line message and its exit code (traceback only with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ProvError as e:
            if _state["debug"]:
                raise
            _err(str(e))
            raise typer.Exit(e.exit_code) from None
        except typer.Exit:
            raise
        except BrokenPipeError:  # `prov ... | head`: the reader left; not an error
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as e:  # a bug: say so briefly unless --debug
            if _state["debug"]:
                raise
            _err(f"internal error: {type(e).__name__}: {e} (rerun with --debug for a traceback)")
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"prov {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    _state["debug"] = debug


def _split(values: list[str] | None) -> tuple[str, ...]:
    """Repeated and comma-separated values: --cloud aws,gcp --cloud nebius."""
    out: list[str] = []
    for v in values or []:
        out += [p.strip() for p in v.split(",") if p.strip()]
    return tuple(out)


def raise_usage(msg: str) -> None:
    from provisioner.errors import UsageError

    raise UsageError(msg)


from provisioner.cli_quote import register as _register_quote  # noqa: E402

_register_quote(app)
from provisioner.cli_models import register as _register_models  # noqa: E402

_register_models(app)
app.add_typer(prices_app, name="prices")


@prices_app.command("refresh")
@boundary
def prices_refresh(
    cloud: str = typer.Option("aws", "--cloud", help="The cloud to refresh (only aws is live)."),
    regions: str = typer.Option(
        "all", "--regions", help="Comma-separated regions, or all (the account's enabled ones)."
    ),
    families: str | None = typer.Option(
        None,
        "--families",
        help="Instance families, e.g. p5,p5en,g6e (default: p5,p5e,p5en,p4d,p4de,g6e,g6,g5,"
        "p6-b200).",
    ),
    pricing_file: Path | None = typer.Option(
        None,
        "--pricing-file",
        help="On-demand prices from saved `aws pricing get-products` JSON instead of the "
        "Pricing API.",
    ),
    workers: int = typer.Option(8, "--workers", help="Regions fetched at once."),
) -> None:
    """Fetch live AWS GPU prices (on-demand, spot per AZ) into the user cache."""
    if cloud.strip().lower() != "aws":
        raise_usage(f"--cloud {cloud!r}: only aws has a live price source; allowed: aws")
    from pricing.aws_refresh import PriceListFile, refresh_aws, report_lines

    report = refresh_aws(
        regions,
        families,
        ondemand=PriceListFile(pricing_file) if pricing_file else None,
        max_workers=workers,
    )
    for line in report_lines(report):
        typer.echo(line)
    for warning in report.warnings:
        sys.stderr.write(f"prov: warning: {warning}\n")
    if report.failed:
        from provisioner.errors import OperationalError

        names = ", ".join(r.region for r in report.failed)
        raise OperationalError(
            f"{len(report.failed)} of {len(report.results)} regions failed ({names}): their "
            + (
                "previous prices are kept"
                if report.offers_path
                else "nothing was written; the cache is unchanged"
            )
        )


@prices_app.command("show")
@boundary
def prices_show(
    gpu: list[str] | None = typer.Option(None, "--gpu", help="Only these GPUs (H200, H100...)."),
    cloud: list[str] | None = typer.Option(None, "--cloud", help="Only these clouds."),
    region: list[str] | None = typer.Option(None, "--region", help="Only these regions/zones."),
    spot: bool = typer.Option(False, "--spot", help="Only offers with a spot price; sort by it."),
    sort: str = typer.Option("gpu-hour", "--sort", help="gpu-hour or node-hour."),
    top: int = typer.Option(30, "--top", help="Show the N cheapest rows (0 = all)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows."),
    prices: Path | None = typer.Option(None, "--prices", help="An offers.csv to use instead."),
    max_price_age: int = typer.Option(
        7, "--max-price-age", help="Warn when live prices shown are older than N days."
    ),
) -> None:
    """Every offer for a GPU across clouds and regions, with $/GPU-h and spot risk."""
    from pricing.offers import current_offers, load_offers, price_date_notes
    from pricing.show import price_rows
    from pricing.spot_risk import ADVISOR_DATE

    if top < 0:
        raise_usage(f"--top {top}: must be 0 (all) or a positive number")
    if max_price_age < 0:
        raise_usage(f"--max-price-age {max_price_age}: must be a number of days >= 0")
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
        sys.stderr.write(f"prov: warning: {warning}\n")
    if as_json:
        typer.echo(json.dumps(shown, indent=2))
        return
    from provisioner.render import print_prices

    print_prices(shown, total=len(rows), advisor_date=ADVISOR_DATE)
    import textwrap

    from provisioner.textable import terminal_width

    for note in date_notes:
        typer.echo(
            "\n".join(textwrap.wrap(f"note: {note}", terminal_width() - 1, subsequent_indent="  "))
        )


from provisioner.cli_deploy import register as _register_deploy  # noqa: E402

_register_deploy(app)
from provisioner.cli_daemon import register as _register_daemon  # noqa: E402

_register_daemon(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
