"""Throughput model: each formula against hand arithmetic, properties, ranking, break-even."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from bench_modules import load_benchmark
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pricing.offers_csv import COLUMNS, parse_offers
from provisioner.cli.main import app
from provisioner.core.breakeven import api_price_for, break_even
from provisioner.core.catalog import resolve_model
from provisioner.core.hardware import gpu_specs
from provisioner.core.models import ModelSpec
from provisioner.core.perf import (
    Workload,
    _stage_weights,
    arch_class,
    compute_dtype,
    decode_stage,
    estimate,
)
from provisioner.core.perf_data import band_for, calibration_data, calibration_for, intra_link
from provisioner.core.planner import plan_quote
from provisioner.core.quant import resolve_quant
from provisioner.core.request import make_request

H200 = gpu_specs()["H200-SXM"]


def kimi_int4(spec: ModelSpec):
    return resolve_quant("int4", spec)


def test_experts_touched_and_bytes_read_single_token(kimi_thinking: ModelSpec) -> None:
    q = kimi_int4(kimi_thinking)
    (sw,) = _stage_weights(kimi_thinking, q, 8, 1)
    experts = 384 * 3 * 7168 * 2048 * 60 * 4.5 / 8  # routed experts, int4 g32
    embed = 163840 * 7168 * 2  # looked up, not streamed
    replicated = (7168 * (512 + 64 + 1536) * 61 + (384 * 7168 + 384) * 60) * 2
    sharded_other = 594.2e9 - experts - embed - replicated
    assert sw.expert_bytes == pytest.approx(experts / 8, rel=1e-6)
    assert sw.other_bytes == pytest.approx(sharded_other / 8 + replicated, rel=0.01)
    cal = calibration_for(H200, arch="mla_moe")
    link = intra_link(H200, "nvlink")
    step = decode_stage(kimi_thinking, q, H200, cal, sw, 8, 1, 0.0, 2, link)
    # one token touches 8 of 384 experts per layer
    assert step.bytes_read == pytest.approx(sw.expert_bytes * 8 / 384 + sw.other_bytes)
    # int4 weights stream through dequantising kernels at lowbit_mem_eff of the HBM rate, and
    # routed experts at the grouped GEMM's share of that
    bw = 4.8e12 * cal.hbm_eff * cal.lowbit_mem_eff
    expected = sw.other_bytes / bw + sw.expert_bytes * 8 / 384 / (bw * cal.moe_eff)
    assert step.memory_s == pytest.approx(expected)
    assert step.tokens_per_expert == pytest.approx(1.0)


def test_batch_touches_more_experts_and_reads_kv(kimi_thinking: ModelSpec) -> None:
    q = kimi_int4(kimi_thinking)
    (sw,) = _stage_weights(kimi_thinking, q, 8, 1)
    cal, link = calibration_for(H200, arch="mla_moe"), intra_link(H200, "nvlink")
    b, ctx = 32, 9000.0
    step = decode_stage(kimi_thinking, q, H200, cal, sw, 8, b, ctx, 2, link)
    touched = 1 - (1 - 8 / 384) ** 32  # E (1 - (1 - k/E)^B) / E
    kv = 32 * 9000 * 61 * 576 * 2  # B x context x MLA latent bytes, not split by TP
    assert step.bytes_read == pytest.approx(sw.expert_bytes * touched + sw.other_bytes + kv)
    # compute on bf16 tensor cores (W4A16): 2 x dense active params x B + attention, plus each
    # touched expert's GEMM padded by the fitted tile pad: 2 x params x (tokens each + pad)
    attn = 32 * 9000 * 61 * 4 * (64 // 8) * 576
    experts_active = sw.expert_params * 8 / 384
    per_expert = 32 * 8 / (384 * touched)
    grouped = 2 * sw.expert_params * touched * (per_expert + cal.moe_tok_half)
    dense = 2 * (sw.active_params - experts_active) * 32
    assert step.flops == pytest.approx(dense + attn + grouped)
    assert step.compute_s == pytest.approx(step.flops / (989e12 * cal.gemm_eff))
    assert step.moe_route_s == pytest.approx(cal.moe_tok_ns * 1e-9 * 32 * 8 * 60)
    # TP8 all-reduce: 2 per layer, latency + ring volume 2 (n-1)/n x B x hidden x 2 bytes
    per = link.latency_us * 1e-6 + 2 * 7 / 8 * (32 * 7168 * 2) / (link.gbps * 1e9)
    assert step.comm_s == pytest.approx(2 * 61 * per)


def test_low_bit_weights_stream_slower_than_bf16_and_kv_does_not() -> None:
    """lowbit_mem_eff slows only sub-16-bit weight reads: bf16 weights and the KV cache keep the
    full HBM fraction (hand arithmetic on Llama-3.1-8B, one token, TP1)."""
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    data = json.loads(json.dumps(calibration_data()))
    data["software"]["lowbit_mem_eff"] = 0.5
    cal = calibration_for(H200, data=data)
    link = intra_link(H200, "nvlink")
    bw = 4.8e12 * cal.hbm_eff
    kv = 1000 * 32 * 2 * 8 * 128 * 2  # context x layers x (K, V) x kv heads x head_dim x bf16
    for name, slow in (("bf16", 1.0), ("fp8", 0.5)):
        q = resolve_quant(name, spec)
        (sw,) = _stage_weights(spec, q, 1, 1)
        step = decode_stage(spec, q, H200, cal, sw, 1, 1, 1000.0, 2, link)
        assert step.memory_s == pytest.approx(sw.other_bytes / (bw * slow) + kv / bw)


def test_prefill_attention_runs_in_bf16_at_its_own_share() -> None:
    """Prefill = linear FLOPs at the format's peak x prefill_eff + causal attention FLOPs at the
    bf16 peak x attn_prefill_eff (hand arithmetic: Llama-3.1-8B FP8, 8,000-token prompt, H100)."""
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    q = resolve_quant("fp8", spec)
    h100 = gpu_specs()["H100-SXM"]
    data = json.loads(json.dumps(calibration_data()))
    data["software"]["attn_prefill_eff"] = 0.5
    cal = calibration_for(h100, data=data)
    assert cal.attn_prefill_eff == pytest.approx(data["hardware"]["hopper"]["gemm"] * 0.5)
    e = estimate(
        spec,
        q,
        h100,
        tp=1,
        pp=1,
        gpus_per_node=8,
        interconnect="nvlink",
        fabric="efa",
        workload=Workload(8000, 100, 1),
        data=data,
    )
    # linear FLOPs, hand count of Llama-3.1-8B (hidden 4096, 32 layers, 32 q / 8 kv heads of 128,
    # MLP 14336, vocab 128256): per layer q, o 4096^2 each, k, v 4096 x 1024 each, MLP 3 x 4096
    # x 14336, plus two 4096 norms; the lm_head (128256 x 4096) only for the last prompt token
    per_layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    head = 128256 * 4096
    flops = 2 * 32 * per_layer * 8000 + 2 * head
    linear = flops / (1979e12 * cal.prefill_eff)  # FP8 tensor cores
    attn = 2 * (32 * 8000 * 8000 / 2) * 32 * 256  # pairs x heads x (qk + pv widths) x 2
    assert e.prefill_s == pytest.approx(linear + attn / (989e12 * cal.attn_prefill_eff))


def test_lm_head_sits_on_the_last_stage_once_per_rank() -> None:
    """The lm_head (vocab x hidden, split by TP) is on the last PP stage only: the prefill takes
    it once per request (vLLM computes logits at each request's last position), decode per token
    (Llama-3.1-8B: 128256 x 4096)."""
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    q = resolve_quant("bf16", spec)
    first, last = _stage_weights(spec, q, 2, 2)
    assert first.head_params == 0
    assert last.head_params == pytest.approx(128256 * 4096 / 2)
    assert last.other_bytes - first.other_bytes == pytest.approx(128256 * 4096 * 2 / 2)


def test_pipeline_overlaps_stages_only_with_enough_micro_batches(kimi_thinking: ModelSpec) -> None:
    q = kimi_int4(kimi_thinking)
    h100 = gpu_specs()["H100-SXM"]
    common = dict(tp=8, pp=2, gpus_per_node=8, interconnect="nvlink", fabric="efa")
    one = estimate(kimi_thinking, q, h100, workload=Workload(1000, 100, 1), **common)
    two = estimate(kimi_thinking, q, h100, workload=Workload(1000, 100, 2), **common)
    # one request walks both stages in turn; two requests keep both stages busy, so a step
    # serves twice the tokens in about the same time
    assert two.output_tps > 1.6 * one.output_tps
    cal = calibration_for(h100)
    assert one.handoff_s >= cal.multinode_pp_ms / 1000  # one node boundary crossed


def test_l40s_is_cheaper_per_hour_but_dearer_per_mtok(kimi_thinking: ModelSpec) -> None:
    rows = [
        ",".join(COLUMNS),
        "nebius,eu-north1,,h200x8,H200-SXM,8,141,128,1600,nvlink,infiniband,,14.00,2026-05-01,",
        "aws,us-east-2,use2-az1,g6e.48xlarge,L40S,8,44.7,192,1536,pcie,efa,,3.00,,",
    ]
    offers = list(parse_offers("\n".join(rows)))
    q = kimi_int4(kimi_thinking)

    def best(objective: str) -> str:
        req = make_request(
            model=kimi_thinking.id,
            ctx=131072,
            isl=8000,
            osl=1000,
            concurrency=32,
            objective=objective,
            top=1,
        )
        plan = plan_quote(req, kimi_thinking, q, offers).best
        assert plan is not None
        return plan.offer.gpu

    # 3 x $3.00 = $9/h for 24 L40S beats $14/h for 8 H200 ...
    assert best("usd-per-hour") == "L40S"
    # ... but PCIe all-reduces and 0.86 TB/s GDDR6 make each token dearer
    assert best("usd-per-mtok") == "H200-SXM"


def test_break_even_by_hand() -> None:
    api = api_price_for("moonshotai/kimi-k2-thinking")
    assert api is not None and (api.input_usd_per_mtok, api.output_usd_per_mtok) == (0.6, 2.5)
    be = break_even(api, usd_per_hour=8.87, output_tps=800.0, isl=8000, osl=1000, market="spot")
    per_request = (8000 * 0.60 + 1000 * 2.50) / 1e6  # $0.0073
    assert be.breakeven_requests_per_day == pytest.approx(8.87 * 24 / per_request)
    assert be.capacity_requests_per_day == pytest.approx(800 * 86400 / 1000)
    assert be.api_usd_per_mtok_blended == pytest.approx(per_request / 9000 * 1e6)
    assert be.self_host_wins_at_capacity  # 29,162/day < 69,120/day


def test_slo_filters_reject_with_a_reason(kimi_thinking: ModelSpec) -> None:
    rows = [
        ",".join(COLUMNS),
        "nebius,eu-north1,,h200x8,H200-SXM,8,141,128,1600,nvlink,infiniband,28.0,,,",
    ]
    offers = list(parse_offers("\n".join(rows)))
    req = make_request(model=kimi_thinking.id, ctx=32768, max_tpot_ms=1.0, max_nodes=1)
    res = plan_quote(req, kimi_thinking, kimi_int4(kimi_thinking), offers)
    assert res.plans == []
    assert any("TPOT" in r["reason"] for r in res.rejected)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    bw=st.floats(1.0, 3.0),
    batch=st.integers(1, 128),
    model_id=st.sampled_from(
        [
            "moonshotai/Kimi-K2-Thinking",
            "meta-llama/Llama-3.1-70B",
            "Qwen/Qwen3-235B-A22B",
            "openai/gpt-oss-120b",
        ]
    ),
)
def test_more_bandwidth_never_lowers_throughput(bw: float, batch: int, model_id: str) -> None:
    spec = resolve_model(model_id)
    q = resolve_quant("auto", spec)
    faster = dataclasses.replace(H200, hbm_tbps=H200.hbm_tbps * bw)
    kw = dict(
        tp=8,
        pp=1,
        gpus_per_node=8,
        interconnect="nvlink",
        fabric="efa",
        workload=Workload(2000, 500, batch),
    )
    assert estimate(spec, q, faster, **kw).output_tps >= estimate(spec, q, H200, **kw).output_tps


@settings(max_examples=25, deadline=None, derandomize=True)
@given(batch=st.integers(1, 256), pp=st.sampled_from([1, 2, 3]))
def test_concurrency_never_drops_below_single_stream(batch: int, pp: int) -> None:
    spec = resolve_model("moonshotai/Kimi-K2-Thinking")
    q = kimi_int4(spec)
    kw = dict(tp=8, pp=pp, gpus_per_node=8, interconnect="nvlink", fabric="infiniband")
    single = estimate(spec, q, H200, workload=Workload(4000, 500, 1), **kw)
    many = estimate(spec, q, H200, workload=Workload(4000, 500, batch), **kw)
    assert many.total_tps >= single.total_tps * (1 - 1e-9)


def test_quote_cli_ranks_by_mtok_and_compares_the_api() -> None:
    args = [
        "quote",
        "--model",
        "moonshotai/Kimi-K2-Thinking",
        "--quant",
        "int4",
        "--ctx",
        "128k",
        "--isl",
        "8000",
        "--osl",
        "1000",
        "--concurrency",
        "32",
        "--compare-api",
    ]
    res = CliRunner().invoke(app, [*args, "--json", "--top", "5"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    mtok = [p["usd_per_mtok"] for p in doc["plans"]]
    assert mtok == sorted(mtok) and all(p["tokens_per_s"] > 0 for p in doc["plans"])
    lo, hi = doc["plans"][0]["tokens_per_s_band"]
    assert lo < doc["plans"][0]["tokens_per_s"] < hi
    band = doc["plans"][0]["perf_band"]
    assert lo == pytest.approx(doc["plans"][0]["tokens_per_s"] / (1 + band), abs=0.1)
    assert isinstance(doc["plans"][0]["perf_band_thin_data"], bool)
    assert doc["plans"][0]["perf_band_basis"]
    cmp = doc["compare_api"]
    assert cmp["api"]["provider"] == "Novita AI"
    assert set(cmp["markets"]) == {"spot", "on-demand"}
    text = CliRunner().invoke(app, [*args, "--top", "3"])
    assert text.exit_code == 0 and "break-even" in text.stdout


def test_hosted_price_age_is_counted_and_flagged_like_cloud_prices() -> None:
    """A hosted price "as of 2025-11" counts from 2025-11-01 (the oldest it can be): on
    2026-11-30 that is 30 + 365 - 1 = 394 days, past the quote's 90-day --max-price-age."""
    from datetime import date

    from provisioner.core.breakeven import price_age_days

    assert price_age_days("2025-11", date(2026, 11, 30)) == 394
    assert price_age_days("2026-05-20", date(2026, 5, 30)) == 10
    assert price_age_days("soon", date(2026, 5, 30)) is None
    args = ["quote", "-m", "kimi-k2-thinking", "--ctx", "128k", "--compare-api", "--top", "1"]
    doc = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)["compare_api"]
    assert doc["api"]["price_age_days"] > 90 and "check its current price" in doc["note"]
    fresh = json.loads(
        CliRunner().invoke(app, [*args, "--json", "--max-price-age", "5000"]).stdout
    )["compare_api"]
    assert "note" not in fresh


def test_accuracy_benchmark_completes_and_writes_its_table(tmp_path: Path) -> None:
    bench = Path(__file__).parents[1] / "benchmarks" / "accuracy.py"
    out = tmp_path / "accuracy.md"
    # the two sets share no source: the held-out set checks, it never fits
    cal = json.loads(bench.with_name("throughput_refs.json").read_text())["refs"]
    held = json.loads(bench.with_name("throughput_heldout.json").read_text())["refs"]
    held += json.loads(bench.with_name("throughput_heldout_aic.json").read_text())["refs"]
    cal_sources = {r["source"] for r in cal} | {r["source_id"] for r in cal}
    assert not cal_sources & ({r["source"] for r in held} | {r["source_group"] for r in held})
    run = subprocess.run(
        [sys.executable, str(bench), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    # every calibration run is in a table, or in the not-modelled list with its reason
    assert all(f"| {r['id']} |" in text or f"- {r['id']}: " in text for r in cal)
    assert "Calibration (fitted): by group" in text and "Held-out (never fitted): by group" in text
    assert "| family hopper |" in text and "| metric tpot_ms |" in text  # accuracy is reported
    assert "Held-out 2: aiconfigurator" in text  # the second held-out set, reported apart
    assert "Check set: session 6's runs" in text  # collected, predicted, not fitted


def test_cpu_offload_what_if(kimi_thinking: ModelSpec) -> None:
    rows = [
        ",".join(COLUMNS),
        "aws,us-east-1,use1-az1,p5.48xlarge,H100-SXM,8,80,192,2048,nvlink,efa,98.32,,,",
        "vast,x,,8x-H100,H100-SXM,8,80,32,64,nvlink,ethernet,20.0,,,",
    ]
    offers = list(parse_offers("\n".join(rows)))
    q = kimi_int4(kimi_thinking)

    def quote(gb: float):
        req = make_request(
            model=kimi_thinking.id,
            ctx=131072,
            max_nodes=1,
            cpu_offload_gb=gb,
            objective="usd-per-hour",
        )
        return plan_quote(req, kimi_thinking, q, offers)

    assert quote(0).plans == []  # Kimi int4 does not fit one 8 x H100 node
    res = quote(10)
    (plan,) = res.plans  # 10 GiB per GPU in host RAM makes it fit, on the p5 only:
    assert plan.offer.instance_type == "p5.48xlarge"
    # the 64 GiB host cannot hold 8 x 10 GiB + the 32 GiB reserve
    assert any("host RAM" in r["reason"] and r["instance_type"] == "8x-H100" for r in res.rejected)
    assert "--cpu-offload-gb" in plan.vllm_args
    assert plan.perf is not None
    # every GPU streams its 10 GiB over PCIe Gen5 (~50 GB/s) each step: >= 0.2 s per stage
    assert plan.perf.offload_s >= plan.verdict.pp * 10 * 2**30 / 50e9 * 0.99
    assert plan.perf.tpot_s > plan.perf.offload_s


def test_compute_dtype_follows_the_gpu_not_the_format() -> None:
    specs = gpu_specs()
    oss = resolve_model("openai/gpt-oss-120b")
    mxfp4 = resolve_quant("auto", oss)
    fp8 = resolve_quant("fp8", resolve_model("meta-llama/Llama-3.1-70B"))
    # FP4 tensor cores exist on Blackwell only: Hopper and MI300X run MXFP4 as W4A16 in bf16
    assert compute_dtype(specs["B200"], mxfp4) == "fp4"
    assert compute_dtype(specs["H100-SXM"], mxfp4) == "bf16"
    assert compute_dtype(specs["MI300X"], mxfp4) == "bf16"
    # FP8 math needs Ada/Hopper (SM 8.9+) or CDNA3; Ampere runs FP8 weight-only (Marlin)
    assert compute_dtype(specs["H100-SXM"], fp8) == "fp8"
    assert compute_dtype(specs["L40S"], fp8) == "fp8"
    assert compute_dtype(specs["MI300X"], fp8) == "fp8"
    assert compute_dtype(specs["A100-80GB-SXM"], fp8) == "bf16"


def test_layer_floor_and_family_factors_come_from_the_data() -> None:
    data = calibration_data()
    assert arch_class(resolve_model("moonshotai/Kimi-K2-Thinking")) == "mla_moe"
    assert arch_class(resolve_model("openai/gpt-oss-120b")) == "moe"
    assert arch_class(resolve_model("meta-llama/Llama-3.1-70B")) == "dense"
    a100 = gpu_specs()["A100-80GB-SXM"]
    amp = data["families"]["ampere"]
    for arch in ("mla_moe", "moe", "dense"):
        moe = amp.get("moe_scale", 1.0) if arch != "dense" else 1.0  # MoE kernels: own factor
        assert calibration_for(a100, arch=arch).layer_us == pytest.approx(
            data["software"]["layer_us"][arch] / (amp["scale"] * moe)
        )
    # each family's ceiling is its own measured fraction (microbenchmarks), not Hopper's
    hw, sw = data["hardware"], data["software"]
    for gpu, fam in (("A100-80GB-SXM", "ampere"), ("MI300X", "cdna3"), ("H100-SXM", "hopper")):
        cal = calibration_for(gpu_specs()[gpu])
        scale = data["families"][fam]["scale"]
        assert cal.hbm_eff == pytest.approx(min(1.0, hw[fam]["hbm"] * sw["mem_eff"] * scale))
        assert cal.gemm_eff == pytest.approx(min(1.0, hw[fam]["gemm"] * sw["compute_eff"] * scale))
    assert hw["cdna3"]["gemm"] != hw["hopper"]["gemm"]


def test_max_num_seqs_caps_the_batch() -> None:
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    q = resolve_quant("bf16", spec)
    kw = dict(tp=1, pp=1, gpus_per_node=8, interconnect="nvlink", fabric="efa")
    capped = estimate(spec, q, H200, workload=Workload(500, 500, 2000), max_num_seqs=256, **kw)
    at_cap = estimate(spec, q, H200, workload=Workload(500, 500, 256), max_num_seqs=256, **kw)
    assert capped.batch == 256 and capped.requested_concurrency == 2000
    assert capped.output_tps == pytest.approx(at_cap.output_tps)


def test_chunked_prefill_hides_only_the_others_prefill() -> None:
    spec = resolve_model("meta-llama/Llama-3.1-70B")
    q = resolve_quant("fp8", spec)
    kw = dict(tp=4, pp=1, gpus_per_node=8, interconnect="nvlink", fabric="efa")

    def run(conc: int, chunked: bool):
        return estimate(
            spec, q, H200, workload=Workload(2000, 500, conc), chunked_prefill=chunked, **kw
        )

    # one request: its own prefill comes before its decode whatever the scheduler does
    assert run(1, True).output_tps == pytest.approx(run(1, False).output_tps)
    # 8 requests: decode steps are memory-bound, so the others' prefill chunks ride in their
    # compute slack instead of being added serially
    mixed, serial = run(8, True), run(8, False)
    assert mixed.prefill_hidden > 0 and serial.prefill_hidden == 0
    assert mixed.output_tps > serial.output_tps
    # cycle arithmetic by hand: 8 x 500 tokens over 500 steps + the prefill not hidden
    cycle = 8 * 500 / mixed.output_tps
    hidden = mixed.prefill_hidden * 8 * mixed.prefill_s
    assert cycle == pytest.approx(8 * 500 / serial.output_tps - hidden, rel=1e-6)


def test_band_says_thin_data_where_there_are_no_runs() -> None:
    l40s = gpu_specs()["L40S"]  # no L40S run; the Ada family's (L4) come from one source
    band = band_for(l40s, 32)
    assert band.thin and band.rel >= 0.5
    # a family with no band of its own (no runs at all): the default, thin
    data = copy.deepcopy(calibration_data())
    del data["bands"]["ada"]
    none = band_for(l40s, 32, data)
    assert none.thin and none.rel == data["bands"]["_default"]["rel"]
    h200 = band_for(H200, 32)
    assert h200.regime == "throughput" and band_for(H200, 1).regime == "latency"
    est = estimate(
        resolve_model("meta-llama/Llama-3.1-8B"),
        resolve_quant("bf16", resolve_model("meta-llama/Llama-3.1-8B")),
        l40s,
        tp=1,
        pp=1,
        gpus_per_node=8,
        interconnect="pcie",
        fabric="efa",
        workload=Workload(1000, 200, 32),
    )
    lo, hi = est.interval(100.0)
    assert lo == pytest.approx(100 / (1 + est.band)) and hi == pytest.approx(100 * (1 + est.band))


def test_explain_prints_every_term_and_they_add_up() -> None:
    from provisioner.core.explain import perf_lines

    rows = [
        ",".join(COLUMNS),
        "nebius,eu-north1,,h200x8,H200-SXM,8,141,128,1600,nvlink,infiniband,,14.00,2026-05-01,",
    ]
    spec = resolve_model("openai/gpt-oss-120b")
    req = make_request(  # TP x PP terms (DP/EP layouts: tests/test_layouts.py)
        model=spec.id, ctx=32768, isl=2000, osl=500, concurrency=5000, top=1, layout="tp"
    )
    res = plan_quote(req, spec, resolve_quant("auto", spec), list(parse_offers("\n".join(rows))))
    plan = res.best
    assert plan is not None and plan.perf is not None
    e, st = plan.perf, plan.perf.stage
    text = "\n".join(perf_lines(plan))
    assert all(len(line) <= 80 for line in text.splitlines()), text
    for term in ("memory", "compute", "comm", "floor", "routing", "experts:", "Prefill", "band"):
        assert term in text
    assert "max_num_seqs caps the batch" in text  # 5,000 asked, vLLM batches at most 1,024
    assert e.batch <= 1024
    # TP1 x PP1: step = max(memory, compute) + comm + floor + routing + overhead
    if plan.verdict.pp == 1:
        parts = max(st.memory_s, st.compute_s) + st.comm_s + st.floor_s + st.moe_route_s
        assert e.step_s == pytest.approx(parts + e.overhead_s + e.handoff_s)
    assert "bf16" in text  # MXFP4 on Hopper computes in bf16
    # the TTFT's fitted per-layer floor is a line of its own, with the fitted value
    cal = e.calibration
    assert cal is not None and f"floor: {cal.prefill_layer_us:,.0f} us/layer" in text
    # TPOT and TTFT are printed as sums of their terms, which add up (review9 #10: TTFT hid
    # the decode step it includes, TPOT its share of others' prefills)
    ms = 1e3
    assert f"TPOT {e.tpot_s * ms:,.2f} ms = step {e.step_s * ms:,.2f} + others' prefill " in text
    assert f"chunks {(e.tpot_s - e.step_s) * ms:,.2f} ms per token" in text
    assert e.ttft_s == pytest.approx(e.prefill_s + e.prefill_comm_s + e.step_s + e.ttft_floor_s)
    assert e.ttft_floor_s == pytest.approx(spec.num_layers * cal.prefill_layer_us * 1e-6)
    flat = " ".join(text.split())
    assert (
        f"TTFT {e.ttft_s * ms:,.1f} ms (no queueing) = prefill {e.prefill_s * ms:,.1f} + "
        f"all-reduces {e.prefill_comm_s * ms:,.1f} + a step at the batch {e.step_s * ms:,.1f} + "
        f"floor {e.ttft_floor_s * ms:,.1f} ms"
    ) in flat


# a benchmark row of the accuracy harness: Llama-3.1-8B on one H100
BENCH_ROW = {
    "id": "X",
    "model": "meta-llama/Llama-3.1-8B",
    "quant": "bf16",
    "engine": "vllm",
    "gpu": "H100-SXM",
    "tp": 1,
    "pp": 1,
    "isl": 258,
    "osl": 348,
    "concurrency": 100,
    "num_prompts": 100,
    "metric": "output_tps",
    "value": 5000.0,
}


def test_accuracy_harness_says_what_it_does_not_model() -> None:
    acc = load_benchmark("accuracy")
    row = {**BENCH_ROW, "notes": "100 ShareGPT requests at once"}
    # a variable-length burst's throughput is set by its longest requests: not modelled
    assert "ShareGPT" in (acc.not_modelled(row) or "")
    # its single-request TPOT does not depend on the length mix: modelled
    assert acc.not_modelled({**row, "metric": "tpot_ms", "concurrency": 1}) is None
    # TTFT under load is queueing; only the idle (concurrency 1) TTFT is predicted
    assert "queueing" in (acc.not_modelled({**row, "metric": "ttft_ms", "notes": ""}) or "")
    assert acc.not_modelled({**row, "quant": "mxfp8"}) is not None
    # all 100 requests start together: nothing decodes while their prefills run
    assert acc._one_wave(row, 100) and not acc._one_wave({**row, "num_prompts": 1000}, 100)
    # vLLM's default batch cap: 1024 on >= 70 GiB GPUs other than A100, else 256
    specs = gpu_specs()
    assert acc.default_max_num_seqs("vllm", specs["H100-SXM"]) == 1024
    assert acc.default_max_num_seqs("vllm", specs["A100-80GB-SXM"]) == 256
    assert acc.default_max_num_seqs("vllm", specs["L40S"]) == 256
    # the V0 engine's (< 0.8) was 256 on every GPU (EngineArgs.max_num_seqs = 256 in 0.6/0.7)
    assert acc.default_max_num_seqs("vllm", specs["H100-SXM"], "vllm-v0") == 256
    # a run's stated KV cache (its startup log's "GPU KV cache size") caps what is in flight
    spec, gpu = acc._spec(row["model"], None), specs["H100-SXM"]
    stated = {**row, "num_prompts": 1000, "concurrency": None, "kv_cache_tokens": 10 * 1152}
    assert acc._concurrency({**stated, "isl": 1024, "osl": 128}, spec, gpu, 2)[0] == 10


def test_a_run_s_cached_setup_is_keyed_by_every_field_it_is_read_from() -> None:
    # the fit reads a run's setup (batch, era, scheduling) once; a run that differs in any of
    # those fields gets its own, even under the same id
    acc = load_benchmark("accuracy")
    row = {**BENCH_ROW, "engine_version": "0.11.0", "num_prompts": 640}
    acc.predict(row, {})
    older = {**row, "engine_version": "0.6.3", "concurrency": 1}
    cached = acc.predict(older, {})[0]
    acc._SETUP.clear()
    assert cached == acc.predict(older, {})[0]


def test_explain_of_a_dp_ep_plan_fits_80_columns() -> None:
    from provisioner.core.explain import perf_lines

    rows = [
        ",".join(COLUMNS),
        "nebius,eu-north1,,h200x8,H200-SXM,8,141,128,1600,nvlink,infiniband,,14.00,2026-05-01,",
    ]
    spec = resolve_model("openai/gpt-oss-120b")
    req = make_request(
        model=spec.id, ctx=32768, isl=2000, osl=500, concurrency=5000, top=1, layout="dp-ep"
    )
    res = plan_quote(req, spec, resolve_quant("auto", spec), list(parse_offers("\n".join(rows))))
    assert res.best is not None and res.best.verdict.dp > 1
    text = "\n".join(perf_lines(res.best))
    assert "all-to-all per MoE layer" in text and "DP barrier" in text
    assert all(len(line) <= 80 for line in text.splitlines()), text
