"""`prov quote --compare-api` for people: self-hosting vs the hosted API, one line per market."""

from __future__ import annotations

from typing import Any

from rich.console import Console


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def print_comparison(c: dict[str, Any]) -> None:
    con = _console()
    api = c["api"]
    con.print()
    if api is None:
        con.print(f"[yellow]compare-api:[/yellow] {c['note']}")
        return
    con.print(
        f"Hosted API: {api['provider']} {c['model']} ${api['input_usd_per_mtok']:g} in / "
        f"${api['output_usd_per_mtok']:g} out per Mtok (as of {api['as_of']}) = "
        f"${api['blended_usd_per_mtok']:.2f}/Mtok blended at {c['isl']}/{c['osl']} tokens"
    )
    for market, m in c["markets"].items():
        verdict = (
            "self-hosting is cheaper above it"
            if m["self_host_wins_at_capacity"]
            else "above this deployment's capacity: the API stays cheaper"
        )
        con.print(
            f"  {market:9s} {m['plan']}: ${m['usd_per_hour']:,.2f}/h, "
            f"{m['output_tokens_per_s']:,.0f} out tok/s = "
            f"${m['self_usd_per_mtok_blended']:.2f}/Mtok blended at full load; "
            f"break-even {m['breakeven_requests_per_day']:,} requests/day "
            f"(capacity {m['capacity_requests_per_day']:,}/day): {verdict}"
        )
