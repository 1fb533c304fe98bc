"""Per-cloud normalisers of the SkyPilot-format catalogs: catalog rows -> ``Node``s.

Maintainer code (pricing.tools). Each normaliser maps the catalog's GPU names to gpus.csv's
(the tables below; AWS and Azure share theirs with the live refreshes: pricing.gpu_names),
joins what must be joined (GCP's GPU and host rows) and keeps upstream quirks as flags.
Prices are merged and flagged afterwards (pricing.tools.build_snapshot).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pricing.gpu_names import AWS_FAMILY_GPU, azure_size_gpu
from pricing.nodes import Node
from pricing.tools.catalogs import CatalogContext, RawRow, gpuinfo_mib
from provisioner.errors import DataError

# --- catalog GPU names -> canonical gpus.csv names. A name that is not a gpus.csv row
# --- (V100, "A100-40GB-PCIe", GH200, ...) makes the row dropped and counted under it.

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


def _simple(
    ctx: CatalogContext,
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


def norm_aws(ctx: CatalogContext, rows: list[RawRow]) -> list[Node]:
    def resolve(row: RawRow, count: int) -> str:
        family = row.get("InstanceType").split(".")[0]
        return AWS_FAMILY_GPU.get(family, row.get("AcceleratorName"))

    return _simple(ctx, rows, resolve)


def norm_lambda(ctx: CatalogContext, rows: list[RawRow]) -> list[Node]:
    def resolve(row: RawRow, count: int) -> str:
        m = re.match(r"^gpu_\d+x_(.+)$", row.get("InstanceType"))
        suffix = m.group(1) if m else ""
        if suffix == "a100":
            # Lambda: 8x A100 (40 GB SXM4); the 1x/2x/4x "a100" sizes are 40 GB PCIe.
            return "A100-40GB-SXM" if count == 8 else "A100-40GB-PCIe"
        return LAMBDA_SUFFIX_GPU.get(suffix, row.get("AcceleratorName"))

    return _simple(ctx, rows, resolve)


def norm_runpod(ctx: CatalogContext, rows: list[RawRow]) -> list[Node]:
    def resolve(row: RawRow, count: int) -> str:
        name = row.get("AcceleratorName")
        return RUNPOD_GPU.get(name, name)

    return _simple(ctx, rows, resolve)


def norm_fluidstack(ctx: CatalogContext, rows: list[RawRow]) -> list[Node]:
    def resolve(row: RawRow, count: int) -> str:
        token = row.get("InstanceType").split("::")[0]
        return FLUIDSTACK_TOKEN_GPU.get(token, row.get("AcceleratorName"))

    return _simple(ctx, rows, resolve)


def norm_nebius(ctx: CatalogContext, rows: list[RawRow]) -> list[Node]:
    def resolve(row: RawRow, count: int) -> str:
        platform = row.get("InstanceType").split("_")[0]
        return NEBIUS_PLATFORM_GPU.get(platform, row.get("AcceleratorName"))

    # Nebius GpuInfo.MemoryInfo is the host memory, not GPU memory: use gpus.csv.
    return _simple(ctx, rows, resolve, use_gpuinfo=False)


def norm_vast(ctx: CatalogContext, rows: list[RawRow]) -> list[Node]:
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


#: Azure: a spot price that is exactly this share of on-demand (to the catalog's 6 decimals) is
#: a filled-in default, not an observed price: 599 of the 895 rows of azure.csv @62ff0a98 with
#: both prices are round(on-demand x 0.1848, 6), across 31 VM sizes and 41 regions (V100, MI25,
#: M60, A10, H100, MI300X alike), while the other 296 spread from 0.10 to 1.00 (T4 0.29, ND A100
#: v4 0.26) and the same size varies by region (NC40ads H100 v5: 0.18-0.90). Flagged, kept.
AZURE_DEFAULT_SPOT_RATIO = 0.1848


def azure_default_spot(ondemand: float | None, spot: float | None) -> bool:
    """True when `spot` is AZURE_DEFAULT_SPOT_RATIO x `ondemand`, rounded as the catalog writes."""
    if ondemand is None or spot is None:
        return False
    return abs(spot - round(ondemand * AZURE_DEFAULT_SPOT_RATIO, 6)) < 5e-7


def norm_azure(ctx: CatalogContext, rows: list[RawRow]) -> list[Node]:
    nodes = []
    for row in rows:
        itype = row.get("InstanceType")
        accel = row.get("AcceleratorName")
        match = azure_size_gpu(itype)
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
        ondemand, spot = ctx.num(row, "Price"), ctx.num(row, "SpotPrice")
        if azure_default_spot(ondemand, spot):
            flags.add("spot_default_ratio")
        nodes.append(
            ctx.node(
                row,
                region=row.get("Region"),
                zone="",
                gpu=spec,
                count=count,
                catalog_mib=None,
                ondemand=ondemand,
                spot=spot,
                flags=flags,
            )
        )
    return nodes


def norm_gcp(ctx: CatalogContext, rows: list[RawRow]) -> list[Node]:
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
    # (accelerator, count, on-demand) of GPU rows whose spot is above their on-demand: that
    # figure is not a list price, wherever else it appears (flag gpu_row_ondemand_suspect)
    suspect: set[tuple[str, str, float]] = set()
    for row in rows:
        if not row.get("InstanceType"):
            od, sp = ctx.num(row, "Price"), ctx.num(row, "SpotPrice")
            if od is not None and sp is not None and sp > od:
                suspect.add((row.get("AcceleratorName"), row.get("AcceleratorCount"), od))
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
            elif (accel, row.get("AcceleratorCount"), gpu_od) in suspect:
                flags.add("gpu_row_ondemand_suspect")
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


NORMALISERS: dict[str, Callable[[CatalogContext, list[RawRow]], list[Node]]] = {
    "aws": norm_aws,
    "azure": norm_azure,
    "fluidstack": norm_fluidstack,
    "gcp": norm_gcp,
    "lambda": norm_lambda,
    "nebius": norm_nebius,
    "runpod": norm_runpod,
    "vast": norm_vast,
}
