"""Every line a first-time user sees fits 80 columns (review7 #7): quote's stale-price warning,
`prov prices show` and `prov deploy --render`, run through the CLI at COLUMNS=80."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from provisioner.cli.main import app

README_FIRST = [
    "quote",
    "--model",
    "moonshotai/Kimi-K2-Thinking",
    "--quant",
    "int4",
    "--ctx",
    "128k",
]


def run(*args: str, columns: int = 80) -> Result:
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        runner = CliRunner()
    return runner.invoke(app, list(args), env={"COLUMNS": str(columns)})


def too_long(text: str, width: int = 80) -> list[str]:
    return [ln for ln in text.splitlines() if len(ln) > width]


def test_readme_first_command_fits_80_columns_on_both_streams() -> None:
    result = run(*README_FIRST)
    assert result.exit_code == 0, result.stderr
    assert too_long(result.stdout) == []
    assert too_long(result.stderr) == []
    # the embedded catalogs are months old: the warning is there, wrapped, not dropped
    warning = " ".join(ln.strip() for ln in result.stderr.splitlines())
    assert warning.startswith("prov: warning: of 10 prices shown")


def test_the_refresh_hint_is_a_command_one_can_paste() -> None:
    result = run(*README_FIRST)
    # the price-age warning: the first one (the plans' warnings follow it, each its own line)
    warning = " ".join(ln.strip() for ln in result.stderr.split("\nprov: warning: ")[0].split())
    m = re.search(r"refresh: (prov prices refresh .*)$", warning)
    assert m, warning
    argv = shlex.split(m.group(1))
    # no shell metacharacter: '|' would pipe `prov prices refresh --cloud aws` into `azure`
    assert not set("|&;<>") & set(m.group(1)), m.group(1)
    assert argv[:4] == ["prov", "prices", "refresh", "--cloud"] and len(argv) == 5
    # the clouds the hint names are ones the command takes (its --cloud is comma-separated)
    clouds = argv[4].split(",")
    assert len(clouds) > 1 and set(clouds) <= {"aws", "azure", "runpod", "vast", "oci"}


@pytest.mark.parametrize("gpu", ["H200", "MI300X", "B200"])
def test_prices_show_fits_80_columns_one_line_per_offer(gpu: str) -> None:
    result = run("prices", "show", "--gpu", gpu, "--top", "0")
    assert result.exit_code == 0, result.stderr
    assert too_long(result.stdout) == [] and too_long(result.stderr) == []
    lines = result.stdout.splitlines()
    assert lines[0].startswith("cloud:zone")
    rows = [ln for ln in lines[1:] if re.match(r"^[a-z]+:\S", ln)]  # not "note: ..."
    # one line per offer: the footer's count is the number of table rows (no folded cells)
    m = re.search(r"^(\d+) of (\d+) offers shown", result.stdout, re.M)
    assert m, result.stdout
    assert len(rows) == int(m.group(1)) == int(m.group(2))
    # every row keeps its place whole (review7: 'clou/d:zo/ne' slivers)
    json_rows = run("prices", "show", "--gpu", gpu, "--top", "0", "--json")
    places = [f"{r['cloud']}:{r['zone'] or r['region']}" for r in json.loads(json_rows.stdout)]
    assert [ln[: len(p)] for ln, p in zip(rows, places, strict=True)] == places


def test_prices_show_wide_keeps_the_full_instance_names() -> None:
    narrow = run("prices", "show", "--gpu", "H200", "--cloud", "nebius")
    wide = run("prices", "show", "--gpu", "H200", "--cloud", "nebius", "--wide")
    assert "gpu-h200-sxm_8gpu-128vcpu-1600gb" not in narrow.stdout
    assert "gpu-h200-sxm_8gpu-128vcpu-1600gb" in wide.stdout


def test_deploy_render_fits_80_columns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # a short path, as a user types it
    quoted = run("quote", "-m", "kimi-k2-thinking", "--ctx", "128k", "--json")
    assert quoted.exit_code == 0, quoted.stderr
    plan = tmp_path / "plan.json"
    plan.write_text(quoted.stdout, encoding="utf-8")
    result = run("deploy", "--plan", str(plan), "--render", "out")
    assert result.exit_code == 0, result.stderr
    assert too_long(result.stdout) == []
    said = " ".join(ln.strip() for ln in result.stdout.splitlines())
    assert "Wrote " in said and "out/kimi-k2-thinking.yaml" in said


def test_compare_api_wraps_with_an_indent_and_no_trailing_spaces() -> None:
    # review7 #7: --compare-api's market lines wrapped to column 0 with trailing spaces
    result = run("quote", "-m", "kimi-k2-thinking", "--ctx", "128k", "--compare-api")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("Hosted API:"))
    block = lines[start:]
    assert too_long("\n".join(block)) == [] and all(ln == ln.rstrip() for ln in block)
    assert len(block) > 3  # it did wrap at 80 columns
    assert all(ln.startswith(" ") for ln in block[1:]), block  # continuations are indented
    at = [i for i, ln in enumerate(block) if ln.split()[0] in ("spot", "on-demand")]
    assert [block[i].split()[0] for i in at] == ["spot", "on-demand"]
    # a market's continuation lines sit under its text, past the market name
    assert all(ln.startswith(" " * 12) for ln in block[at[0] + 1 : at[1]] + block[at[1] + 1 :])
