"""`prov fit` and `prov quote` agree on what a DP layout holds (review7 finding 3).

Each DP rank is its own vLLM engine with its own KV cache: a request lives on one rank, so the
node holds DP x (whole requests of one rank), not the pooled fraction DP x 3.95. Both commands
run here for the same layouts; the expectation is derived by hand from the published
Kimi-K2-Thinking TP8 start-up log on 8 x H200 (vllm-project/recipes moonshotai/Kimi-K2-Think.md:
"Available KV cache memory: 46.80 GiB"), the arithmetic of tests/test_layouts.py.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pricing.offers_csv import COLUMNS, parse_offers
from provisioner.cli.main import app
from provisioner.core.catalog import resolve_model
from provisioner.core.memory import GIB
from provisioner.core.planner import plan_quote
from provisioner.core.quant import resolve_quant
from provisioner.core.request import make_request

CTX = 131072
MLA_BYTES = 61 * (512 + 64) * 2  # Kimi K2 latent per token, bf16: 70,272 B
# TP-split weights (bf16, hand-counted from config.json, see tests/test_layouts.py):
# embed + lm_head, attention, dense MLP, shared experts
SHARED = 60 * 3 * 7168 * 2048
TP_SPLIT = (
    2 * 163840 * 7168
    + 61 * (1536 * 64 * 192 + 512 * 64 * 256 + 64 * 128 * 7168)
    + 3 * 7168 * 18432
    + SHARED
)
LOGGED_TP8_POOL = 46.80 * GIB


def rank_requests_by_hand(tp: int, dp: int) -> int:
    """Whole 128K requests one rank holds: the TP8 pool less the weights that TP{tp} no longer
    splits 8 ways. With EP, TP > 1 and DP > 1, vLLM keeps the shared experts whole on every GPU
    (sequence-parallel MoE); the routed experts are EP8 in every layout (same bytes)."""
    if dp == 1:
        extra = 0.0
    elif tp == 1:
        extra = TP_SPLIT * 2 * (1 - 1 / 8)
    else:
        extra = (TP_SPLIT - SHARED) * 2 * (1 / tp - 1 / 8) + SHARED * 2 * (1 - 1 / 8)
    return int((LOGGED_TP8_POOL - extra) // (MLA_BYTES * CTX))


def test_hand_derivation() -> None:
    # DP8:      46.80 - 19.80 x 7/8                         = 29.47 GiB -> 3.44 -> 3 per rank
    # TP2xDP4:  46.80 - 14.88 x 3/8 - 4.92 x 7/8            = 36.91 GiB -> 4.30 -> 4 per rank
    # TP4xDP2:  46.80 - 14.88 x 1/8 - 4.92 x 7/8            = 40.63 GiB -> 4.74 -> 4 per rank
    # (one request: 131,072 x 70,272 B = 8.58 GiB)
    assert round(TP_SPLIT * 2 / GIB, 2) == 19.80
    assert round(SHARED * 2 / GIB, 2) == 4.92
    assert [rank_requests_by_hand(t, d) for t, d in ((1, 8), (2, 4), (4, 2))] == [3, 4, 4]


H200 = next(
    iter(
        parse_offers(
            "\n".join(
                [
                    ",".join(COLUMNS),
                    "nebius,eu-north1,,h200x8,H200-SXM,8,141,128,1600,nvlink,infiniband,"
                    "28.00,11.60,2026-05-01,",
                ]
            ),
            "test",
        )
    )
)


def _fit(tp: int, dp: int, *extra: str) -> dict[str, object]:
    args = [
        "fit", "-m", "kimi-k2-thinking", "--gpu", "H200", "--tp", str(tp), "-dp", str(dp),
        "--enable-expert-parallel", "--ctx", "128k", "--json", *extra,
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    doc: dict[str, object] = json.loads(res.stdout)
    return doc


@pytest.fixture(scope="module")
def quoted() -> dict[str, dict[str, object]]:
    spec = resolve_model("moonshotai/Kimi-K2-Thinking")
    req = make_request(model=spec.id, ctx=CTX, top=0, nodes=1)
    res = plan_quote(req, spec, resolve_quant("auto", spec), [H200])
    return {p.verdict.layout.label: p.to_json() for p in res.layout_alternatives}


LAYOUTS = [(1, 8, "DP8+EP8"), (2, 4, "TP2xDP4+EP8"), (4, 2, "TP4xDP2+EP8")]


@pytest.mark.parametrize(("tp", "dp", "label"), LAYOUTS)
def test_fit_and_quote_count_the_same_whole_requests(
    quoted: dict[str, dict[str, object]], tp: int, dp: int, label: str
) -> None:
    doc = _fit(tp, dp)
    assert quoted[label]["max_concurrent_full_ctx"] == doc["max_concurrent_full_ctx"]
    assert quoted[label]["kv_cache_tokens"] == doc["kv_cache_tokens"]
    # vLLM logs its concurrency per engine: one rank's KV tokens / max_model_len
    # (get_max_concurrency_for_kv_cache_config, docs/vllm-rules.md section 2); a rank holds
    # the whole requests below that figure, the node DP times as many
    tokens = doc["kv_cache_tokens_per_rank"]
    assert isinstance(tokens, int) and tokens * dp == doc["kv_cache_tokens"]
    assert doc["max_concurrency"] == pytest.approx(tokens / CTX, abs=0.006)
    assert doc["max_concurrent_full_ctx_per_rank"] == int(tokens / CTX)
    assert doc["max_concurrent_full_ctx"] == dp * int(tokens / CTX)


@pytest.mark.parametrize(
    ("tp", "dp", "pool_gib"),
    [
        (1, 8, 29.47),  # 8 ranks x 3 = 24: the README's "DP8+EP8 ... holds 24 full 128K requests"
        (2, 4, 36.91),  # 4 x 4 = 16
        (4, 2, 40.63),  # 2 x 4 = 8
    ],
)
def test_whole_requests_match_the_hand_derivation(tp: int, dp: int, pool_gib: float) -> None:
    # the log is a v0.11 pip install (README: prov's v0.11.1 pip rules give +1.6% at TP8), so
    # fit runs with those rules; the default v0.18 image rules leave more KV (TP4xDP2: 5 a rank)
    doc = _fit(tp, dp, "--vllm-version", "0.11.1", "--install", "pip")
    per_rank = rank_requests_by_hand(tp, dp)
    assert doc["max_concurrent_full_ctx_per_rank"] == per_rank
    assert doc["max_concurrent_full_ctx"] == dp * per_rank
    assert doc["kv_cache_gib"] == pytest.approx(pool_gib, rel=0.03)


def test_text_prints_the_per_rank_figure_and_whole_requests() -> None:
    args = [
        "fit", "-m", "kimi-k2-thinking", "--gpu", "H200", "--tp", "1", "-dp", "8",
        "--enable-expert-parallel", "--ctx", "128k",
    ]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0
    out = " ".join(res.output.split())  # undo the 80-column wrapping
    assert "24 x 131,072-token requests at once (3 on each of 8 DP ranks" in out
    assert "3 whole per rank, 24 on the 8 ranks" in out
    assert "31.5" not in out  # the pooled fraction 8 x 3.95 is no longer printed


def test_quote_and_fit_both_say_a_device_size_is_estimated() -> None:
    # MI300X has no logged CUDA total: 192 GB (datasheet; no cloud MiB in gpus.csv) x 0.985 =
    # 189.12 GiB, an estimate both commands must name; H200 has a logged total (139.81) and no note
    said = "MI300X: 189.12 GiB per GPU is an estimate"
    args = ["-m", "kimi-k2-thinking", "--ctx", "128k", "--json"]
    doc = json.loads(CliRunner().invoke(app, ["quote", *args, "--gpu", "MI300X"]).stdout)
    assert doc["plans"] and all(any(said in w for w in p["warnings"]) for p in doc["plans"])
    doc = json.loads(CliRunner().invoke(app, ["quote", *args, "--gpu", "H200"]).stdout)
    assert doc["plans"] and not any("an estimate" in w for p in doc["plans"] for w in p["warnings"])
    out = CliRunner().invoke(app, ["fit", *args, "--gpu", "MI300X", "-dp", "8",
                                   "--enable-expert-parallel"]).stdout  # fmt: skip
    assert any(said in n for n in json.loads(out)["notes"])
