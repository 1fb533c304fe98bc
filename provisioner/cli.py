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

from provisioner import __version__
from provisioner.errors import NoFeasibleShapeError, ProvError

app = typer.Typer(
    name="prov",
    help="Cheapest cloud GPU shape that really runs a large LLM under vLLM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="The embedded model catalog.", no_args_is_help=True)
app.add_typer(models_app, name="models")

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


@app.command()
@boundary
def quote(
    model: str = typer.Option(
        ..., "--model", "-m", help="Catalog id or alias (kimi-k2-thinking), config.json or folder."
    ),
    quant: str = typer.Option(
        "auto",
        "--quant",
        "-q",
        help="auto (the checkpoint's own), bf16, fp16, fp8, int8, int4, nvfp4, mxfp4, "
        "or GGUF q2_k..q8_0/iq2_xxs (memory-only).",
    ),
    ctx: str = typer.Option(
        "32k", "--ctx", help="Longest request (max-model-len) to serve: 8192, 32k, 128k (k=1024)."
    ),
    kv_dtype: str = typer.Option("auto", "--kv-dtype", help="KV cache dtype: auto, bf16, fp8."),
    gpu_memory_utilization: float = typer.Option(
        0.9, "--gpu-memory-utilization", help="vLLM's fraction of GPU memory, in (0, 1]."
    ),
    max_num_batched_tokens: int = typer.Option(
        8192, "--max-num-batched-tokens", help="vLLM's prefill chunk; sizes the activation peak."
    ),
    concurrency: int | None = typer.Option(
        None,
        "--concurrency",
        help="Requests in flight that must fit in the KV cache (each --ctx tokens, or "
        "--isl + --osl when given); throughput is estimated at it. Default: one request must "
        "fit and tokens/s is estimated at saturation.",
    ),
    isl: int | None = typer.Option(None, "--isl", help="Input tokens per request (default 8000)."),
    osl: int | None = typer.Option(None, "--osl", help="Output tokens per request (default 1000)."),
    objective: str = typer.Option(
        "usd-per-mtok", "--objective", help="Rank by usd-per-mtok (output tokens) or usd-per-hour."
    ),
    max_tpot_ms: float | None = typer.Option(
        None, "--max-tpot-ms", help="Drop shapes slower than this per output token."
    ),
    max_ttft_s: float | None = typer.Option(
        None, "--max-ttft-s", help="Drop shapes whose time to first token exceeds this."
    ),
    min_output_tps: float | None = typer.Option(
        None, "--min-output-tps", help="Drop shapes below this many output tokens/s."
    ),
    dcp: int = typer.Option(1, "--dcp", help="Decode context parallel size (shards the MLA KV)."),
    max_nodes: int = typer.Option(4, "--max-nodes", help="Largest number of nodes to consider."),
    nodes: int | None = typer.Option(None, "--nodes", help="Exactly this many nodes."),
    market: str = typer.Option("any", "--market", help="spot, on-demand or any."),
    cloud: list[str] | None = typer.Option(None, "--cloud", help="Only these clouds (repeatable)."),
    region: list[str] | None = typer.Option(None, "--region", help="Only these regions/zones."),
    gpu: list[str] | None = typer.Option(None, "--gpu", help="Only these GPUs (H200, H100, L40S)."),
    max_interruption: int | None = typer.Option(
        None,
        "--max-interruption",
        help="Drop spot pools whose AWS advisor bucket can exceed N% interrupted per month.",
    ),
    risk_adjusted: bool = typer.Option(
        False,
        "--risk-adjusted",
        help="Rank spot plans by expected cost: price / availability, where reclaims x time to "
        "serve set the availability; see docs/recovery.md.",
    ),
    weights: str = typer.Option(
        "s3",
        "--weights",
        help="Where a replacement replica loads the weights from: s3 (in-region bucket, "
        "streamed), hub (Hugging Face download) or pvc (a pre-filled volume). Sets each plan's "
        "time_to_serve_s; see docs/recovery.md.",
    ),
    min_availability: float | None = typer.Option(
        None,
        "--min-availability",
        help="Drop spot plans whose reclaims (interruption rate x time to serve) leave them "
        "serving less than this share of the month, e.g. 0.99.",
    ),
    max_price_age: int = typer.Option(
        90, "--max-price-age", help="Warn when a price shown is older than N days."
    ),
    top: int = typer.Option(10, "--top", help="Show the N cheapest plans (0 = all)."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON plan contract."),
    explain: bool = typer.Option(False, "--explain", help="Show the memory arithmetic."),
    show_rejected: bool = typer.Option(False, "--show-rejected", help="List refused shapes."),
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
        help="tp: TP x PP only; dp-ep: data-parallel attention with expert parallelism "
        "(MoE; --data-parallel-size N --enable-expert-parallel); auto: rank both "
        "(docs/ep-dp-layouts.md).",
    ),
    compare_api: bool = typer.Option(
        False, "--compare-api", help="Compare with the hosted API price and show the break-even."
    ),
    prices: Path | None = typer.Option(
        None, "--prices", help="An offers.csv to use instead of the embedded snapshot."
    ),
) -> None:
    """Rank the GPU shapes that can serve MODEL at QUANT with CTX tokens, by $/Mtok or $/h."""
    from pricing.offers import current_offers, load_offers
    from pricing.price_dates import price_date_notes
    from provisioner.catalog import resolve_model
    from provisioner.planner import plan_quote, result_to_json
    from provisioner.quant import resolve_quant
    from provisioner.request import make_request, parse_tokens

    if market not in ("any", "spot", "on-demand"):
        raise_usage(f"unknown --market {market!r}; allowed: any, spot, on-demand")
    if max_price_age < 0:
        raise_usage(f"--max-price-age {max_price_age}: must be a number of days >= 0")
    req = make_request(
        model=model,
        quant=quant,
        ctx=parse_tokens(ctx),
        kv_dtype=kv_dtype.lower(),
        gpu_memory_utilization=gpu_memory_utilization,
        max_num_batched_tokens=max_num_batched_tokens,
        concurrency=concurrency,
        dcp=dcp,
        max_nodes=max_nodes,
        nodes=nodes,
        market=market,
        clouds=_split(cloud),
        regions=_split(region),
        gpus=_split(gpu),
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
        layout=layout,
    )
    spec = resolve_model(req.model)
    scheme = resolve_quant(req.quant, spec)
    offers = load_offers(prices) if prices else current_offers()
    result = plan_quote(req, spec, scheme, offers, collect_rejected=as_json or show_rejected)
    date_notes, stale = price_date_notes(
        [(p.offer.cloud, p.offer.prices_as_of, p.offer.flags) for p in result.plans],
        max_age_days=max_price_age,
        source=str(prices) if prices else None,
    )
    result.notes.extend(date_notes + (stale if as_json else []))
    for warning in stale:
        sys.stderr.write(f"prov: warning: {warning}\n")
    comparison = None
    if compare_api:
        from provisioner.breakeven import api_comparison

        comparison = api_comparison(result)
    if as_json:
        doc = result_to_json(result)
        if comparison is not None:
            doc["compare_api"] = comparison
        typer.echo(json.dumps(doc, indent=2))
    else:
        from provisioner.render import print_comparison, print_quote

        print_quote(result, explain=explain, show_rejected=show_rejected)
        if comparison is not None:
            print_comparison(comparison)
    if not result.plans:
        raise NoFeasibleShapeError(
            f"no offer can run {spec.id} at {scheme.name} with {req.ctx}-token requests "
            f"(concurrency {req.concurrency or 1}); see the rejections"
            + ("" if as_json or show_rejected else " with --show-rejected")
        )


def raise_usage(msg: str) -> None:
    from provisioner.errors import UsageError

    raise UsageError(msg)


@models_app.command("list")
@boundary
def models_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The embedded model configs with their sizes."""
    from provisioner.catalog import catalog_ids, resolve_model
    from provisioner.quant import native_scheme

    rows = []
    for mid in catalog_ids():
        s = resolve_model(mid)
        native = native_scheme(s)
        rows.append(
            {
                "id": mid,
                "family": s.family,
                "params_total": s.params_total,
                "params_active": s.params_active,
                "attention": s.attention,
                "layers": s.num_layers,
                "max_context": s.max_position_embeddings,
                "native_quant": native.name if native else s.dtype,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from provisioner.render import print_models

    print_models(rows)


@models_app.command("show")
@boundary
def models_show(
    model: str = typer.Argument(..., help="Catalog id, alias, config.json or snapshot folder."),
    quant: str = typer.Option("auto", "--quant", "-q", help="Quantization to size the weights."),
    kv_dtype: str = typer.Option("auto", "--kv-dtype", help="KV cache dtype: auto, bf16, fp8."),
    ctx: str = typer.Option("128k", "--ctx", help="Request length for the KV example."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Architecture, parameter counts, weight bytes by part and KV cache per token."""
    from provisioner.catalog import resolve_model
    from provisioner.explain import kv_lines, weight_lines
    from provisioner.memory import weights_total_bytes
    from provisioner.quant import kv_bytes, resolve_quant
    from provisioner.request import parse_tokens

    spec = resolve_model(model)
    scheme = resolve_quant(quant, spec)
    kvb = kv_bytes(kv_dtype, spec)
    tokens = parse_tokens(ctx)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "id": spec.id,
                    "family": spec.family,
                    "params_total": spec.params_total,
                    "params_active": spec.params_active,
                    "attention": spec.attention,
                    "layers": spec.num_layers,
                    "hidden_size": spec.hidden_size,
                    "heads": spec.num_heads,
                    "kv_heads": spec.num_kv_heads,
                    "max_context": spec.max_position_embeddings,
                    "quant": scheme.name,
                    "quant_label": scheme.label,
                    "bits_per_weight": scheme.bits,
                    "weight_bytes": int(weights_total_bytes(spec, scheme)),
                    "kv_bytes_per_token": spec.kv_bytes_per_token(kvb, 1),
                    "experts": None
                    if spec.moe is None
                    else {
                        "routed": spec.moe.n_routed_experts,
                        "per_token": spec.moe.experts_per_tok,
                        "shared": spec.moe.n_shared_experts,
                        "moe_layers": len(spec.moe.moe_layers),
                    },
                    "notes": list(spec.notes) + list(scheme.notes),
                    "source": spec.source,
                },
                indent=2,
            )
        )
        return
    typer.echo(
        f"{spec.id}  ({spec.family}, {spec.attention.upper()}, {spec.num_layers} layers, "
        f"max context {spec.max_position_embeddings:,})"
    )
    typer.echo(
        f"Parameters: {spec.params_total / 1e9:,.2f}B total, {spec.params_active / 1e9:,.2f}B "
        "active per token"
    )
    for line in weight_lines(spec, scheme) + kv_lines(spec, kvb, tokens):
        typer.echo(line)
    for note in (*spec.notes, *scheme.notes):
        typer.echo(f"Note: {note}")
    typer.echo(f"Source: {spec.source}")


from provisioner.cli_deploy import register as _register_deploy  # noqa: E402

_register_deploy(app)
from provisioner.cli_daemon import register as _register_daemon  # noqa: E402

_register_daemon(app)
from provisioner.cli_prices import register as _register_prices  # noqa: E402

_register_prices(app)
from provisioner.cli_fit import register as _register_fit  # noqa: E402

_register_fit(app)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
