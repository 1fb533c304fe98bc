"""--prices FILE rows get the snapshot's sanity checks: a bad file exits 2 with one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pricing.offers import MAX_USD_PER_GPU_HOUR, check_offers, load_offers
from pricing.offers_csv import COLUMNS
from provisioner.cli.main import app

HEADER = ",".join(COLUMNS)
ROW = "aws,us-east-1,use1-az1,p5.48xlarge,H100-SXM,8,80,192,2048,nvlink,efa,55.04,21.0363,,"
KIMI = ["quote", "-m", "moonshotai/Kimi-K2-Thinking", "-q", "int4", "--ctx", "128k"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (ROW.replace(",55.04,", ",0,"), "line 2: on-demand price is 0; leave the cell empty"),
        (ROW.replace(",21.0363,", ",1e300,"), "line 2: spot price 1e+300 $/h is over 500 $/GPU-h"),
        (ROW.replace(",55.04,", ",nan,"), "line 2: ondemand_usd_per_hour must be a finite number"),
        (ROW.replace(",55.04,", ",-55.04,"), "line 2: ondemand_usd_per_hour must be a finite"),
        (f"{ROW}\n{ROW}", "line 3: duplicate of line 2 (aws us-east-1 use1-az1 p5.48xlarge)"),
        (ROW.replace("H100-SXM", "H100-SXM5"), "line 2: unknown gpu 'H100-SXM5'; allowed: H100"),
    ],
)
def test_bad_rows_exit_2_with_one_line_and_are_never_ranked(
    tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(f"{HEADER}\n{body}\n", encoding="utf-8")
    for args in (["prices", "show", "--prices", str(path)], [*KIMI, "--prices", str(path)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        [line] = result.stderr.splitlines()
        assert line.startswith(f"prov: error: {path}: ") and message in line
        assert result.stdout == ""


def test_every_error_names_the_editor_line_even_after_blank_lines(tmp_path: Path) -> None:
    # review7 #26: the parser said "line 2" and the row checks "row 1" for the same row; a
    # blank line (the csv reader skips it) must not shift the number either
    path = tmp_path / "prices.csv"
    bad_gpu = ROW.replace("H100-SXM", "H100-SXM5").replace("use1-az1", "use1-az2")
    path.write_text(f"{HEADER}\n{ROW}\n\n{bad_gpu}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["prices", "show", "--prices", str(path)])
    assert result.exit_code == 2
    assert f"prov: error: {path}: line 4: unknown gpu 'H100-SXM5'" in result.stderr


def _dated(days_from_today: int) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC).date() + timedelta(days=days_from_today)).isoformat()


@pytest.mark.parametrize("days", [2, 1128])
def test_a_price_dated_in_the_future_is_a_bad_file(tmp_path: Path, days: int) -> None:
    # review7 #8: a 2030 date printed "(-1128 days old)" and ranked the row
    path = tmp_path / "prices.csv"
    today, later = ROW[:-1] + _dated(0) + ",", ROW[:-1].replace("az1", "az2") + _dated(days) + ","
    path.write_text(f"{HEADER}\n{today}\n{later}\n", encoding="utf-8")
    for args in (["prices", "show", "--prices", str(path)], [*KIMI, "--prices", str(path)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        [line] = result.stderr.splitlines()
        assert line.startswith(f"prov: error: {path}: line 3: prices_as_of {_dated(days)} is ")
        assert "in the future" in line and result.stdout == ""


def test_tomorrow_is_within_the_clock_slack(tmp_path: Path) -> None:
    # a date written east of UTC can be tomorrow's UTC date: one day of slack, no more
    path = tmp_path / "prices.csv"
    path.write_text(f"{HEADER}\n{ROW[:-1]}{_dated(1)},\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["prices", "show", "--prices", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert f'"prices_as_of": "{_dated(1)}"' in result.stdout


def test_non_utf8_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_bytes(f"{HEADER}\n{ROW}\n".encode().replace(b"use1-az1", b"use1-\xff"))
    result = CliRunner().invoke(app, ["prices", "show", "--prices", str(path)])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"prov: error: {path}: not UTF-8 text (byte 180); a price file is a UTF-8 CSV"
    )


def test_a_good_file_is_shown_with_both_columns(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_text(f"{HEADER}\n{ROW}\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["prices", "show", "--prices", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert '"ondemand_usd_per_gpu_hour": 6.88' in result.stdout  # 55.04 / 8
    assert '"spot_usd_per_gpu_hour": 2.6295' in result.stdout  # 21.0363 / 8, rounded


def test_the_packaged_snapshot_passes_the_same_checks() -> None:
    offers = load_offers()
    check_offers(offers, "packaged")
    worst = max(
        max(p for p in (o.ondemand_usd_per_hour, o.spot_usd_per_hour) if p) / o.gpus_per_node
        for o in offers
    )
    # the dearest row: Azure ND128isr GB200 v6 in brazilsouth, 216.32 / 4 = 54.08 $/GPU-h
    assert round(worst, 2) == 54.08 and worst < MAX_USD_PER_GPU_HOUR / 5


def test_capacity_block_rows_from_a_file_are_never_ranked(tmp_path: Path) -> None:
    # an older catalog's p5e row: spot only (aws.csv us-east-2 spot 14.4663), no on-demand
    p5e = "aws,us-east-2,use2-az1,p5e.48xlarge,H200-SXM,8,141,192,2048,nvlink,efa,,14.4663,,"
    p5en = (
        "aws,us-east-2,use2-az1,p5en.48xlarge,H200-SXM,8,141,192,2048,nvlink,efa,63.296,26.3634,,"
    )
    path = tmp_path / "prices.csv"
    path.write_text(f"{HEADER}\n{p5e}\n{p5en}\n", encoding="utf-8")
    result = CliRunner().invoke(app, [*KIMI, "--prices", str(path), "--top", "0", "--json"])
    assert result.exit_code == 0, result.output
    import json

    doc = json.loads(result.stdout)
    assert {p["instance_type"] for p in doc["plans"]} == {"p5en.48xlarge"}
    assert any("capacity blocks only" in k for k in doc["skipped_prices"])
