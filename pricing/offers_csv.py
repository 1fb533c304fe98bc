"""The offers.csv format: its columns, the parser and the writer side by side.

The packaged snapshot, a user's ``--prices`` file and the live caches are all this format;
``parse_offers`` reads what ``offers_csv`` writes (tests/pricing/test_offers.py round-trips
the snapshot). Pure: the csv module only (this is on the ``prov quote`` hot path).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from datetime import date, timedelta

from pricing.rentable import default_multi_node
from provisioner.core.offer import Offer, utc_today
from provisioner.errors import DataError

#: Columns of offers.csv, in file order.
COLUMNS: tuple[str, ...] = (
    "cloud",
    "region",
    "zone",
    "instance_type",
    "gpu",
    "gpus_per_node",
    "gpu_memory_gib",
    "vcpus",
    "memory_gib",
    "interconnect",
    "fabric",
    "ondemand_usd_per_hour",
    "spot_usd_per_hour",
    "prices_as_of",
    "flags",
)
#: Columns a price file must have (``COLUMNS``), and the optional ones added later, so that
#: older offers files keep loading (defaults: ``default_multi_node``, no aliases).
REQUIRED_COLUMNS: tuple[str, ...] = COLUMNS
OPTIONAL_COLUMNS: tuple[str, ...] = ("multi_node", "aliases")
#: Columns the snapshot builder and the live cache write, in file order.
FILE_COLUMNS: tuple[str, ...] = COLUMNS + OPTIONAL_COLUMNS


def parse_offers(
    text: str, source: str = "<offers>", lines: list[int] | None = None
) -> tuple[Offer, ...]:
    """Parse offers CSV text; ``source`` names the file in error messages.

    ``lines``, when given, receives each offer's line in the file (blank lines are skipped, so
    a later check can name the line a person sees in an editor, as the parser's errors do).
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise DataError(
            f"{source}: line 1: empty file, expected the header {','.join(FILE_COLUMNS)}"
        )
    for col in REQUIRED_COLUMNS:
        if col not in header:
            raise DataError(f"{source}: line 1: missing column {col!r}")
    width = len(header)
    ix = [header.index(col) for col in REQUIRED_COLUMNS]
    multi_ix = header.index("multi_node") if "multi_node" in header else -1
    alias_ix = header.index("aliases") if "aliases" in header else -1
    in_order = tuple(header[:15]) == REQUIRED_COLUMNS
    out: list[Offer] = []
    append = out.append
    flag_cache: dict[str, tuple[str, ...]] = {"": ()}
    dates: dict[str, str | None] = {"": None}
    latest = utc_today() + timedelta(days=FUTURE_SLACK_DAYS)
    for row in reader:
        if not row:
            continue
        if len(row) != width:
            raise DataError(
                f"{source}: line {reader.line_num}: expected {width} fields, found {len(row)}"
            )
        (
            cloud,
            region,
            zone,
            itype,
            gpu,
            n_gpus,
            gmem,
            vcpus,
            mem,
            ic,
            fabric,
            od,
            spot,
            asof,
            flags,
        ) = row[:15] if in_order else [row[i] for i in ix]
        # Fast path: convert everything, then check ranges; 0 <= x < inf also rejects NaN.
        try:
            n = int(n_gpus)
            g, c, m = float(gmem), float(vcpus), float(mem)
            o = float(od) if od else None
            p = float(spot) if spot else None
        except ValueError:
            n = -1
        if (
            n < 1
            or not (0 <= g < _INF and 0 <= c < _INF and 0 <= m < _INF)
            or (o is not None and not 0 <= o < _INF)
            or (p is not None and not 0 <= p < _INF)
            or not (cloud and itype and gpu)
        ):
            _raise_row_error(row, ix, source, reader.line_num)
        date = dates.get(asof, "?")
        if date == "?":
            date = dates[asof] = _date(asof, source, reader.line_num, latest)
        flag_tuple = flag_cache.get(flags)
        if flag_tuple is None:
            flag_tuple = flag_cache[flags] = tuple(f for f in flags.split(";") if f)
        multi = default_multi_node(cloud)
        if multi_ix >= 0 and row[multi_ix]:
            multi = _bool(row[multi_ix], "multi_node", source, reader.line_num)
        aliases = tuple(a for a in row[alias_ix].split(";") if a) if alias_ix >= 0 else ()
        if lines is not None:
            lines.append(reader.line_num)
        append(
            Offer(
                cloud,
                region,
                zone,
                itype,
                gpu,
                n,
                g,
                c,
                m,
                ic,
                fabric,
                o,
                p,
                date,
                flag_tuple,
                multi,
                aliases,
            )
        )
    return tuple(out)


def _bool(text: str, col: str, source: str, line: int) -> bool:
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise DataError(f"{source}: line {line}: {col} must be true or false, got {text!r}")


_INF = math.inf


def _raise_row_error(row: list[str], ix: list[int], source: str, line: int) -> None:
    """Find what is wrong with a row the fast path rejected and raise a precise DataError."""
    cells = dict(zip(REQUIRED_COLUMNS, (row[i] for i in ix), strict=True))
    for col in ("cloud", "instance_type", "gpu"):
        if not cells[col]:
            raise DataError(f"{source}: line {line}: {col} is empty")
    try:
        n = int(cells["gpus_per_node"])
    except ValueError:
        raise DataError(
            f"{source}: line {line}: gpus_per_node is not an integer: {cells['gpus_per_node']!r}"
        ) from None
    if n < 1:
        raise DataError(f"{source}: line {line}: gpus_per_node must be >= 1, got {n}")
    for col in ("gpu_memory_gib", "vcpus", "memory_gib"):
        _number(cells[col], col, source, line)
    for col in ("ondemand_usd_per_hour", "spot_usd_per_hour"):
        _price(cells[col], col, source, line)
    raise DataError(f"{source}: line {line}: malformed row")  # pragma: no cover


def _number(text: str, col: str, source: str, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{source}: line {line}: {col} is not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise DataError(f"{source}: line {line}: {col} must be a finite number >= 0, got {text!r}")
    return value


def _price(text: str, col: str, source: str, line: int) -> float | None:
    if not text:
        return None
    return _number(text, col, source, line)


#: A price dated up to this many days after today (UTC) is accepted: a date written in a time
#: zone ahead of UTC (or on a clock a little fast) can be tomorrow's UTC date.
FUTURE_SLACK_DAYS = 1


def _date(text: str, source: str, line: int, latest: date) -> str | None:
    if not text:
        return None
    if len(text) != 10 or text[4] != "-" or text[7] != "-" or not text.replace("-", "").isdigit():
        raise DataError(f"{source}: line {line}: prices_as_of is not YYYY-MM-DD: {text!r}")
    try:
        date.fromisoformat(text)
    except ValueError:
        raise DataError(
            f"{source}: line {line}: prices_as_of is not a calendar date: {text!r}"
        ) from None
    if date.fromisoformat(text) > latest:
        raise DataError(
            f"{source}: line {line}: prices_as_of {text} is in the future (today is "
            f"{latest - timedelta(days=FUTURE_SLACK_DAYS)} UTC); a price is dated when it was seen"
        )
    return text


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def offers_csv(offers: Iterable[Offer]) -> str:
    """Offers as offers.csv text (``FILE_COLUMNS``): the snapshot and the live caches."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FILE_COLUMNS)
    for o in offers:
        writer.writerow(
            [
                o.cloud,
                o.region,
                o.zone,
                o.instance_type,
                o.gpu,
                o.gpus_per_node,
                _fmt(o.gpu_memory_gib),
                _fmt(o.vcpus),
                _fmt(o.memory_gib),
                o.interconnect,
                o.fabric,
                _fmt(o.ondemand_usd_per_hour),
                _fmt(o.spot_usd_per_hour),
                o.prices_as_of or "",
                ";".join(o.flags),
                "true" if o.multi_node else "false",
                ";".join(o.aliases),
            ]
        )
    return buf.getvalue()
