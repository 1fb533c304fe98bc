"""GPU specs from the embedded gpus.csv (see provisioner/data/SOURCE.md).

The one reader of the GPU table format: the runtime table here, and the maintainer's
shared table that the snapshot builder (pricing.tools) reads with ``parse_gpu_table``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache
from importlib import resources

from provisioner.errors import DataError


@dataclass(frozen=True, slots=True)
class GpuSpec:
    name: str  # canonical: H100-SXM, H200-SXM, L40S, ...
    vendor: str
    arch: str
    memory_gb: float
    hbm_tbps: float
    bf16_tflops: float | None
    fp8_tflops: float | None
    int8_tops: float | None
    fp4_tflops: float | None
    interconnect: str
    intra_node_gbps: float | None  # per GPU, both directions
    sm: int | None  # CUDA compute capability x 10; None for AMD
    memory_mib_cloud: float | None = None  # what clouds' APIs state (e.g. AWS GpuInfo)
    cuda_total_gib: float | None = None  # what torch.cuda.mem_get_info reports as total
    cuda_total_source: str = ""

    @property
    def is_nvidia(self) -> bool:
        return self.vendor.upper() == "NVIDIA"


def _num(text: str) -> float | None:
    text = text.strip()
    return float(text) if text else None


#: Columns every gpus.csv must have (the runtime table and the maintainer's shared one);
#: memory_MiB_cloud_reported and the cuda_total_* columns are optional.
GPU_TABLE_COLUMNS: tuple[str, ...] = (
    "gpu",
    "vendor",
    "arch",
    "memory_GB",
    "hbm_bandwidth_TBps",
    "bf16_dense_TFLOPS",
    "fp8_dense_TFLOPS",
    "int8_dense_TOPS",
    "fp4_dense_TFLOPS",
    "intra_node_interconnect",
    "intra_node_GBps_per_gpu_bidir",
    "sm_version",
)


def parse_gpu_table(text: str, source: str) -> dict[str, GpuSpec]:
    """Canonical GPU name -> spec from gpus.csv text: the one parser of that format.

    ``source`` names the file in errors; a missing column or a value that is not a number
    is a DataError naming the file and line.
    """
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in GPU_TABLE_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise DataError(f"{source}: line 1: missing column {missing[0]!r}")
    specs: dict[str, GpuSpec] = {}
    for row in reader:
        line = reader.line_num
        try:
            sm = _num(row["sm_version"])
            specs[row["gpu"]] = GpuSpec(
                name=row["gpu"],
                vendor=row["vendor"],
                arch=row["arch"],
                memory_gb=float(row["memory_GB"]),
                hbm_tbps=float(row["hbm_bandwidth_TBps"]),
                bf16_tflops=_num(row["bf16_dense_TFLOPS"]),
                fp8_tflops=_num(row["fp8_dense_TFLOPS"]),
                int8_tops=_num(row["int8_dense_TOPS"]),
                fp4_tflops=_num(row["fp4_dense_TFLOPS"]),
                interconnect=row["intra_node_interconnect"],
                intra_node_gbps=_num(row["intra_node_GBps_per_gpu_bidir"]),
                sm=int(sm) if sm is not None else None,
                memory_mib_cloud=_num(row.get("memory_MiB_cloud_reported") or ""),
                cuda_total_gib=_num(row.get("cuda_total_GiB") or ""),
                cuda_total_source=row.get("cuda_total_source") or "",
            )
        except (ValueError, TypeError, AttributeError):
            raise DataError(
                f"{source}: line {line}: a value of {row['gpu']!r} is missing or not a number"
            ) from None
    return specs


@cache
def gpu_specs() -> dict[str, GpuSpec]:
    """Canonical GPU name -> spec. Cached: the file is read once per process."""
    text = resources.files("provisioner").joinpath("data/gpus.csv").read_text(encoding="utf-8")
    return parse_gpu_table(text, "provisioner/data/gpus.csv")


def gpu_names() -> tuple[str, ...]:
    return tuple(gpu_specs())


def match_gpu(name: str) -> list[str]:
    """Canonical names matching a user's --gpu (case-insensitive; 'H100' matches all H100s,
    a vendor name such as 'nvidia' or 'amd' matches all of its GPUs)."""
    key = name.strip().lower()
    if not key:
        return []
    by_vendor = [n for n, s in gpu_specs().items() if s.vendor.lower() == key]
    if by_vendor:
        return by_vendor
    names = gpu_names()
    exact = [n for n in names if n.lower() == key]
    if exact:
        return exact
    return [n for n in names if n.lower().startswith(key)]


# torch's total / the size clouds state, median of the GPUs with a logged total (H100 0.990,
# H200 0.992, L40S 0.994, RTX 3090 0.983): the fallback for a GPU without a logged total.
_CUDA_SHARE = 0.985


@cache
def estimated_memory_note(gpu: str, device_gib: float) -> str | None:
    """Said wherever a GPU's device memory is cuda_memory_gib's estimate, not a logged total
    (None when the GPU has a logged total or `device_gib` is another size, e.g. a user's)."""
    spec = gpu_specs().get(gpu)
    if spec is None or spec.cuda_total_gib or device_gib != cuda_memory_gib(gpu):
        return None
    return (
        f"{gpu}: {device_gib:.2f} GiB per GPU is an estimate (catalog size x 0.985; "
        "no logged CUDA total in the GPU table), as are its KV tokens"
    )


def cuda_memory_gib(gpu: str) -> float:
    """Device memory as CUDA reports it (what vLLM's budget is a fraction of), in GiB.

    One GPU model has one size, whichever cloud sells it and whatever its catalog states
    (GCP writes an L4's "24 GB" as 24576 MiB; AWS states 22888 MiB): the table's logged total,
    else its cloud-reported MiB (or datasheet size) x 0.985 (the observed driver/ECC share).
    The catalogs' figures only choose the variant (A100 40 vs 80 GB) when offers are read.
    """
    spec = gpu_specs().get(gpu)
    if spec is None:
        return 0.0
    if spec.cuda_total_gib:
        return spec.cuda_total_gib
    base = spec.memory_mib_cloud / 1024 if spec.memory_mib_cloud else spec.memory_gb
    return round(base * _CUDA_SHARE, 2)
