"""`prov quote` for people: the headline, one line per distinct choice, then the notes.

Every line fits the terminal (80 columns in a pipe): short instance names, units in the
headers; the full names, TPOT, warnings and price dates are under --wide, the arithmetic under
--explain, everything under --json.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from provisioner.cli.skipped_view import skipped_price_lines
from provisioner.cli.textable import Column, fit, short_gpu, short_instance
from provisioner.core.choices import Choice, Choices, reason_kind
from provisioner.core.offer import price_estimate
from provisioner.core.planner import QuoteResult, RankedPlan
from provisioner.core.planner.estimates import slo_load_label

Echo = Callable[[str], None]


def ctx_label(tokens: int) -> str:
    """131072 -> '128k'; 100000 -> '100000'."""
    if tokens % (1024 * 1024) == 0:
        return f"{tokens // (1024 * 1024)}m"
    if tokens % 1024 == 0:
        return f"{tokens // 1024}k"
    return str(tokens)


def gpus_label(p: RankedPlan, short: bool = True) -> str:
    o, n = p.offer, p.verdict.nodes
    gpu = short_gpu(o.gpu) if short else o.gpu
    return f"{o.gpus_per_node}x{gpu}" if n == 1 else f"{n}x{o.gpus_per_node}x{gpu}"


def layout(p: RankedPlan) -> str:
    """The layout's one name (TP8, TP8xPP2, DP8+EP8, layers/8 for GGUF), as --explain, fit,
    deploy and --json spell it (provisioner/core/layouts.py layout_label)."""
    return p.layout_label


def where(c: Choice) -> str:
    more = f" +{len(c.other_places)}" if c.other_places else ""
    return f"{c.plan.offer.cloud}:{c.place}{more}"


def usd_per_mtok(p: RankedPlan) -> float | None:
    e = p.perf
    if e is None or e.output_tps <= 0:
        return None
    return p.usd_per_hour / (e.output_tps * 3600) * 1e6


def summary(c: Choice) -> str:
    """One choice in a phrase: '#1 8xMI300X spot, azure eastus2: $8.87/h, $1.74/Mtok'."""
    p = c.plan
    mtok = usd_per_mtok(p)
    money = f"${p.usd_per_hour:,.2f}/h" + (f", ${mtok:,.2f}/Mtok" if mtok is not None else "")
    money += THIN if p.thin_data and mtok is not None else ""
    return f"#{p.rank} {gpus_label(p)} {p.market}, {p.offer.cloud} {c.place}: {money}"


def headline(ch: Choices) -> list[str]:
    """Three lines: the cheapest, the cheapest prov deploy runs, the cheapest on-demand."""
    if ch.cheapest is None:
        return []
    out = [f"{'Cheapest:':<12}{summary(ch.cheapest)}"]
    for label, pick in (
        ("Deployable:", ch.cheapest_deployable),
        ("On-demand:", ch.cheapest_on_demand),
    ):
        if pick is None:
            text = "none among these offers"
            if label == "Deployable:" and ch.why_none_deployable is not None:
                reason, n = ch.why_none_deployable  # every plan's reason: say it, not the offers
                text = (
                    "none: " + reason if n == ch.total else f"{text}: {reason} ({n} of {ch.total})"
                )
        elif pick is ch.cheapest:
            text = "the same"
        else:
            text = summary(pick)
        out.append(f"{label:<12}{text}")
    return out


def choice_table(result: QuoteResult, ch: Choices, *, width: int | None, wide: bool) -> list[str]:
    rows = ch.rows
    plans = [c.plan for c in rows]
    ctx = ctx_label(result.request.ctx)
    mtok = [usd_per_mtok(p) for p in plans]
    cols = [
        Column("#", [str(p.rank) for p in plans], right=True),
        Column("cloud:place", [where(c) for c in rows], min_width=12, keep_tail=" +"),
        Column(
            "machine",
            [
                p.offer.instance_type if wide else short_instance(p.offer.instance_type)
                for p in plans
            ],
            min_width=12,
            cut_first=True,  # the full name is under --wide and --json; the place is not
        ),
        Column("GPUs", [gpus_label(p, short=not wide) for p in plans], min_width=9),
        Column("layout", [layout(p) for p in plans]),
        Column("mkt", [p.market if wide else p.market.replace("on-demand", "od") for p in plans]),
        Column("$/h", [_usd_h(p) for p in plans], right=True),
        Column("$/Mtok", [_mtok(m, p) for m, p in zip(mtok, plans, strict=True)], right=True),
        Column(
            "tok/s",
            ["-" if p.perf is None else f"{p.perf.output_tps:,.0f}" for p in plans],
            right=True,
            drop_priority=2,
        ),
        Column(
            f"@{ctx}",
            [str(p.verdict.memory.max_concurrent if p.verdict.memory else 0) for p in plans],
            right=True,
        ),
    ]
    if wide:
        cols += [
            Column("TPOT ms", [_tpot(p) for p in plans], right=True),
            Column("deploy", ["yes" if c.not_deployable is None else "no" for c in rows]),
            Column("risk", [_risk(p) for p in plans]),
            Column("age", [_age(p) for p in plans], right=True),
            Column("also", [", ".join(c.other_places + c.aliases) for c in rows]),
        ]
    return fit(cols, None if wide else width, gap=2 if wide else 1)


THIN = "*"  # after a $/Mtok whose speed rests on thin data (RankedPlan.thin_data)


ESTIMATED = "~"  # before a $/h the catalog filled in (offer.price_estimate): never the headline


def _usd_h(p: RankedPlan) -> str:
    return (ESTIMATED if price_estimate(p.offer, p.market) else "") + f"{p.usd_per_hour:,.2f}"


def _mtok(m: float | None, p: RankedPlan) -> str:
    return "-" if m is None else f"{m:,.2f}" + (THIN if p.thin_data else "")


def _risk(p: RankedPlan) -> str:
    """AWS Spot Advisor bucket of a spot plan; ? when unknown (other clouds publish none)."""
    return "" if p.market != "spot" else (p.spot_interruption or "?")


def _age(p: RankedPlan) -> str:
    from provisioner.core.offer import price_age_days

    age = price_age_days(p.offer.prices_as_of)
    return "?" if age is None else f"{age}d"


def _tpot(p: RankedPlan) -> str:
    return "-" if p.perf is None else f"{p.perf.tpot_s * 1000:,.0f}"


def print_quote(
    result: QuoteResult,
    ch: Choices,
    *,
    echo: Echo,
    width: int | None,
    wide: bool,
    explain: bool,
    show_rejected: bool,
    all_zones: bool = False,
) -> None:
    spec, scheme, req = result.model, result.scheme, result.request
    from provisioner.core.request import workload_tokens

    table_echo = echo
    if width is not None and not wide:
        echo = _wrapping(echo, width)

    isl, osl, _ = workload_tokens(req)
    kv = "fp8" if result.kv_dtype_bytes == 1 else "bf16"
    load = slo_load_label(req) or (
        f"concurrency {req.concurrency}" if req.concurrency else "tok/s at saturation"
    )
    echo(f"{spec.id} {scheme.name}, ctx {ctx_label(req.ctx)} ({req.ctx:,} tokens), KV {kv}")
    echo(f"workload {isl}/{osl} tokens in/out, {load}; ranked by {req.objective}")
    for line in headline(ch):
        echo(line)
    if ch.rows:
        echo("")
        for line in choice_table(result, ch, width=width, wide=wide):
            table_echo(line)
        echo("")
        legend = f"@{ctx_label(req.ctx)} = concurrent {req.ctx:,}-token requests the KV cache holds"
        echo(legend + ("" if wide else "; od = on-demand"))  # --wide spells the market out
        if any(price_estimate(c.plan.offer, c.plan.market) for c in ch.rows):
            echo(f"{ESTIMATED} = price filled in by the catalog, not observed: never the headline")
        if any(c.plan.thin_data for c in ch.rows):
            echo(f"{THIN} = thin data: few or no published runs of this path; --json says which")
        echo(footer(result, ch, wide=wide, all_zones=all_zones))
    for reason, n in result.skipped_prices.items():
        echo(f"skipped {n} prices: {reason}")
    for note in result.notes:
        echo(f"note: {note}")
    if explain:
        from provisioner.core.explain import explain as explain_lines

        echo("")
        for line in explain_lines(result):
            echo(line)
    if show_rejected:
        echo("")
        for line in [*rejection_lines(result), "", *skipped_price_lines(result)]:
            echo(line)


def ranks_text(ranks: Sequence[int]) -> str:
    """[1, 2, 3, 7] -> '#1-#3, #7': rows as the table's # column and the headline name them."""
    runs: list[list[int]] = []  # [first, last] of each run of consecutive ranks
    for r in sorted(set(ranks)):
        if runs and runs[-1][1] == r - 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    return ", ".join(f"#{a}" if a == b else f"#{a}-#{b}" for a, b in runs)


def plan_warnings(plans: Sequence[RankedPlan]) -> list[str]:
    """Each distinct warning of the plans shown once, led by the rows it is about
    ('#1, #9: int4 MoE on ROCm: ...'), in the order the rows first raise it."""
    ranks: dict[str, list[int]] = {}
    for p in plans:
        for w in p.warnings:
            ranks.setdefault(w, []).append(p.rank)
    return [f"{ranks_text(r)}: {w}" for w, r in ranks.items()]


def footer(result: QuoteResult, ch: Choices, *, wide: bool, all_zones: bool) -> str:
    """How many rows of how many, the oldest price among them, and the flags that show more
    (only those not already given)."""
    what = "places (a choice at each region/zone)" if all_zones else "distinct choices"
    hints = [] if len(ch.rows) == ch.total else ["--top 0 for all"]
    if not all_zones:
        hints.append("--all-zones for every place")
    if not wide:
        hints.append("--wide for full names, TPOT, spot risk and price ages")
    text = (
        f"{len(ch.rows)} of {ch.total} {what}, oldest price shown "
        f"{result.prices_as_of or 'undated'}"
    )
    return text + (f"; {', '.join(hints)}" if hints else "")


def _wrapping(echo: Echo, width: int) -> Echo:
    """Prose lines wrapped to the width, continuation lines indented."""
    import textwrap

    def out(text: str) -> None:
        if len(text) <= width - 1:
            echo(text)
            return
        for line in textwrap.wrap(text, width - 1, subsequent_indent="  ", break_on_hyphens=False):
            echo(line)

    return out


def rejection_lines(result: QuoteResult) -> list[str]:
    """Rejections grouped by reason (numbers aside), most common first, with an example."""
    if not result.rejected:
        return ["rejected shapes: none"]
    by_reason: dict[str, list[dict[str, str]]] = {}
    for r in result.rejected:
        by_reason.setdefault(reason_kind(r["reason"]), []).append(r)
    lines = [f"rejected shapes: {len(result.rejected)}, by reason (--json lists each)"]
    for group in sorted(by_reason.values(), key=lambda g: -len(g)):
        lines.append(f"{len(group):6d}  {group[0]['reason']}")
        lines.append(f"        e.g. {group[0]['shape']}")
    return lines
