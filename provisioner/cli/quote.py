"""`prov quote`: rank the shapes, fold them into distinct choices, print or write JSON.

Registered on the main app by provisioner.cli.main (the one boundary that maps errors to exits).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from provisioner.core.planner import RankedPlan


def concurrency_note(asked: int | None, plans: Sequence[RankedPlan]) -> str | None:
    """The note for a --concurrency above what vLLM batches (max_num_seqs per engine): the
    plans' JSON 'concurrency' is the batch they were estimated at; the rest of the requests
    wait in vLLM's queue, which neither tok/s nor the TTFT shown includes."""
    if asked is None:
        return None
    capped = [p.perf.batch for p in plans if p.perf and p.perf.batch < p.perf.requested_concurrency]
    batches = sorted(set(capped))
    if not batches:
        return None
    n = len(capped)
    sizes = ", ".join(f"{b:,}" for b in batches)
    return (
        f"--concurrency {asked:,} is more than vLLM batches: max_num_seqs caps the batch at "
        f"{sizes} requests in {n} of the {len(plans)} plans shown (--json 'concurrency'); the "
        "rest wait in vLLM's queue, so tok/s is at the capped batch and the TTFT shown "
        "excludes the wait"
    )


def register(app: typer.Typer) -> None:
    from pricing.price_dates import DEFAULT_MAX_PRICE_AGE_DAYS
    from provisioner.cli.boundary import boundary, raise_usage, split_values, warn
    from provisioner.cli.context_default import CTX_DEFAULT_HELP

    @app.command()
    @boundary
    def quote(
        model: str = typer.Option(
            ...,
            "--model",
            "-m",
            help="Catalog id or alias (kimi-k2-thinking), config.json or folder.",
        ),
        quant: str = typer.Option(
            "auto",
            "--quant",
            "-q",
            help="auto (the checkpoint's own), bf16, fp16, fp8, int8, int4, nvfp4, mxfp4, "
            "or GGUF q2_k..q8_0/iq2_xxs (memory-only).",
        ),
        ctx: str | None = typer.Option(
            None,
            "--ctx",
            help="Longest request (vLLM --max-model-len) to serve: 8192, 32k, 128k (k=1024). "
            + CTX_DEFAULT_HELP,
        ),
        kv_dtype: str = typer.Option("auto", "--kv-dtype", help="KV cache dtype: auto, bf16, fp8."),
        gpu_memory_utilization: float = typer.Option(
            0.9, "--gpu-memory-utilization", help="vLLM's fraction of GPU memory, in (0, 1]."
        ),
        max_num_batched_tokens: int | None = typer.Option(
            None,
            "--max-num-batched-tokens",
            help="vLLM's prefill chunk; sizes the activation peak. Default: vLLM's own for each "
            "shape's GPU, as in prov fit (v0.18: 2048 on A100s and GPUs under 70 GiB, else "
            "8192).",
        ),
        concurrency: int | None = typer.Option(
            None,
            "--concurrency",
            help="Requests in flight that must fit in the KV cache (each --ctx tokens, or "
            "--isl + --osl when given); throughput is estimated at it (with a latency SLO, at "
            "most at it). Default: one request must fit and tokens/s is estimated at "
            "saturation.",
        ),
        isl: int | None = typer.Option(
            None, "--isl", help="Input tokens per request (default 8000)."
        ),
        osl: int | None = typer.Option(
            None, "--osl", help="Output tokens per request (default 1000)."
        ),
        objective: str = typer.Option(
            "usd-per-mtok",
            "--objective",
            help="Rank by usd-per-mtok (output tokens) or usd-per-hour.",
        ),
        max_tpot_ms: float | None = typer.Option(
            None,
            "--max-tpot-ms",
            help="Latency SLO: ms per output token. Each shape is estimated and ranked at the "
            "largest batch (requests in flight, up to saturation or --concurrency) whose TPOT "
            "meets it (JSON 'concurrency'); shapes missing it at 1 request are dropped.",
        ),
        max_ttft_s: float | None = typer.Option(
            None,
            "--max-ttft-s",
            help="Latency SLO: time to first token in s (prefill plus one decode step at the "
            "batch; queueing not modelled), met at the largest batch as --max-tpot-ms; with "
            "both, the batch meets both.",
        ),
        min_output_tps: float | None = typer.Option(
            None,
            "--min-output-tps",
            help="Drop shapes below this many output tokens/s (with a latency SLO, at the "
            "SLO's batch).",
        ),
        dcp: int = typer.Option(
            1, "--dcp", help="Decode context parallel size (shards the MLA KV)."
        ),
        max_nodes: int = typer.Option(
            4, "--max-nodes", help="Largest number of nodes to consider."
        ),
        nodes: int | None = typer.Option(None, "--nodes", help="Exactly this many nodes."),
        market: str = typer.Option("any", "--market", help="spot, on-demand or any."),
        cloud: list[str] | None = typer.Option(
            None, "--cloud", help="Only these clouds (repeatable)."
        ),
        region: list[str] | None = typer.Option(None, "--region", help="Only these regions/zones."),
        gpu: list[str] | None = typer.Option(
            None, "--gpu", help="Only these GPUs (H200, H100, L40S) or vendors (nvidia, amd)."
        ),
        max_interruption: int | None = typer.Option(
            None,
            "--max-interruption",
            help="Drop spot pools whose AWS advisor bucket can exceed N% interrupted per month, "
            "and spot pools without a published rate (other clouds, unlisted types).",
        ),
        risk_adjusted: bool = typer.Option(
            False,
            "--risk-adjusted",
            help="Rank spot plans by expected cost: price / availability, where reclaims x time "
            "to serve set the availability; see docs/recovery.md.",
        ),
        weights: str = typer.Option(
            "s3",
            "--weights",
            help="Where a replacement replica loads the weights from: s3 (in-region bucket, "
            "streamed), hub (Hugging Face download) or pvc (a pre-filled volume). Sets each "
            "plan's time_to_serve_s; see docs/recovery.md.",
        ),
        min_availability: float | None = typer.Option(
            None,
            "--min-availability",
            help="Drop spot plans whose reclaims (interruption rate x time to serve) leave them "
            "serving less than this share of the month, e.g. 0.99.",
        ),
        max_price_age: int = typer.Option(
            DEFAULT_MAX_PRICE_AGE_DAYS,
            "--max-price-age",
            help="Warn when a price shown is older than N days.",
        ),
        top: int = typer.Option(
            10, "--top", help="Show the N cheapest distinct choices (0 = all)."
        ),
        all_zones: bool = typer.Option(
            False, "--all-zones", help="One row per region/zone instead of each choice's cheapest."
        ),
        wide: bool = typer.Option(
            False, "--wide", help="Full instance names, TPOT, deployability, dates; no width limit."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the JSON plan contract."),
        explain: bool = typer.Option(False, "--explain", help="Show the memory arithmetic."),
        show_rejected: bool = typer.Option(
            False, "--show-rejected", help="Refused shapes, grouped by reason with counts."
        ),
        cpu_offload_gb: float = typer.Option(
            0.0,
            "--cpu-offload-gb",
            help="vLLM --cpu-offload-gb: GiB of weights per GPU kept in host RAM and streamed over "
            "PCIe every step (what-if).",
        ),
        explore_splits: bool = typer.Option(
            False,
            "--explore-splits",
            help="Also rank smaller TP with PP inside a node by $/Mtok (default: TP = the node's "
            "GPUs, PP across nodes, smaller TP only when that does not fit).",
        ),
        layout: str = typer.Option(
            "auto",
            "--layout",
            help="tp: TP x PP only; dp (same as dp-ep): --data-parallel-size N engines, with "
            "--enable-expert-parallel for MoE, on one node for a dense model; auto: rank both "
            "(docs/ep-dp-layouts.md).",
        ),
        compare_api: bool = typer.Option(
            False,
            "--compare-api",
            help="Compare with the hosted API price and show the break-even.",
        ),
        prices: Path | None = typer.Option(
            None, "--prices", help="An offers.csv to use instead of the embedded snapshot."
        ),
    ) -> None:
        """Rank the GPU shapes that can serve MODEL at QUANT with CTX tokens, by $/Mtok or $/h.

        One line per distinct choice (cloud, hardware, nodes, TP x PP, market) at its
        cheapest place, under a headline naming the cheapest, the cheapest `prov deploy` can
        run and the cheapest on-demand choice.
        """
        from pricing.offer_filter import OfferFilter
        from pricing.offers import current_offers, load_offers
        from pricing.price_dates import price_date_notes
        from provisioner.cli.quote_empty import check_offers, empty_error, filtered
        from provisioner.core.catalog import resolve_model
        from provisioner.core.choices import choice_json, distinct_by, group, headline_json
        from provisioner.core.planner import plan_quote, result_to_json
        from provisioner.core.planner.estimates import slo_batch_note
        from provisioner.core.quant import resolve_quant
        from provisioner.core.request import make_request, parse_tokens

        if market not in ("any", "spot", "on-demand"):
            raise_usage(f"unknown --market {market!r}; allowed: any, spot, on-demand")
        if max_price_age < 0:
            raise_usage(f"--max-price-age {max_price_age}: must be a number of days >= 0")
        if explain and as_json:  # one output at a time; the JSON carries the same figures
            raise_usage("--explain prints text and --json the plan contract: use one of them")
        if ctx is None:  # the default depends on the model (its max_position_embeddings)
            from provisioner.cli.context_default import resolve_ctx

            ctx_tokens, ctx_defaulted = resolve_ctx(None, resolve_model(model))
        else:
            ctx_tokens, ctx_defaulted = parse_tokens(ctx), False
        req = make_request(
            model=model,
            quant=quant,
            ctx=ctx_tokens,
            kv_dtype=kv_dtype.lower(),
            gpu_memory_utilization=gpu_memory_utilization,
            max_num_batched_tokens=max_num_batched_tokens,
            concurrency=concurrency,
            dcp=dcp,
            max_nodes=max_nodes,
            nodes=nodes,
            market=market,
            clouds=split_values(cloud),
            regions=split_values(region),
            gpus=split_values(gpu),
            top=top,
            max_interruption=max_interruption,
            risk_adjusted=risk_adjusted,
            weights=weights.strip().lower(),
            min_availability=min_availability,
            isl=isl,
            osl=osl,
            objective=objective,
            max_tpot_ms=max_tpot_ms,
            max_ttft_s=max_ttft_s,
            min_output_tps=min_output_tps,
            cpu_offload_gb=cpu_offload_gb,
            explore_splits=explore_splits,
            layout="dp-ep" if layout == "dp" else layout,  # dp: the dense models' name
        )
        spec = resolve_model(req.model)
        scheme = resolve_quant(req.quant, spec)
        offers = load_offers(prices) if prices else current_offers()
        check_offers(
            offers, f"--prices {prices}" if prices else "the price snapshot", strict=bool(prices)
        )
        # a --cloud or --gpu no offer has, named as prices show names it (OCI: refresh first)
        OfferFilter(tuple(req.clouds), tuple(req.regions), tuple(req.gpus)).check_names(offers)
        # every ranked plan (top 0), so the grouping sees all places of a choice
        every = req.model_copy(update={"top": 0})
        result = plan_quote(
            every,
            spec,
            scheme,
            offers,
            collect_rejected=as_json or show_rejected,
            distinct=distinct_by(all_zones),
        )
        if not result.ranked:
            filtered(req, offers)  # a filter that matched nothing is named first
            if not result.rejected:
                result = plan_quote(every, spec, scheme, offers, collect_rejected=True)  # all
        result.request = req
        choices = group(result, offers, top=top)  # builds the plans of the choices shown
        result.plans = [c.plan for c in choices.rows]
        shown_dates = [p.offer.prices_as_of for p in result.plans if p.offer.prices_as_of]
        if result.plans:  # the oldest price shown, not of every place grouped (--all-zones)
            result.prices_as_of = min(shown_dates) if shown_dates else None
        date_notes, stale = price_date_notes(
            [(p.offer.cloud, p.offer.prices_as_of, p.offer.flags) for p in result.plans],
            max_age_days=max_price_age,
            source=str(prices) if prices else None,
        )
        result.notes.extend(date_notes + (stale if as_json else []))
        if ctx_defaulted:  # text and JSON: what the default is and what vLLM's own would be
            from provisioner.cli.context_default import default_note

            result.notes.insert(0, default_note(req.ctx, spec))
        capped = concurrency_note(req.concurrency, result.plans)
        slo_note = slo_batch_note(req, result.plans)  # the batch each SLO plan holds it at
        result.notes.extend(n for n in (capped, slo_note) if n)
        comparison = None
        if compare_api and result.plans:
            from provisioner.core.breakeven import api_comparison

            comparison = api_comparison(result, max_price_age)
        if as_json:
            doc = result_to_json(result)
            doc["plans"] = [choice_json(c) for c in choices.rows]
            doc["choices"] = choices.total
            doc["headline"] = headline_json(choices)
            doc["headline_plans"] = [choice_json(c) for c in choices.extra]
            if comparison is not None:
                doc["compare_api"] = comparison
            typer.echo(json.dumps(doc, indent=2))
        elif result.plans or show_rejected:
            from provisioner.cli.quote_view import print_quote
            from provisioner.cli.textable import terminal_width

            print_quote(
                result,
                choices,
                echo=typer.echo,
                width=terminal_width(),
                wide=wide,
                explain=explain,
                show_rejected=show_rejected,
                all_zones=all_zones,
            )
            if comparison is not None:
                from provisioner.cli.breakeven_view import print_comparison

                print_comparison(comparison)
        from provisioner.cli.quote_view import plan_warnings

        # after the rows they name; under --json a plan's warnings are in its `warnings` only
        for warning in [*stale, *([] if as_json else plan_warnings(result.plans))]:
            warn(warning)
        if not result.plans:
            raise empty_error(req, offers, result)
