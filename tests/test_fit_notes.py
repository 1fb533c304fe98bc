"""`prov fit`: the --vllm-version bounds, TP across nodes, and --explain's layout.

review7 findings 13 (a version newer than the newest modelled release), 27 (TP16 on 8-GPU
nodes) and 24 ("Weights:" printed twice).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from provisioner.cli.main import app
from provisioner.core.vllm_rules import CHANGES, NEWEST_MODELLED, rules_for

BASE = ["fit", "-m", "llama-3.1-8b", "--gpu", "L4", "--ctx", "8k"]


def run(*args: str) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, [*BASE, *args])
    return res.exit_code, res.stdout, res.stderr


# ---- --vllm-version ------------------------------------------------------------------------


def test_newest_modelled_is_the_newest_rule_row() -> None:
    # docs/vllm-rules.md section 10: the last row read is v0.30 (gpu_memory_utilization 0.92)
    assert max(c.since for c in CHANGES)[:2] == NEWEST_MODELLED == (0, 30)


@pytest.mark.parametrize(
    ("version", "label"), [("9.0.0", "9.0.0"), ("0.31.0", "0.31.0"), ("1.0.0rc1", "1.0.0")]
)
def test_a_newer_release_gets_the_newest_rules_and_a_warning(version: str, label: str) -> None:
    # a user on a just-released vLLM still gets an answer (exit 0), told which rules it used
    code, out, err = run("--vllm-version", version, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["vllm_version"] == label
    # the newest rules: utilization 0.92 (v0.30), CUDA graphs inside the budget (v0.21)
    assert doc["gpu_memory_utilization"] == 0.92 and doc["cuda_graph_in_budget"] is True
    assert err.startswith(f"prov: warning: vLLM {label} is newer than v0.30, the newest")
    assert max(len(line) for line in err.splitlines()) <= 80
    assert doc["warnings"] == [" ".join(err.removeprefix("prov: warning: ").split())]


@pytest.mark.parametrize("version", ["0.30.0", "0.30.4", "0.18.0", "0.11.1rc2", "v0.10.1.1"])
def test_modelled_releases_do_not_warn(version: str) -> None:
    code, out, err = run("--vllm-version", version, "--json")
    assert code == 0 and err == "" and json.loads(out)["warnings"] == []


@pytest.mark.parametrize(
    "version", ["banana", "0.18.x", "1.2.3.4.5", "0.18.0-final", "", "0.9.2", "99999.0.0"]
)
def test_nonsense_versions_exit_2(version: str) -> None:
    code, out, _ = run("--vllm-version", version)
    assert code == 2 and "Traceback" not in out


def test_prerelease_versions_parse_to_their_release() -> None:
    # vLLM tags release candidates v0.11.1rc2; source builds report 0.11.1.dev12+gabc.cu128
    assert rules_for("0.11.1rc2").version == (0, 11, 1)
    assert rules_for("0.11.1.dev12+gabc.cu128").version == (0, 11, 1)


# ---- TP across nodes -----------------------------------------------------------------------


def test_tp16_on_h200_says_it_spans_two_nodes() -> None:
    # the price data's largest H200 node has 8 GPUs (p5en.48xlarge, 8 x H200 boxes), so TP16
    # spans 2 nodes; prov quote ranks TP8 x PP2 there and deploy refuses TP across nodes
    args = ["fit", "-m", "kimi-k2-thinking", "--gpu", "H200", "--tp", "16", "--ctx", "128k"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0  # vLLM runs it (Ray), so it fits: the note says what it costs
    out = " ".join(res.stdout.split())
    assert "16 x H200-SXM (139.81 GiB per CUDA), TP across 2 nodes" in out  # the header
    assert "TP16 spans 2 nodes: the largest H200-SXM node in the price data has 8 GPUs" in out
    assert "TP8xPP2 for 16 GPUs" in out  # the quote table's spelling (review7 #16)
    doc = json.loads(CliRunner().invoke(app, [*args, "--json"]).stdout)
    assert (doc["node_gpus"], doc["tp_nodes"]) == (8, 2)


def test_tp_inside_a_node_has_no_note() -> None:
    args = ["fit", "-m", "kimi-k2-thinking", "--gpu", "H200", "--tp", "8", "--ctx", "128k"]
    res = CliRunner().invoke(app, [*args, "--json"])
    doc = json.loads(res.stdout)
    assert doc["tp_nodes"] == 1 and not any("spans" in n for n in doc["notes"])


# ---- --explain -----------------------------------------------------------------------------


def test_explain_prints_weights_once() -> None:
    code, out, _ = run("--explain")
    assert code == 0
    heads = [line for line in out.splitlines() if line.startswith("Weights:")]
    assert len(heads) == 1 and heads[0] != "Weights:"  # the line with the figures


# ---- --price ---------------------------------------------------------------------------------


def test_price_covers_every_gpu_of_a_dp_layout() -> None:
    # DP8 x TP1 runs on 8 GPUs: the priced nodes must hold 8 (they held 1 before)
    args = [
        "fit", "-m", "kimi-k2-thinking", "--gpu", "H200", "--tp", "1", "-dp", "8",
        "--enable-expert-parallel", "--ctx", "128k", "--price", "--json",
    ]  # fmt: skip
    prices = json.loads(CliRunner().invoke(app, args).stdout)["prices"]
    assert prices
    for p in prices.values():
        assert p["nodes"] * p["gpus_per_node"] >= 8


def test_price_uses_quotes_node_rules() -> None:
    # fit sizes one node's links: 8 GPUs of H200 come on one 8-GPU node (the largest H200 node
    # in the offers), never 8 single-GPU machines, and several nodes only where the catalog
    # declares a cluster fabric (multi_node), as quote's candidates (planner/candidates.py)
    from pricing.offers import current_offers
    from provisioner.core.offer import price_doubt

    offers = {(o.cloud, o.instance_type): o for o in current_offers()}
    for gpu, tp, pp, dp, ep in (("H200", 1, 1, 8, True), ("H100", 8, 2, 1, False)):
        args = ["fit", "-m", "kimi-k2-thinking", "--gpu", gpu, "--tp", str(tp), "--pp", str(pp),
                "-dp", str(dp), "--ctx", "128k", "--price", "--json"]  # fmt: skip
        res = CliRunner().invoke(app, args + (["--enable-expert-parallel"] if ep else []))
        prices = json.loads(res.stdout)["prices"]
        assert prices, res.stdout
        for p in prices.values():
            assert p["gpus_per_node"] == 8, p
            o = offers[(p["cloud"], p["instance_type"])]
            assert p["nodes"] == 1 or (o.multi_node and p["fabric"] == o.fabric), p
    # on-demand: the cheapest undoubted 8-GPU H200 node (the reviewer's quote: vast, $20.71/h)
    want = min(
        o.ondemand_usd_per_hour
        for o in offers.values()
        if o.gpu == "H200-SXM" and o.gpus_per_node == 8 and o.ondemand_usd_per_hour
        and not price_doubt(o, "on-demand")
    )  # fmt: skip
    args = ["fit", "-m", "kimi-k2-thinking", "--gpu", "H200", "-dp", "8", "--price", "--json",
            "--enable-expert-parallel", "--ctx", "128k"]  # fmt: skip
    got = json.loads(CliRunner().invoke(app, args).stdout)["prices"]["on-demand"]
    assert got["usd_per_hour"] == round(want, 2) and got["nodes"] == 1


def test_price_prefers_an_observed_price_to_the_catalogs_estimate() -> None:
    # quote's headline rule: Azure's spot at exactly 18.48% of on-demand is an estimate
    # (offer.price_estimate); a 1xA10 spot price is the cheapest observed one even where an
    # estimate is lower, and MI300X (whose only spot prices are such estimates) names one
    from pricing.offers import current_offers
    from provisioner.core.offer import price_doubt, price_estimate

    spot = [
        o
        for o in current_offers()
        if o.gpu == "A10" and o.spot_usd_per_hour and not price_doubt(o, "spot")
    ]
    observed = min(o.spot_usd_per_hour or 0 for o in spot if not price_estimate(o, "spot"))
    assert min(o.spot_usd_per_hour or 0 for o in spot) < observed  # the case is real
    args = ["fit", "-m", "llama-3.1-8b", "--gpu", "A10", "--ctx", "8k", "--price", "--json"]
    got = json.loads(CliRunner().invoke(app, args).stdout)["prices"]["spot"]
    assert got["usd_per_hour"] == round(observed, 2) and got["estimate"] is None
    args = ["fit", "-m", "kimi-k2-thinking", "--gpu", "MI300X", "-dp", "8", "--price",
            "--enable-expert-parallel", "--ctx", "128k"]  # fmt: skip
    out = " ".join(CliRunner().invoke(app, args).stdout.split())
    assert "(an estimate the catalog filled in, not observed)" in out


def test_price_says_why_tp_across_nodes_has_no_offer() -> None:
    args = ["fit", "-m", "kimi-k2-thinking", "--gpu", "H200", "--tp", "16", "--price"]
    out = " ".join(CliRunner().invoke(app, args).stdout.split())
    assert "no H200-SXM node holds a TP16 group (the largest has 8 GPUs)" in out


# ---- --gpu-memory-gib without --gpu: the assumed batch class (review8) ----------------------


@pytest.mark.parametrize(
    ("args", "noted"),
    [
        # vLLM v0.18.0 get_batch_defaults: >= 70 GiB and not an A100 -> 8192 tokens / 1024 seqs,
        # an A100-80GB (79.15 GiB) keeps 2048 / 256: the size alone does not decide
        (["--gpu-memory-gib", "79.15"], True),
        (["--gpu", "A100-80GB-SXM"], False),  # named: nothing assumed
        (["--gpu-memory-gib", "40"], False),  # below 70 GiB every GPU gets 2048 / 256
        (
            [
                "--gpu-memory-gib",
                "79.15",
                "--max-num-seqs",
                "256",
                "--max-num-batched-tokens",
                "2048",
            ],
            False,
        ),  # both given: no default used
    ],
)
def test_a_nameless_big_gpu_says_which_batch_defaults_it_assumed(
    args: list[str], noted: bool
) -> None:
    res = CliRunner().invoke(app, ["fit", "-m", "llama-3.1-8b", "--ctx", "8k", *args])
    assert res.exit_code == 0
    text = " ".join(res.stdout.split())
    assert ("an A100 gets 2048 / 256 batched tokens / seqs" in text) is noted
