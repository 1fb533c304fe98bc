"""`prov fit`: will one explicit shape start under vLLM? Registered on the main app by cli.py.

Exit 0 when it fits, 1 when it does not, 2 for bad input. Module level imports typer only.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from provisioner.cli.context_default import CTX_DEFAULT_HELP
from provisioner.core.vllm_rules import NEWEST_MODELLED, VLLM_VERSION

_NEWEST = ".".join(map(str, NEWEST_MODELLED))

_VERSION_HELP = (
    f"vLLM release whose memory rules apply (default: {VLLM_VERSION}, the one `prov deploy` "
    "runs). Rules by "
    "version: v0.10 sampler warm-up and NCCL inside the budget; v0.11 NCCL moves to the "
    "headroom; v0.11.2 FlashInfer sampler opt-in, default batched tokens capped at seqs x "
    "max_model_len; v0.12 gpt-oss on Hopper via triton for "
    "every install; v0.17 Triton top-k/top-p; v0.21 FlashInfer sampler default again and CUDA "
    "graphs estimated inside the budget; v0.26 16384 batched tokens from 160 GiB; v0.30 "
    "utilization default 0.92 "
    f"(docs/vllm-rules.md). A release newer than v{_NEWEST} gets the v{_NEWEST} rules and a "
    "warning."
)


def _usage(msg: str) -> None:
    from provisioner.errors import UsageError

    raise UsageError(msg)


def _pick_gpu(name: str) -> str:
    from provisioner.core.hardware import gpu_names, match_gpu

    found = match_gpu(name)
    if len(found) == 1:
        return found[0]
    if not found:
        _usage(f"unknown --gpu {name!r}; known: {', '.join(gpu_names())}")
    sxm = [n for n in found if n.endswith("-SXM")]
    if len(sxm) == 1:  # 'H200' means the SXM board unless the user says otherwise
        return sxm[0]
    _usage(f"--gpu {name!r} is ambiguous: {', '.join(found)}")
    raise AssertionError  # unreachable


def largest_node(gpu: str) -> int | None:
    """The most GPUs of this kind one rentable node has, in the offers `prov quote` ranks."""
    from pricing.offers import current_offers

    sizes = [o.gpus_per_node for o in current_offers() if o.gpu == gpu]
    return max(sizes) if sizes else None


def cheapest(gpu: str, gpus: int, tp: int) -> dict[str, Any]:
    """The cheapest rentable nodes for `gpus` GPUs of this kind, by market, from the offers
    `prov quote` uses (the embedded snapshot or a `prov prices refresh` cache), on quote's rules:
    TP inside a node, the fewest nodes the largest node allows (fit sizes one node's links), and
    several nodes only where the catalog declares a cluster fabric to join them (multi_node)."""
    from pricing.offers import current_offers
    from provisioner.core.offer import price_doubt, price_estimate

    offers = [o for o in current_offers() if o.gpu == gpu]
    fewest = min(gpus, max((o.gpus_per_node for o in offers), default=gpus))
    best: dict[str, Any] = {}
    for o in offers:
        if o.gpus_per_node < max(tp, fewest) or o.gpus_per_node % tp:
            continue
        nodes = -(-gpus // o.gpus_per_node)
        if nodes > 1 and not o.multi_node:  # a single machine: no cluster to join
            continue
        for market in ("on-demand", "spot"):
            price = o.price(market)
            if price is None or price_doubt(o, market):
                continue
            total = price * nodes
            estimate = price_estimate(o, market)  # as quote's headline: observed prices first
            if market not in best or (estimate is not None, total) < (
                best[market]["estimate"] is not None,
                best[market]["usd_per_hour"],
            ):
                best[market] = {
                    "usd_per_hour": round(total, 2),
                    "nodes": nodes,
                    "cloud": o.cloud,
                    "region": o.zone or o.region,
                    "instance_type": o.instance_type,
                    "gpus_per_node": o.gpus_per_node,
                    "fabric": o.fabric if nodes > 1 else None,
                    "prices_as_of": o.prices_as_of,
                    "estimate": estimate,
                }
    return best


def _price_lines(prices: dict[str, Any], res: Any) -> list[str]:
    if not prices:
        if res.tp_nodes > 1:  # cheapest() keeps TP inside a node, as quote does
            return [
                f"  price: no {res.request.gpu} node holds a TP{res.request.tp} group (the "
                f"largest has {res.request.node_gpus} GPUs); price the shape quote ranks instead"
            ]
        return ["  price: no rentable offer of this GPU in the price data"]
    return [
        f"  {market:9} ${p['usd_per_hour']:,.2f}/h: {p['nodes']} x {p['instance_type']} "
        f"({p['gpus_per_node']} GPUs{', ' + p['fabric'] if p['fabric'] else ''}) in "
        f"{p['cloud']} {p['region']}, priced {p['prices_as_of'] or 'undated'}"
        + (" (an estimate the catalog filled in, not observed)" if p["estimate"] else "")
        for market, p in prices.items()
    ]


def _gib(x: float) -> str:
    return f"{x / 1024**3:8.2f} GiB"


def _table(res: Any, explain: bool) -> list[str]:
    """The breakdown vLLM logs at start-up, per GPU of the poorest stage (80 columns)."""
    from provisioner.core.explain import kv_lines, weight_lines

    r, m, s = res.request, res.memory, res.settings
    where = f"{r.tp * r.dp * r.pp} x {r.gpu or 'GPU'}" + (f" ({res.device_gib:.2f} GiB per CUDA)")
    if res.tp_nodes > 1:
        where += f", TP across {res.tp_nodes} nodes"
    lines = [
        f"{r.spec.id} on {where}, vLLM {r.rules.label}",
        f"  {res.layout_label}, {res.scheme_label}",
        f"  KV {'fp8' if s.kv_bytes == 1 else 'bf16'}, max_model_len {r.ctx:,}, "
        f"max_num_seqs {s.max_num_seqs}, max_num_batched_tokens {s.max_num_batched_tokens}",
    ]
    if m is not None:
        w = m.worst
        graphs_note = "inside the budget (v0.21+)" if w.graphs_in_budget else "in the headroom"
        rows = [
            ("budget", w.budget, f"{s.gpu_memory_utilization:g} x {res.device_gib:.2f} GiB"),
            ("weights", max(st.weights for st in m.stages), "largest stage"),
            ("activation peak", w.activations, "profile run: forward or sampler"),
            ("non-torch", w.non_torch, "workspaces, all-reduce buffers"),
            ("CUDA graphs", w.cuda_graphs, graphs_note),
            (
                "KV cache",
                max(0.0, w.kv_pool),
                f"= {m.kv_cache_tokens:,} tokens"
                + (f" over {r.dp} DP ranks (each logs 1/{r.dp})" if r.dp > 1 else ""),
            ),
            ("outside budget", w.outside, "CUDA context, NCCL (+ graphs)"),
        ]
        lines += [f"  {k:16}{_gib(v)}  {note}" for k, v, note in rows]
        if r.dp == 1:
            lines.append(f"  max concurrency {m.max_concurrency:9.2f} x {r.ctx:,}-token requests")
        else:  # each engine holds only its own requests: vLLM logs the figure per DP rank
            lines.append(
                f"  max concurrency {res.concurrency_per_rank:9.2f} x {r.ctx:,}-token requests "
                f"per DP rank: {res.requests_per_rank} whole per rank, "
                f"{m.max_concurrent} on the {r.dp} ranks"
            )
        if r.pp > 1:
            for st in m.stages:
                lines.append(
                    f"  stage {st.stage}: layers {st.layers[0]}-{st.layers[1] - 1}, weights "
                    f"{st.weights / 1024**3:.2f} GiB, KV {max(0.0, st.kv_pool) / 1024**3:.2f} GiB"
                )
    lines.append(("FITS: " if res.fits else "DOES NOT FIT: ") + res.reason)
    if explain:
        from provisioner.core.vllm_rules import CHANGES

        lines += ["", *weight_lines(r.spec, r.scheme), ""]  # its first line says "Weights:"
        lines += kv_lines(r.spec, s.kv_bytes, r.ctx)
        lines += ["", f"vLLM rules applied (up to v{r.rules.label}):"]
        for c in CHANGES:
            if c.since <= r.rules.version:
                lines.append(f"  v{'.'.join(map(str, c.since))}: {c.what}")
                lines.append(f"      source: {c.source}")
        from provisioner.core.memory import sampler_bytes_per_logit

        n_rows = min(s.max_num_seqs, s.max_num_batched_tokens)
        per_logit = sampler_bytes_per_logit(r.rules, n_rows)
        lines.append(
            f"  sampler warm-up ({r.rules.sampler} path, {r.rules.install} install) {n_rows} "
            f"rows x {r.spec.vocab_size:,} vocab x {per_logit:g} B"
        )
    lines += [f"  note: {n}" for n in res.notes]
    return lines


def _wrap(lines: list[str]) -> list[str]:
    """80 columns: long lines continue under their own indent + 4."""
    import textwrap

    out: list[str] = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip()) + 4)
        out += textwrap.wrap(line, 80, subsequent_indent=indent) if len(line) > 80 else [line]
    return out


def register(app: typer.Typer) -> None:
    """Add `fit` to `app`, behind the CLI boundary."""
    from provisioner.cli.boundary import boundary

    @app.command()
    @boundary
    def fit(
        model: str = typer.Option(
            ..., "--model", "-m", help="Catalog id or alias, a config.json or a snapshot folder."
        ),
        gpu: str | None = typer.Option(
            None, "--gpu", help="GPU from the table (H200, H100-SXM, L40S, RTX4090 ...)."
        ),
        gpu_memory_gib: float | None = typer.Option(
            None,
            "--gpu-memory-gib",
            help="Device memory as CUDA reports it (torch's total), instead of the table's.",
        ),
        tp: int = typer.Option(1, "--tp", help="--tensor-parallel-size."),
        pp: int = typer.Option(1, "--pp", help="--pipeline-parallel-size (splits the layers)."),
        dcp: int = typer.Option(
            1, "--dcp", help="Decode context parallel size: shards KV tokens in the TP group."
        ),
        enable_expert_parallel: bool = typer.Option(
            False,
            "--enable-expert-parallel",
            help="Whole experts per rank: lifts the per-rank expert-width rules (fp8 block, "
            "Marlin MoE); same bytes per GPU with DP 1.",
        ),
        data_parallel_size: int = typer.Option(
            1,
            "--data-parallel-size",
            "-dp",
            help="vLLM --data-parallel-size: DP engines of TP x PP GPUs each, every one with "
            "its own KV cache; MoE experts split over TP x DP (whole with "
            "--enable-expert-parallel); a dense model's engines are independent copies. "
            "Memory is per GPU, KV tokens summed over DP.",
        ),
        ctx: str | None = typer.Option(
            None,
            "--ctx",
            help="vLLM --max-model-len: 8192, 32k, 128k (k=1024). " + CTX_DEFAULT_HELP,
        ),
        quant: str = typer.Option(
            "auto", "--quant", "-q", help="auto (the checkpoint's), bf16, fp8, int4, mxfp4 ..."
        ),
        kv_dtype: str = typer.Option("auto", "--kv-dtype", help="KV cache dtype: auto, bf16, fp8."),
        gpu_memory_utilization: float | None = typer.Option(
            None,
            "--gpu-memory-utilization",
            help="Fraction of device memory vLLM budgets (default 0.9; 0.92 from v0.30).",
        ),
        max_num_seqs: int | None = typer.Option(
            None,
            "--max-num-seqs",
            help="Default per vLLM's get_batch_defaults (v0.10+): 1024 on GPUs >= 70 GiB that "
            "are not A100, else 256, at most --max-num-batched-tokens. Sizes the sampler "
            "warm-up (seqs x vocab logits).",
        ),
        max_num_batched_tokens: int | None = typer.Option(
            None,
            "--max-num-batched-tokens",
            help="Default (v0.10+, vllm serve): 8192 on GPUs >= 70 GiB that are not A100, "
            "else 2048 (16384 from 160 GiB since v0.26); from v0.11.1 capped at "
            "max_num_seqs x --ctx. Sizes the forward activation peak.",
        ),
        enforce_eager: bool = typer.Option(
            False, "--enforce-eager", help="No CUDA graphs (their memory is then 0)."
        ),
        vllm_version: str | None = typer.Option(None, "--vllm-version", help=_VERSION_HELP),
        install: str = typer.Option(
            "image",
            "--install",
            help="image: the official vllm/vllm-openai image `prov deploy` runs (ships "
            "FlashInfer); pip: `pip install vllm` (no FlashInfer in the wheel before v0.12). "
            "Decides the auto sampler path.",
        ),
        sampler: str = typer.Option(
            "auto",
            "--sampler",
            help="Top-k/top-p path of the profile run's sampler warm-up: auto (the version's "
            "default for --install: FlashInfer v0.10-0.11.1 in the image and from v0.21, "
            "PyTorch otherwise), flashinfer (14 B per logit) or pytorch (sort: 38 B per "
            "logit; Triton masking from v0.17: 14 B); forcing a path is setting "
            "VLLM_USE_FLASHINFER_SAMPLER to 1 or 0.",
        ),
        mxfp4_backend: str = typer.Option(
            "auto",
            "--mxfp4-backend",
            help="gpt-oss MoE kernel on Hopper: auto (triton from v0.12, whose wheel bundles "
            "triton_kernels; marlin before), triton (an install that added triton_kernels) "
            "or marlin (VLLM_MXFP4_USE_MARLIN=1). Sets the experts' padding.",
        ),
        price: bool = typer.Option(
            False,
            "--price",
            help="Also show the cheapest nodes for this shape (on-demand and spot) from the "
            "prices `prov quote` uses; needs --gpu.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        explain: bool = typer.Option(
            False, "--explain", help="Also show the weight/KV arithmetic and the rules' sources."
        ),
    ) -> None:
        """Will MODEL start under vLLM on this GPU shape? The memory breakdown vLLM logs.

        Exit 0 when it fits, 1 when it does not, 2 for bad input.
        """
        from provisioner.cli.context_default import default_note, resolve_ctx
        from provisioner.core.catalog import resolve_model
        from provisioner.core.fit import FitRequest, evaluate
        from provisioner.core.quant import kv_bytes, resolve_quant
        from provisioner.core.vllm_rules import rules_for, with_paths

        for name, value, hi in (
            ("--tp", tp, 1024),
            ("--pp", pp, 1024),
            ("--dcp", dcp, 1024),
            ("--data-parallel-size", data_parallel_size, 1024),
        ):
            if not 1 <= value <= hi:
                _usage(f"{name} {value}: must be between 1 and {hi}")
        if gpu is None and gpu_memory_gib is None:
            _usage("give --gpu NAME or --gpu-memory-gib X (device memory as CUDA reports it)")
        if gpu_memory_gib is not None and not 0 < gpu_memory_gib <= 4096:
            _usage(f"--gpu-memory-gib {gpu_memory_gib:g}: must be in (0, 4096]")
        if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
            _usage(f"--gpu-memory-utilization {gpu_memory_utilization:g}: must be in (0, 1]")
        for name, v in (
            ("--max-num-seqs", max_num_seqs),
            ("--max-num-batched-tokens", max_num_batched_tokens),
        ):
            if v is not None and not 1 <= v <= 1 << 24:
                _usage(f"{name} {v}: must be between 1 and {1 << 24}")
        canonical = _pick_gpu(gpu) if gpu else None
        spec = resolve_model(model)
        scheme = resolve_quant(quant, spec)
        if scheme.engine != "vllm":
            _usage(f"--quant {quant}: a llama.cpp format; prov fit models vLLM only")
        length, ctx_defaulted = resolve_ctx(ctx, spec)
        res = evaluate(
            FitRequest(
                spec=spec,
                scheme=scheme,
                rules=with_paths(
                    rules_for(VLLM_VERSION if vllm_version is None else vllm_version),
                    install,
                    sampler,
                    mxfp4_backend,
                ),
                ctx=length,
                gpu=canonical,
                device_gib=gpu_memory_gib,
                tp=tp,
                pp=pp,
                dcp=dcp,
                expert_parallel=enable_expert_parallel,
                dp=data_parallel_size,
                kv_bytes=kv_bytes(kv_dtype, spec),
                gpu_memory_utilization=gpu_memory_utilization,
                max_num_seqs=max_num_seqs,
                max_num_batched_tokens=max_num_batched_tokens,
                enforce_eager=enforce_eager,
                node_gpus=largest_node(canonical) if canonical and tp > 1 else None,
            )
        )
        import sys

        for warning in res.warnings:
            sys.stderr.write("\n".join(_wrap([f"prov: warning: {warning}"])) + "\n")
        if price and canonical is None:
            _usage("--price needs --gpu (prices are per GPU model)")
        gpus = tp * data_parallel_size * pp
        prices = cheapest(canonical, gpus, tp) if price and canonical else None
        if as_json:
            doc = res.to_json()
            if ctx_defaulted:  # as the text's note
                doc["notes"].append(default_note(length, spec))
            if prices is not None:
                doc["prices"] = prices
            typer.echo(json.dumps(doc, indent=2))
        else:
            lines = _table(res, explain)
            if ctx_defaulted:
                lines.append(f"  note: {default_note(length, spec)}")
            lines += _price_lines(prices, res) if prices is not None else []
            typer.echo("\n".join(_wrap(lines)))
        if not res.fits:
            raise typer.Exit(1)
