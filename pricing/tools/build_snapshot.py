"""Normalise the SkyPilot-format price catalogs into ``pricing/data/offers.csv``.

    python -m pricing.tools.build_snapshot [--shared PATH] [--out DIR] [--check]

Reads ``PATH/prices/*.csv`` (default PATH: ``../shared/data`` next to the repo) and
``PATH/gpus.csv``, writes one row per purchasable GPU node per cloud/region/zone
(columns: ``pricing.offers.COLUMNS``), sorted, atomically. Rows whose GPU is not in
gpus.csv, rows without any price and GCP rows that cannot be joined are dropped and
counted; quirks of the upstream data are kept as ``flags`` rather than fixed.
The printed summary is also written into the marked block of ``DIR/SOURCE.md``.

This is a maintainer tool (not on the ``prov`` hot path). Upstream quirks it handles
are described in ``pricing/data/SOURCE.md``.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pricing import rentable
from pricing.offers import FILE_COLUMNS
from provisioner.core.offer import Offer
from provisioner.errors import DataError, ProvError
from provisioner.fileio import write_atomic

REPO = Path(__file__).resolve().parents[2]
#: ../shared/data next to the checkout (or next to any parent: worktrees live one level deeper).
DEFAULT_SHARED = next(
    (p / "shared" / "data" for p in REPO.parents if (p / "shared" / "data" / "prices").is_dir()),
    REPO.parent / "shared" / "data",
)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data"
#: The runtime GPU table: its names complete the shared one (see ``build``).
DEFAULT_EXTRA_GPUS = REPO / "provisioner" / "data" / "gpus.csv"

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

_COMMON_COLUMNS = (
    "InstanceType",
    "AcceleratorName",
    "AcceleratorCount",
    "vCPUs",
    "MemoryGiB",
    "Price",
    "SpotPrice",
    "Region",
)
_ZONE_CLOUDS = {"aws", "gcp", "runpod"}
#: Clouds whose PRICES_AS_OF is a commit date (an upper bound on the data's age), not a
#: date the catalog states.
DATE_FROM_COMMIT = frozenset({"aws"})  # the catalogs that have an AvailabilityZone column

# --------------------------------------------------------------------------------------------
# Hardware tables
# --------------------------------------------------------------------------------------------

#: Intra-node GPU link per canonical GPU: SXM/NVSwitch boards "nvlink", AMD Infinity Fabric
#: "xgmi", NVL cards with NVLink bridges "nvlink-bridge", everything else "pcie".
INTERCONNECT: dict[str, str] = {
    "H100-SXM": "nvlink",
    "H200-SXM": "nvlink",
    "B200": "nvlink",
    "B300": "nvlink",
    "GB200": "nvlink",
    "A100-40GB-SXM": "nvlink",
    "A100-80GB-SXM": "nvlink",
    "MI300X": "xgmi",
    "H100-NVL": "nvlink-bridge",
    "H200-NVL": "nvlink-bridge",
    "H100-PCIe": "pcie",
    "A100-80GB-PCIe": "pcie",
    "L40S": "pcie",
    "L40": "pcie",
    "L4": "pcie",
    "A10G": "pcie",
    "A10": "pcie",
    "RTX4090": "pcie",
    "RTX5090": "pcie",
}

#: Multi-node network of an instance type: cloud -> ((instance-type regex, fabric), ...);
#: first match wins, no match means "ethernet". Vendor documents behind each entry:
#: * AWS EC2 User Guide, "Elastic Fabric Adapter for AI/ML and HPC workloads on Amazon EC2",
#:   section "Supported instance types": every p4d/p4de/p5/p5e/p5en size; g5, g6 and g6e only
#:   from 8xlarge up (xlarge/2xlarge/4xlarge have no EFA). Cross-checked with the EFASupported
#:   column of eksctl's generated instance table (pkg/utils/instance/instance_types.go).
#: * Azure "Virtual machine sizes naming conventions": the additive feature letter 'r' means
#:   RDMA-capable; the ND A100 v4 / ND H100 v5 / ND H200 v5 / ND MI300X v5 / ND GB200 v6 series
#:   pages give each GPU its own InfiniBand link (200-400 Gb/s) on the 'r' sizes.
#: * Google Cloud "GPU machine types" and "Maximize GPU network bandwidth with GPUDirect-TCPX /
#:   TCPXO": a3-highgpu-8g, a3-edgegpu-8g, a3-megagpu-8g (TCPXO); a3-ultragpu-8g and
#:   a4-highgpu-8g use GPUDirect RDMA over RoCE, put in the same class here. The 1g/2g/4g
#:   A3 shapes have a single NIC: ethernet.
#: * Nebius AI Cloud docs, "GPU clusters": the 8-GPU H100/H200/B200 presets join InfiniBand
#:   clusters; 1-GPU presets and L40S do not.
FABRIC: dict[str, tuple[tuple[str, str], ...]] = {
    "aws": (
        (r"^(p4d|p4de|p5|p5e|p5en|p6-b200|p6-b300)\.", "efa"),
        (r"^(g5|g6|g6e)\.(8|12|16|24|48)xlarge$", "efa"),
    ),
    "azure": ((r"^Standard_N[CDV]\d+[a-z]*r[a-z]*_", "infiniband"),),
    "gcp": (
        (
            r"^(a3-highgpu-8g|a3-edgegpu-8g|a3-megagpu-8g|a3-ultragpu-8g|a4-highgpu-8g)$",
            "gpudirect-tcpx",
        ),
    ),
    "nebius": ((r"_8gpu-", "infiniband"),),
}


def fabric_for(cloud: str, instance_type: str) -> str:
    for pattern, fabric in FABRIC.get(cloud, ()):
        if re.search(pattern, instance_type):
            return fabric
    return "ethernet"


# --- catalog GPU names -> canonical gpus.csv names. A name that is not a gpus.csv row
# --- (V100, "A100-40GB-PCIe", GH200, ...) makes the row dropped and counted under it.

#: AWS: by instance family (the part before the dot).
AWS_FAMILY_GPU = {
    "p5": "H100-SXM",
    "p5e": "H200-SXM",
    "p5en": "H200-SXM",
    "p4d": "A100-40GB-SXM",
    "p4de": "A100-80GB-SXM",
    "g6e": "L40S",
    "g6": "L4",
    "gr6": "L4",
    "g5": "A10G",
    "p6-b200": "B200",
    "p6-b300": "B300",
}

#: GCP accelerator rows (all on SXM boards where it matters: a2/a3/a4).
GCP_ACCEL_GPU = {
    "A100": "A100-40GB-SXM",
    "A100-80GB": "A100-80GB-SXM",
    "H100": "H100-SXM",
    "H100-MEGA": "H100-SXM",
    "H200": "H200-SXM",
    "B200": "B200",
    "L4": "L4",
}

#: GCP (accelerator, count) -> the machine types that carry exactly that many of it.
#: The *-nolssd twins of a3-edgegpu/a3-ultragpu (same price, no local SSD) are not used.
GCP_MACHINES: dict[tuple[str, int], tuple[str, ...]] = {
    ("A100", 1): ("a2-highgpu-1g",),
    ("A100", 2): ("a2-highgpu-2g",),
    ("A100", 4): ("a2-highgpu-4g",),
    ("A100", 8): ("a2-highgpu-8g",),
    ("A100", 16): ("a2-megagpu-16g",),
    ("A100-80GB", 1): ("a2-ultragpu-1g",),
    ("A100-80GB", 2): ("a2-ultragpu-2g",),
    ("A100-80GB", 4): ("a2-ultragpu-4g",),
    ("A100-80GB", 8): ("a2-ultragpu-8g",),
    ("H100", 1): ("a3-highgpu-1g",),
    ("H100", 2): ("a3-highgpu-2g",),
    ("H100", 4): ("a3-highgpu-4g",),
    ("H100", 8): ("a3-highgpu-8g", "a3-edgegpu-8g"),
    ("H100-MEGA", 8): ("a3-megagpu-8g",),
    ("H200", 8): ("a3-ultragpu-8g",),
    ("B200", 8): ("a4-highgpu-8g",),
    ("L4", 1): (
        "g2-standard-4",
        "g2-standard-8",
        "g2-standard-12",
        "g2-standard-16",
        "g2-standard-32",
    ),
    ("L4", 2): ("g2-standard-24",),
    ("L4", 4): ("g2-standard-48",),
    ("L4", 8): ("g2-standard-96",),
}

#: Azure: by VM size (AcceleratorName is missing on some rows). (regex, gpu, GPUs per VM
#: when the catalog has no AcceleratorCount).
AZURE_SIZE_GPU: tuple[tuple[str, str, int | None], ...] = (
    (r"^Standard_ND\d+isr_H100_v5$", "H100-SXM", 8),
    (r"^Standard_ND\d+isr_H200_v5$", "H200-SXM", 8),
    (r"^Standard_ND\d+isr?_MI300X_v5$", "MI300X", 8),
    (r"^Standard_ND\d+isr_NDR_GB200_v6$", "GB200", 4),  # 2 Grace + 4 Blackwell GPUs per VM
    (r"^Standard_ND\d+amsr_A100_v4$", "A100-80GB-SXM", 8),
    (r"^Standard_ND\d+asr_v4$", "A100-40GB-SXM", 8),
    (r"^Standard_NC\d+ads_A100_v4$", "A100-80GB-PCIe", None),
    (r"^Standard_NCC?\d+adi?s_H100_v5$", "H100-NVL", None),  # NCads/NCCads H100 v5: H100 NVL
    (r"^Standard_N[CV]\d+adm?s_A10_v[45]$", "A10", None),
)

#: Lambda: by the instance-type suffix after gpu_<N>x_.
LAMBDA_SUFFIX_GPU = {
    "h100_sxm5": "H100-SXM",
    "h100_pcie": "H100-PCIe",
    "b200_sxm6": "B200",
    "a100_80gb_sxm4": "A100-80GB-SXM",
    "a100_sxm4": "A100-40GB-SXM",
    "a10": "A10",
}

#: RunPod: AcceleratorName ("H100" is RunPod's H100 PCIe, "A100-80GB" its A100 80GB PCIe).
RUNPOD_GPU = {
    "H100-SXM": "H100-SXM",
    "H100": "H100-PCIe",
    "H100-NVL": "H100-NVL",
    "H200-SXM": "H200-SXM",
    "B200": "B200",
    "A100-80GB-SXM": "A100-80GB-SXM",
    "A100-80GB": "A100-80GB-PCIe",
    "L40S": "L40S",
    "L40": "L40",
    "L4": "L4",
    "MI300X": "MI300X",
    "RTX4090": "RTX4090",
    "RTX5090": "RTX5090",
}

#: Vast: the GPU token of "<N>x-<TOKEN>-<cpus>-<mem>". A100 variants are split by memory.
VAST_TOKEN_GPU = {
    "H100_SXM": "H100-SXM",
    "H100_NVL": "H100-NVL",
    "H200": "H200-SXM",
    "H200_NVL": "H200-NVL",
    "L40S": "L40S",
    "RTX_4090": "RTX4090",
    "RTX_5090": "RTX5090",
}

FLUIDSTACK_TOKEN_GPU = {
    "H100_PCIE_80GB": "H100-PCIe",
    "H100_NVLINK_80GB": "H100-SXM",  # HGX board: NVLink + NVSwitch
    "H100_SXM5_80GB": "H100-SXM",
    "A100_PCIE_80GB": "A100-80GB-PCIe",
    "A100_SXM4_80GB": "A100-80GB-SXM",
    "L40_48GB": "L40",
}

NEBIUS_PLATFORM_GPU = {
    "gpu-h100-sxm": "H100-SXM",
    "gpu-h200-sxm": "H200-SXM",
    "gpu-b200-sxm": "B200",
    "gpu-l40s-a": "L40S",
    "gpu-l40s-d": "L40S",
}

# --------------------------------------------------------------------------------------------
# Data structures
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSpec:
    name: str
    memory_gb: float
    memory_mib_cloud: int | None


@dataclass
class RawRow:
    line: int
    cells: dict[str, str]

    def get(self, col: str) -> str:
        return self.cells.get(col, "").strip()


@dataclass
class Node:
    cloud: str
    region: str
    zone: str
    instance_type: str
    gpu: str
    gpus_per_node: int
    gpu_memory_gib: float
    vcpus: float
    memory_gib: float
    ondemand: float | None
    spot: float | None
    flags: set[str] = field(default_factory=set)
    multi_node: bool = True
    aliases: list[str] = field(default_factory=list)

    def to_offer(self) -> Offer:
        """The runtime row: interconnect, fabric and the catalog's date filled in."""
        return Offer(
            self.cloud,
            self.region,
            self.zone,
            self.instance_type,
            self.gpu,
            self.gpus_per_node,
            self.gpu_memory_gib,
            self.vcpus,
            self.memory_gib,
            INTERCONNECT[self.gpu],
            fabric_for(self.cloud, self.instance_type),
            self.ondemand,
            self.spot,
            PRICES_AS_OF.get(self.cloud) or None,
            tuple(sorted(self.flags)),
            self.multi_node,
            tuple(sorted(self.aliases)),
        )

    def key(self) -> tuple[str, str, str, str, str]:
        return (self.cloud, self.region, self.zone, self.instance_type, self.gpu)


@dataclass
class CloudReport:
    rows_in: int = 0
    offers_out: int = 0
    merged_duplicates: int = 0
    dropped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (reason, name) -> n


@dataclass
class BuildResult:
    nodes: list[Node]
    reports: dict[str, CloudReport]

    def summary(self) -> str:
        return format_summary(self.reports)


class _Ctx:
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
        """Per-GPU GiB as the cloud reports it; gpus.csv when absent or implausible."""
        reference = (spec.memory_mib_cloud / 1024) if spec.memory_mib_cloud else spec.memory_gb
        if catalog_mib:
            gib = catalog_mib / 1024
            if abs(gib - reference) <= 0.10 * reference:
                return round(gib, 1)
            flags.add("gpu_memory_mismatch")
        if spec.memory_mib_cloud:
            return round(spec.memory_mib_cloud / 1024, 1)
        flags.add("gpu_memory_nominal")
        return spec.memory_gb

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


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


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


def read_gpus(path: Path) -> dict[str, GpuSpec]:
    rows = read_catalog(path, ("gpu", "memory_GB", "memory_MiB_cloud_reported"))
    specs: dict[str, GpuSpec] = {}
    for row in rows:
        name = row.get("gpu")
        try:
            memory_gb = float(row.get("memory_GB"))
            mib_text = row.get("memory_MiB_cloud_reported")
            mib = int(mib_text) if mib_text else None
        except ValueError:
            raise DataError(f"{path.name}: line {row.line}: bad memory value for {name}") from None
        if name not in INTERCONNECT:
            raise DataError(
                f"{path.name}: line {row.line}: GPU {name!r} has no entry in "
                "pricing.tools.build_snapshot.INTERCONNECT; add one"
            )
        specs[name] = GpuSpec(name, memory_gb, mib)
    return specs


_MIB = re.compile(r"'SizeInMiB':\s*([0-9.]+)")


def gpuinfo_mib(row: RawRow) -> float | None:
    """The MemoryInfo.SizeInMiB of the GpuInfo cell, if any."""
    match = _MIB.search(row.get("GpuInfo"))
    return float(match.group(1)) if match else None


# --------------------------------------------------------------------------------------------
# Per-cloud normalisers: RawRows -> Nodes (unmerged, unflagged for prices)
# --------------------------------------------------------------------------------------------


def _simple(
    ctx: _Ctx,
    rows: list[RawRow],
    resolve: Callable[[RawRow, int], str],
    *,
    mib_per_node: bool = False,
    use_gpuinfo: bool = True,
) -> list[Node]:
    """Clouds where one catalog row is one node."""
    nodes = []
    for row in rows:
        count = ctx.gpu_count(row)
        if count is None:
            continue
        spec = ctx.known_gpu(resolve(row, count))
        if spec is None:
            continue
        mib = gpuinfo_mib(row) if use_gpuinfo else None
        if mib is not None and mib_per_node:
            mib /= count
        nodes.append(
            ctx.node(
                row,
                region=row.get("Region"),
                zone=row.get("AvailabilityZone"),
                gpu=spec,
                count=count,
                catalog_mib=mib,
                ondemand=ctx.num(row, "Price"),
                spot=ctx.num(row, "SpotPrice"),
            )
        )
    return nodes


def norm_aws(ctx: _Ctx, rows: list[RawRow]) -> list[Node]:
    def resolve(row: RawRow, count: int) -> str:
        family = row.get("InstanceType").split(".")[0]
        return AWS_FAMILY_GPU.get(family, row.get("AcceleratorName"))

    return _simple(ctx, rows, resolve)


def norm_lambda(ctx: _Ctx, rows: list[RawRow]) -> list[Node]:
    def resolve(row: RawRow, count: int) -> str:
        m = re.match(r"^gpu_\d+x_(.+)$", row.get("InstanceType"))
        suffix = m.group(1) if m else ""
        if suffix == "a100":
            # Lambda: 8x A100 (40 GB SXM4); the 1x/2x/4x "a100" sizes are 40 GB PCIe.
            return "A100-40GB-SXM" if count == 8 else "A100-40GB-PCIe"
        return LAMBDA_SUFFIX_GPU.get(suffix, row.get("AcceleratorName"))

    return _simple(ctx, rows, resolve)


def norm_runpod(ctx: _Ctx, rows: list[RawRow]) -> list[Node]:
    def resolve(row: RawRow, count: int) -> str:
        name = row.get("AcceleratorName")
        return RUNPOD_GPU.get(name, name)

    return _simple(ctx, rows, resolve)


def norm_fluidstack(ctx: _Ctx, rows: list[RawRow]) -> list[Node]:
    def resolve(row: RawRow, count: int) -> str:
        token = row.get("InstanceType").split("::")[0]
        return FLUIDSTACK_TOKEN_GPU.get(token, row.get("AcceleratorName"))

    return _simple(ctx, rows, resolve)


def norm_nebius(ctx: _Ctx, rows: list[RawRow]) -> list[Node]:
    def resolve(row: RawRow, count: int) -> str:
        platform = row.get("InstanceType").split("_")[0]
        return NEBIUS_PLATFORM_GPU.get(platform, row.get("AcceleratorName"))

    # Nebius GpuInfo.MemoryInfo is the host memory, not GPU memory: use gpus.csv.
    return _simple(ctx, rows, resolve, use_gpuinfo=False)


def norm_vast(ctx: _Ctx, rows: list[RawRow]) -> list[Node]:
    def resolve(row: RawRow, count: int) -> str:
        m = re.match(r"^\d+x-(.+)-\d+-\d+$", row.get("InstanceType"))
        token = m.group(1) if m else ""
        if token in ("A100_SXM4", "A100_PCIE"):
            mib = gpuinfo_mib(row)
            per_gpu_gb = (mib / count / 1024) if mib else 0.0
            size = "80GB" if per_gpu_gb > 60 else "40GB"
            return f"A100-{size}-{'SXM' if token == 'A100_SXM4' else 'PCIe'}"
        return VAST_TOKEN_GPU.get(token, row.get("AcceleratorName"))

    nodes = _simple(ctx, rows, resolve, mib_per_node=True)  # Vast SizeInMiB is per node
    for node in nodes:
        node.flags.add("marketplace")
        if node.spot == 0.0:  # Vast writes 0.00 for "no interruptible price"
            node.spot = None
    return nodes


def norm_azure(ctx: _Ctx, rows: list[RawRow]) -> list[Node]:
    nodes = []
    for row in rows:
        itype = row.get("InstanceType")
        accel = row.get("AcceleratorName")
        match = next(((gpu, n) for rx, gpu, n in AZURE_SIZE_GPU if re.match(rx, itype)), None)
        if match is None:
            token = re.search(r"_([A-Za-z0-9-]+)_v\d+$", itype)
            ctx.drop("gpu_not_in_gpus_csv", accel or (token.group(1) if token else itype))
            continue
        gpu_name, default_count = match
        count = ctx.gpu_count(row, default_count)
        if count is None:
            continue
        spec = ctx.known_gpu(gpu_name)
        if spec is None:
            continue
        flags = set() if accel else {"gpu_from_instance_type"}
        nodes.append(
            ctx.node(
                row,
                region=row.get("Region"),
                zone="",
                gpu=spec,
                count=count,
                catalog_mib=None,
                ondemand=ctx.num(row, "Price"),
                spot=ctx.num(row, "SpotPrice"),
                flags=flags,
            )
        )
    return nodes


def norm_gcp(ctx: _Ctx, rows: list[RawRow]) -> list[Node]:
    """Join GPU rows (no InstanceType) with the host VM rows of the matching machine type."""
    hosts: dict[tuple[str, str, str], RawRow] = {}
    for row in rows:
        if row.get("InstanceType"):
            if row.get("AcceleratorName"):
                raise DataError(
                    f"{ctx.where(row)}: GCP row has both InstanceType and AcceleratorName"
                )
            hosts[(row.get("InstanceType"), row.get("Region"), row.get("AvailabilityZone"))] = row
    used: set[tuple[str, str, str]] = set()
    nodes = []
    for row in rows:
        if row.get("InstanceType"):
            continue
        accel = row.get("AcceleratorName")
        count = ctx.gpu_count(row)
        if count is None:
            continue
        spec = ctx.known_gpu(GCP_ACCEL_GPU.get(accel, accel))
        if spec is None:
            continue
        machines = GCP_MACHINES.get((accel, count))
        if not machines:
            ctx.drop("no_machine_type", f"{count}x {accel}")
            continue
        region, zone = row.get("Region"), row.get("AvailabilityZone")
        joined = 0
        for machine in machines:
            host = hosts.get((machine, region, zone))
            if host is None:
                continue
            used.add((machine, region, zone))
            joined += 1
            gpu_od, gpu_spot = ctx.num(row, "Price"), ctx.num(row, "SpotPrice")
            host_od, host_spot = ctx.num(host, "Price"), ctx.num(host, "SpotPrice")
            flags = set()
            if gpu_od is not None and gpu_spot is not None and gpu_spot > gpu_od:
                flags.add("gpu_row_spot_gt_ondemand")  # upstream quirk hidden by the host price
            node = ctx.node(
                host,
                region=region,
                zone=zone,
                gpu=spec,
                count=count,
                catalog_mib=gpuinfo_mib(row),
                ondemand=_sum(gpu_od, host_od),
                spot=_sum(gpu_spot, host_spot),
                flags=flags,
            )
            nodes.append(node)
        if not joined:
            ctx.drop("gcp_gpu_row_without_host_row", f"{count}x {accel}")
    for key in sorted(set(hosts) - used):
        ctx.drop("gcp_host_row_unused", key[0])
    return nodes


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a + b, 6)


NORMALISERS: dict[str, Callable[[_Ctx, list[RawRow]], list[Node]]] = {
    "aws": norm_aws,
    "azure": norm_azure,
    "fluidstack": norm_fluidstack,
    "gcp": norm_gcp,
    "lambda": norm_lambda,
    "nebius": norm_nebius,
    "runpod": norm_runpod,
    "vast": norm_vast,
}

# --------------------------------------------------------------------------------------------
# Merging, flags, output
# --------------------------------------------------------------------------------------------


def _pick(a: float | None, b: float | None, flags: set[str]) -> float | None:
    if a is None:
        return b
    if b is None or a == b:
        return a
    flags.add("duplicate_conflict")
    return max(a, b)  # conflicting duplicates: keep the higher (never understate a price)


def merge_duplicates(ctx: _Ctx, nodes: list[Node]) -> list[Node]:
    """One node per (cloud, region, zone, instance_type, gpu); keep every price seen."""
    merged: dict[tuple[str, str, str, str, str], Node] = {}
    for node in nodes:
        seen = merged.get(node.key())
        if seen is None:
            merged[node.key()] = node
            continue
        ctx.report.merged_duplicates += 1
        seen.flags |= node.flags | {"duplicate_row"}
        seen.ondemand = _pick(seen.ondemand, node.ondemand, seen.flags)
        seen.spot = _pick(seen.spot, node.spot, seen.flags)
    return list(merged.values())


#: Prices closer than this (USD/h) count as equal (upstream spot prices are rounded).
SAME_PRICE_USD = 0.0005


def price_flags(cloud: str, node: Node) -> None:
    od, spot = node.ondemand, node.spot
    if od is not None and od == 0.0:
        node.ondemand = od = None
        node.flags.add("zero_price")
    if spot is not None and spot == 0.0:
        node.spot = spot = None
        node.flags.add("zero_price")
    if od is None and spot is not None:
        node.flags.add("no_ondemand")
    if od is not None and spot is not None:
        # Upstream rounds spot to 4 decimals: 20.0281 vs on-demand 20.02809 is "equal".
        if abs(spot - od) <= SAME_PRICE_USD:
            node.flags.add("spot_eq_ondemand")
        elif spot > od:
            node.flags.add("spot_gt_ondemand")
            if cloud == "runpod":
                node.flags.add("columns_swapped?")
        elif spot < 0.15 * od:
            node.flags.add("spot_over_85pct_off")
    if cloud not in PRICES_AS_OF:
        node.flags.add("date_unknown")
    elif cloud in DATE_FROM_COMMIT:
        node.flags.add("date_from_commit")


def build(shared: Path, extra_gpus: Path | None = None) -> BuildResult:
    """Normalise every catalog under ``shared/prices`` using ``shared/gpus.csv``.

    ``extra_gpus`` (the packaged provisioner/data/gpus.csv) adds the GPUs the runtime knows
    that the shared table lacks (B300), so the snapshot never names a GPU prov cannot size.
    """
    gpus = read_gpus(shared / "gpus.csv")
    if extra_gpus is not None:
        for name, spec in read_gpus(extra_gpus).items():
            gpus.setdefault(name, spec)
    nodes: list[Node] = []
    reports: dict[str, CloudReport] = {}
    for cloud, filename in CATALOGS.items():
        path = shared / "prices" / filename
        required = _COMMON_COLUMNS + (("AvailabilityZone",) if cloud in _ZONE_CLOUDS else ())
        rows = read_catalog(path, required)
        ctx = _Ctx(cloud, path, gpus)
        ctx.report.rows_in = len(rows)
        cloud_nodes = merge_duplicates(ctx, NORMALISERS[cloud](ctx, rows))
        cloud_nodes = rentable.drop_capacity_block_only(cloud_nodes, ctx.drop)
        kept = []
        for node in cloud_nodes:
            price_flags(cloud, node)
            if node.ondemand is None and node.spot is None:
                ctx.drop("no_price", node.instance_type)
                continue
            kept.append(node)
        rentable.mark_single_machine(kept)
        kept = rentable.collapse_aliases(
            kept, ctx.drop, lambda n: fabric_for(n.cloud, n.instance_type)
        )
        kept = rentable.collapse_regionless(kept, ctx.drop)
        ctx.report.offers_out = len(kept)
        reports[cloud] = ctx.report
        nodes.extend(kept)
    nodes.sort(key=Node.key)
    return BuildResult(nodes, reports)


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text or "0"


def offers_csv(offers: Iterable[Offer]) -> str:
    """Offers as offers.csv text (``offers.FILE_COLUMNS``): the snapshot and the live cache."""
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


def to_csv(nodes: list[Node]) -> str:
    return offers_csv(n.to_offer() for n in nodes)


def format_summary(reports: dict[str, CloudReport]) -> str:
    lines = ["cloud       rows_in  offers_out  merged_dups  dropped"]
    for cloud, r in reports.items():
        lines.append(
            f"{cloud:<11} {r.rows_in:>7}  {r.offers_out:>10}  {r.merged_duplicates:>11}"
            f"  {sum(r.dropped.values()):>7}"
        )
    total_in = sum(r.rows_in for r in reports.values())
    total_out = sum(r.offers_out for r in reports.values())
    lines.append(f"{'total':<11} {total_in:>7}  {total_out:>10}")
    lines.append("")
    lines.append("dropped (cloud: reason [name] x count):")
    for cloud, r in reports.items():
        by_reason: dict[str, list[tuple[str, int]]] = defaultdict(list)
        for (reason, name), n in sorted(r.dropped.items()):
            by_reason[reason].append((name, n))
        for reason, items in by_reason.items():
            total = sum(n for _, n in items)
            detail = ", ".join(f"{name} x{n}" for name, n in items if name)
            lines.append(f"  {cloud}: {reason} x{total}" + (f" ({detail})" if detail else ""))
    return "\n".join(lines)


SUMMARY_BEGIN = "<!-- build-summary:begin (generated by pricing.tools.build_snapshot) -->"
SUMMARY_END = "<!-- build-summary:end -->"


def update_source_md(path: Path, summary: str) -> bool:
    """Replace the generated summary block of SOURCE.md; False if the file/markers are absent."""
    if not path.exists():
        return False
    text = path.read_text(encoding="utf-8")
    start, end = text.find(SUMMARY_BEGIN), text.find(SUMMARY_END)
    if start < 0 or end < start:
        return False
    block = f"{SUMMARY_BEGIN}\n```\n{summary}\n```\n"
    new = text[:start] + block + text[end:]
    if new != text:
        write_atomic(path, new)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pricing.tools.build_snapshot", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--shared",
        type=Path,
        default=DEFAULT_SHARED,
        help=f"dir with prices/*.csv and gpus.csv (default {DEFAULT_SHARED})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"output dir for offers.csv (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if DIR/offers.csv is not what a build produces",
    )
    args = parser.parse_args(argv)
    try:
        result = build(args.shared, DEFAULT_EXTRA_GPUS)
    except ProvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    text = to_csv(result.nodes)
    target = args.out / "offers.csv"
    summary = result.summary()
    if args.check:
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if current != text:
            print(
                f"{target} is out of date; run python -m pricing.tools.build_snapshot",
                file=sys.stderr,
            )
            return 1
        print(f"{target} is up to date ({len(result.nodes)} offers)")
        return 0
    write_atomic(target, text)
    update_source_md(args.out / "SOURCE.md", summary)
    print(summary)
    print(f"\nwrote {len(result.nodes)} offers to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
