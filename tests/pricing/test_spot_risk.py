"""Spot interruption buckets and the offers view; expectations from shared/data/SOURCE.md."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pricing.offers_csv import COLUMNS, parse_offers
from pricing.show import price_rows
from provisioner.cli.main import app
from provisioner.core.catalog import resolve_model
from provisioner.core.planner import plan_quote
from provisioner.core.quant import resolve_quant
from provisioner.core.request import make_request
from provisioner.core.spot_risk import spot_risk
from provisioner.errors import UsageError


@pytest.mark.parametrize(
    "region, itype, label",
    [
        # SOURCE.md: p5.48xlarge >20% / 5-10% / 5-10%; p5en <5% / >20% / <5%;
        # p4d 10-15% / 5-10% / >20%; g6e.48xlarge >20% / >20% / 10-15% (us-east-1/-2, us-west-2)
        ("us-east-1", "p5.48xlarge", ">20%"),
        ("us-east-2", "p5.48xlarge", "5-10%"),
        ("us-west-2", "p5en.48xlarge", "<5%"),
        ("us-east-2", "p5en.48xlarge", ">20%"),
        ("us-east-1", "p4d.24xlarge", "10-15%"),
        ("us-west-2", "g6e.48xlarge", "10-15%"),
    ],
)
def test_advisor_buckets(region: str, itype: str, label: str) -> None:
    risk = spot_risk("aws", region, itype)
    assert risk is not None and risk.label == label


def test_no_bucket_outside_aws_or_for_unlisted_types() -> None:
    assert spot_risk("gcp", "us-east-1", "p5.48xlarge") is None
    assert spot_risk("aws", "us-east-1", "p5e.48xlarge") is None  # no p5e rows upstream


ROWS = [
    ",".join(COLUMNS),
    "aws,us-east-1,use1-az1,p5.48xlarge,H100-SXM,8,80,192,2048,nvlink,efa,98.32,40.00,,",
    "aws,us-east-2,use2-az1,p5.48xlarge,H100-SXM,8,80,192,2048,nvlink,efa,98.32,48.00,,",
    "lambda,us-east-1,,gpu_8x_h100_sxm5,H100-SXM,8,80,208,1800,nvlink,ethernet,31.92,,2026-05-07,",
    "gcp,europe-north1,europe-north1-c,a3-highgpu-8g,H100-SXM,8,80,208,1872,nvlink,"
    "gpudirect-tcpx,96.71,9.38,2026-05-20,spot_over_85pct_off",
]


def test_price_rows_sort_and_filter() -> None:
    offers = list(parse_offers("\n".join(ROWS)))
    spot = price_rows(offers, gpus=["h100"], spot_only=True)
    # 9.38/8 = 1.17 < 40/8 = 5.00 < 48/8 = 6.00; Lambda has no spot
    assert [r["usd_per_gpu_hour"] for r in spot] == [1.1725, 5.0, 6.0]
    assert spot[0]["doubt"] and spot[1]["spot_interruption"] == ">20%"
    od = price_rows(offers, sort="node-hour")
    assert od[0]["cloud"] == "lambda"
    with pytest.raises(UsageError, match="--sort"):
        price_rows(offers, sort="cheapest")


def test_max_interruption_drops_risky_spot_pools() -> None:
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    offers = list(parse_offers("\n".join(ROWS)))
    scheme = resolve_quant("bf16", spec)

    def best(**kw: object) -> tuple[str, str]:
        req = make_request(model=spec.id, ctx=8192, market="spot", top=1, **kw)
        plan = plan_quote(req, spec, scheme, offers).best
        assert plan is not None
        return plan.offer.region, plan.spot_interruption or ""

    # the doubtful GCP spot price is never ranked; us-east-1 (>20%) is cheapest otherwise
    assert best() == ("us-east-1", ">20%")
    # at most 10%/month: us-east-2 (5-10%) wins
    assert best(max_interruption=10) == ("us-east-2", "5-10%")


def test_max_interruption_drops_spot_pools_of_unknown_risk() -> None:
    """A spot pool with no published rate cannot be shown to stay under the limit: dropped,
    as --min-availability drops it (a cheap Azure spot row used to win under a 5% limit)."""
    spec = resolve_model("meta-llama/Llama-3.1-8B")
    rows = [*ROWS, "azure,eastus,,Standard_ND96isr_H100_v5,H100-SXM,8,80,96,1900,nvlink,"
            "infiniband,98.32,8.00,2026-05-20,"]  # fmt: skip
    offers = list(parse_offers("\n".join(rows)))
    scheme = resolve_quant("bf16", spec)
    req = make_request(model=spec.id, ctx=8192, market="spot", top=0)
    plain = plan_quote(req, spec, scheme, offers)
    assert plain.best is not None and plain.best.offer.cloud == "azure"  # $8/h: cheapest
    limited = plan_quote(
        make_request(model=spec.id, ctx=8192, market="spot", top=0, max_interruption=10),
        spec, scheme, offers,
    )  # fmt: skip
    assert limited.best is not None and limited.best.offer.region == "us-east-2"
    assert all(p.offer.cloud == "aws" for p in limited.plans)
    assert any("without a published interruption rate" in k for k in limited.skipped_prices)


def test_prices_show_cli() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["prices", "show", "--gpu", "H200", "--cloud", "aws", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert rows and all(r["gpu"] == "H200-SXM" and r["cloud"] == "aws" for r in rows)
    bad = runner.invoke(app, ["prices", "show", "--gpu", "V100"])
    assert bad.exit_code == 2
