"""Which plans `prov deploy` can run: the one rule quote marks plans with and deploy enforces.

`prov quote` writes `deployable` / `not_deployable_reason` on every plan from
:func:`not_deployable_reason`; `prov deploy` (stacks/spec.build_spec) refuses a plan with the same
function, so the mark and the refusal cannot disagree (tests/test_deployable_seam.py runs both).

The rule, for `prov deploy` with the default ``--target auto`` (aws-eks for an AWS plan,
kubeconfig otherwise):

* the plan runs on vLLM (GGUF plans run on llama.cpp, which prov does not deploy);
* its GPU is NVIDIA (vllm/vllm-openai, ``nvidia.com/gpu``) or AMD (vLLM's ROCm image,
  ``amd.com/gpu``, kubeconfig target only: AWS rents no AMD GPUs);
* an aws-eks plan names its availability zone, and its region has a second zone for EKS.

Pure: reads the packaged GPU table only.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.core.hardware import gpu_specs

#: GPU vendor -> the Kubernetes extended resource its device plugin advertises.
GPU_RESOURCE = {"NVIDIA": "nvidia.com/gpu", "AMD": "amd.com/gpu"}
TARGETS = ("aws-eks", "kubeconfig")


@dataclass(frozen=True)
class DeployFacts:
    """What the rule needs to know about one plan."""

    cloud: str
    gpu: str
    zone: str | None
    runs_vllm: bool  # the plan carries vLLM arguments
    region_zones: int = 2  # zones prov knows in the plan's region (EKS needs two)


def resolve_target(target: str, cloud: str) -> str:
    """`--target auto` -> aws-eks for an AWS plan, kubeconfig otherwise."""
    if target == "auto":
        return "aws-eks" if cloud == "aws" else "kubeconfig"
    return target


def gpu_vendor(gpu: str) -> str | None:
    spec = gpu_specs().get(gpu)
    return spec.vendor.upper() if spec is not None else None


def not_deployable_reason(facts: DeployFacts, target: str = "auto") -> str | None:
    """Why `prov deploy --target TARGET` cannot run this plan, or None when it can."""
    if not facts.runs_vllm:
        return "runs on llama.cpp (a GGUF format); prov deploy runs vLLM only"
    vendor = gpu_vendor(facts.gpu)
    if vendor is None:
        return f"unknown GPU {facts.gpu!r}; prov deploy knows NVIDIA and AMD GPUs"
    if vendor not in GPU_RESOURCE:
        return f"{facts.gpu} is a {vendor} GPU; prov deploy runs vLLM on NVIDIA and AMD GPUs only"
    resolved = resolve_target(target, facts.cloud)
    if resolved == "aws-eks":
        if vendor != "NVIDIA":
            return f"{facts.gpu} ({vendor}) deploys with --target kubeconfig only, not aws-eks"
        if facts.cloud != "aws":
            return f"--target aws-eks needs an AWS plan; this one is on {facts.cloud}"
        if not facts.zone:
            return "an AWS plan without an availability zone"
        if facts.region_zones < 2:
            return "EKS needs two availability zones and prov knows one in this region"
    return None
