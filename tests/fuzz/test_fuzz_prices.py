"""Fuzz: price files given with --prices (and odd ones: $0, 1e300, duplicates, unknown GPUs).

A price prov cannot trust is refused (exit 2 naming file and line) or set aside (not ranked,
said in the notes); it never tops the ranking.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fuzz_harness import clean, failed, refused, run

HEADER = (
    "cloud,region,zone,instance_type,gpu,gpus_per_node,gpu_memory_gib,vcpus,memory_gib,"
    "interconnect,fabric,ondemand_usd_per_hour,spot_usd_per_hour,prices_as_of,flags"
)
H100 = (
    "aws,us-east-1,use1-az4,p5.48xlarge,H100-SXM,8,80,192,2048,nvlink,efa,98.32,29.35,2026-05-01,"
)
H200 = (
    "aws,us-east-1,use1-az2,p5en.48xlarge,H200-SXM,8,141,192,2048,nvlink,efa,84.8,24.29,2026-05-01,"
)
QUOTE = ("quote", "--model", "meta-llama/Llama-3.1-70B", "--quant", "fp8", "--ctx", "8k", "--json")


def _prices(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "offers.csv"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


SAO = "s\u00e3o-paulo"


def _quote(path: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run(*QUOTE, "--prices", path, *extra)


def _row(**change: str) -> str:
    cols = HEADER.split(",")
    vals = dict(zip(cols, H100.split(","), strict=True))
    vals.update(change)
    return ",".join(vals[c] for c in cols)


def test_a_sane_file_ranks(tmp_path: Path) -> None:
    """The baseline the cases below change one thing of."""
    result = _quote(_prices(tmp_path, f"{HEADER}\n{H100}\n{H200}\n"))
    clean(result)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["plans"]


REFUSED: list[tuple[str, str | bytes, tuple[str, ...]]] = [
    ("header-only", f"{HEADER}\n", ("offers.csv",)),
    ("empty", "", ("offers.csv",)),
    ("blank-lines", "\n\n\n", ("offers.csv",)),
    ("latin-1", f"{HEADER}\n{_row(region=SAO)}\n".encode("latin-1"), ("UTF-8",)),
    ("binary", bytes(range(256)) * 8, ("offers.csv",)),
    ("utf-16", f"{HEADER}\n{H100}\n".encode("utf-16"), ("offers.csv",)),
    ("missing-column", HEADER.replace(",flags", "") + "\n" + H100[:-1] + "\n", ("flags",)),
    ("extra-field", f"{HEADER}\n{H100},surprise\n", ("line 2",)),
    ("short-row", f"{HEADER}\naws,us-east-1\n", ("line 2",)),
    ("price-a-word", f"{HEADER}\n{_row(ondemand_usd_per_hour='cheap')}\n", ("line 2",)),
    ("gpus-a-word", f"{HEADER}\n{_row(gpus_per_node='eight')}\n", ("line 2",)),
    ("zero-gpus", f"{HEADER}\n{_row(gpus_per_node='0')}\n", ("line 2",)),
    ("negative-gpus", f"{HEADER}\n{_row(gpus_per_node='-8')}\n", ("line 2",)),
    ("negative-memory", f"{HEADER}\n{_row(gpu_memory_gib='-80')}\n", ("line 2",)),
    (
        "nan-price",
        f"{HEADER}\n{_row(ondemand_usd_per_hour='nan', spot_usd_per_hour='')}\n",
        ("line 2",),
    ),
    (
        "inf-price",
        f"{HEADER}\n{_row(ondemand_usd_per_hour='inf', spot_usd_per_hour='')}\n",
        ("line 2",),
    ),
    (
        "negative-price",
        f"{HEADER}\n{_row(ondemand_usd_per_hour='-5', spot_usd_per_hour='')}\n",
        ("line 2",),
    ),
    ("bad-date", f"{HEADER}\n{_row(prices_as_of='2026-13-45')}\n", ("2026-13-45",)),
    ("unknown-gpu", f"{HEADER}\n{_row(gpu='H900')}\n", ("H900",)),
]


@pytest.mark.parametrize(("text", "words"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_bad_price_files_are_refused(
    tmp_path: Path, text: str | bytes, words: tuple[str, ...]
) -> None:
    refused(_quote(_prices(tmp_path, text)), *words)


def test_missing_price_file(tmp_path: Path) -> None:
    refused(_quote(tmp_path / "nope.csv"), "nope.csv")


def test_price_file_is_a_directory(tmp_path: Path) -> None:
    refused(_quote(tmp_path))


@pytest.mark.parametrize("price", ["0", "0.0", "1e300", "1e-9"])
def test_implausible_prices_never_rank(tmp_path: Path, price: str) -> None:
    """$0 and 1e300 node-hours are data errors: refused, or set aside with a note, never #1."""
    odd = _row(zone="use1-az9", ondemand_usd_per_hour=price, spot_usd_per_hour="")
    result = _quote(_prices(tmp_path, f"{HEADER}\n{H100}\n{odd}\n"), "--top", "0")
    clean(result)
    if result.exit_code == 2:
        return
    assert result.exit_code in (0, 1), result.stderr
    plans = json.loads(result.stdout)["plans"] if result.stdout else []
    assert all(p["zone"] != "use1-az9" and p["usd_per_hour"] > 1 for p in plans), plans[:1]


def test_duplicate_rows_rank_once(tmp_path: Path) -> None:
    """The same offer five times is one choice, not ranks 1-5."""
    result = _quote(_prices(tmp_path, f"{HEADER}\n" + f"{H100}\n" * 5), "--top", "0")
    clean(result)
    assert result.exit_code in (0, 2), result.stderr
    if result.exit_code == 0:
        plans = json.loads(result.stdout)["plans"]
        keys = [
            (p["zone"], p["instance_type"], p["nodes"], p["tp"], p["pp"], p["market"])
            for p in plans
        ]
        assert len(keys) == len(set(keys)), keys


def test_sku_aliases_collapse(tmp_path: Path) -> None:
    """Two SKU names of one machine, one region: one choice, the other name listed with it."""
    alias = _row(instance_type="p5.48xlarge-alias")
    result = _quote(_prices(tmp_path, f"{HEADER}\n{H100}\n{alias}\n"), "--top", "0")
    clean(result)
    assert result.exit_code == 0, result.stderr
    plans = json.loads(result.stdout)["plans"]
    shapes = [(p["nodes"], p["tp"], p["pp"], p["market"]) for p in plans]
    assert len(shapes) == len(set(shapes))


def test_bom_header(tmp_path: Path) -> None:
    """A UTF-8 byte-order mark before the header: read, or refused by name; not misread."""
    result = _quote(_prices(tmp_path, f"\ufeff{HEADER}\n{H100}\n"))
    clean(result)
    assert result.exit_code in (0, 2), result.stderr


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--region", "mars-1"], ("--region mars-1",)),
        (["--cloud", "mars"], ("--cloud",)),
        (["--gpu", "H900"], ("--gpu",)),
    ],
)
def test_filters_that_match_nothing_are_named(
    tmp_path: Path, flags: list[str], words: tuple[str, ...]
) -> None:
    refused(_quote(_prices(tmp_path, f"{HEADER}\n{H100}\n"), *flags), *words)


def test_gpu_absent_from_a_valid_file_is_named(tmp_path: Path) -> None:
    """A real GPU the file does not offer: nothing fits (exit 1), saying which GPUs it has."""
    failed(_quote(_prices(tmp_path, f"{HEADER}\n{H100}\n"), "--gpu", "B200"), "--gpu B200", "H100")


def test_market_without_prices_is_named(tmp_path: Path) -> None:
    only_od = _row(spot_usd_per_hour="")
    failed(_quote(_prices(tmp_path, f"{HEADER}\n{only_od}\n"), "--market", "spot"), "spot")
