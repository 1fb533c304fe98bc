"""Check (or regenerate) the worked examples of a Markdown file against prov's real output.

An example is an HTML comment naming the command, followed by a fenced block with its output:

    <!-- prov-example: prov quote --model moonshotai/Kimi-K2-Thinking --quant int4 --ctx 128k -->
    ```
    ...the output, as prov prints it at 80 columns...
    ```

The command runs as `python -m provisioner.cli.main ARGS` (no shell: plain prov commands only)
in the
file's folder with COLUMNS=80, and its stdout must equal the block, line for line (trailing
spaces and blank lines aside). A line that is exactly `...` stands for any number of lines.

    python tools/readme_examples.py README.md            # exit 1 and a diff when one is stale
    python tools/readme_examples.py README.md --update   # rewrite the blocks from real output
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MARK = re.compile(r"^<!--\s*prov-example:\s*(?P<cmd>.+?)\s*-->\s*$")
FENCE = re.compile(r"^(```+|~~~+)")
ELLIPSIS = "..."


@dataclass
class Example:
    command: str
    line: int  # 1-based line of the marker
    body_start: int  # index of the first line inside the fence
    body_end: int  # index of the closing fence
    expected: list[str]


class ExampleError(Exception):
    """A marker that is not followed by a fenced block, or a command that is not prov's."""


def find_examples(lines: list[str]) -> list[Example]:
    out: list[Example] = []
    i = 0
    while i < len(lines):
        m = MARK.match(lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        fence = FENCE.match(lines[j]) if j < len(lines) else None
        if fence is None:
            raise ExampleError(f"line {i + 1}: prov-example is not followed by a fenced block")
        k = j + 1
        while k < len(lines) and not lines[k].startswith(fence.group(1)):
            k += 1
        if k == len(lines):
            raise ExampleError(f"line {j + 1}: the fenced block is never closed")
        out.append(Example(m.group("cmd"), i + 1, j + 1, k, lines[j + 1 : k]))
        i = k + 1
    return out


def _normalise(text_lines: list[str]) -> list[str]:
    lines = [ln.rstrip() for ln in text_lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def run_example(command: str, cwd: Path, timeout: float = 120) -> list[str]:
    argv = shlex.split(command)
    if not argv or argv[0] != "prov":
        raise ExampleError(f"{command!r}: only 'prov ...' commands can be checked")
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "provisioner.cli.main", *argv[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return _normalise(p.stdout.splitlines())


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line-for-line equality where an expected '...' line matches any number of lines."""
    exp = _normalise(expected)
    pattern = "".join(
        r"(?:.*\n)*?" if ln.strip() == ELLIPSIS else re.escape(ln) + r"\n" for ln in exp
    )
    return re.fullmatch(pattern, "".join(ln + "\n" for ln in actual)) is not None


def check(path: Path, update: bool = False) -> list[str]:
    """Problems found (empty when every example matches); with `update`, rewrite the blocks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    problems: list[str] = []
    for ex in reversed(find_examples(lines)):  # bottom-up: rewriting keeps indices valid
        actual = run_example(ex.command, path.parent)
        if matches(ex.expected, actual):
            continue
        if update:
            lines[ex.body_start : ex.body_end] = actual
            continue
        diff = difflib.unified_diff(
            _normalise(ex.expected), actual, "README (expected)", "prov (actual)", lineterm=""
        )
        problems.append(f"{path}:{ex.line}: {ex.command}\n" + "\n".join(diff))
    if update:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return list(reversed(problems))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--update", action="store_true", help="rewrite stale blocks")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.files:
        try:
            problems = check(path, update=args.update)
        except (ExampleError, OSError, subprocess.TimeoutExpired) as e:
            print(f"{path}: {e}", file=sys.stderr)
            failed += 1
            continue
        for problem in problems:
            print(problem, file=sys.stderr)
        failed += bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
