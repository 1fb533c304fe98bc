"""How GPUs talk inside a node and between nodes: the link per GPU and the fabric per instance type.

Pure tables with their vendor sources. The snapshot builder and the live refreshes fill an
offer's ``interconnect`` and ``fabric`` columns from them, so every source agrees.
"""

from __future__ import annotations

import re

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
    """The multi-node network of an instance type (``FABRIC``; "ethernet" when none matches)."""
    for pattern, fabric in FABRIC.get(cloud, ()):
        if re.search(pattern, instance_type):
            return fabric
    return "ethernet"
