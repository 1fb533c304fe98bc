"""`--risk-adjusted` and `--min-availability`: what reclaims cost (core/expected_cost.py).

    availability = 1 - nodes x rate x time to serve (0 within the notice)
    rate = -ln(1 - p) / 720 h
    expected $/h = price / availability
    p = the advisor bucket's upper bound (>20%: assumed 50%; no bucket: unknown, ranked at 20%)

Time to serve is written out by hand from the rate table (provisioner/data/time_to_serve.json,
tests/test_time_to_serve.py). Llama-3.1-8B bf16 = 8,030,261,248 params x 2 B = 16,060,522,496 B
on a g6e.xlarge (2.5 Gbit/s x 0.61 = 0.190625 GB/s from S3): 180 s node + 0 image + 84.252 s
weights + 46.9 s engine start + 16.1 s compile (cache) + 17 s graphs = 344.252 s; the AWS
notice is 120 s, shorter, so a reclaim costs all 344.252 s of serving (the replica leaves the
load balancers at the notice).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pricing.offers_csv import COLUMNS
from provisioner.cli.main import app
from provisioner.contract.document import PlanDocument
from provisioner.core.catalog import resolve_model
from provisioner.core.expected_cost import monthly_rate_to_hourly, reclaim
from provisioner.core.offer import Offer
from provisioner.core.planner import plan_quote
from provisioner.core.quant import resolve_quant
from provisioner.core.request import QuoteRequest
from provisioner.core.time_to_serve import Replica, time_to_serve

LLAMA8B_BYTES = 8_030_261_248 * 2
TTS_8B = 180 + 0 + LLAMA8B_BYTES / 0.190625e9 + 46.9 + 16.1 + 17  # 344.252 s
DOWN_H_8B = TTS_8B / 3600  # it exceeds the 120 s notice: the whole time is lost: 0.0956256 h
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
RISKY_EXPECTED = 0.80000 / (1 - RATE_50 * DOWN_H_8B)  # 0.8000480
SAFE_EXPECTED = 0.80004 / (1 - RATE_5 * DOWN_H_8B)  # 0.8000436
TTS_8B_REPLICA = Replica("aws", "g6e.xlarge", 1, 4, 1, LLAMA8B_BYTES, moe=False)


def quote(offers: list[Offer], **fields: object) -> list[tuple[str, float, float | None]]:
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    scheme = resolve_quant("bf16", spec)
    req = QuoteRequest(
        model=spec.id, quant="bf16", ctx=8192, market="spot", max_nodes=1, top=0, **fields
    )
    result = plan_quote(req, spec, scheme, offers)
    return [(p.offer.region, p.usd_per_hour, p.expected_usd_per_hour) for p in result.plans]


def test_the_rates_and_reclaim_cost_by_hand() -> None:
    assert monthly_rate_to_hourly(5) == pytest.approx(7.12407e-5, rel=1e-5)
    assert monthly_rate_to_hourly(50) == pytest.approx(9.62704e-4, rel=1e-5)
    tts = time_to_serve(TTS_8B_REPLICA, "s3")
    assert tts.total_s == pytest.approx(TTS_8B, rel=1e-12) == pytest.approx(344.252, abs=1e-3)
    r = reclaim(SAFE, "spot", 1, tts)
    assert r.pct_per_month == 5 and "<5%" in r.basis and r.notice_s == 120
    assert r.downtime_s == pytest.approx(344.252, abs=1e-3)
    # 0.051293 reclaims/month x 344.252 s = 17.658 s = 0.0049050 h lost per month
    assert r.interruptions_per_month == pytest.approx(-math.log(0.95), rel=1e-12)
    assert r.lost_hours_per_month == pytest.approx(0.0049050, rel=1e-4)
    assert r.availability == pytest.approx(1 - 0.0049050 / 720, rel=1e-8)
    assert r.expected_usd_per_hour(0.80004) == pytest.approx(SAFE_EXPECTED, rel=1e-12)
    risky = reclaim(RISKY, "spot", 1, tts)
    assert risky.pct_per_month == 50 and "no upper bound" in risky.basis
    assert risky.expected_usd_per_hour(0.8) == pytest.approx(RISKY_EXPECTED, rel=1e-12)
    # the alternatives for one replica: N+1 / warm spare at 2x spot, on-demand floor at 2.0 $/h
    alt = risky.alternatives(0.8, 2.0)
    f = risky.lost_fraction
    assert alt["n_plus_1"] == {"usd_per_hour": 1.6, "availability": round(1 - f * f, 6)}
    assert alt["warm_spare"] == alt["n_plus_1"]
    assert alt["on_demand_floor"] == {"usd_per_hour": 2.0, "availability": 1.0}


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
    # 0.1% cheaper: more than the 0.006% the >20% pool loses to reclaims
    cheaper = g6e("us-west-2", "usw2-az1", 0.79920)
    adjusted = quote([cheaper, SAFE], risk_adjusted=True, objective="usd-per-hour")
    assert [r for r, _, _ in adjusted] == ["us-west-2", "ap-northeast-1"]


def test_multi_node_plans_add_up_interruptions_over_nodes() -> None:
    # Kimi-K2-Thinking int4 on 2 x p4de.24xlarge spot in us-west-2 (advisor '15-20%': p = 20%):
    # 297.1 GB per node / 6.09 GB/s = 48.785 s; + 180 + 60.3 + 23.4 + 44 = 356.485 s down
    p4de = Offer(
        "aws", "us-west-2", "usw2-az1", "p4de.24xlarge", "A100-80GB-SXM", 8, 80.0, 96, 1152,
        "nvlink", "efa", 40.96575, 7.107, None, (),
    )  # fmt: skip
    tts = time_to_serve(Replica("aws", "p4de.24xlarge", 8, 96, 2, 594_205_305_856, True))
    r = reclaim(p4de, "spot", 2, tts)
    down_h = (594_205_305_856 / 2 / 6.09e9 + 180 + 60.3 + 23.4 + 44) / 3600
    rate = -math.log(1 - 0.20) / 720
    assert r.interruptions_per_month == pytest.approx(2 * rate * 720, rel=1e-12)
    assert r.downtime_s / 3600 == pytest.approx(down_h, rel=1e-12) == pytest.approx(0.0990237)
    assert r.expected_usd_per_hour(14.214) == pytest.approx(
        14.214 / (1 - 2 * rate * down_h), rel=1e-12
    )
    assert r.expected_usd_per_hour(14.214) == pytest.approx(14.2149, abs=5e-5)


def test_on_demand_and_unknown_pools() -> None:
    tts = time_to_serve(TTS_8B_REPLICA)
    on_demand = reclaim(SAFE, "on-demand", 3, tts)
    assert on_demand.expected_usd_per_hour(7.5) == 7.5 and on_demand.availability == 1.0
    gcp = Offer(
        "gcp", "us-central1", "us-central1-a", "g2-standard-4", "L4", 1, 22.4, 4, 16, "pcie",
        "ethernet", 0.7, 0.28, "2026-05-20", (),
    )  # fmt: skip
    r = reclaim(gcp, "spot", 1, tts)
    assert r.pct_per_month is None and not r.known
    assert r.basis.startswith("unknown: gcp publishes no interruption rate")
    assert r.notice_s == 30  # GCP's documented preemption notice
    # ranked at the stated 20% assumption, but the JSON says unknown, never zero
    down_h = tts.total_s / 3600  # 344 s exceed GCP's 30 s notice: all of it is lost
    assert r.expected_usd_per_hour(0.28) == pytest.approx(
        0.28 / (1 - -math.log(0.8) / 720 * down_h), rel=1e-12
    )
    doc = r.to_json(0.28, 0.7)
    assert doc["interruption_pct_per_month"] is None and doc["availability"] is None
    assert doc["capacity_lost_h_per_month"] is None and doc["alternatives"] is None


def test_min_availability_drops_unknown_pools_and_keeps_on_demand() -> None:
    gcp = Offer(
        "gcp", "us-central1", "us-central1-a", "g2-standard-4", "L4", 1, 22.4, 4, 16, "pcie",
        "ethernet", 0.7, 0.28, "2026-05-20", (),
    )  # fmt: skip
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    req = QuoteRequest(model=spec.id, quant="bf16", ctx=8192, market="any", max_nodes=1,
                       top=0, min_availability=0.99, objective="usd-per-hour")  # fmt: skip
    result = plan_quote(req, spec, resolve_quant("bf16", spec), [gcp, SAFE])
    kept = [(p.offer.cloud, p.market) for p in result.plans]
    assert ("gcp", "spot") not in kept and ("gcp", "on-demand") in kept
    assert ("aws", "spot") in kept  # <5%: availability 0.999996 >= 0.99
    assert any("availability unproven" in reason for reason in result.skipped_prices)


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


# Kimi-K2-Thinking int4 (594,205,305,856 weight bytes) on 2 x p4de (s3): 356.485 s to serve,
# all of it down per reclaim. Node prices 7.1000 (us-west-2, p = 20%) and 7.1002 (us-east-1,
# p = 5%): plans of 14.2000 and 14.2004 $/h.
KIMI_DOWN_H = (594_205_305_856 / 2 / 6.09e9 + 180 + 60.3 + 23.4 + 44) / 3600
KIMI_RISKY = 14.2 / (1 - 2 * (-math.log(0.80) / 720) * KIMI_DOWN_H)  # 14.2008716
KIMI_SAFE = 14.2004 / (1 - 2 * RATE_5 * KIMI_DOWN_H)  # 14.2006004
# --weights hub: 180 + 12 / 0.0333 + 297.1 / 0.692 + 297.1 / 14.4 + 60.3 + 113.2 + 44 = 1,207.8 s
KIMI_HUB_DOWN_H = (
    180 + 12 / 0.0333 + 594_205_305_856 / 2 / 0.692e9 + 594_205_305_856 / 2 / 14.4e9
    + 60.3 + 113.2 + 44
) / 3600  # fmt: skip


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
        round(KIMI_SAFE, 4),  # 14.2005
        round(KIMI_RISKY, 4),  # 14.2006
    ]
    assert raw["request"]["risk_adjusted"] is True


def test_cli_explain_shows_the_formula(two_pools: Path) -> None:
    result = run(*KIMI, "--prices", str(two_pools), "--risk-adjusted", "--explain")
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())  # rich wraps long lines at the terminal width
    assert "lost/month = nodes x -ln(1 - p) x time to serve (0 if within the notice)" in out
    assert "availability = 1 - lost / 720 h; expected $/h = price / availability" in out
    assert "p: Spot Advisor <5%: upper bound 5%/month" in out
    # -ln(0.95) = 0.0513 per node; x 2 = 0.102587; x 356.485 s = 36.571 s = 0.61 min per month
    assert (
        "2 node(s) x 0.0513/month = 0.1026 reclaims/month, each 356 s down (the 356 s to serve "
        "exceed the 120 s notice): 0.61 min/month lost" in out
    )
    # 36.571 s / (720 x 3600 s) = 1.411e-5: availability 0.999986; 14.2004 / it = 14.2006
    assert "availability 0.999986; expected $14.2004 / 0.999986 = $14.2006/h" in out
    # one replica's alternatives: 2 x 14.2004 spot, or on-demand 2 x 40.96575
    assert "N+1 or a warm spare $28.40/h" in out
    assert "on-demand floor $81.93/h (availability 1.0)" in out


@pytest.mark.parametrize(
    ("weights", "regions"),
    [("s3", ["us-east-1", "us-west-2"]), ("hub", ["us-east-1"])],
)
def test_cli_min_availability_follows_time_to_serve(
    two_pools: Path, weights: str, regions: list[str]
) -> None:
    # hub: us-west-2 1 - 2 x 3.0992e-4 x 0.302175 h = 0.999813 < 0.9999 (dropped);
    #      us-east-1 1 - 2 x 7.1241e-5 x 0.302175 h = 0.999957;  s3: 0.999959 and 0.999991
    result = run(*KIMI, "--prices", str(two_pools), "--json", "--weights", weights,
                 "--min-availability", "0.9999")  # fmt: skip
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert sorted(p["region"] for p in doc["plans"]) == regions
    east = next(p for p in doc["plans"] if p["region"] == "us-east-1")
    down_h = KIMI_DOWN_H if weights == "s3" else KIMI_HUB_DOWN_H
    assert east["reclaim"]["availability"] == round(1 - 2 * RATE_5 * down_h, 6)
    assert east["reclaim"]["interruption_pct_per_month"] == 5
    assert east["reclaim"]["rate_as_of"] == "2025-06-28"
    assert east["reclaim"]["downtime_per_reclaim_s"] == round(down_h * 3600)
    assert doc["request"]["min_availability"] == 0.9999
    assert doc["request"]["weights"] == weights


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
