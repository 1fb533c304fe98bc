"""Plan files for deploy tests: real `prov quote --json` output, written once, edited per test."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from provisioner.cli.main import app


def quote_files(folder: Path, quotes: Mapping[str, Sequence[str]]) -> dict[str, Path]:
    """`prov quote ... --json > NAME.json` in `folder` for each named quote."""
    out = {}
    for name, args in quotes.items():
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == 0, result.output
        out[name] = folder / f"{name}.json"
        out[name].write_text(result.stdout, encoding="utf-8")
    return out


def edited(tmp_path: Path, source: Path, change: Callable[[Any], Any]) -> Path:
    """A copy of the plan file `source` with `change` applied to its JSON."""
    data = json.loads(source.read_text())
    change(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data))
    return path
