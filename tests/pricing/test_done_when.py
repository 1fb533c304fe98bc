"""Issue 13's "done when", run through the real command line on the embedded snapshot."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from pricing.rentable import alias_family
from provisioner.cli.main import app

KIMI = ["quote", "--model", "moonshotai/Kimi-K2-Thinking", "--quant", "int4", "--ctx", "128k"]


def run(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def every_plan() -> list[dict[str, Any]]:
    # --all-zones: every place of every choice (issue 17 folds places into one row otherwise)
    args = [*KIMI, "--top", "0", "--objective", "usd-per-hour", "--all-zones", "--json"]
    doc = json.loads(run(*args).stdout)
    assert len(doc["plans"]) > 1000
    return list(doc["plans"])


def test_p5_48xlarge_shows_55_04_on_demand_in_us_east_1() -> None:
    out = run("prices", "show", "--cloud", "aws", "--region", "us-east-1", "--gpu", "H100").stdout
    rows = [line.split() for line in out.splitlines() if " p5.48xlarge " in line]
    assert len(rows) == 7 and all(r[3] == "55.04" for r in rows)  # the od $/h column


def test_no_plan_uses_p5e(every_plan: list[dict[str, Any]]) -> None:
    assert not [p for p in every_plan if p["instance_type"].startswith("p5e.")]
    assert {p["market"] for p in every_plan} <= {"spot", "on-demand"}


def test_no_marketplace_plan_spans_machines(every_plan: list[dict[str, Any]]) -> None:
    market = [p for p in every_plan if p["cloud"] in ("vast", "runpod")]
    assert market, "the Kimi quote has single-node marketplace plans"
    assert {p["nodes"] for p in market} == {1}
    assert all(p["multi_node"] is False for p in market)


def test_readme_quote_top_ten_has_no_two_aliases_of_one_machine() -> None:
    plans = json.loads(run(*KIMI, "--json").stdout)["plans"]
    assert len(plans) == 10
    machines = [
        (p["cloud"], p["region"], p["zone"], alias_family(p["cloud"], p["instance_type"]),
         p["nodes"], p["market"])
        for p in plans
    ]  # fmt: skip
    assert len(set(machines)) == len(machines)
    names = {p["instance_type"] for p in plans}
    assert not any(set(p["aliases"]) & names for p in plans)
    assert "Standard_ND96is_MI300X_v5" not in names  # before: listed next to ND96isr


def test_every_plan_states_its_price_age(every_plan: list[dict[str, Any]]) -> None:
    for p in every_plan[:200]:
        assert (p["price_age_days"] is None) == (p["prices_as_of"] is None)
        if p["market"] == "spot":
            assert p["spot_risk"]["interruption_per_month"]  # a bucket or "unknown", never 0
