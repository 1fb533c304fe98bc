"""Shape enumeration, vLLM rules, kernel availability and ranking on small hand-made offers."""

from __future__ import annotations

import pytest

from pricing.offers_csv import COLUMNS, parse_offers
from provisioner.core.catalog import resolve_model
from provisioner.core.hardware import gpu_specs
from provisioner.core.models import ModelSpec
from provisioner.core.offer import Offer
from provisioner.core.planner import plan_quote
from provisioner.core.planner.shape_rules import kernel_verdict, shape_rule_violation
from provisioner.core.quant import resolve_quant
from provisioner.core.request import make_request
from provisioner.errors import UsageError

HEADER = ",".join(COLUMNS)


def offers(*rows: str) -> list[Offer]:
    return list(parse_offers("\n".join([HEADER, *rows]), "test"))


H200 = "nebius,eu-north1,,h200x8,H200-SXM,8,141,128,1600,nvlink,infiniband,28.00,11.60,2026-05-01,"
H100 = "aws,us-east-1,use1-az1,p5.48xlarge,H100-SXM,8,80,192,2048,nvlink,efa,98.32,30.00,,"
L40S = "aws,us-east-2,use2-az1,g6e.48xlarge,L40S,8,44.7,192,1536,pcie,efa,30.13,9.00,,"
L40S_ETH = "fluidstack,CA,CA-1,8x_L40S,L40S,8,44.7,64,512,pcie,ethernet,7.00,,,"
# a RunPod pod: one machine, no cluster fabric to the next (pricing.offers.SINGLE_MACHINE_CLOUDS)
L40S_POD = "runpod,CA,CA-1,8x_L40S,L40S,8,44.7,64,512,pcie,ethernet,7.00,,,"
H100_NOSPOT = (
    "lambda,us-east-1,,gpu_8x_h100_sxm5,H100-SXM,8,80,208,1800,nvlink,ethernet,31.92,,2026-05-07,"
)


def quote(spec: ModelSpec, rows: list[Offer], **kw: object):
    req = make_request(model=spec.id, ctx=kw.pop("ctx", 131072), **kw)
    return plan_quote(req, spec, resolve_quant(str(kw.get("quant", "auto")), spec), rows)


def test_kimi_cheapest_feasible_wins_and_8x_h100_is_rejected(kimi_thinking: ModelSpec) -> None:
    rows = offers(H200, H100, L40S)
    res = quote(kimi_thinking, rows, top=0, objective="usd-per-hour")
    best = res.best
    assert best is not None
    # hand-ranked: L40S spot 3 nodes 27.00 > 2 x p5 spot 60.00; H200 spot 11.60 is cheapest
    assert (best.offer.gpu, best.market, best.usd_per_hour) == ("H200-SXM", "spot", 11.60)
    one_h100 = [r for r in res.rejected if r["gpu"] == "H100-SXM" and r["nodes"] == 1]
    assert one_h100 and "exceed" in one_h100[0]["reason"]
    shapes = {
        (p.offer.gpu, p.verdict.nodes, p.verdict.tp, p.verdict.pp, p.market) for p in res.plans
    }
    assert ("H100-SXM", 2, 8, 2, "spot") in shapes and ("H100-SXM", 2, 8, 2, "on-demand") in shapes
    # two L40S nodes cannot hold one 128K request; three can
    assert ("L40S", 2, 8, 2, "spot") not in shapes and ("L40S", 3, 8, 3, "spot") in shapes
    prices = [p.usd_per_hour for p in res.plans]
    assert prices == sorted(prices)


def test_price_is_nodes_times_offer_price(kimi_thinking: ModelSpec) -> None:
    res = quote(kimi_thinking, offers(L40S), top=0, market="on-demand")
    for p in res.plans:
        assert p.usd_per_hour == pytest.approx(p.verdict.nodes * 30.13)
        assert p.market == "on-demand"


def test_market_filter_and_missing_spot(kimi_thinking: ModelSpec) -> None:
    res = quote(kimi_thinking, offers(H100_NOSPOT), top=0, market="spot")
    assert res.plans == []  # Lambda has no spot price: nothing to rank, nothing invented


def test_plain_ethernet_multi_node_is_allowed_with_a_warning(kimi_thinking: ModelSpec) -> None:
    res = quote(kimi_thinking, offers(L40S_ETH), top=1, objective="usd-per-hour")
    # 594 GB of int4 weights need more than one 8 x L40S node (8 x 0.9 x 44.42 GiB = 306 GiB)
    assert res.best is not None and res.best.verdict.nodes >= 2
    text = " ".join(res.best.warnings)
    assert "PCIe" in text and "ethernet" in text


def test_single_machine_offers_never_span_nodes(kimi_thinking: ModelSpec) -> None:
    # Kimi int4 needs several nodes of 8x L40S (test above); a pod cannot be joined to another
    res = quote(kimi_thinking, offers(L40S_POD), top=0, objective="usd-per-hour")
    assert res.plans == []
    reasons = {r["reason"] for r in res.rejected if r["nodes"] > 1}
    assert any("single machine on runpod" in r for r in reasons)
    # ...unless the price file says these nodes share a cluster fabric
    text = "\n".join([HEADER + ",multi_node", L40S_POD + ",true"])
    res = quote(kimi_thinking, list(parse_offers(text, "t")), top=1, objective="usd-per-hour")
    assert res.best is not None and res.best.verdict.nodes >= 2


def test_vllm_args_carry_the_shape(kimi_thinking: ModelSpec) -> None:
    res = quote(kimi_thinking, offers(H100), top=1, kv_dtype="fp8", dcp=8)
    p = res.best
    assert p is not None
    args = p.vllm_args
    assert args[args.index("--tensor-parallel-size") + 1] == "8"
    assert args[args.index("--pipeline-parallel-size") + 1] == str(p.verdict.pp)
    assert args[args.index("--max-model-len") + 1] == "131072"
    assert args[args.index("--kv-cache-dtype") + 1] == "fp8"
    assert args[args.index("--decode-context-parallel-size") + 1] == "8"


def test_tp_must_divide_heads_and_kv_heads() -> None:
    llama4 = resolve_model("meta-llama/Llama-4-Scout-17B-16E-Instruct")  # 40 heads, 8 KV heads
    bf16 = resolve_quant("bf16", llama4)
    assert (
        shape_rule_violation(llama4, bf16, 3, 1, 1) == "TP3 does not divide the 40 attention heads"
    )
    qwen = resolve_model("Qwen/Qwen3-235B-A22B")  # 64 heads, 4 KV heads
    assert shape_rule_violation(qwen, resolve_quant("bf16", qwen), 8, 1, 1) is None  # replicated
    assert "DCP" in (shape_rule_violation(qwen, resolve_quant("bf16", qwen), 8, 1, 4) or "")


def test_marlin_moe_width_rule(kimi_thinking: ModelSpec) -> None:
    # moe_intermediate 2048 / TP must be a multiple of max(64, group 32) = 64 (docs/vllm-rules s5)
    q = resolve_quant("int4", kimi_thinking)
    assert shape_rule_violation(kimi_thinking, q, 32, 1, 1) is None  # 64 per rank
    assert "Marlin" in (shape_rule_violation(kimi_thinking, q, 64, 1, 1) or "")  # 32 per rank


def test_kernel_availability_by_generation() -> None:
    g = gpu_specs()
    llama = resolve_model("llama-3.1-70b")
    fp8, nvfp4 = resolve_quant("fp8", llama), resolve_quant("nvfp4", llama)
    assert kernel_verdict(fp8, g["H100-SXM"]) == (None, None)
    rej, warn = kernel_verdict(fp8, g["A100-80GB-SXM"])  # FP8 Marlin, weight-only
    assert rej is None and warn and "Marlin" in warn
    rej, warn = kernel_verdict(nvfp4, g["MI300X"])
    assert rej and "ROCm" in rej
    rej, _ = kernel_verdict(fp8, g["A10G"])  # SM 8.6: the Marlin fallback covers it
    assert rej is None


def test_gguf_is_single_node_layer_split(llama70b: ModelSpec) -> None:
    res = quote(llama70b, offers(L40S), ctx=8192, quant="q4_k_m", top=0)
    assert res.plans and all(p.verdict.nodes == 1 and p.verdict.tp == 1 for p in res.plans)
    assert all(p.vllm_args == [] for p in res.plans)
    assert any("llama.cpp" in n for n in res.notes)


def test_ctx_above_model_max_is_usage_error() -> None:
    spec = resolve_model("llama-3.1-8b")
    with pytest.raises(UsageError, match="maximum context"):
        quote(spec, offers(H100), ctx=1 << 20)


def test_concurrency_requirement(kimi_thinking: ModelSpec) -> None:
    # TP x PP only: DP/EP layouts hold still more (tests/test_layouts.py)
    res1 = quote(
        kimi_thinking, offers(H200), top=0, market="spot", objective="usd-per-hour", layout="tp"
    )
    assert res1.best is not None
    most = res1.best.verdict.memory.max_concurrent  # type: ignore[union-attr]
    res2 = quote(
        kimi_thinking,
        offers(H200),
        top=0,
        market="spot",
        concurrency=most + 1,
        objective="usd-per-hour",
        layout="tp",
    )
    # TP8 on one node duplicates the MLA cache on 8 ranks and cannot hold that many requests;
    # TP4 x PP2 on the same node keeps each rank's share of layers, halving KV per request.
    assert any("concurrent" in r["reason"] and r["tp"] == 8 for r in res2.rejected)
    best = res2.best
    assert best is not None and best.verdict.memory is not None
    assert (best.verdict.nodes, best.verdict.tp, best.verdict.pp) == (1, 4, 2)
    assert best.verdict.memory.max_concurrent >= most + 1


def test_offers_state_memory_their_way_but_the_plan_uses_cudas(kimi_thinking: ModelSpec) -> None:
    # An H200 offer states 141 (GB); vLLM budgets a fraction of the 139.81 GiB CUDA reports.
    from provisioner.core.fit import FitRequest, evaluate
    from provisioner.core.quant import resolve_quant
    from provisioner.core.vllm_rules import rules_for

    res = quote(kimi_thinking, offers(H200), top=1, objective="usd-per-hour")
    best = res.best
    assert best is not None and best.verdict.hw.gpu_memory_gib == 139.81
    # the seam: `prov fit` on the same shape gives the same KV cache as the quote
    m = best.verdict.memory
    assert m is not None
    q = resolve_quant("auto", kimi_thinking)
    fit = evaluate(
        FitRequest(
            kimi_thinking,
            q,
            rules_for(),
            res.request.ctx,
            "H200-SXM",
            tp=best.verdict.tp,
            pp=best.verdict.pp,
            dp=best.verdict.dp,  # the best may be a DP/EP layout: fit takes the same flags
            expert_parallel=best.verdict.ep,
            max_num_batched_tokens=res.request.max_num_batched_tokens,
        )
    )
    assert fit.memory is not None and fit.memory.kv_cache_tokens == m.kv_cache_tokens
