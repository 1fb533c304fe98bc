"""`prov models list` and `prov models show`: the embedded catalog.

Registered on the main app by provisioner.cli.main (the one boundary that maps errors to exits).
"""

from __future__ import annotations

import json
from typing import Any

import typer


def model_aliases(model_id: str) -> list[str]:
    """The short names --model also accepts for this id (lower-case name after the org)."""
    from provisioner.core.catalog import _aliases

    return sorted(a for a, mid in _aliases().items() if mid == model_id and a != mid.lower())


def model_lines(rows: list[dict[str, Any]], width: int | None) -> list[str]:
    """Whole ids and aliases, one line per model when the width allows, else the aliases on
    a line of their own under each id (never cut: they are what --model takes)."""
    from provisioner.cli.textable import Column, fit

    def cols(with_alias: bool) -> list[Column]:
        out = [Column("id", [r["id"] for r in rows])]
        if with_alias:
            out.append(Column("alias", [", ".join(r["aliases"]) or "-" for r in rows]))
        return [
            *out,
            Column("total", [f"{r['params_total'] / 1e9:,.1f}B" for r in rows], right=True),
            Column("active", [f"{r['params_active'] / 1e9:,.1f}B" for r in rows], right=True),
            Column("attn", [r["attention"] for r in rows], drop_priority=1),
            Column("max ctx", [ctx_label(r["max_context"]) for r in rows], right=True),
            Column("native", [r["native_quant"] for r in rows]),
        ]

    from provisioner.cli.quote_view import ctx_label

    lines = fit(cols(True), None)
    if width is None or max(map(len, lines)) < width:
        return lines
    table = fit(cols(False), width - 1, gap=1)
    out = [table[0]]
    for r, line in zip(rows, table[1:], strict=True):
        out.append(line)
        if r["aliases"]:
            out.append(f"  alias: {', '.join(r['aliases'])}")
    return out


def register(app: typer.Typer) -> None:
    from provisioner.cli.boundary import boundary
    from provisioner.cli.context_default import CTX_DEFAULT_HELP

    models_app = typer.Typer(help="The embedded model catalog.", no_args_is_help=True)
    app.add_typer(models_app, name="models")

    @models_app.command("list")
    @boundary
    def models_list(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
        """The embedded model configs with their sizes."""
        from provisioner.core.catalog import catalog_ids, resolve_model
        from provisioner.core.quant import native_scheme

        rows = []
        for mid in catalog_ids():
            s = resolve_model(mid)
            native = native_scheme(s)
            rows.append(
                {
                    "id": mid,
                    "aliases": model_aliases(mid),
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
        from provisioner.cli.textable import terminal_width

        for line in model_lines(rows, terminal_width()):
            typer.echo(line)

    @models_app.command("show")
    @boundary
    def models_show(
        model: str = typer.Argument(..., help="Catalog id, alias, config.json or snapshot folder."),
        quant: str = typer.Option(
            "auto", "--quant", "-q", help="Quantization to size the weights."
        ),
        kv_dtype: str = typer.Option("auto", "--kv-dtype", help="KV cache dtype: auto, bf16, fp8."),
        ctx: str | None = typer.Option(
            None, "--ctx", help="Request length for the KV example. " + CTX_DEFAULT_HELP
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Architecture, parameter counts, weight bytes by part and KV cache per token."""
        from provisioner.cli.context_default import default_note, resolve_ctx
        from provisioner.core.catalog import resolve_model
        from provisioner.core.explain import kv_lines, weight_lines
        from provisioner.core.memory import weights_total_bytes
        from provisioner.core.quant import kv_bytes, resolve_quant

        spec = resolve_model(model)
        scheme = resolve_quant(quant, spec)
        kvb = kv_bytes(kv_dtype, spec)
        tokens, ctx_defaulted = resolve_ctx(ctx, spec)
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
        from provisioner.cli.textable import terminal_width, wrap_lines

        notes = [*spec.notes, *scheme.notes]
        if ctx_defaulted:
            notes.append(default_note(tokens, spec))
        lines = [
            f"{spec.id}  ({spec.family}, {spec.attention.upper()}, {spec.num_layers} layers, "
            f"max context {spec.max_position_embeddings:,})",
            f"Parameters: {spec.params_total / 1e9:,.2f}B total, {spec.params_active / 1e9:,.2f}B "
            "active per token",
            *weight_lines(spec, scheme),
            *kv_lines(spec, kvb, tokens),
            *(f"Note: {note}" for note in notes),
            f"Source: {spec.source}",
        ]
        for line in wrap_lines(lines, terminal_width()):  # 80 columns in a pipe
            typer.echo(line)
