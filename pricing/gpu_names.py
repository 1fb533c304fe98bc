"""Cloud GPU names -> gpus.csv's canonical names, for the catalogs both the snapshot builder
and the live refreshes read (AWS instance families, Azure VM sizes).

A name that is not a gpus.csv row makes the row dropped and counted under it. The tables of
the catalogs only the builder reads live beside its normalisers (pricing.tools.normalise).
"""

from __future__ import annotations

import re

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


def azure_size_gpu(size: str) -> tuple[str, int | None] | None:
    """(GPU, GPUs per VM or None) of an Azure VM size, or None for a size not in the table."""
    return next(((gpu, n) for rx, gpu, n in AZURE_SIZE_GPU if re.match(rx, size)), None)
