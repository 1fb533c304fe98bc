"""DP / EP layouts: vLLM v0.18.0's rules, per-layout memory, the planner and the CLI.

Expected values are hand derivations from the model configs and vLLM's source (comments show
the arithmetic; docs/ep-dp-layouts.md has the sources) or the published Kimi-K2-Thinking TP8
start-up log on 8 x H200 (vllm-project/recipes moonshotai/Kimi-K2-Think.md: "Available KV cache
memory: 46.80 GiB", "GPU KV cache size: 715,072 tokens").
"""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from pricing.offers_csv import COLUMNS, parse_offers
from provisioner.cli.main import app
from provisioner.core.catalog import resolve_model
from provisioner.core.hardware import cuda_memory_gib
from provisioner.core.layout_memory import layout_memory
from provisioner.core.layouts import Layout, dp_ep_layouts, expert_width_violation
from provisioner.core.memory import GIB, MemorySettings
from provisioner.core.models import ModelSpec
from provisioner.core.offer import Offer
from provisioner.core.perf_ep import imbalance
from provisioner.core.planner import plan_quote
from provisioner.core.quant import resolve_quant
from provisioner.core.request import make_request
from provisioner.core.vllm_rules import VLLM_VERSION, batch_defaults, rules_for
from provisioner.errors import UsageError

CTX = 131072
MLA_BYTES = 61 * (512 + 64) * 2  # Kimi K2 latent per token, bf16: 70,272 B
# Kimi K2 weights TP splits (bf16, replicated per DP rank), hand-counted from config.json:
#   embed + lm_head 2 x 163840 x 7168; per layer q_b 1536 x 64 x 192 + kv_b 512 x 64 x 256
#   + o_proj 64 x 128 x 7168 (x 61); dense MLP 3 x 7168 x 18432; shared experts
#   60 x 3 x 7168 x 2048
KIMI_TP_SHARDED = (
    2 * 163840 * 7168
    + 61 * (1536 * 64 * 192 + 512 * 64 * 256 + 64 * 128 * 7168)
    + 3 * 7168 * 18432
    + 60 * 3 * 7168 * 2048
)


def settings(gpu: str = "H200-SXM") -> MemorySettings:
    r = rules_for(VLLM_VERSION)
    tokens, seqs = batch_defaults(r, gpu, cuda_memory_gib(gpu))
    return MemorySettings(max_num_batched_tokens=tokens, max_num_seqs=seqs, sm=90, rules=r)


def kimi_mem(spec: ModelSpec, lay: Layout):  # type: ignore[no-untyped-def]
    scheme = resolve_quant("auto", spec)
    return layout_memory(spec, scheme, lay, cuda_memory_gib("H200-SXM"), CTX, settings())


# ---- rules -------------------------------------------------------------------------------


def test_layout_names_and_sizes_follow_vllm() -> None:
    assert Layout(8).label == "TP8" and Layout(8).family == "tp"
    dp8 = Layout(1, 8, 1, True)
    assert (dp8.label, dp8.ep_size, dp8.moe_tp, dp8.gpus) == ("DP8+EP8", 8, 1, 8)
    assert dp8.all_to_all and not dp8.sequence_parallel_moe  # TP1: nothing to sequence-split
    mixed = Layout(4, 2, 1, True)
    assert (mixed.label, mixed.ep_size) == ("TP4xDP2+EP8", 8)  # EP = TP x DP of the stage
    assert mixed.sequence_parallel_moe
    tp_ep = Layout(8, 1, 1, True)
    assert (tp_ep.label, tp_ep.all_to_all) == ("TP8+EP8", False)  # combined by TP all-reduce
    assert Layout(2, 4).moe_tp == 8  # no EP: experts tensor-parallel over TP x DP


def test_dp_ep_enumeration_is_bounded(kimi_thinking: ModelSpec) -> None:
    # one layout per TP that divides the node (8, 4, 2, 1) with DP > 1: 3 on one node
    one = dp_ep_layouts(kimi_thinking, 8, 1)
    assert [x.label for x in one] == ["TP4xDP2+EP8", "TP2xDP4+EP8", "DP8+EP8"]
    two = dp_ep_layouts(kimi_thinking, 8, 2)
    assert [x.label for x in two] == ["TP8xDP2+EP16", "TP4xDP4+EP16", "TP2xDP8+EP16", "DP16+EP16"]
    llama = resolve_model("meta-llama/Llama-3.1-8B")  # dense: DP engines, no EP, one node
    assert [x.label for x in dp_ep_layouts(llama, 8, 1)] == ["TP4xDP2", "TP2xDP4", "DP8"]
    assert dp_ep_layouts(llama, 8, 2) == []  # DP of a dense model over nodes is replicas


def test_fp8_block_rule_uses_the_moe_tp_size() -> None:
    # research s1.6, hand: DeepSeek-V3 experts 2048 wide; Qwen3-235B 1536 wide; block 128
    ds = resolve_model("deepseek-ai/DeepSeek-V3")
    fp8 = resolve_quant("auto", ds)
    assert expert_width_violation(ds, fp8, Layout(8)) is None  # 2048 / 8 = 256
    bad = expert_width_violation(ds, fp8, Layout(8, 4))  # 2048 / 32 = 64, no EP
    assert bad is not None and "64" in bad and "expert-parallel" in bad
    assert expert_width_violation(ds, fp8, Layout(8, 4, 1, True)) is None  # whole experts
    qw = resolve_model("Qwen/Qwen3-235B-A22B-FP8")
    assert expert_width_violation(qw, resolve_quant("auto", qw), Layout(8)) is not None  # 192
    assert expert_width_violation(qw, resolve_quant("auto", qw), Layout(4)) is None  # 384


# ---- memory ------------------------------------------------------------------------------


def test_dp8_replicates_the_tp_sharded_weights_and_keeps_whole_experts(
    kimi_thinking: ModelSpec,
) -> None:
    tp8 = kimi_mem(kimi_thinking, Layout(8))
    dp8 = kimi_mem(kimi_thinking, Layout(1, 8, 1, True))
    # experts: 384 / 8 = 48 per GPU either way; the TP-split bf16 weights go from 1/8 to whole
    extra = KIMI_TP_SHARDED * 2 * 7 / 8
    assert dp8.worst.weights - tp8.worst.weights == pytest.approx(extra, rel=0.002)
    # TP1 engines of a DP group pay the same collective buffers as TP8 (1.3 GiB in budget)
    assert dp8.worst.non_torch == pytest.approx(tp8.worst.non_torch)
    assert tp8.worst.kv_bytes_per_token == dp8.worst.kv_bytes_per_token == MLA_BYTES
    # KV: each rank holds its own tokens; the node holds DP x a rank's blocks of 16
    rank_tokens = int(dp8.worst.kv_pool // (MLA_BYTES * 16)) * 16
    assert dp8.kv_cache_tokens == 8 * rank_tokens
    assert dp8.max_concurrent == 8 * int(dp8.worst.kv_pool // (MLA_BYTES * CTX))


def test_ep_with_tp_and_dp_keeps_shared_experts_whole(kimi_thinking: ModelSpec) -> None:
    # TP2 x DP4 + EP8 and DP8 + EP8 hold the same 48 experts per GPU; sequence-parallel MoE
    # (EP, TP > 1, DP > 1) keeps the shared experts whole (deepseek_v2.py disable_tp), so
    # the difference is half of the other TP-split bf16 weights, not half of all of them
    shared = 60 * 3 * 7168 * 2048
    mixed = kimi_mem(kimi_thinking, Layout(2, 4, 1, True)).worst.weights
    dp8 = kimi_mem(kimi_thinking, Layout(1, 8, 1, True)).worst.weights
    assert dp8 - mixed == pytest.approx((KIMI_TP_SHARDED - shared) * 2 / 2, rel=0.002)


def test_dp8_holds_several_times_tp8s_128k_requests_anchored_on_the_log(
    kimi_thinking: ModelSpec,
) -> None:
    # the published TP8 log: 46.80 GiB of KV per GPU = 715,072 tokens (5 requests of 128K).
    logged_pool = 46.80 * GIB
    assert int(logged_pool // MLA_BYTES) == pytest.approx(715_072, rel=0.001)
    # DP8 moves the TP-split weights' 7/8 into every GPU; the rest of the budget is the same
    dp8_pool = logged_pool - KIMI_TP_SHARDED * 2 * 7 / 8  # = 29.47 GiB
    anchored = 8 * int(dp8_pool // (MLA_BYTES * CTX))  # 8 ranks x 3 requests = 24
    assert (int(logged_pool // (MLA_BYTES * CTX)), anchored) == (5, 24)
    # prov's own prediction for both layouts gives the same counts
    assert kimi_mem(kimi_thinking, Layout(8)).max_concurrent == 5
    assert kimi_mem(kimi_thinking, Layout(1, 8, 1, True)).max_concurrent == anchored


# ---- speed terms -------------------------------------------------------------------------


def test_imbalance_is_the_expected_fullest_gpu() -> None:
    # 1 + sqrt(2 ln EP / m): EP8 with 100 pairs per GPU -> 1 + sqrt(4.159 / 100) = 1.204
    assert imbalance(8, 100) == pytest.approx(1 + math.sqrt(2 * math.log(8) / 100))
    assert imbalance(8, 100) == pytest.approx(1.204, abs=0.001)
    assert imbalance(1, 5) == 1.0  # one GPU has all experts


# ---- planner and CLI ---------------------------------------------------------------------


def offers(*rows: str) -> list[Offer]:
    return list(parse_offers("\n".join([",".join(COLUMNS), *rows]), "test"))


H200 = offers(
    "nebius,eu-north1,,h200x8,H200-SXM,8,141,128,1600,nvlink,infiniband,28.00,11.60,2026-05-01,"
)[0]


def quote(spec: ModelSpec, rows: list[Offer], **kw: object):  # type: ignore[no-untyped-def]
    req = make_request(model=spec.id, ctx=kw.pop("ctx", CTX), **kw)
    return plan_quote(req, spec, resolve_quant(str(kw.get("quant", "auto")), spec), rows)


def test_kimi_8x_h200_ranks_dp_ep_by_usd_per_mtok(kimi_thinking: ModelSpec) -> None:
    res = quote(kimi_thinking, [H200], top=0, nodes=1)
    # every layout is evaluated (--explain lists them); an offer is ranked with its fastest
    # TP x PP and its fastest DP/EP layout, which share its price
    alts = {p.verdict.layout.label for p in res.layout_alternatives}
    assert alts == {"TP8", "TP4xDP2+EP8", "TP2xDP4+EP8", "DP8+EP8"}
    by_layout: dict[str, object] = {}
    for p in res.plans:
        by_layout.setdefault(p.verdict.layout.label, p)
    assert set(by_layout) == {"TP8", "DP8+EP8"}
    docs = {k: p.to_json() for k, p in by_layout.items()}  # type: ignore[attr-defined]
    tp8, dp8 = docs["TP8"], docs["DP8+EP8"]
    assert (dp8["tp"], dp8["dp"], dp8["ep"], dp8["pp"]) == (1, 8, True, 1)
    assert (tp8["dp"], tp8["ep"]) == (1, False)
    assert dp8["max_concurrent_full_ctx"] >= 3 * tp8["max_concurrent_full_ctx"]
    mtok = [p.to_json()["usd_per_mtok"] for p in res.plans]
    assert mtok == sorted(mtok)  # rank follows $/Mtok
    assert (
        "--data-parallel-size" in dp8["vllm_args"]
        and "--enable-expert-parallel" in (dp8["vllm_args"])
    )
    assert "--data-parallel-size" not in tp8["vllm_args"]


def test_layout_flag_narrows(kimi_thinking: ModelSpec) -> None:
    only_tp = quote(kimi_thinking, [H200], top=0, nodes=1, layout="tp")
    assert {(p.verdict.dp, p.verdict.ep) for p in only_tp.plans} == {(1, False)}
    only_ep = quote(kimi_thinking, [H200], top=0, nodes=1, layout="dp-ep")
    assert all(p.verdict.ep for p in only_ep.plans) and only_ep.plans
    dense = quote(resolve_model("meta-llama/Llama-3.1-8B"), [H200], layout="dp-ep", ctx=8192)
    assert dense.plans and all(p.verdict.dp > 1 and not p.verdict.ep for p in dense.plans)
    with pytest.raises(UsageError, match="--dcp"):
        quote(resolve_model("meta-llama/Llama-3.1-8B"), [H200], layout="dp-ep", ctx=8192, dcp=2)
    with pytest.raises(UsageError, match="--layout"):
        make_request(model="x", ctx=8, layout="ep")


def test_fp8_block_model_refused_at_tp8_runs_with_ep() -> None:
    qwen = resolve_model("Qwen/Qwen3-235B-A22B-FP8")
    h100 = offers(
        "aws,us-east-1,use1-az1,p5.48xlarge,H100-SXM,8,80,192,2048,nvlink,efa,98.32,30.00,,"
    )[0]
    tp_only = quote(qwen, [h100], top=0, nodes=1, ctx=32768, layout="tp")
    assert all(p.verdict.tp < 8 for p in tp_only.plans)  # TP8: 1536 / 8 = 192, not % 128
    assert any("block-128" in r["reason"] and r["tp"] == 8 for r in tp_only.rejected)
    auto = quote(qwen, [h100], top=0, nodes=1, ctx=32768)
    labels = {p.verdict.layout.label for p in auto.plans}
    assert "TP8+EP8" in labels  # vLLM runs it with --enable-expert-parallel


def test_cli_quote_json_and_fit_with_data_parallel() -> None:
    r = CliRunner().invoke(
        app,
        [
            "fit", "--model", "moonshotai/Kimi-K2-Thinking", "--gpu", "H200", "--tp", "1",
            "--data-parallel-size", "8", "--enable-expert-parallel", "--ctx", "128k", "--json",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["dp"], doc["gpus"], doc["enable_expert_parallel"]) == (8, 8, True)
    assert doc["fits"] and doc["kv_cache_tokens"] % (8 * 16) == 0  # 8 ranks x whole blocks
    bad = CliRunner().invoke(
        app, ["fit", "--model", "moonshotai/Kimi-K2-Thinking", "--gpu", "H200", "-dp", "0"]
    )
    assert bad.exit_code == 2 and "--data-parallel-size" in bad.output
    bad = CliRunner().invoke(
        app, ["quote", "--model", "moonshotai/Kimi-K2-Thinking", "--layout", "ep", "--json"]
    )
    assert bad.exit_code == 2 and "allowed: tp, dp (or dp-ep), auto" in bad.output


def test_low_concurrency_keeps_idle_ranks_idle_and_matches_aiconfigurator(
    kimi_thinking: ModelSpec,
) -> None:
    # 2 requests of 128K in / 1K out on 8 x H200: at most 2 DP ranks have work (the others run
    # dummy passes), so DP8 gains nothing from its KV capacity. NVIDIA aiconfigurator 0.12.0
    # (run for issue 15, docs/ep-dp-layouts.md s5) ranked tp4 dp2 ep8 first and tp8 ep8 second.
    res = quote(kimi_thinking, [H200], top=0, nodes=1, isl=128000, osl=1000, concurrency=2)
    assert {p.perf.batch for p in res.layout_alternatives if p.perf} == {2}
    assert res.best is not None and res.best.verdict.layout.label == "TP4xDP2+EP8"
    order = sorted(res.layout_alternatives, key=lambda p: -p.perf.output_tps if p.perf else 0)
    assert [p.verdict.layout.label for p in order[:2]] == ["TP4xDP2+EP8", "TP8"]
