"""Reading the SkyPilot-format price catalogs: files, rows, numbers, drop counts, dates.

Maintainer code (pricing.tools): the snapshot builder reads ``../shared/data/prices/*.csv``
through these helpers; every error names the file and line (a DataError, exit 2).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pricing.interconnect import INTERCONNECT
from pricing.nodes import Node, gpu_memory_gib
from provisioner.core.hardware import GpuSpec, parse_gpu_table
from provisioner.errors import DataError

#: cloud -> catalog file under prices/ (column order differs per file; read by name).
CATALOGS: dict[str, str] = {
    "aws": "aws_2026.csv",
    "azure": "azure.csv",
    "fluidstack": "fluidstack_v6.csv",
    "gcp": "gcp.csv",
    "lambda": "lambda.csv",
    "nebius": "nebius.csv",
    "runpod": "runpod.csv",
    "vast": "vast_anycloud.csv",
}

#: Upstream dates from prices/SOURCE.md. Clouds not listed have no upstream date:
#: their prices_as_of stays empty and the row gets the flag ``date_unknown``.
PRICES_AS_OF: dict[str, str] = {
    # aws_2026.csv has no date of its own: 2026-04-02 is the upstream commit that last changed
    # it ("Bootstrap catalogs with SkyPilot AWS/GCP/Lambda data"), so the prices are at least
    # that old (flag ``date_from_commit``; prices/SOURCE.md).
    "aws": "2026-04-02",
    "gcp": "2026-05-20",
    "azure": "2026-05-20",
    "lambda": "2026-05-07",
    "vast": "2026-04-29",
}

COMMON_COLUMNS = (
    "InstanceType",
    "AcceleratorName",
    "AcceleratorCount",
    "vCPUs",
    "MemoryGiB",
    "Price",
    "SpotPrice",
    "Region",
)
ZONE_CLOUDS = {"aws", "gcp", "runpod"}
#: Clouds whose PRICES_AS_OF is a commit date (an upper bound on the data's age), not a
#: date the catalog states.
DATE_FROM_COMMIT = frozenset({"aws"})  # the catalogs that have an AvailabilityZone column


def date_flags(cloud: str, node: Node) -> None:
    """How a snapshot row's date is known: not at all, or from an upstream commit."""
    if cloud not in PRICES_AS_OF:
        node.flags.add("date_unknown")
    elif cloud in DATE_FROM_COMMIT:
        node.flags.add("date_from_commit")


@dataclass
class RawRow:
    line: int
    cells: dict[str, str]

    def get(self, col: str) -> str:
        return self.cells.get(col, "").strip()


@dataclass
class CloudReport:
    rows_in: int = 0
    offers_out: int = 0
    merged_duplicates: int = 0
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (reason, name) -> n


class CatalogContext:
    """Per-catalog helpers: number parsing with file/line errors, drop counting."""

    def __init__(self, cloud: str, path: Path, gpus: dict[str, GpuSpec]) -> None:
        self.cloud = cloud
        self.path = path
        self.gpus = gpus
        self.report = CloudReport()

    def where(self, row: RawRow) -> str:
        return f"{self.path.name}: line {row.line}"

    def num(self, row: RawRow, col: str) -> float | None:
        text = row.get(col)
        if not text:
            return None
        try:
            value = float(text)
        except ValueError:
            raise DataError(f"{self.where(row)}: {col} is not a number: {text!r}") from None
        if not math.isfinite(value) or value < 0:
            raise DataError(f"{self.where(row)}: {col} must be a finite number >= 0: {text!r}")
        return value

    def required(self, row: RawRow, col: str) -> float:
        value = self.num(row, col)
        if value is None:
            raise DataError(f"{self.where(row)}: {col} is empty")
        return value

    def drop(self, reason: str, name: str = "", n: int = 1) -> None:
        self.report.dropped[(reason, name)] += n

    def gpu_count(self, row: RawRow, default: int | None = None) -> int | None:
        """Whole GPUs per node, or None (and counted) for fractional/missing counts."""
        count = self.num(row, "AcceleratorCount")
        if count is None:
            count = default
        if count is None:
            self.drop("no_gpu_count", row.get("InstanceType"))
            return None
        if count < 1 or count != int(count):
            self.drop("fractional_gpu", f"{row.get('InstanceType')} ({count:g} GPU)")
            return None
        return int(count)

    def known_gpu(self, name: str) -> GpuSpec | None:
        spec = self.gpus.get(name)
        if spec is None:
            self.drop("gpu_not_in_gpus_csv", name or "?")
        return spec

    def gpu_memory(self, spec: GpuSpec, catalog_mib: float | None, flags: set[str]) -> float:
        return gpu_memory_gib(spec, catalog_mib, flags)

    def node(
        self,
        row: RawRow,
        *,
        region: str,
        zone: str,
        gpu: GpuSpec,
        count: int,
        catalog_mib: float | None,
        ondemand: float | None,
        spot: float | None,
        flags: set[str] | None = None,
    ) -> Node:
        flags = set(flags or ())
        itype = row.get("InstanceType")
        return Node(
            cloud=self.cloud,
            region=region,
            zone=zone,
            instance_type=itype,
            gpu=gpu.name,
            gpus_per_node=count,
            gpu_memory_gib=self.gpu_memory(gpu, catalog_mib, flags),
            vcpus=self.required(row, "vCPUs"),
            memory_gib=self.required(row, "MemoryGiB"),
            ondemand=ondemand,
            spot=spot,
            flags=flags,
        )


def read_catalog(path: Path, required: Iterable[str]) -> list[RawRow]:
    """Rows of a SkyPilot-format CSV by column name, with their 1-based line numbers.

    Azure's unquoted ``Generation`` values ("V1,V2") spill into extra fields: those are
    joined back into the last column when it is ``Generation``; any other ragged row is
    an error.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read catalog: {exc.strerror}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise DataError(f"{path.name}: line 1: empty file, expected a header")
    header = [h.strip() for h in header]
    for col in required:
        if col not in header:
            raise DataError(f"{path.name}: line 1: missing column {col!r}")
    rows: list[RawRow] = []
    for cells in reader:
        if not cells or not any(c.strip() for c in cells):
            continue
        line = reader.line_num
        if len(cells) > len(header) and header[-1] == "Generation":
            cells = [*cells[: len(header) - 1], ",".join(cells[len(header) - 1 :])]
        if len(cells) != len(header):
            raise DataError(
                f"{path.name}: line {line}: expected {len(header)} fields, found {len(cells)}"
            )
        rows.append(RawRow(line, dict(zip(header, cells, strict=True))))
    return rows


def read_gpu_table(path: Path) -> dict[str, GpuSpec]:
    """A gpus.csv (the shared one or the packaged one) with the runtime's parser
    (``provisioner.core.hardware.parse_gpu_table``); every GPU needs an INTERCONNECT entry."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the GPU table: {exc.strerror}") from None
    specs = parse_gpu_table(text, path.name)
    for line, name in enumerate(specs, start=2):
        if name not in INTERCONNECT:
            raise DataError(
                f"{path.name}: line {line}: GPU {name!r} has no entry in "
                "pricing.interconnect.INTERCONNECT; add one"
            )
    return specs


_MIB = re.compile(r"'SizeInMiB':\s*([0-9.]+)")


def gpuinfo_mib(row: RawRow) -> float | None:
    """The MemoryInfo.SizeInMiB of the GpuInfo cell, if any."""
    match = _MIB.search(row.get("GpuInfo"))
    return float(match.group(1)) if match else None
