"""Latency SLOs (--max-tpot-ms, --max-ttft-s) are met at each shape's largest batch that meets
them (review9 #1), not only tested at saturation; the batch is the plan's 'concurrency'."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pricing.offers import load_offers
from pricing.offers_csv import COLUMNS, parse_offers
from provisioner.cli.main import app
from provisioner.core.catalog import resolve_model
from provisioner.core.hardware import gpu_specs
from provisioner.core.layouts import Layout
from provisioner.core.perf import PerfEstimate, Workload
from provisioner.core.perf_ep import estimate_layout
from provisioner.core.planner import plan_quote
from provisioner.core.planner.estimates import host_link_gbps, slo_batch
from provisioner.core.quant import resolve_quant
from provisioner.core.request import make_request

H100 = gpu_specs()["H100-SXM"]
ONE_H100 = "aws,us-east-1,use1-az1,p5.4xlarge,H100-SXM,1,80,16,256,nvlink,efa,6.88,,,"
LLAMA_8B = "meta-llama/Llama-3.1-8B"


def one_h100_quote(**slo: float) -> tuple[object, object]:
    """Llama-3.1-8B bf16 on one H100, a 16-token prompt and 20,000 output tokens: the decode
    step is memory-bound and the prefill's share of a step is ~1e-5 of it."""
    spec = resolve_model(LLAMA_8B)
    scheme = resolve_quant("bf16", spec)
    offers = list(parse_offers(",".join(COLUMNS) + "\n" + ONE_H100))
    req = make_request(model=spec.id, quant="bf16", ctx=32768, isl=16, osl=20000, **slo)
    return plan_quote(req, spec, scheme, offers), spec


def test_tpot_by_hand_on_one_h100_and_the_largest_batch_meeting_it() -> None:
    # Hand derivation (perf.py's docstring, TP1 PP1, bf16, memory-bound decode):
    #   TPOT(B) = step(B) = (W + B x ctx x kv) / (HBM x hbm_eff)
    #                      + layers x layer_us + step_overhead + B x seq_overhead
    # W: the weights a step reads, from Llama-3.1-8B's config.json (hidden 4096, 32 layers,
    # 32 heads / 8 KV heads of 128, MLP 14336, vocab 128256, untied lm_head; the embedding is
    # a lookup, not read): per layer q,o 4096^2 + k,v 4096 x 1024 + MLP 3 x 4096 x 14336 + two
    # norms 2 x 4096 = 218,112,000 params; x 32 + lm_head 128256 x 4096 = 7,504,920,576 params
    # x 2 bytes. kv = 2 (K, V) x 8 heads x 128 x 2 bytes x 32 layers = 131,072 B per token;
    # ctx = the cached tokens a decode step reads on average = 16 + 20000 / 2 = 10,016.
    # HBM 3.35 TB/s (NVIDIA H100 SXM datasheet); hbm_eff and the floors are the packaged
    # calibration's (provisioner/data/perf_calibration.json), read from the plan's estimate.
    res, _ = one_h100_quote()
    (plan,) = res.plans[:1]
    cal = plan.perf.calibration
    assert cal is not None
    weights = 32 * (2 * 4096**2 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096) + 128256 * 4096
    assert weights == 7_504_920_576
    bw = 3.35e12 * cal.hbm_eff
    a = 2 * weights / bw + 32 * cal.layer_us * 1e-6 + cal.step_overhead_ms / 1000
    c = 10016 * 131072 / bw + cal.seq_overhead_us * 1e-6

    def tpot(b: int) -> float:
        return a + c * b

    sat = plan.perf.batch  # without an SLO: saturation (KV cache / max_num_seqs)
    assert sat >= 12
    assert plan.perf.tpot_s == pytest.approx(tpot(sat), rel=1e-3)  # the derivation holds
    # a limit halfway between the hand TPOT at 7 and at 8 requests: the answer is 7
    limit_ms = (tpot(7) + tpot(8)) / 2 * 1000
    res, _ = one_h100_quote(max_tpot_ms=limit_ms)
    p = res.plans[0]
    assert p.perf.batch == 7
    assert p.perf.tpot_s == pytest.approx(tpot(7), rel=1e-3)
    assert p.perf.tpot_s * 1000 <= limit_ms
    # tok/s and $/Mtok are the served batch's: 7 requests x 20,000 tokens per cycle
    assert p.perf.output_tps < plan.perf.output_tps
    assert p.to_json()["concurrency"] == 7
    # TTFT alone: the idle TTFT at B includes one decode step at B (perf.py), so it rises too
    limit_s = (plan.perf.ttft_s + p.perf.ttft_s) / 2
    res2, _ = one_h100_quote(max_ttft_s=limit_s)
    b = res2.plans[0].perf.batch
    assert 7 < b < sat and res2.plans[0].perf.ttft_s <= limit_s


def _estimate(spec, scheme, v, fabric: str, isl: int, osl: int, kvb: int, b: int) -> PerfEstimate:
    """The public estimate of a plan's shape at batch b, as the planner makes it."""
    gpu = gpu_specs()[v.hw.gpu]
    est, _ = estimate_layout(
        spec, scheme, gpu, v.layout, gpus_per_node=v.hw.gpus_per_node,
        interconnect=v.hw.interconnect, fabric=fabric, workload=Workload(isl, osl, b),
        kv_bytes=kvb, max_num_seqs=v.max_num_seqs,
        max_num_batched_tokens=v.max_num_batched_tokens, pcie_gbps=host_link_gbps(gpu),
    )  # fmt: skip
    return est


@pytest.mark.parametrize("limit_ms", [50.0, 100.0])
def test_the_reviewers_kimi_slo_is_met_at_each_rows_batch_and_not_one_more(
    limit_ms: float,
) -> None:
    # review9 #1: `prov quote -m kimi-k2-thinking --ctx 128k --max-tpot-ms 50` answered
    # 4xB200 at $11.35/Mtok, the only shapes meeting 50 ms at saturation; prov's own model
    # gives 8xMI300X at 32 in flight 43.7 ms and $3.53/Mtok (the reviewer's --concurrency 32)
    spec = resolve_model("moonshotai/Kimi-K2-Thinking")
    scheme = resolve_quant("int4", spec)
    req = make_request(model=spec.id, quant="int4", ctx=131072, max_tpot_ms=limit_ms, top=10)
    res = plan_quote(req, spec, scheme, list(load_offers()), collect_rejected=False)
    best = res.plans[0]
    mtok = best.usd_per_hour / (best.perf.output_tps * 3600) * 1e6
    assert mtok < 3.53  # cheaper than the reviewer's hand-picked batch of 32 (at 50 ms)
    assert not (best.offer.gpu == "B200" and best.offer.gpus_per_node == 4)
    kvb = 2  # Kimi's KV dtype auto = bf16
    below = 0
    for p in res.plans:
        e = p.perf
        assert e.tpot_s * 1000 <= limit_ms
        again = _estimate(spec, scheme, p.verdict, p.offer.fabric, 8000, 1000, kvb, e.batch)
        assert again.tpot_s == pytest.approx(e.tpot_s, rel=1e-9)
        full = min(p.verdict.workload_concurrency, p.verdict.max_num_seqs * p.verdict.dp)
        if e.batch < full:  # below saturation: the largest batch meeting it, or (DP/PP) the
            below += 1  # multiple of DP x PP below that if it serves more tok/s
            unit = p.verdict.dp * p.verdict.pp
            b = e.batch + 1
            while True:
                more = _estimate(spec, scheme, p.verdict, p.offer.fabric, 8000, 1000, kvb, b)
                if more.tpot_s * 1000 > limit_ms:
                    break
                assert e.batch % unit == 0 and b < e.batch + unit  # within one rounding
                assert more.output_tps < e.output_tps  # ... that served fewer tok/s
                b += 1
    assert below >= 5  # most rows are served below saturation


@pytest.mark.parametrize(
    ("model_id", "quant", "gpu", "gpus_per_node", "layout"),
    [
        (LLAMA_8B, "bf16", "H100-SXM", 1, Layout(1, 1, 1)),
        ("moonshotai/Kimi-K2-Thinking", "int4", "H200-SXM", 8, Layout(8, 1, 1)),
        ("moonshotai/Kimi-K2-Thinking", "int4", "H200-SXM", 8, Layout(1, 8, 1, True)),
    ],
)
def test_tpot_and_ttft_never_fall_as_the_batch_grows_without_pp(
    model_id: str, quant: str, gpu: str, gpus_per_node: int, layout: Layout
) -> None:
    # the property the search relies on, B = 1..512 (TP, TP+MoE, DP+EP; PP is the knee test)
    spec = resolve_model(model_id)
    scheme = resolve_quant(quant, spec)
    prev = None
    for b in range(1, 513):
        e, _ = estimate_layout(
            spec, scheme, gpu_specs()[gpu], layout, gpus_per_node=gpus_per_node,
            interconnect="nvlink", fabric="ethernet", workload=Workload(8000, 1000, b),
            max_num_seqs=1024,
        )  # fmt: skip
        if prev is not None:
            assert e.tpot_s >= prev.tpot_s and e.ttft_s >= prev.ttft_s, b
        prev = e


def _fake(base: PerfEstimate, tpot_ms: dict[int, float]):
    calls: list[int] = []

    def at(b: int) -> PerfEstimate:
        calls.append(b)
        return dataclasses.replace(base, batch=b, requested_concurrency=b, tpot_s=tpot_ms[b] / 1e3)

    return at, calls


@pytest.fixture(scope="module")
def base() -> PerfEstimate:
    spec = resolve_model(LLAMA_8B)
    e, _ = estimate_layout(
        spec, resolve_quant("bf16", spec), H100, Layout(1, 1, 1), gpus_per_node=1,
        interconnect="nvlink", fabric="ethernet", workload=Workload(8000, 1000, 1),
    )  # fmt: skip
    return e


@pytest.mark.parametrize("limit", [10.0, 10.5, 37.2, 99.9, 100.0, 508.0, 1000.0])
def test_the_search_finds_the_largest_batch_on_a_rising_curve(
    base: PerfEstimate, limit: float
) -> None:
    curve = {b: 10 + 0.5 * b + 0.001 * b * b for b in range(1, 1025)}  # convex, rising
    req = make_request(model=LLAMA_8B, ctx=32768, max_tpot_ms=limit)
    at, calls = _fake(base, curve)
    got = slo_batch(req, at, at(1024))
    meeting = [b for b, t in curve.items() if t <= limit]
    if not meeting:
        assert got.batch == 1 and got.tpot_s * 1000 > limit  # refused at batch 1
        return
    assert got.batch == max(meeting)
    assert len(calls) <= 2 + 2 * math.ceil(math.log2(1024))  # bounded like a bisection


def test_the_search_steps_over_a_pp_knee(base: PerfEstimate) -> None:
    # PP4: below 4 requests one walks the stages alone (slow); from 4 the stages overlap
    # (perf.py): TPOT 80, 90, 100 ms at 1-3 then 60 ms at 4, rising 1 ms per request
    curve = {1: 80.0, 2: 90.0, 3: 100.0, **{b: 56.0 + b for b in range(4, 201)}}
    req = make_request(model=LLAMA_8B, ctx=32768, max_tpot_ms=85.0)
    at, _ = _fake(base, curve)
    assert slo_batch(req, at, at(200), knee=4).batch == 29  # 56 + 29 = 85
    # below the knee only: a limit that 4 misses but 1 meets
    curve = {1: 80.0, 2: 90.0, 3: 100.0, **{b: 96.0 + b for b in range(4, 201)}}
    at, _ = _fake(base, curve)
    assert slo_batch(req, at, at(200), knee=4).batch == 1


def test_a_shape_missing_the_slo_at_one_request_is_refused_with_the_batch() -> None:
    res, _ = one_h100_quote(max_tpot_ms=1.0)
    assert res.plans == []
    reasons = {r["reason"] for r in res.rejected}
    assert any(
        r.startswith("TPOT ") and "at 1 request in flight exceeds --max-tpot-ms 1" in r
        for r in reasons
    ), reasons


def test_the_cli_says_where_the_slo_is_met_and_keeps_concurrency_a_cap() -> None:
    runner = CliRunner()
    args = ["quote", "-m", "kimi-k2-thinking", "--ctx", "128k", "--max-tpot-ms", "50"]
    out = runner.invoke(app, [*args, "--top", "3"], env={"COLUMNS": "80"})
    assert out.exit_code == 0, out.output
    text = out.stdout
    assert "tok/s at the largest batch meeting" in text
    flat = text.replace("\n  ", " ")
    assert "--max-tpot-ms 50 is met at fewer requests in flight than saturation: #1 at " in flat
    # --concurrency caps the search; a batch below it is the SLO's, not max_num_seqs'
    out = runner.invoke(app, [*args, "--concurrency", "64", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert all(p["concurrency"] <= 64 and p["tpot_ms"] <= 50 for p in doc["plans"])
    assert any(p["concurrency"] < 64 for p in doc["plans"])
    assert not any("max_num_seqs caps" in n for n in doc["notes"])
    assert any("in flight than --concurrency: #" in n for n in doc["notes"])


def test_deploy_caps_each_engine_at_the_slo_batch(tmp_path: Path) -> None:
    # the SLO holds only if vLLM runs no more than the batch it was met at: the plan's flags cap
    # each engine at its share, ceil(concurrency / DP) (Kimi DP8+EP8 at 160 in flight: 20 per
    # rank), the rendered manifest carries it, a hand edit of it is refused, and a plan without
    # an SLO keeps vLLM's default (no --max-num-seqs)
    base = ["quote", "-m", "kimi-k2-thinking", "--ctx", "128k", "--top", "3", "--json"]
    plain = json.loads(CliRunner().invoke(app, base).stdout)["plans"]
    assert plain and not any("--max-num-seqs" in p["vllm_args"] for p in plain)
    out = CliRunner().invoke(app, [*base, "--max-tpot-ms", "50"]).stdout
    doc = json.loads(out)
    for p in doc["plans"]:
        args = p["vllm_args"]
        assert int(args[args.index("--max-num-seqs") + 1]) == math.ceil(p["concurrency"] / p["dp"])
    path = tmp_path / "plan.json"
    path.write_text(out, encoding="utf-8")
    plan = doc["plans"][0]
    rank = ["--rank", str(plan["rank"])]
    res = CliRunner().invoke(
        app, ["deploy", "--plan", str(path), *rank, "--render", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    want = math.ceil(plan["concurrency"] / plan["dp"])
    manifest = next((tmp_path / "o").glob("*.yaml")).read_text()
    assert f"- --max-num-seqs\n        - '{want}'\n" in manifest
    args = plan["vllm_args"]
    args[args.index("--max-num-seqs") + 1] = str(want * 4)
    path.write_text(json.dumps({**doc, "plans": [plan]}), encoding="utf-8")
    res = CliRunner().invoke(
        app, ["deploy", "--plan", str(path), *rank, "--render", str(tmp_path / "e")]
    )
    assert res.exit_code == 2 and "edited by hand" in res.output, res.output
