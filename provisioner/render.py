"""Human output: the API comparison and the price table (quotes: provisioner/quote_view.py)."""

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


def print_prices(rows: list[dict[str, Any]], *, total: int, advisor_date: str) -> None:
    """One line per offer at the terminal's width (80 in a pipe); dates drop first."""
    import textwrap

    import typer

    from provisioner.textable import Column, fit, terminal_width

    def money(x: float | None) -> str:
        return "-" if x is None else f"{x:,.2f}"

    width = terminal_width()
    cols = [
        Column(
            "cloud:zone", [f"{r['cloud']}:{r['zone'] or r['region']}" for r in rows], min_width=12
        ),
        Column(
            "instance",
            [r["instance_type"].removeprefix("Standard_") for r in rows],
            min_width=12,
            cut_first=True,
        ),
        Column(
            "GPUs",
            [
                f"{r['gpus_per_node']}x{r['gpu'].removesuffix('-SXM')} {r['gpu_memory_gib']:g}G"
                for r in rows
            ],
        ),
        Column("od $/h", [money(r["ondemand_usd_per_hour"]) for r in rows], right=True),
        Column("spot $/h", [money(r["spot_usd_per_hour"]) for r in rows], right=True),
        Column("$/GPU-h", [f"{r['usd_per_gpu_hour']:,.3f}" for r in rows], right=True),
        Column("risk", [r["spot_interruption"] or "" for r in rows], drop_priority=1),
        Column("as of", [r["prices_as_of"] or "unknown" for r in rows], drop_priority=2),
        Column("", ["!" if r["doubt"] else "" for r in rows]),
    ]
    for line in fit(cols, width, gap=1):
        typer.echo(line)
    notes = []
    if any(r["doubt"] for r in rows):
        notes.append("! a price prov does not rank (see --json 'doubt')")
    notes.append(
        f"{len(rows)} of {total} offers shown (--top 0 for all). Spot risk = AWS Spot Instance "
        f"Advisor, % of instances interrupted per month, as of {advisor_date}; other clouds "
        "publish none."
    )
    for note in notes:
        typer.echo("\n".join(textwrap.wrap(note, width - 1, subsequent_indent="  ")))
