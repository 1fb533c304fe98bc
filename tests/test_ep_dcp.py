"""--dcp on TP x EP layouts: memory (prov fit and prov quote size them in one place,
layout_memory), speed (perf_ep.estimate_layout), the plan's JSON and its vLLM flags agree.

vLLM v0.18.0 accepts DCP with expert parallelism: config/parallel.py only requires
tp_size % dcp_size == 0 ("it simply reuses the GPUs of TP group, and split one TP group into
tp_size//dcp_size DCP groups"), distributed/parallel_state.py builds the DCP groups inside each
TP group whatever EP is, and the fused-MoE layers never read the DCP size. With DP 1, EP keeps
the bytes of every GPU (whole experts instead of TP slices: E / TP experts' worth either way),
so DCP n multiplies the KV tokens by n exactly, as on plain TP: each request's tokens are split
over n GPUs, and prov's block rounding (blocks of BLOCK_SIZE x dcp tokens) keeps the same
number of blocks.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from provisioner.cli.main import app
from provisioner.core.catalog import resolve_model
from provisioner.core.hardware import gpu_specs
from provisioner.core.layouts import Layout
from provisioner.core.perf import Workload
from provisioner.core.perf_ep import estimate_layout
from provisioner.core.quant import resolve_quant

runner = CliRunner()
QWEN = "Qwen/Qwen3-235B-A22B-FP8"  # TP8 needs EP: 1536 / 8 = 192 is not a multiple of 128


def _json(*args: str) -> dict[str, Any]:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def _fit_r1(*extra: str) -> dict[str, Any]:
    return _json(
        "fit", "-m", "deepseek-ai/DeepSeek-R1", "--gpu", "H200", "--tp", "8", "--ctx", "128k",
        "--json", *extra,
    )  # fmt: skip


def test_fit_shards_the_kv_over_dcp_with_expert_parallelism() -> None:
    # DeepSeek-R1 on 8 x H200, 128K: DCP 8 puts 1/8 of each token's MLA latent
    # ((512 + 64) x 2 B x 61 layers = 70,272 B) on each GPU: 8 x the tokens in the same pool,
    # with or without EP. Before the fix, EP dropped --dcp: 662,176 tokens (5 requests), the
    # DCP 1 figure, instead of 5,297,408 (40).
    dcp1 = _fit_r1("--enable-expert-parallel")
    dcp8 = _fit_r1("--enable-expert-parallel", "--dcp", "8")
    plain = _fit_r1("--dcp", "8")
    assert dcp8["kv_cache_gib"] == dcp1["kv_cache_gib"] == plain["kv_cache_gib"]
    assert dcp8["kv_cache_tokens"] == 8 * dcp1["kv_cache_tokens"] == plain["kv_cache_tokens"]
    # whole 128K requests: floor(tokens / 131,072), 8 x the tokens -> 8 x (rounded down)
    assert dcp8["max_concurrent_full_ctx"] == dcp8["kv_cache_tokens"] // 131072
    assert dcp8["max_concurrent_full_ctx"] >= 8 * dcp1["max_concurrent_full_ctx"]
    assert dcp8["dcp"] == 8 and dcp8["enable_expert_parallel"] is True


def _quote_qwen(dcp: int) -> list[dict[str, Any]]:
    doc = _json(
        "quote", "-m", QWEN, "--dcp", str(dcp), "--gpu", "H200", "--cloud", "aws",
        "--nodes", "1", "--top", "0", "--json",
    )  # fmt: skip
    plans: list[dict[str, Any]] = doc["plans"]
    assert plans
    return plans


def test_a_quoted_tp_ep_plan_carries_its_dcp_in_memory_json_and_flags() -> None:
    # Qwen3-235B (GQA, 4 KV heads, 94 layers, head 128) at TP8: every GPU holds one KV head
    # (each replicated on 2 GPUs): 2 x 128 x 2 B x 94 = 48,128 B per token. DCP 2 splits the
    # tokens over the 2 GPUs that share a head: 24,064 B per token, 2 x the tokens.
    # Before the fix the JSON said "dcp": 1 (label TP8+EP8), the KV was DCP 1's, but the flags
    # passed 2.
    one, two = _quote_qwen(1), _quote_qwen(2)
    assert {p["layout"] for p in two} == {"TP8+EP8+DCP2"}  # the label names the plan's DCP
    by_offer = {(p["instance_type"], p["market"]): p for p in one}
    for p in two:
        args = p["vllm_args"]
        i = args.index("--decode-context-parallel-size")
        assert p["dcp"] == int(args[i + 1]) == 2
        base = by_offer[(p["instance_type"], p["market"])]
        assert p["kv_cache_tokens"] == 2 * base["kv_cache_tokens"]
        # the seam: prov fit reports the same KV for the same shape
        fit = _json(
            "fit", "-m", QWEN, "--gpu", "H200", "--tp", "8", "--enable-expert-parallel",
            "--dcp", "2", "--ctx", str(p["vllm_args"][p["vllm_args"].index("--max-model-len") + 1]),
            "--json",
        )  # fmt: skip
        assert fit["kv_cache_tokens"] == p["kv_cache_tokens"]


def test_dcp_halves_the_kv_read_of_a_tp_ep_decode_step() -> None:
    # 64 requests at 8000 in / 1000 out: 8,500 cached tokens on average (isl + osl / 2), each
    # read once per step: 64 x 8,500 x 48,128 B on every GPU at DCP 1, half of it at DCP 2
    # (each GPU of a DCP pair reads its own half of every request's tokens)
    spec = resolve_model(QWEN)
    scheme = resolve_quant("fp8", spec)
    gpu = gpu_specs()["H200-SXM"]
    kw = {"gpus_per_node": 8, "interconnect": "nvlink", "fabric": "efa",
          "workload": Workload(8000, 1000, 64)}  # fmt: skip
    lay = Layout(8, 1, 1, True)
    one, t1 = estimate_layout(spec, scheme, gpu, lay, dcp=1, **kw)  # type: ignore[arg-type]
    two, t2 = estimate_layout(spec, scheme, gpu, lay, dcp=2, **kw)  # type: ignore[arg-type]
    kv_read = 64 * 8500 * 48128
    assert one.stage.bytes_read - two.stage.bytes_read == pytest.approx(kv_read / 2, rel=1e-9)
    assert two.tpot_s < one.tpot_s
    assert t1.imbalance == t2.imbalance > 1.0  # both on the EP path


def test_dcp_with_dp_stays_refused_by_both_commands() -> None:
    # vLLM accepts it (the DCP groups split every TP group, DP or not); prov does not rank or
    # check it yet, and says so the same way in fit and quote
    res = runner.invoke(
        app,
        ["fit", "-m", "deepseek-ai/DeepSeek-R1", "--gpu", "H200", "--tp", "4",
         "--data-parallel-size", "2", "--enable-expert-parallel", "--dcp", "4", "--json"],
    )  # fmt: skip
    assert res.exit_code == 1 and "prov does not check the layout" in res.output
    assert "vLLM rejects" not in res.output  # vLLM v0.18.0 starts it
    res = runner.invoke(
        app, ["quote", "-m", "deepseek-ai/DeepSeek-R1", "--gpu", "H200", "--dcp", "4",
              "--layout", "dp-ep"],
    )  # fmt: skip
    assert res.exit_code == 2 and "not modelled" in res.output


def test_fit_says_whose_refusal_a_layout_is() -> None:
    # prov's own limits (vLLM v0.18.0 starts these layouts) against vLLM's start-up rule: a
    # DeepSeek fp8 block-128 expert split over TP8 x DP4 is 2048 / 32 = 64 wide, not a
    # multiple of 128 (Fp8MoEMethod's block check)
    cases = [
        (["-m", "deepseek-ai/DeepSeek-R1", "--tp", "4", "--pp", "2",
          "--data-parallel-size", "2", "--enable-expert-parallel"], "prov does not check"),
        (["-m", "meta-llama/Llama-3.1-70B", "--tp", "4", "--enable-expert-parallel"],
         "prov does not check"),
        (["-m", "deepseek-ai/DeepSeek-R1", "--tp", "8", "--data-parallel-size", "4"],
         "vLLM rejects"),
    ]  # fmt: skip
    for args, whose in cases:
        res = runner.invoke(app, ["fit", "--gpu", "H200", *args, "--json"])
        assert res.exit_code == 1, res.output
        reason = json.loads(res.stdout)["reason"]
        assert reason.startswith(f"{whose} the layout: "), reason
