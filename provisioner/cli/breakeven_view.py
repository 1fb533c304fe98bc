"""`prov quote --compare-api` for people: self-hosting vs the hosted API, one line per market."""

from __future__ import annotations

from typing import Any

import typer

from provisioner.cli.textable import terminal_width, wrap


def print_comparison(c: dict[str, Any]) -> None:
    """Wrapped to the terminal like the quote's notes: a market's continuation lines indented
    under its text, no trailing spaces (rich's soft wrap left both wrong)."""
    width = terminal_width()

    def say(text: str, indent: str = "  ") -> None:
        for line in wrap(text, width, indent):
            typer.echo(line)

    api = c["api"]
    typer.echo("")
    if api is None:
        say(f"compare-api: {c['note']}")
        return
    say(
        f"Hosted API: {api['provider']} {c['model']} ${api['input_usd_per_mtok']:g} in / "
        f"${api['output_usd_per_mtok']:g} out per Mtok (as of {api['as_of']}) = "
        f"${api['blended_usd_per_mtok']:.2f}/Mtok blended at {c['isl']}/{c['osl']} tokens"
    )
    if c.get("note"):  # the hosted price's age, said before the markets that use it
        say(f"  note: {c['note']}", indent=" " * 8)
    for market, m in c["markets"].items():
        verdict = (
            "self-hosting is cheaper above it"
            if m["self_host_wins_at_capacity"]
            else "above this deployment's capacity: the API stays cheaper"
        )
        say(
            f"  {market:9s} {m['plan']}: ${m['usd_per_hour']:,.2f}/h"
            + (" (the catalog's estimate)" if m.get("price_estimate") else "")
            + ", "
            f"{m['output_tokens_per_s']:,.0f} out tok/s = "
            f"${m['self_usd_per_mtok_blended']:.2f}/Mtok blended at full load; "
            f"break-even {m['breakeven_requests_per_day']:,} requests/day "
            f"(capacity {m['capacity_requests_per_day']:,}/day): {verdict}",
            indent=" " * 12,
        )
