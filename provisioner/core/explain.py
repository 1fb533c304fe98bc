"""`--explain`: the memory arithmetic of a quote, as plain lines a reviewer can check by hand."""

from __future__ import annotations

import textwrap
from collections import defaultdict

from provisioner.core.memory import GIB, MemorySettings, request_kv_bytes, weights_total_bytes
from provisioner.core.models import ModelSpec
from provisioner.core.perf_data import CURRENT_ERA, Calibration
from provisioner.core.planner import QuoteResult, RankedPlan
from provisioner.core.planner.estimates import weight_split
from provisioner.core.quant import QuantScheme

_KIND_LABEL = {
    "experts": "routed experts",
    "shared_experts": "shared experts",
    "dense_mlp": "dense MLP",
    "attn": "attention (sharded)",
    "attn_latent": "MLA down-projections (replicated)",
    "embed": "embeddings",
    "lm_head": "lm_head",
    "router": "routers",
    "norm": "norms/biases",
    "vision": "vision encoder",
}


def _gb(b: float) -> str:
    return f"{b / 1e9:,.1f} GB ({b / GIB:,.1f} GiB)"


def weight_lines(spec: ModelSpec, scheme: QuantScheme) -> list[str]:
    by_kind: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for g in spec.groups:
        row = by_kind[g.kind]
        row[0] += g.total_params
        row[1] += scheme.group_bytes(g)
        row[2] = scheme.bits if scheme.is_quantized(g) else 16.0
    total = weights_total_bytes(spec, scheme)
    lines = [f"Weights: {_gb(total)} as {scheme.label}"]
    for kind, (params, nbytes, bits) in sorted(by_kind.items(), key=lambda kv: -kv[1][1]):
        how = f"{bits:.4g} bits" if bits < 16 else "bf16"
        lines.append(
            f"  {_KIND_LABEL.get(kind, kind):34s} {params / 1e9:9.2f}B params x {how:>9s}"
            f" = {nbytes / 1e9:7.1f} GB"  # 79 columns
        )
    return lines


def kv_lines(spec: ModelSpec, kvb: int, ctx: int) -> list[str]:
    per_tok = spec.kv_bytes_per_token(kvb, 1)
    dtype = "fp8" if kvb == 1 else "bf16"
    if spec.mla is not None:
        width = spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim
        lines = [
            f"KV cache: MLA latent ({spec.mla.kv_lora_rank} + {spec.mla.qk_rope_head_dim}) x "
            f"{spec.num_layers} layers x {kvb} B ({dtype}) = {per_tok:,} B/token",
            "  vLLM does NOT shard the MLA latent over TP: every TP rank holds all of it; "
            "PP splits layers, DCP splits tokens",
        ]
        naive = 2 * spec.num_layers * spec.num_heads * spec.mla.v_head_dim * kvb
        lines.append(
            f"  (an MHA formula, 2 x layers x {spec.num_heads} heads x {spec.mla.v_head_dim} x "
            f"{kvb} B = {naive:,} B/token, overstates it {naive / per_tok:.0f}x: only "
            f"{width} values per layer are cached)"
        )
    else:
        lines = [
            f"KV cache: {spec.attention.upper()} 2 (K,V) x {spec.num_layers} layers x "
            f"{spec.num_kv_heads} KV heads x {spec.head_dim} x {kvb} B ({dtype}) = "
            f"{per_tok:,} B/token, split over TP (replicated once TP > {spec.num_kv_heads})"
        ]
        windows = {w for w in spec.layer_windows if w}
        if windows:
            n = sum(1 for w in spec.layer_windows if w)
            lines.append(
                f"  {n} of {spec.num_layers} layers use a {min(windows)}-token window: "
                "they hold at most window + one batch of tokens"
            )
    one = request_kv_bytes(spec, 0, spec.num_layers, 1, 1, ctx, MemorySettings(kv_bytes=kvb))
    lines.append(f"  one {ctx:,}-token request = {one / 1e9:,.2f} GB over all layers (one TP rank)")
    return lines


def plan_lines(plan: RankedPlan, result: QuoteResult) -> list[str]:
    v, o = plan.verdict, plan.offer
    m = v.memory
    assert m is not None
    req = result.request
    lines = [
        f"Plan #{plan.rank}: {v.nodes} x {o.instance_type} ({o.gpus_per_node} x {o.gpu}, "
        f"{o.gpu_memory_gib:g} GiB each) in {o.cloud} {o.zone or o.region}, {plan.market}, "
        f"${plan.usd_per_hour:,.2f}/h",
        f"  {plan.layout_label}"
        + (" (per DP rank below)" if v.dp > 1 else "")
        + f": {v.tp * v.dp * v.pp} GPUs; layers per stage "
        + ", ".join(f"{s.layers[0]}-{s.layers[1] - 1}" for s in m.stages),
    ]
    from provisioner.core.hardware import gpu_specs
    from provisioner.core.planner.shape_rules import label_on

    runs_as = label_on(result.scheme, gpu_specs().get(o.gpu))
    if runs_as != result.scheme.label:  # e.g. fp8 on an A100: weight-only, as fit says
        lines.append(f"  runs as {runs_as}")
    for s in m.stages:
        tokens = s.kv_pool / s.kv_bytes_per_token if s.kv_bytes_per_token else 0
        req_b = m.request_bytes_per_stage[s.stage]
        lines += [
            f"  stage {s.stage} (per GPU): budget {req.gpu_memory_utilization:g} x "
            f"{s.device / GIB:.1f} GiB = {s.budget / GIB:.1f} GiB",
            f"    weights      {s.weights / GIB:8.2f} GiB",
            f"    activations  {s.activations / GIB:8.2f} GiB (profile run of "
            f"{v.max_num_batched_tokens} tokens + sampler)",
            f"    overhead     {s.overhead / GIB:8.2f} GiB (non-torch buffers; + CUDA graphs "
            "from vLLM v0.21)",
            f"    KV pool      {s.kv_pool / GIB:8.2f} GiB = {int(tokens):,} tokens at "
            f"{s.kv_bytes_per_token:,.0f} B/token",
            f"    one request  {req_b / GIB:8.2f} GiB -> {int(s.kv_pool // req_b) if req_b else 0} "
            f"x {req.ctx:,} tokens",
            f"    outside budget {s.outside / GIB:.2f} GiB (CUDA context, NCCL, graphs < v0.21); "
            f"free {s.free / GIB:.2f} GiB",
        ]
    lines.append(
        f"  => KV cache {m.kv_cache_tokens:,} tokens (the poorest stage caps all), "
        f"{m.max_concurrent} concurrent {req.ctx:,}-token requests"
    )
    return lines


def tts_lines(plan: RankedPlan, result: QuoteResult) -> list[str]:
    """A replacement replica's time to serve, term by term, and the other weight paths."""
    from provisioner.core.time_to_serve import WEIGHTS_PATHS, Replica, time_to_serve

    tts = plan.tts
    if tts is None:
        return []
    lines = [f"  Time to serve a replacement replica (--weights {tts.path}):"]
    for t in tts.terms:
        lines.append(f"    {t.name:<16}{t.seconds:5.0f} s  {t.detail}")
    lines.append(
        f"    = {tts.total_s:,.0f} s ({tts.total_s / 60:.1f} min); startup probe: "
        f"max(600, 2 x {tts.container_s:.0f} s) = {tts.startup_probe_budget_s} s"
    )
    o, v = plan.offer, plan.verdict
    replica = Replica(o.cloud, o.instance_type, o.gpus_per_node, o.vcpus, weight_split(v),
                      weights_total_bytes(result.model, result.scheme),
                      result.model.moe is not None)  # fmt: skip
    others = [
        f"{p} {time_to_serve(replica, p).total_s / 60:.1f} min"
        for p in WEIGHTS_PATHS
        if p != tts.path
    ]
    lines.append(f"    other paths: {', '.join(others)} (sources: docs/recovery.md)")
    return lines


def risk_lines(plan: RankedPlan, result: QuoteResult) -> list[str]:
    """What reclaims cost this plan: time to serve x interruption rate (pricing/expected_cost)."""
    r = plan.reclaim
    lines = [
        "  Reclaims: lost/month = nodes x -ln(1 - p) x time to serve (0 if within the notice)",
        "    availability = 1 - lost / 720 h; expected $/h = price / availability",
    ]
    if r is None:
        return [*lines, f"    plan #{plan.rank} is {plan.market}: not reclaimed"]
    lines.append(f"    p: {r.basis}")
    if not r.known:
        return lines
    price = plan.usd_per_hour
    lines += [
        f"    {r.nodes} node(s) x {r.rate_per_node_hour * 720:.4f}/month = "
        f"{r.interruptions_per_month:.4f} reclaims/month, each",
        f"      {r.downtime_s:,.0f} s down (the {r.tts.total_s:,.0f} s to serve "
        + ("exceed" if r.downtime_s else "fit in")
        + f" the {r.notice_s:g} s notice): {r.lost_hours_per_month * 60:.2f} min/month lost",
        f"    availability {r.availability:.6f}; expected ${price:,.4f} / {r.availability:.6f} = "
        f"${r.expected_usd_per_hour(price):,.4f}/h",
    ]
    alt = r.alternatives(price, plan.ondemand_usd_per_hour())
    pair = alt["n_plus_1"]
    od = alt["on_demand_floor"]
    lines += [
        f"    alternatives: N+1 or a warm spare ${pair['usd_per_hour']:,.2f}/h "
        f"(availability {pair['availability']:.8f}),",
        "      on-demand floor "
        + (f"${od['usd_per_hour']:,.2f}/h (availability 1.0)" if od else "not offered"),
    ]
    return lines


def perf_lines(plan: RankedPlan) -> list[str]:
    """The decode step breakdown of a plan (provisioner/core/perf.py has the formulas)."""
    e = plan.perf
    if e is None:
        return ["  throughput: not estimated (llama.cpp memory-only plan)"]
    st, v, cal = e.stage, plan.verdict, e.calibration
    lo, hi = e.interval(e.output_tps)
    mtok = plan.usd_per_hour / (e.output_tps * 3600) * 1e6
    head = f"  Throughput, {e.batch} requests in flight, {v.layout.label}" + (
        f" (one rank of {v.dp})" if v.dp > 1 else ""
    )
    tail = " (slowest stage, per step):"
    lines = [head + tail] if len(head + tail) <= 80 else [head, f"   {tail}"]
    if e.requested_concurrency > e.batch:
        lines.append(f"    ({e.requested_concurrency} asked: vLLM's max_num_seqs caps the batch)")
    lines.append(
        f"    memory  {st.memory_s * 1e3:8.2f} ms  {st.bytes_read / 1e9:.2f} GB/GPU: experts "
        "touched, weights, KV"
    )
    if e.arch != "dense":
        lines.append(
            f"             experts: {st.expert_fraction:.0%} touched, {st.tokens_per_expert:.1f} "
            f"tokens each, grouped GEMM at {cal.moe_eff if cal else 1:.0%}"
        )
    lines += [
        f"    compute {st.compute_s * 1e3:8.2f} ms  {st.flops / 1e12:.2f} TFLOP/GPU in "
        f"{e.compute_dtype}",
        f"    comm    {st.comm_s * 1e3:8.2f} ms  "
        + (
            "TP all-reduces, 2 per layer"
            if v.dp == 1 or not v.ep  # dense DP ranks are independent engines
            else "all-to-all per MoE layer, TP all-reduces, DP barrier"
        ),
        f"    floor   {st.floor_s * 1e3:8.2f} ms  per-layer floor, {e.arch} class"
        + (f", {cal.layer_us:.0f} us/layer" if cal else ""),
    ]
    if st.moe_route_s:
        lines.append(f"    routing {st.moe_route_s * 1e3:8.2f} ms  MoE routing/permute per token")
    if e.offload_s:
        lines.append(f"    offload {e.offload_s * 1e3:8.2f} ms  --cpu-offload-gb weights over PCIe")
    lines += [
        f"    step    {e.step_s * 1e3:8.2f} ms  = max(memory, compute) + comm + floor + routing,",
        f"                         x PP, + hand-offs {e.handoff_s * 1e3:.2f} + overhead "
        f"{e.overhead_s * 1e3:.2f} ms",
    ]
    if cal is not None:
        lines.append(
            f"    factors  {cal.family}: HBM {cal.hbm_eff:.0%} of peak, GEMM {cal.gemm_eff:.0%}, "
            f"prefill {cal.prefill_eff:.0%}" + ("" if cal.calibrated else " (not calibrated)")
        )
        lines.append(
            f"             prefill attention {cal.attn_prefill_eff:.0%} of bf16 peak; <16-bit "
            f"weights {cal.lowbit_mem_eff:.0%} of HBM"
        )
        if e.arch != "dense" and cal.moe_scale != 1.0:
            lines.append(f"             {cal.family} fused-MoE kernels x{cal.moe_scale:.2f}")
        lines.append(era_line(cal))
    ms = 1e3
    lines += [
        f"  Prefill {e.prefill_s * ms:,.0f} ms/request; chunked prefill hides "
        f"{e.prefill_hidden:.0%} in memory-bound steps",
        f"  TPOT {e.tpot_s * ms:,.2f} ms = step {e.step_s * ms:,.2f} + others' prefill chunks "
        f"{(e.tpot_s - e.step_s) * ms:,.2f} ms per token",
        f"  TTFT {e.ttft_s * ms:,.1f} ms (no queueing) = prefill {e.prefill_s * ms:,.1f} + "
        f"all-reduces {e.prefill_comm_s * ms:,.1f}",
        f"       + a step at the batch {e.step_s * ms:,.1f} + floor {e.ttft_floor_s * ms:,.1f} ms",
    ]
    if cal is not None and cal.prefill_layer_us:
        lines.append(
            f"       (floor: {cal.prefill_layer_us:,.0f} us/layer for eager launches, API, "
            "scheduling; fitted)"
        )
    lines.append(
        f"  {e.output_tps:,.0f} output tok/s = ${mtok:.2f}/Mtok at ${plan.usd_per_hour:,.2f}/h"
    )
    if e.band_info is not None:
        b = e.band_info
        lines += [
            f"  band {lo:,.0f}-{hi:,.0f} tok/s (x/÷ {1 + e.band:.2f}, {b.regime}"
            + (", THIN DATA" if b.thin else "")
            + "):",
            *textwrap.wrap(b.basis, 80, initial_indent=" " * 7, subsequent_indent=" " * 7),
        ]
    return lines


def era_line(cal: Calibration) -> str:
    """The engine-era term (perf_data.engine_era): none for the current engine prov deploys."""
    if cal.era == CURRENT_ERA:
        return "    engine   current (vLLM V1): CPU scheduling overlaps the GPU, no era term"
    return (
        f"    engine   {cal.era}: CPU {cal.era_step_ms:.1f} ms/schedule + "
        f"{cal.era_seq_us:.0f} us/seq/schedule, kernels x{cal.era_kernel:.2f}"
    )


def explain(result: QuoteResult) -> list[str]:
    spec, scheme = result.model, result.scheme
    lines = [
        f"Model: {spec.id} ({spec.family}): {spec.params_total / 1e9:,.1f}B params, "
        f"{spec.params_active / 1e9:,.1f}B active, {spec.attention.upper()}, "
        f"{spec.num_layers} layers",
        *weight_lines(spec, scheme),
        *kv_lines(spec, result.kv_dtype_bytes, result.request.ctx),
    ]
    if result.best is not None:
        from provisioner.core.layout_explain import layout_lines

        lines += plan_lines(result.best, result)
        lines += perf_lines(result.best)
        lines += layout_lines(result)
        lines += tts_lines(result.best, result)
        lines += risk_lines(result.best, result)
    lines += [f"Note: {n}" for n in result.notes]
    return lines
