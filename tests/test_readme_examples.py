"""tools/readme_examples.py: README worked examples fail the suite when prov's output moves."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import readme_examples as rx  # noqa: E402

VERSION = "prov 0.1.0"  # pyproject's version: what `prov --version` prints

FIXTURE = f"""# A README

Some prose.

<!-- prov-example: prov --version -->
```
{VERSION}
```

<!-- prov-example: prov models list -->
```text
id ...
...
moonshotai/Kimi-K2-Thinking ...
...
```
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "README.md"
    path.write_text(text)
    return path


def test_matching_examples_pass(tmp_path: Path) -> None:
    # the models list block only names lines by their start: the elided form
    text = FIXTURE.replace("id ...\n...\nmoonshotai/Kimi-K2-Thinking ...\n...", "...")
    assert rx.check(_write(tmp_path, text)) == []


def test_a_stale_number_fails_with_a_diff(tmp_path: Path) -> None:
    path = _write(tmp_path, FIXTURE.replace(VERSION, "prov 0.0.9"))
    problems = rx.check(path)
    assert len(problems) >= 1
    assert f"{path}:5: prov --version" in problems[0]
    assert "-prov 0.0.9" in problems[0] and f"+{VERSION}" in problems[0]
    assert rx.main([str(path)]) == 1


def test_ellipsis_matches_any_number_of_lines() -> None:
    assert rx.matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert rx.matches(["a", "...", "d"], ["a", "d"])
    assert not rx.matches(["a", "...", "d"], ["a", "b", "c"])
    assert not rx.matches(["a", "b"], ["a", "b", "c"])  # no silent extra lines


def test_update_regenerates_the_blocks(tmp_path: Path) -> None:
    path = _write(tmp_path, FIXTURE.replace(VERSION, "prov 0.0.9"))
    rx.check(path, update=True)
    text = path.read_text()
    assert f"```\n{VERSION}\n```" in text
    assert "moonshotai/Kimi-K2-Thinking" in text and "id ...\n" not in text
    assert rx.check(path) == []  # regenerated, so it now passes


def test_marker_without_a_block_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "<!-- prov-example: prov --version -->\nno fence here\n")
    with pytest.raises(rx.ExampleError, match="line 1"):
        rx.check(path)


def test_only_prov_commands_run(tmp_path: Path) -> None:
    path = _write(tmp_path, "<!-- prov-example: rm -rf / -->\n```\n```\n")
    with pytest.raises(rx.ExampleError, match="only 'prov"):
        rx.check(path)


def test_the_readme_examples_match_prov() -> None:
    """The project's own README: every marked worked example is prov's current output."""
    problems = rx.check(ROOT / "README.md")
    assert problems == [], (
        "\n\n".join(problems) + "\n(regenerate: tools/readme_examples.py --update)"
    )
