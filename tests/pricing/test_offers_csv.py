"""pricing.offers_csv: the writer and the parser of offers.csv agree (one format, both sides)."""

from __future__ import annotations

import math
import time
from pathlib import Path

from pricing.offers_csv import FILE_COLUMNS, offers_csv, parse_offers
from provisioner.core.offer import Offer

SNAPSHOT = Path(__file__).parents[2] / "pricing" / "data" / "offers.csv"


def test_the_snapshot_round_trips_byte_for_byte() -> None:
    text = SNAPSHOT.read_text(encoding="utf-8")
    offers = parse_offers(text, "offers.csv")
    assert len(offers) == len(text.splitlines()) - 1
    assert offers_csv(offers) == text


def test_a_written_row_reads_back_as_the_same_offer() -> None:
    # every optional cell filled and every kind of number: 1.5 GPUs-worth of odd values
    row = Offer(
        "azure", "eastus2", "", "Standard_ND96isr_MI300X_v5", "MI300X", 8, 191.5, 96.0,
        1850.0, "xgmi", "infiniband", 48.0, 8.8704, "2026-05-20",
        ("sku_alias", "spot_over_85pct_off"), True, ("Standard_ND96is_MI300X_v5",),
    )  # fmt: skip
    text = offers_csv([row])
    assert text.splitlines()[0] == ",".join(FILE_COLUMNS)
    assert text.splitlines()[1] == (
        "azure,eastus2,,Standard_ND96isr_MI300X_v5,MI300X,8,191.5,96,1850,xgmi,infiniband,48,"
        "8.8704,2026-05-20,sku_alias;spot_over_85pct_off,true,Standard_ND96is_MI300X_v5"
    )
    assert parse_offers(text) == (row,)


def test_parse_is_fast() -> None:
    text = (Path(__file__).parents[2] / "pricing" / "data" / "offers.csv").read_text()
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        parse_offers(text)
        best = min(best, time.perf_counter() - start)
    assert best < 0.1, f"parsing the snapshot took {best * 1e3:.0f} ms (measured ~10 ms)"
