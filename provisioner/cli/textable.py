"""Plain-text tables that fit a width: one line per row, always.

Rich wraps a cell that does not fit onto several lines; a quote table read at 80 columns (or
in a pipe, or in a README) wants one line per plan instead. Each column has a natural width
(its longest cell); when the total exceeds the width, optional columns are dropped (highest
drop_priority first), then flexible columns are cut (with "~" at the cut) down to their minimum.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass

GAP = 2


@dataclass
class Column:
    header: str
    cells: list[str]
    right: bool = False
    min_width: int | None = None  # flexible down to this (None: never cut)
    drop_priority: int = 0  # 0 = always kept; higher numbers are dropped first
    keep_tail: str | None = None  # a cut keeps what follows the last one of these ("  +3")
    cut_first: bool = False  # among flexible columns, cut this one before the others

    @property
    def natural(self) -> int:
        return max([len(self.header), *(len(c) for c in self.cells)])


def terminal_width(default: int = 80) -> int:
    """$COLUMNS when set, the terminal's width when stdout is one, else `default` (pipes)."""
    env = os.environ.get("COLUMNS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    if sys.stdout.isatty():
        return shutil.get_terminal_size((default, 24)).columns
    return default


def _cut(text: str, width: int, keep_tail: str | None = None) -> str:
    if len(text) <= width:
        return text
    if keep_tail and keep_tail in text:
        head, sep, tail = text.rpartition(keep_tail)
        tail = sep + tail
        if len(tail) < width - 1:
            return _cut(head, width - len(tail)) + tail
    return text[: max(0, width - 1)] + "~"


def fit(columns: list[Column], width: int | None, gap: int = GAP) -> list[str]:
    """The table's lines (header first), each at most `width` characters (None: no limit)."""
    cols = list(columns)
    widths = {id(c): c.natural for c in cols}

    def total() -> int:
        return sum(widths[id(c)] for c in cols) + gap * (len(cols) - 1)

    if width is not None:
        for c in sorted((c for c in cols if c.drop_priority), key=lambda c: -c.drop_priority):
            if total() <= width:
                break
            cols.remove(c)
        flexible = [c for c in cols if c.min_width is not None]
        while total() > width:  # one character at a time off the widest flexible column
            room = [c for c in flexible if widths[id(c)] > (c.min_width or 0)]
            if not room:
                break
            widest = max(room, key=lambda c: (c.cut_first, widths[id(c)]))
            widths[id(widest)] -= 1
    lines = []
    for i in range(-1, max((len(c.cells) for c in cols), default=0)):
        parts = []
        for c in cols:
            text = c.header if i < 0 else c.cells[i]
            w = widths[id(c)]
            text = _cut(text, w, c.keep_tail)
            parts.append(text.rjust(w) if c.right else text.ljust(w))
        lines.append((" " * gap).join(parts).rstrip())
    return lines


def short_instance(name: str) -> str:
    """What a person types to rent it, minus what every SKU repeats: Azure's 'Standard_'
    prefix, Nebius's preset after the platform (gpu-h200-sxm_8gpu-128vcpu-1600gb)."""
    name = re.sub(r"^Standard_", "", name)
    return re.sub(r"^(gpu-[a-z0-9]+-[a-z0-9]+)_\d+gpu-.*$", r"\1", name)


def short_gpu(name: str) -> str:
    """H200-SXM -> H200, A100-80GB-SXM -> A100-80GB (SXM is the default form factor)."""
    return name.removesuffix("-SXM")


def wrap(text: str, width: int | None, indent: str = "  ") -> list[str]:
    """A prose line wrapped to `width` (None: as is), continuation lines indented by `indent`;
    a word (a path, a command) longer than the width stays whole, so it can still be pasted."""
    import textwrap

    if width is None or len(text) <= width - 1:
        return [text]
    return textwrap.wrap(
        text, width - 1, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False
    )


def wrap_lines(lines: list[str], width: int | None) -> list[str]:
    """Each line wrapped to `width`, its continuation lines under its own indent + 4."""
    out: list[str] = []
    for line in lines:
        out += wrap(line, width, " " * (len(line) - len(line.lstrip()) + 4))
    return out
