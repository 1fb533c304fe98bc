"""Which speed path a (model, layout) takes: perf_ep.estimate_layout is the one place that picks
it (one TP x PP engine, a dense model's DP independent engines, a MoE model's DP/EP ranks in
lockstep); the planner's estimate_speed only hands it the request's settings.

--cpu-offload-gb N keeps N GiB of each GPU's weights in host memory and copies them in on every
forward pass (vLLM's engine-args help: "part of the model is loaded from CPU memory to GPU memory
on the fly in each model forward pass"), so a decode step can never be shorter than N GiB over
the host link: prov assumes 50 GB/s on Hopper hosts (PCIe Gen5 x16 at ~80%,
planner/estimates.host_link_gbps). The bounds below are that division, by hand.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from provisioner.cli.main import app
from provisioner.core.catalog import resolve_model
from provisioner.core.hardware import gpu_specs
from provisioner.core.layouts import Layout
from provisioner.core.perf import Workload, estimate
from provisioner.core.perf_ep import estimate_layout
from provisioner.core.planner.estimates import host_link_gbps
from provisioner.core.quant import resolve_quant

GIB = 2**30
HOPPER_HOST_GBPS = 50e9


def quote_plans(*args: str) -> list[dict]:  # type: ignore[type-arg]
    res = CliRunner().invoke(
        app, ["quote", *args, "--gpu", "H200", "--cloud", "aws", "--nodes", "1", "--top", "0",
              "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    plans: list[dict] = json.loads(res.stdout)["plans"]  # type: ignore[type-arg]
    assert plans
    return plans


def test_dense_engines_and_dp_engines_pay_the_offload_copy_every_step() -> None:
    # 4 GiB per GPU: 4 x 2^30 B / 50e9 B/s = 85.9 ms per step, on TP8 and on each DP engine
    floor_ms = 4 * GIB / HOPPER_HOST_GBPS * 1000
    args = ("-m", "llama-3.1-8b", "--ctx", "32k", "--cpu-offload-gb", "4")
    plans = quote_plans(*args, "--layout", "dp") + quote_plans(*args, "--layout", "tp")
    layouts = {p["layout"] for p in plans}
    assert "TP8" in layouts and any("DP" in lay for lay in layouts), layouts
    for p in plans:
        assert p["tpot_ms"] >= floor_ms, p["layout"]
        # at most one token per request in flight per step
        assert p["tokens_per_s"] <= p["concurrency"] / (floor_ms / 1000), p["layout"]


def test_moe_dp_ep_layouts_pay_the_offload_copy_every_step() -> None:
    # vLLM v0.18.0 config/offload.py: --cpu-offload-gb is "per GPU"; every worker (each GPU of
    # each DP rank) builds its own UVAOffloader with that budget, and lockstep MoE ranks run a
    # forward pass every step. 20 GiB per GPU: 20 x 2^30 B / 50e9 B/s = 429.5 ms per step, so a
    # plan of C requests makes at most C / 0.4295 s tokens/s (728 requests: 1,695 tok/s).
    # Before the fix, DP8+EP8 on p5en showed TPOT 255.6 ms and 2,827.7 tok/s at 728 requests.
    floor_ms = 20 * GIB / HOPPER_HOST_GBPS * 1000
    plans = quote_plans(
        "-m", "moonshotai/Kimi-K2-Thinking", "-q", "int4", "--ctx", "128k",
        "--cpu-offload-gb", "20", "--layout", "dp-ep",
    )  # fmt: skip
    assert {p["layout"] for p in plans} >= {"DP8+EP8"}
    for p in plans:
        assert p["tpot_ms"] >= floor_ms, p["layout"]
        assert p["tokens_per_s"] <= p["concurrency"] / (floor_ms / 1000), p["layout"]


@pytest.mark.parametrize("layout", [Layout(1, 8, 1, True), Layout(8, 1, 1, True)])
def test_every_moe_ep_layout_charges_the_offload_per_gpu(layout: Layout) -> None:
    # 6 GiB per GPU over 50 GB/s: 6 x 2^30 / 50e9 = 128.8 ms added to every decode step, on
    # DP8+EP8 (all-to-all path) as on TP8+EP8 (DP 1, EP): the step grows by exactly that
    spec = resolve_model("moonshotai/Kimi-K2-Thinking")
    scheme = resolve_quant("int4", spec)
    gpu = gpu_specs()["H200-SXM"]
    kw = {"gpus_per_node": 8, "interconnect": "nvlink", "fabric": "efa",
          "workload": Workload(8000, 1000, 64), "pcie_gbps": 50.0}  # fmt: skip
    base, _ = estimate_layout(spec, scheme, gpu, layout, **kw)  # type: ignore[arg-type]
    off, terms = estimate_layout(spec, scheme, gpu, layout, offload_gib_per_gpu=6.0, **kw)  # type: ignore[arg-type]
    assert off.offload_s == pytest.approx(6 * GIB / 50e9)
    assert off.step_s - base.step_s == pytest.approx(6 * GIB / 50e9, rel=1e-9)
    assert terms.imbalance > 1.0  # still the EP path


def test_an_mi300x_host_link_is_pcie_gen5() -> None:
    # AMD's MLPerf Inference v5.1 system description (mlcommons/inference_results_v5.1,
    # closed/AMD/systems/8xMI300X_2xEPYC_9575F.json): "accelerator_host_interconnect":
    # "PCIe Gen5 x16", the H200's link: 64 GB/s per direction x ~80% = the same 50 GB/s
    assert host_link_gbps(gpu_specs()["MI300X"]) == host_link_gbps(gpu_specs()["H200-SXM"]) == 50
    assert host_link_gbps(gpu_specs()["A100-80GB-SXM"]) == 25  # Gen4 x16


@pytest.mark.parametrize(
    ("model", "quant", "layout", "dcp"),
    [
        ("deepseek-ai/DeepSeek-R1", "auto", Layout(8, 1, 1), 8),  # MoE, DP 1 without EP
        ("meta-llama/Llama-3.1-70B", "fp8", Layout(4, 1, 2), 1),  # dense TP x PP
    ],
)
def test_a_layout_without_dp_or_ep_is_one_engine_with_all_its_knobs(
    model: str, quant: str, layout: Layout, dcp: int
) -> None:
    spec = resolve_model(model)
    scheme = resolve_quant(quant, spec)
    gpu = gpu_specs()["H200-SXM"]
    kw = {
        "gpus_per_node": 8, "interconnect": "nvlink", "fabric": "efa",
        "workload": Workload(8000, 1000, 64), "max_num_seqs": 256, "dcp": dcp,
        "offload_gib_per_gpu": 3.0, "pcie_gbps": 50.0,
    }  # fmt: skip
    est, terms = estimate_layout(spec, scheme, gpu, layout, **kw)  # type: ignore[arg-type]
    engine = estimate(spec, scheme, gpu, tp=layout.tp, pp=layout.pp, **kw)  # type: ignore[arg-type]
    assert est == engine
    assert est.offload_s == pytest.approx(layout.pp * 3 * GIB / 50e9)
    assert (terms.all_to_all_s, terms.expert_memory_s, terms.imbalance) == (0.0, 0.0, 1.0)


def test_a_dense_dp_layout_is_dp_engines_at_their_share_of_the_requests() -> None:
    # 64 requests over DP4 engines of TP2: each engine runs 16; tokens/s = 4 x one engine's
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    scheme = resolve_quant("bf16", spec)
    gpu = gpu_specs()["H100-SXM"]
    kw = {"gpus_per_node": 8, "interconnect": "nvlink", "fabric": "efa",
          "offload_gib_per_gpu": 2.0, "pcie_gbps": 50.0}  # fmt: skip
    est, terms = estimate_layout(
        spec,
        scheme,
        gpu,
        Layout(2, 4, 1),
        workload=Workload(2000, 500, 64),
        **kw,  # type: ignore[arg-type]
    )
    one = estimate(spec, scheme, gpu, tp=2, pp=1, workload=Workload(2000, 500, 16), **kw)  # type: ignore[arg-type]
    assert est.output_tps == pytest.approx(4 * one.output_tps)
    assert est.tpot_s == one.tpot_s and est.batch == 64
    assert est.offload_s == pytest.approx(2 * GIB / 50e9)
    assert terms.all_to_all_s == 0.0


def test_a_moe_dp_layout_adds_the_ep_terms() -> None:
    spec = resolve_model("moonshotai/Kimi-K2-Thinking")
    scheme = resolve_quant("int4", spec)
    gpu = gpu_specs()["H200-SXM"]
    _, terms = estimate_layout(
        spec, scheme, gpu, Layout(1, 8, 1, True), gpus_per_node=8, interconnect="nvlink",
        fabric="efa", workload=Workload(8000, 1000, 64),
    )  # fmt: skip
    # 64 requests x 8 experts of 384 over 8 GPUs: m = 64 x 8 / 8 = 64 pairs per GPU on average;
    # the fullest of 8 GPUs: 1 + sqrt(2 ln 8 / 64) = 1.2549 (perf_ep.imbalance)
    assert terms.imbalance == pytest.approx(1.2549, abs=1e-4)
    assert terms.batch_all_ranks == 64
    assert terms.all_to_all_s > 0 and terms.expert_memory_s > 0
