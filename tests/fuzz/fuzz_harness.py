"""Shared checks of the fuzz suite: every odd input ends in a clean, honest outcome.

A case passes when prov exits 2 with one `prov: error:` line that names what is allowed, or
exits 1 only for "nothing fits" or an operational failure with its cause; never a traceback,
never "internal error", never a hang, never a confident wrong answer. Cases run in-process
through typer's CliRunner (fast); a SIGALRM guard turns a hang into a failure.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from provisioner.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "provisioner" / "data" / "models"
SECONDS = 20  # a case slower than this is a hang (the slowest honest case takes ~2 s)


class Hang(BaseException):  # BaseException: the CLI boundary must not turn it into an error
    pass


@contextmanager
def bounded(seconds: float = SECONDS) -> Iterator[None]:
    def _raise(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    with bounded():
        return _runner().invoke(app, [str(a) for a in args], env=env)


def clean(result: Result) -> None:
    """No traceback, no 'internal error', no exception escaping the boundary."""
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text[-2000:]
    assert "internal error" not in text, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )


def refused(result: Result, *allowed: str) -> str:
    """Exit 2 with one error line that mentions every string in `allowed` (case-insensitive)."""
    clean(result)
    assert result.exit_code == 2, (result.exit_code, result.stdout[-500:], result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prov: error: "), result.stderr
    for word in allowed:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


def failed(result: Result, *cause: str) -> str:
    """Exit 1 (nothing fits, or an operational failure) with its cause on one line."""
    clean(result)
    assert result.exit_code == 1, (result.exit_code, result.stdout[-500:], result.stderr)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.startswith("prov: error: ")]
    assert len(lines) == 1, result.stderr
    for word in cause:
        assert word.lower() in lines[0].lower(), (word, lines[0])
    return lines[0]


def base_config(model: str = "meta-llama__Llama-3.1-8B") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MODELS / f"{model}.json").read_text())
    return data


def write_config(folder: Path, data: dict[str, Any] | str | bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_text(json.dumps(data), encoding="utf-8")
    return path


QUOTE = ("quote", "--quant", "bf16", "--ctx", "8k", "--json")
