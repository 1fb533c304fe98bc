"""`--risk-adjusted`: spot plans ranked by expected cost with restarts (pricing/expected_cost.py).

    expected $/h = price x (1 + nodes x rate x restart h)
    rate = -ln(1 - p) / 720,  p = the advisor bucket's upper bound (>20%: assumed 50%;
    no bucket: assumed 20%);  restart h = (weight bytes / nodes / 2 GB/s + 300 s) / 3600

Every expected number is written out from that formula by hand, with the weight bytes of the
checkpoint: Llama-3.1-8B bf16 = 8,030,261,248 params x 2 B = 16,060,522,496 B.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pricing.expected_cost import monthly_rate_to_hourly, restart_risk
from pricing.offers import COLUMNS, Offer
from provisioner.catalog import resolve_model
from provisioner.cli import app
from provisioner.contract import PlanDocument
from provisioner.planner import plan_quote
from provisioner.quant import resolve_quant
from provisioner.request import QuoteRequest

LLAMA8B_BYTES = 8_030_261_248 * 2
RESTART_H_8B = (LLAMA8B_BYTES / 2e9 + 300) / 3600  # one node: 308.03 s = 0.085564 h
RATE_5 = -math.log(1 - 0.05) / 720  # <5% bucket: 7.124e-5 per node-hour
RATE_50 = -math.log(1 - 0.50) / 720  # >20% bucket, assumed 50%: 9.627e-4


def g6e(region: str, zone: str, spot: float) -> Offer:
    """A 1 x L40S g6e.xlarge spot pool. Advisor: us-west-2 '>20%', ap-northeast-1 '<5%'."""
    return Offer(
        "aws", region, zone, "g6e.xlarge", "L40S", 1, 44.7, 4, 32, "pcie", "ethernet",
        2.0, spot, "2026-11-20", ("live",),
    )  # fmt: skip


# The cheapest pool is the riskiest: 0.80000 $/h in us-west-2 ('>20%') against 0.80004 $/h in
# ap-northeast-1 ('<5%').
RISKY = g6e("us-west-2", "usw2-az1", 0.80000)
SAFE = g6e("ap-northeast-1", "apne1-az1", 0.80004)
RISKY_EXPECTED = 0.80000 * (1 + RATE_50 * RESTART_H_8B)  # 0.8000659
SAFE_EXPECTED = 0.80004 * (1 + RATE_5 * RESTART_H_8B)  # 0.8000449


def quote(offers: list[Offer], **fields: object) -> list[tuple[str, float, float | None]]:
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    scheme = resolve_quant("bf16", spec)
    req = QuoteRequest(
        model=spec.id, quant="bf16", ctx=8192, market="spot", max_nodes=1, top=0, **fields
    )
    result = plan_quote(req, spec, scheme, offers)
    return [(p.offer.region, p.usd_per_hour, p.expected_usd_per_hour) for p in result.plans]


def test_the_rates_and_restart_time_by_hand() -> None:
    assert monthly_rate_to_hourly(5) == pytest.approx(7.12407e-5, rel=1e-5)
    assert monthly_rate_to_hourly(50) == pytest.approx(9.62704e-4, rel=1e-5)
    r = restart_risk(SAFE, "spot", 1, LLAMA8B_BYTES)
    assert r.pct_per_month == 5 and "<5%" in r.basis
    assert r.load_seconds == pytest.approx(8.030261248)
    assert r.restart_hours == pytest.approx(0.0855639615, rel=1e-9)
    assert r.expected_usd_per_hour(0.80004) == pytest.approx(0.8000448767, rel=1e-9)
    risky = restart_risk(RISKY, "spot", 1, LLAMA8B_BYTES)
    assert risky.pct_per_month == 50 and "no upper bound" in risky.basis
    assert risky.expected_usd_per_hour(0.8) == pytest.approx(0.8000658982, rel=1e-9)


@pytest.mark.parametrize("objective", ["usd-per-hour", "usd-per-mtok"])
def test_risk_adjusted_ranking_puts_the_safer_pool_first(objective: str) -> None:
    plain = quote([RISKY, SAFE], objective=objective)
    assert [(r, usd, e) for r, usd, e in plain] == [
        ("us-west-2", 0.8, None),
        ("ap-northeast-1", 0.80004, None),
    ]
    adjusted = quote([RISKY, SAFE], objective=objective, risk_adjusted=True)
    assert [r for r, _, _ in adjusted] == ["ap-northeast-1", "us-west-2"]
    # the price is still the price; the expected cost is beside it
    assert [usd for _, usd, _ in adjusted] == [0.80004, 0.8]
    assert adjusted[0][2] == pytest.approx(SAFE_EXPECTED, rel=1e-12)
    assert adjusted[1][2] == pytest.approx(RISKY_EXPECTED, rel=1e-12)


def test_a_wider_price_gap_is_not_overturned() -> None:
    # 0.1% cheaper: more than the 0.0082% the >20% pool adds
    cheaper = g6e("us-west-2", "usw2-az1", 0.79920)
    adjusted = quote([cheaper, SAFE], risk_adjusted=True, objective="usd-per-hour")
    assert [r for r, _, _ in adjusted] == ["us-west-2", "ap-northeast-1"]


def test_multi_node_plans_add_up_interruptions_over_nodes() -> None:
    # Kimi-K2-Thinking int4 on 2 x p4de.24xlarge spot in us-west-2 (advisor '15-20%': p = 20%):
    # 594,205,305,856 weight bytes / 2 nodes = 297.1 GB per node -> 148.55 s + 300 s
    p4de = Offer(
        "aws", "us-west-2", "usw2-az1", "p4de.24xlarge", "A100-80GB-SXM", 8, 80.0, 96, 1152,
        "nvlink", "efa", 40.96575, 7.107, None, (),
    )  # fmt: skip
    r = restart_risk(p4de, "spot", 2, 594_205_305_856)
    rate = -math.log(1 - 0.20) / 720
    restart_h = (594_205_305_856 / 2 / 2e9 + 300) / 3600
    assert r.interruptions_per_hour == pytest.approx(2 * rate, rel=1e-12)
    assert r.restart_hours == pytest.approx(restart_h, rel=1e-12) == pytest.approx(0.1245976)
    assert r.expected_usd_per_hour(14.214) == pytest.approx(
        14.214 * (1 + 2 * rate * restart_h), rel=1e-12
    )
    assert r.expected_usd_per_hour(14.214) == pytest.approx(14.2151, abs=5e-5)


def test_on_demand_and_unbucketed_pools() -> None:
    assert restart_risk(SAFE, "on-demand", 3, 1e12).expected_usd_per_hour(7.5) == 7.5
    gcp = Offer(
        "gcp", "us-central1", "us-central1-a", "g2-standard-4", "L4", 1, 22.4, 4, 16, "pcie",
        "ethernet", 0.7, 0.28, "2026-05-20", (),
    )  # fmt: skip
    r = restart_risk(gcp, "spot", 1, LLAMA8B_BYTES)
    assert r.pct_per_month == 20 and "no Spot Advisor bucket" in r.basis
    assert r.expected_usd_per_hour(0.28) == pytest.approx(
        0.28 * (1 + -math.log(0.8) / 720 * RESTART_H_8B), rel=1e-12
    )


# ---- the CLI ----------------------------------------------------------------------------------


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def run(*args: str) -> Result:
    return _runner().invoke(app, list(args))


def p4de(region: str, zone: str, spot: float) -> Offer:
    """8 x A100-80GB. Advisor: us-west-2 '15-20%', us-east-1 '<5%'."""
    return Offer(
        "aws", region, zone, "p4de.24xlarge", "A100-80GB-SXM", 8, 80.0, 96, 1152, "nvlink", "efa",
        40.96575, spot, "2026-11-20", ("live",),
    )  # fmt: skip


# Kimi-K2-Thinking int4 (594,205,305,856 weight bytes) on 2 nodes: 297.1 GB per node ->
# 148.55 s + 300 s = 0.1245976 h per restart. Node prices 7.1000 (us-west-2, p = 20%) and
# 7.1002 (us-east-1, p = 5%): plans of 14.2000 and 14.2004 $/h.
KIMI_RESTART_H = (594_205_305_856 / 2 / 2e9 + 300) / 3600
KIMI_RISKY = 14.2 * (1 + 2 * (-math.log(0.80) / 720) * KIMI_RESTART_H)  # 14.2010967
KIMI_SAFE = 14.2004 * (1 + 2 * RATE_5 * KIMI_RESTART_H)  # 14.2006521


@pytest.fixture
def two_pools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PROV_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "offers.csv"
    rows = [
        ",".join(
            str(v if not isinstance(v, tuple) else ";".join(v)) if v is not None else ""
            for v in (getattr(o, c) for c in COLUMNS)
        )
        for o in (p4de("us-west-2", "usw2-az1", 7.1), p4de("us-east-1", "use1-az1", 7.1002))
    ]
    path.write_text("\n".join([",".join(COLUMNS), *rows]) + "\n", encoding="utf-8")
    return path


# one plan per pool: TP layouts only, every place of the choice (--all-zones)
KIMI = [
    "quote", "-m", "kimi-k2-thinking", "-q", "int4", "--ctx", "128k", "--market", "spot",
    "--nodes", "2", "--objective", "usd-per-hour", "--layout", "tp", "--all-zones",
]  # fmt: skip


def test_cli_risk_adjusted_json(two_pools: Path) -> None:
    plain = run(*KIMI, "--prices", str(two_pools), "--json")
    assert plain.exit_code == 0, plain.output
    doc = json.loads(plain.stdout)
    assert [(p["region"], p["usd_per_hour"]) for p in doc["plans"]] == [
        ("us-west-2", 14.2),
        ("us-east-1", 14.2004),
    ]
    assert all("expected_usd_per_hour" not in p for p in doc["plans"])
    assert doc["request"]["risk_adjusted"] is False

    adjusted = run(*KIMI, "--prices", str(two_pools), "--json", "--risk-adjusted")
    assert adjusted.exit_code == 0, adjusted.output
    raw = json.loads(adjusted.stdout)
    parsed = PlanDocument.model_validate(raw)  # the key is declared in the contract
    assert not parsed.plans[0].model_extra
    assert [(p.region, p.usd_per_hour) for p in parsed.plans] == [
        ("us-east-1", 14.2004),
        ("us-west-2", 14.2),
    ]
    assert [p.expected_usd_per_hour for p in parsed.plans] == [
        round(KIMI_SAFE, 4),  # 14.2007
        round(KIMI_RISKY, 4),  # 14.2011
    ]
    assert raw["request"]["risk_adjusted"] is True


def test_cli_explain_shows_the_formula(two_pools: Path) -> None:
    result = run(*KIMI, "--prices", str(two_pools), "--risk-adjusted", "--explain")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())  # rich wraps long lines at the terminal width
    assert "expected $/h = price x (1 + interruptions/h x restart h)" in out
    assert "interruptions/h = nodes x -ln(1 - p) / 720 h" in out
    assert (
        "p = 5% (Spot Advisor <5%: upper bound 5%/month) -> 7.124e-05/h per node x 2 node(s) "
        "= 0.0001425 interruptions/h" in out
    )
    assert "restart = 297.1 GB / 2 GB/s = 149 s + 300 s = 0.1246 h" in out
    assert "expected = $14.2004 x (1 + 0.0001425 x 0.1246) = $14.2007/h" in out


def test_cli_real_snapshot_kimi_risk_adjusted_is_a_valid_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROV_CACHE_DIR", str(tmp_path / "cache"))
    result = run(
        "quote", "-m", "kimi-k2-thinking", "-q", "int4", "--ctx", "128k", "--cloud", "aws",
        "--gpu", "A100-80GB", "--nodes", "2", "--objective", "usd-per-hour", "--risk-adjusted",
        "--json", "--top", "0",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = PlanDocument.model_validate(json.loads(result.stdout))
    expected = [p.model_extra["expected_usd_per_hour"] for p in doc.plans if p.model_extra]
    assert not expected  # declared, so not an extra
    values = [p.expected_usd_per_hour for p in doc.plans]
    assert all(v is not None for v in values)
    assert values == sorted(values)  # ranked by expected cost
    for p in doc.plans:
        assert p.expected_usd_per_hour is not None and p.expected_usd_per_hour >= p.usd_per_hour
        if p.market == "on-demand":
            assert p.expected_usd_per_hour == p.usd_per_hour
