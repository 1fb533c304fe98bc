"""Review8 #10 at the CLI boundary: a stdout that cannot be written is an I/O failure with one
clear line (never "internal error"), errors fit a terminal's width, and `deploy --preview`'s
summary fits 80 columns. Real processes: /dev/full and a pseudo-terminal, no stand-ins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioner.cli.main import app

PROV = [sys.executable, "-c", "from provisioner.cli.main import main; main()"]
QUOTE = ["quote", "--model", "meta-llama/Llama-3.1-8B", "--ctx", "8k", "--json"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_full_disk_is_one_line_and_exit_1() -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [*PROV, *QUOTE], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120
        )
    errors = [line for line in done.stderr.splitlines() if line.startswith("prov: error:")]
    assert done.returncode == 1, done.stderr  # an outside I/O failure (errors.py: exit 1)
    assert errors == ["prov: error: cannot write the output: No space left on device"]
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert "Exception ignored" not in done.stderr  # the exit-time flush stays quiet


def _on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run prov with stderr on a pseudo-terminal; its exit code and what the terminal showed."""
    import pty

    main, side = pty.openpty()
    try:
        done = subprocess.run(
            [*PROV, *args], stdout=subprocess.DEVNULL, stderr=side, env=env, timeout=120
        )
        os.close(side)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(main)
    return done.returncode, b"".join(chunks).decode().replace("\r\n", "\n")


def test_a_long_error_wraps_on_a_terminal_and_stays_one_line_in_a_pipe(tmp_path: Path) -> None:
    empty = tmp_path / "bin"  # no Pulumi CLI: `prov status` says how to get it, at length
    empty.mkdir()
    env = {**os.environ, "PATH": str(empty), "HOME": str(tmp_path), "COLUMNS": "80"}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    piped = subprocess.run([*PROV, "status"], capture_output=True, text=True, env=env, timeout=120)
    (line,) = piped.stderr.splitlines()  # grep-able in logs and scripts
    assert piped.returncode == 1 and line.startswith("prov: error: ") and len(line) > 160
    code, shown = _on_a_terminal(["status"], env)
    lines = shown.splitlines()
    assert code == 1 and len(lines) > 2 and all(len(s) <= 80 for s in lines), lines
    assert lines[0].startswith("prov: error: ")
    assert " ".join(" ".join(lines).split()) == " ".join(line.split())  # the same words


def test_deploy_preview_summary_fits_80_columns(tmp_path: Path) -> None:
    runner = CliRunner()
    quote = [*QUOTE[:-1], "--json", "--weights", "hub", "--cloud", "aws", "--region", "us-east-2"]
    quote[quote.index("meta-llama/Llama-3.1-8B")] = "moonshotai/Kimi-K2-Thinking"
    quote[quote.index("8k")] = "128k"
    result = runner.invoke(app, [*quote, "--gpu", "H200"])
    assert result.exit_code == 0, result.output
    plan = tmp_path / "plan.json"
    plan.write_text(result.stdout)
    empty = tmp_path / "bin"  # no Pulumi CLI: the summary prints, then the run stops
    empty.mkdir()
    env = {"PATH": str(empty), "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "s")}
    result = runner.invoke(
        app, ["deploy", "--plan", str(plan), "--preview"], env={**env, "COLUMNS": "80"}
    )
    lines = result.stdout.splitlines()
    assert any(line.startswith("Plan rank 1: ") for line in lines), result.output
    assert all(len(line) <= 80 for line in lines), lines
    assert "stack kimi-k2-thinking" in " ".join(lines)  # the summary's tail, after wrapping
