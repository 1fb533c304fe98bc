"""Dense models as DP independent engines on one node (review7 finding 4).

vLLM's --data-parallel-size without --enable-expert-parallel works for dense models
(docs.vllm.ai serving/data_parallel_deployment: "This will work with both dense and MoE
models"; only MoE ranks must run their forward passes in step). Each DP rank is then a plain
TP x PP engine with its own copy of the weights, KV cache and --max-num-seqs, so the expected
values below come from the single-engine paths (memory.shape_memory, perf.estimate, `prov fit`
without -dp) times DP, never from the DP layout's own output. Deploy: tests/stacks/
test_vllm_argv.py.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pricing.offers_csv import COLUMNS, parse_offers
from provisioner.cli.main import app
from provisioner.core.catalog import resolve_model
from provisioner.core.hardware import gpu_specs
from provisioner.core.memory import GIB, concurrent_requests, shape_memory
from provisioner.core.offer import Offer
from provisioner.core.perf import Workload, estimate
from provisioner.core.planner import plan_quote
from provisioner.core.planner.quote import hardware_classes
from provisioner.core.planner.shapes import memory_settings
from provisioner.core.quant import kv_bytes, resolve_quant
from provisioner.core.request import make_request

CTX = 32768
ISL, OSL = 8000, 1000  # prov quote's default workload


def offer(row: str) -> Offer:
    return next(iter(parse_offers("\n".join([",".join(COLUMNS), row]), "test")))


P5EN = offer(  # AWS p5en.48xlarge: 8 x H200, the 8-GPU-only node of the finding
    "aws,us-east-1,use1-az1,p5en.48xlarge,H200-SXM,8,141,192,2048,nvlink,efa,63.30,15.57,"
    "2026-11-01,"
)
P5 = offer(
    "aws,us-east-1,use1-az1,p5.48xlarge,H100-SXM,8,80,192,2048,nvlink,efa,98.32,30.00,2026-11-01,"
)


def quote(model: str, row: Offer):  # type: ignore[no-untyped-def]
    spec = resolve_model(model)
    req = make_request(model=spec.id, ctx=CTX, top=0, nodes=1)
    return req, spec, plan_quote(req, spec, resolve_quant("auto", spec), [row])


def one_engine(model: str, row: Offer, tp: int):  # type: ignore[no-untyped-def]
    """The single TP x PP engine on this offer's GPU, by the plain (non-DP) paths."""
    req, spec, _ = quote(model, row)
    scheme = resolve_quant("auto", spec)
    (hw,) = hardware_classes(req, [row])  # memory as CUDA reports it (H200: 139.81 GiB)
    kvb = kv_bytes(req.kv_dtype, spec)
    settings = memory_settings(req, spec, hw, kvb)
    mem = shape_memory(spec, scheme, tp, 1, hw.gpu_memory_gib, CTX, settings)
    return spec, scheme, settings, mem, kvb


@pytest.fixture(scope="module")
def llama8b():  # type: ignore[no-untyped-def]
    return quote("meta-llama/Llama-3.1-8B", P5EN)


def test_8b_dp8_holds_eight_single_gpu_engines(llama8b) -> None:  # type: ignore[no-untyped-def]
    _, _, res = llama8b
    alts = {p.verdict.layout.label: p for p in res.layout_alternatives}
    assert set(alts) == {"TP8", "TP4xDP2", "TP2xDP4", "DP8"}  # 32 heads: every TP of the node
    dp8 = alts["DP8"].to_json()
    _, _, _, mem, _ = one_engine("meta-llama/Llama-3.1-8B", P5EN, 1)
    # the engine on one H200: 892,624 KV tokens (`prov fit -m llama-3.1-8b --gpu h200 --ctx 32k`
    # prints the same), 27 whole 32k requests; DP8 = 8 of them, nothing charged for DP
    assert dp8["kv_cache_tokens"] == 8 * mem.kv_cache_tokens
    assert dp8["max_concurrent_full_ctx"] == 8 * mem.max_concurrent
    assert dp8["memory_gib_per_gpu"]["weights"] == pytest.approx(mem.worst.weights / GIB, abs=0.01)
    assert (dp8["tp"], dp8["dp"], dp8["pp"], dp8["ep"]) == (1, 8, 1, False)


def test_8b_dp8_speed_is_eight_engines_at_an_eighth_of_the_requests(llama8b) -> None:  # type: ignore[no-untyped-def]
    _, _, res = llama8b
    dp8 = next(p for p in res.layout_alternatives if p.verdict.layout.label == "DP8").to_json()
    spec, scheme, settings, mem, kvb = one_engine("meta-llama/Llama-3.1-8B", P5EN, 1)
    # at saturation each engine batches what its KV cache holds of 9,000-token requests,
    # capped by its own --max-num-seqs
    per_engine = min(concurrent_requests(spec, mem, ISL + OSL, settings), settings.max_num_seqs)
    engine = estimate(
        spec, scheme, gpu_specs()["H200-SXM"], tp=1, pp=1, gpus_per_node=8,
        interconnect="nvlink", fabric="efa", workload=Workload(ISL, OSL, per_engine),
        kv_bytes=kvb, max_num_seqs=settings.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens,
    )  # fmt: skip
    assert dp8["tokens_per_s"] == pytest.approx(8 * engine.output_tps, rel=1e-3)
    assert dp8["concurrency"] == 8 * per_engine
    assert dp8["perf_band"] == pytest.approx(engine.band)  # no unfitted term: the engine's band
    assert dp8["tpot_ms"] == pytest.approx(engine.tpot_s * 1000, rel=1e-3)


def test_8b_dp8_ranks_above_tp8_on_the_same_offer(llama8b) -> None:  # type: ignore[no-untyped-def]
    _, _, res = llama8b
    spot = [p.to_json() for p in res.plans if p.to_json()["market"] == "spot"]
    assert [d["layout"] for d in spot][:2] == ["DP8", "TP8"]
    dp8, tp8 = spot[0], spot[1]
    assert dp8["usd_per_hour"] == tp8["usd_per_hour"]  # one node, one price
    # same price: $/Mtok is in inverse ratio of tokens/s
    assert dp8["usd_per_mtok"] < tp8["usd_per_mtok"]
    assert dp8["usd_per_mtok"] / tp8["usd_per_mtok"] == pytest.approx(
        tp8["tokens_per_s"] / dp8["tokens_per_s"], rel=0.01
    )
    assert "--data-parallel-size" in dp8["vllm_args"]
    assert "--enable-expert-parallel" not in dp8["vllm_args"]
    assert "--data-parallel-size" not in tp8["vllm_args"]


def test_70b_on_h100_dp_engines_are_the_tp_engines() -> None:
    _, _, res = quote("meta-llama/Llama-3.1-70B", P5)
    alts = {p.verdict.layout.label: p.to_json() for p in res.layout_alternatives}
    # 70.6B bf16 = 141 GB: TP1 cannot hold it; TP2 holds the weights (65.7 GiB a GPU) but
    # not one 32k request (5 GiB of KV): refused, as the TP2 engine itself is
    assert "DP8" not in alts and "TP2xDP4" not in alts
    assert one_engine("meta-llama/Llama-3.1-70B", P5, 2)[3].max_concurrent < 1
    tp2 = [r for r in res.rejected if r.get("dp") == 4 and r["tp"] == 2]
    assert tp2 and all("32768-token request needs" in r["reason"] for r in tp2)
    assert "TP4xDP2" in alts
    _, _, _, mem, _ = one_engine("meta-llama/Llama-3.1-70B", P5, 4)
    dp2 = alts["TP4xDP2"]
    assert dp2["memory_gib_per_gpu"]["weights"] == pytest.approx(mem.worst.weights / GIB, abs=0.01)
    assert dp2["kv_cache_tokens"] == 2 * mem.kv_cache_tokens
    assert dp2["max_concurrent_full_ctx"] == 2 * mem.max_concurrent


def _fit(*args: str) -> dict[str, object]:
    res = CliRunner().invoke(
        app, ["fit", "-m", "llama-3.1-8b", "--gpu", "H200", "--ctx", "32k", "--json", *args]
    )
    assert res.exit_code == 0, res.output
    doc: dict[str, object] = json.loads(res.stdout)
    return doc


@pytest.mark.parametrize(("tp", "dp", "label"), [(1, 8, "DP8"), (2, 4, "TP2xDP4")])
def test_fit_and_quote_agree_on_the_dense_dp_layout(llama8b, tp: int, dp: int, label: str) -> None:  # type: ignore[no-untyped-def]
    _, _, res = llama8b
    quoted = next(p for p in res.layout_alternatives if p.verdict.layout.label == label).to_json()
    doc = _fit("--tp", str(tp), "-dp", str(dp))
    engine = _fit("--tp", str(tp))  # the same engine without DP
    assert doc["fits"] and doc["dp"] == dp and doc["enable_expert_parallel"] is False
    assert doc["kv_cache_tokens_per_rank"] == engine["kv_cache_tokens"]
    assert doc["max_concurrent_full_ctx_per_rank"] == engine["max_concurrent_full_ctx"]
    assert doc["kv_cache_tokens"] == quoted["kv_cache_tokens"]
    assert doc["max_concurrent_full_ctx"] == quoted["max_concurrent_full_ctx"]
    assert doc["max_concurrent_full_ctx"] == dp * engine["max_concurrent_full_ctx"]  # type: ignore[operator]


def test_fit_refuses_dense_dp_with_pp() -> None:
    # vLLM starts it; prov does not model it: bad input (exit 2), not a DOES NOT FIT verdict
    res = CliRunner().invoke(
        app, ["fit", "-m", "llama-3.1-8b", "--gpu", "H200", "--pp", "2", "-dp", "4", "--json"]
    )
    assert res.exit_code == 2 and not res.stdout
    assert "prov fit cannot check DP with pipeline parallelism" in res.output


def test_explain_names_independent_engines_not_all_to_all() -> None:
    res = CliRunner().invoke(
        app,
        [
            *("quote", "-m", "llama-3.1-8b", "--gpu", "H200", "--cloud", "aws"),
            *("--market", "spot", "--top", "2", "--explain"),
        ],
    )
    assert res.exit_code == 0, res.output
    text = " ".join(res.stdout.split())
    assert "DP8 wins: 8 independent TP1 engines" in text
    assert "KV tokens of TP8 (216 requests of 32,768 tokens vs 241)" in text  # 8 x 27 vs TP8
    assert "all-to-all per MoE layer" not in text  # a dense DP rank has none


def test_dp_engines_each_cap_at_their_own_max_num_seqs() -> None:
    # --concurrency 2000 of 200-token requests with the 8B: one TP8 engine batches vLLM's
    # max_num_seqs (1,024 on an H200, tests/test_choices.py); DP8's 8 engines take 250 each,
    # under their own 1,024
    res = CliRunner().invoke(
        app,
        [
            *("quote", "-m", "llama-3.1-8b", "--gpu", "H200", "--cloud", "aws", "--ctx", "8k"),
            *("--concurrency", "2000", "--isl", "100", "--osl", "100", "--top", "0", "--json"),
        ],
    )
    assert res.exit_code == 0, res.output
    plans = json.loads(res.stdout)["plans"]
    by = {p["layout"]: p["concurrency"] for p in plans if p["nodes"] == 1}
    assert by["DP8"] == 2000 and by["TP8"] == 1024
