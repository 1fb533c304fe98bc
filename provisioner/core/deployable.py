"""Which plans `prov deploy` can run: the one rule quote marks plans with and deploy enforces.

`prov quote` writes `deployable` / `not_deployable_reason` on every plan from
:func:`not_deployable_reason`; `prov deploy` (stacks/spec.build_spec) refuses a plan with the same
function, so the mark and the refusal cannot disagree (tests/test_deployable_seam.py runs both).

The rule, for `prov deploy` with the default ``--target auto`` (aws-eks for an AWS plan,
kubeconfig otherwise):

* the plan runs on vLLM (GGUF plans run on llama.cpp, which prov does not deploy);
* the model's published checkpoint serves its quant scheme: the scheme is the checkpoint's own,
  or vLLM makes it at load time (fp8 from a bf16/fp16 checkpoint, with --quantization fp8).
  ``prov deploy`` starts the checkpoint the plan names; a plan priced for an fp8 Kimi-K2 would
  start the published int4 one (review9 #2). The rule is quant.checkpoint_rule's, carried on
  the scheme (``QuantScheme.checkpoint``);
* its GPU is NVIDIA (vllm/vllm-openai, ``nvidia.com/gpu``) or AMD (vLLM's ROCm image,
  ``amd.com/gpu``, kubeconfig target only: AWS rents no AMD GPUs);
* an aws-eks plan names its availability zone, and its region has a second zone for EKS.

Pure: reads the packaged GPU table only.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.core.hardware import gpu_specs
from provisioner.core.quant import QuantScheme, checkpoint_phrase

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
    model: str = ""  # the model id the plan starts (vLLM's --model)
    scheme: QuantScheme | None = None  # the plan's quant scheme; None: not known (not checked)


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
    why = checkpoint_reason(facts.scheme, facts.model)
    if why is not None:
        return why
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


def checkpoint_reason(scheme: QuantScheme | None, model: str) -> str | None:
    """Why the model's published checkpoint cannot serve `scheme`, or None when it can."""
    if scheme is None or scheme.checkpoint is None:
        return None
    return (
        f"needs {checkpoint_phrase(scheme.checkpoint)} checkpoint of {model} (the published "
        f"one is {scheme.published}); pass one with -m <config.json or snapshot folder>"
    )
