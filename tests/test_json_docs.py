"""review9 #8: every key `prov quote --json` prints is documented in docs/json.md, the contract's
reference, and declared (so type-checked on reading) by provisioner/contract/document.py.

The keys are walked in real documents, on quotes chosen to produce the keys that appear only
sometimes: --risk-adjusted (expected_usd_per_hour), --compare-api, a --top below the headline's
picks (headline_plans), an AWS spot pool with a published interruption bucket (reclaim's numbers
and alternatives), DP/EP shapes among the rejected, a GGUF plan (nulls for throughput).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from provisioner.cli.main import app
from provisioner.contract.document import ModelInfo, Plan, PlanDocument, RequestInfo

DOC = Path(__file__).resolve().parents[1] / "docs" / "json.md"
KIMI = ["quote", "--model", "moonshotai/Kimi-K2-Thinking", "--ctx", "128k", "--json"]
QUOTES = {
    "risk-api-top1": [*KIMI, "--risk-adjusted", "--compare-api", "--top", "1"],
    "aws-spot": [*KIMI, "--cloud", "aws", "--market", "spot", "--top", "5"],
    "gguf": ["quote", "--model", "meta-llama/Llama-3.1-70B", "--quant", "q4_k_m", "--json"],
}
#: Objects whose keys are data, not names: documented as one placeholder.
PLACEHOLDERS = {"skipped_prices": "<reason>", "compare_api.markets": "<market>"}


def paths(value: Any, at: str = "") -> Iterator[str]:
    """Every key path of a JSON value: `plans[].reclaim.notice_s`; headline_plans[] are plans."""
    if isinstance(value, dict):
        for key, item in value.items():
            name = PLACEHOLDERS.get(at, key)
            path = f"{at}.{name}" if at else name
            if path == "headline_plans":
                path = "plans"
            yield path
            yield from paths(item, path)
    elif isinstance(value, list):
        for item in value:
            yield from paths(item, f"{at}[]")


@pytest.fixture(scope="module")
def documents() -> dict[str, dict[str, Any]]:
    out = {}
    for name, args in QUOTES.items():
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        out[name] = json.loads(result.stdout)
    return out


def documented() -> set[str]:
    return set(re.findall(r"`([a-z0-9_<>\[\].-]+)`", DOC.read_text(encoding="utf-8")))


def test_every_key_is_documented(documents: dict[str, dict[str, Any]]) -> None:
    seen = {p for doc in documents.values() for p in paths(doc)}
    assert len(seen) > 100  # the walk reached the nested objects
    missing = sorted(seen - documented())
    assert not missing, f"keys of prov quote --json not in docs/json.md: {missing}"


def test_the_review_keys_are_documented() -> None:
    """The keys review9 found in no doc, named as docs/json.md names them."""
    keys = {"plans[].perf_band_basis", "plans[].spot_interruption", "plans[].ttft_s"}
    keys |= {"plans[].total_tokens_per_s", "plans[].usd_per_mtok_blended", "feasible_plans"}
    assert keys <= documented()


def test_the_quotes_reach_the_conditional_keys(documents: dict[str, dict[str, Any]]) -> None:
    seen = {p for doc in documents.values() for p in paths(doc)}
    for key in (
        "plans[].expected_usd_per_hour",
        "plans[].reclaim.alternatives.n_plus_1.availability",
        "compare_api.markets.<market>.breakeven_requests_per_day",
        "rejected[].dp",
    ):
        assert key in seen, key


def test_every_plan_key_is_declared_by_the_reader(documents: dict[str, dict[str, Any]]) -> None:
    """A key the reader does not declare is kept but never type-checked (extra="allow")."""
    for doc in documents.values():
        assert set(doc) <= set(PlanDocument.model_fields)
        assert set(doc["request"]) <= set(RequestInfo.model_fields)
        assert set(doc["model"]) <= set(ModelInfo.model_fields)
        for plan in doc["plans"] + doc.get("headline_plans", []):
            assert set(plan) <= set(Plan.model_fields), set(plan) - set(Plan.model_fields)
