"""Thin data by path (review9 #3a): a plan whose (GPU family, MoE/dense, quant compute path,
layout kind) has no published run in the calibration or check sets is marked thin data, with
the missing path named, in --json and in the text table.

Expected values come from the sets themselves, read here without prov's code: neither
benchmarks/throughput_refs.json nor benchmarks/throughput_check.json holds a run with DP > 1
or an int4 run on MI300X (the reviewer listed every MI300X row; so does the test), while both
hold vLLM runs of DeepSeek fp8 at TP8 on H200.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from test_choices import run, table_rows

ROOT = Path(__file__).parents[1]
SETS = [ROOT / "benchmarks" / "throughput_refs.json", ROOT / "benchmarks" / "throughput_check.json"]
KIMI = ["quote", "-m", "moonshotai/Kimi-K2-Thinking", "--ctx", "128k"]
MISSING_KIMI_MI300X = "no published vLLM run of int4 W4A16 MoE with DP+EP on MI300X (cdna3)"


def published_runs() -> list[dict[str, Any]]:
    return [r for path in SETS for r in json.loads(path.read_text())["refs"]]


def plans(*args: str) -> list[dict[str, Any]]:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return list(json.loads(result.stdout)["plans"])


def test_the_sets_have_no_dp_ep_run_and_no_int4_run_on_mi300x() -> None:
    """The premise, from the data: what the coverage table must find missing."""
    runs = published_runs()
    assert not [r["id"] for r in runs if int(r.get("dp") or 1) > 1]
    assert not [r["id"] for r in runs if r["gpu"] == "MI300X" and r["quant"] == "int4"]
    deepseek_h200 = [
        r["id"]
        for r in runs
        if r["gpu"] == "H200-SXM"
        and r["engine"] == "vllm"
        and r["tp"] == 8
        and r["pp"] == 1
        and "DeepSeek" in r["model"]
        and r["quant"] in ("fp8", "auto")
    ]
    assert deepseek_h200  # the covered case below has published runs


def test_reviewers_number_one_is_thin_data_and_says_what_is_missing() -> None:
    """review9 #3: 8xMI300X DP8+EP8 Kimi-K2-Thinking (int4 W4A16 MoE) was perf_band_thin_data
    false with a basis of Llama/405B/R1-fp8 TP8 runs."""
    found = plans(*KIMI, "--gpu", "MI300X", "--cloud", "azure", "--layout", "dp-ep")
    first = found[0]
    assert (first["gpu"], first["layout"]) == ("MI300X", "DP8+EP8")
    assert first["perf_band_thin_data"] is True
    assert first["perf_band_basis"].startswith(MISSING_KIMI_MI300X)


def test_a_path_with_published_runs_is_not_marked() -> None:
    found = plans("quote", "-m", "deepseek-ai/DeepSeek-V3", "--gpu", "H200", "--layout", "tp")
    tp8 = [p for p in found if p["layout"] == "TP8" and p["nodes"] == 1]
    assert tp8
    for p in tp8:
        assert "no published vLLM run" not in p["perf_band_basis"]
        assert p["perf_band_thin_data"] is False  # Hopper's throughput band is not thin


def test_the_text_table_marks_thin_rows_and_says_what_the_mark_means() -> None:
    result = run(*KIMI)
    assert result.exit_code == 0, result.stderr
    rows = table_rows(result.stdout)
    assert rows and all("*" in r.split()[-2] for r in rows)  # every $/Mtok: DP+EP, no run
    assert "* = thin data" in result.stdout
    covered = run("quote", "-m", "deepseek-ai/DeepSeek-V3", "--gpu", "H200", "--layout", "tp")
    assert covered.exit_code == 0, covered.stderr
    assert not any("*" in r.split()[-2] for r in table_rows(covered.stdout))
    assert "* = thin data" not in covered.stdout


def test_the_packaged_coverage_table_is_what_the_script_writes() -> None:
    """provisioner/data/perf_coverage.json is generated from the two sets: adding a run to
    either without rerunning benchmarks/perf_coverage.py fails here."""
    script = ROOT / "benchmarks" / "perf_coverage.py"
    done = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
