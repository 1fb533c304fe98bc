"""Human output: rich tables for quotes and catalogs (JSON output lives with the planner)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from pricing.price_dates import price_age_days
from provisioner.planner import QuoteResult


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def print_quote(result: QuoteResult, *, explain: bool, show_rejected: bool) -> None:
    con = _console()
    spec, scheme, req = result.model, result.scheme, result.request
    from provisioner.request import workload_tokens

    isl, osl, _ = workload_tokens(req)
    load = f"concurrency {req.concurrency}" if req.concurrency else "tok/s at saturation"
    con.print(
        f"[bold]{spec.id}[/bold] {scheme.label}, ctx {req.ctx:,} tokens, "
        f"KV {'fp8' if result.kv_dtype_bytes == 1 else 'bf16'}; workload {isl}/{osl} tokens, "
        f"{load}; ranked by {req.objective}"
    )
    table = Table(show_lines=False, header_style="bold", box=None, pad_edge=False)
    for col, just in [
        ("#", "right"),
        ("cloud:zone", "left"),
        ("nodes x instance", "left"),
        ("GPUs", "left"),
        ("layout", "left"),
        ("market", "left"),
        ("$/h", "right"),
        ("out tok/s", "right"),
        ("$/Mtok", "right"),
        ("TPOT ms", "right"),
        ("reqs", "right"),
        ("age", "right"),  # days since the price's date (? = undated)
        ("warn", "left"),
    ]:
        table.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    legend: dict[str, int] = {}
    for p in result.plans:
        v, o, e = p.verdict, p.offer, p.perf
        mem = v.memory
        assert mem is not None
        marks = ",".join(str(legend.setdefault(w, len(legend) + 1)) for w in p.warnings)
        tps = mtok = tpot = "-"
        if e is not None:
            tps = f"{e.output_tps:,.0f} ±{e.band:.0%}"
            mtok = f"{p.usd_per_hour / (e.output_tps * 3600) * 1e6:,.2f}"
            tpot = f"{e.tpot_s * 1000:,.0f}"
        table.add_row(
            str(p.rank),
            f"{o.cloud}:{o.zone or o.region}",
            f"{v.nodes}x {o.instance_type}",
            f"{v.nodes * o.gpus_per_node}x{o.gpu}",
            (f"{v.tp}x{v.pp}" if v.dp == 1 and not v.ep else v.layout.label)
            + (f" dcp{mem.dcp}" if mem.dcp > 1 else ""),
            p.market
            + (f" {p.spot_interruption}" if p.spot_interruption else "")
            + (" ?" if p.market == "spot" and not p.spot_interruption else ""),
            f"{p.usd_per_hour:,.2f}",
            tps,
            mtok,
            tpot,
            str(v.workload_concurrency),
            "?" if (age := price_age_days(o.prices_as_of)) is None else str(age),
            marks,
        )
    if result.plans:
        con.print(table)
        con.print(
            f"[dim]reqs = concurrent {isl + osl}-token (isl + osl) "
            "requests the KV cache holds; tok/s ± the calibration band (benchmarks/accuracy.py)"
            "[/dim]"
        )
    for w, i in legend.items():
        con.print(f"[yellow]warn {i}:[/yellow] {w}")
    shown = len(result.plans)
    con.print(
        f"{shown} of {result.feasible_count} feasible plans shown (--top 0 for all); "
        f"oldest price shown {result.prices_as_of or 'undated'}; age = days since a price's date"
    )
    for reason, n in result.skipped_prices.items():
        con.print(f"[dim]skipped {n} prices: {reason}[/dim]")
    for note in result.notes:
        con.print(f"[yellow]note:[/yellow] {note}")
    if explain:
        from provisioner.explain import explain as explain_lines

        con.print()
        for line in explain_lines(result):
            con.print(line, markup=False)
    if show_rejected and result.rejected:
        rej = Table(title="rejected shapes", header_style="bold")
        rej.add_column("shape")
        rej.add_column("reason")
        for r in result.rejected:
            rej.add_row(r["shape"], r["reason"])
        con.print(rej)


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


def print_models(rows: list[dict[str, Any]]) -> None:
    table = Table(header_style="bold")
    for col in ("id", "family", "total", "active", "attention", "layers", "max ctx", "native"):
        table.add_column(col, justify="right" if col in {"total", "active", "layers"} else "left")
    for r in rows:
        table.add_row(
            r["id"],
            r["family"],
            f"{r['params_total'] / 1e9:,.1f}B",
            f"{r['params_active'] / 1e9:,.1f}B",
            r["attention"],
            str(r["layers"]),
            f"{r['max_context']:,}",
            r["native_quant"],
        )
    _console().print(table)
