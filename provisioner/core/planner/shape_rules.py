"""vLLM's start-up rules on a parallel layout, and which GPUs have kernels for a quant format.

Both are pure verdicts (a reason, or None) shared by the planner, `prov fit` and the plan
re-check (provisioner/contract/check.py): the one copy of these rules.
"""

from __future__ import annotations

from provisioner.core.hardware import GpuSpec
from provisioner.core.layouts import expert_width_rule
from provisioner.core.models import ModelSpec
from provisioner.core.quant import QuantScheme


def shape_rule_violation(
    spec: ModelSpec, scheme: QuantScheme, tp: int, pp: int, dcp: int, ep: bool = False
) -> str | None:
    """vLLM's start-up checks on a parallel layout, as one reason or None.

    With expert parallelism (ep) whole experts sit on each rank, so the per-rank expert-width
    rules (fp8 block, Marlin MoE) do not apply."""
    if spec.num_heads % tp:
        return f"TP{tp} does not divide the {spec.num_heads} attention heads"
    if spec.mla is None:
        kvh = spec.num_kv_heads
        if tp <= kvh and kvh % tp:
            return f"TP{tp} does not divide the {kvh} KV heads"
        if tp > kvh and tp % kvh:
            return f"TP{tp} is not a multiple of the {kvh} KV heads"
    if pp > spec.num_layers:
        return f"PP{pp} exceeds the {spec.num_layers} layers"
    if dcp > 1:
        if tp % dcp:
            return f"DCP{dcp} does not divide TP{tp}"
        if spec.mla is None and dcp > max(1, tp // spec.num_kv_heads):
            return f"DCP{dcp} exceeds TP/KV-heads ({tp}/{spec.num_kv_heads}) for GQA"
    if spec.moe is not None and not ep and scheme.engine == "vllm" and scheme.bits < 16:
        return expert_width_rule(scheme, spec.moe.moe_intermediate_size, tp, f"TP{tp}", "TP")
    return None


def kernel_verdict(scheme: QuantScheme, gpu: GpuSpec) -> tuple[str | None, str | None]:
    """(rejection, warning) for running this quant format on this GPU generation."""
    k = scheme.kernels
    if k is None:
        return None, None
    if not gpu.is_nvidia:
        if not k.amd:
            return f"no ROCm kernels for {scheme.name} on {gpu.name}", None
        if scheme.name == "int4":
            return None, "int4 on ROCm runs Triton kernels (Marlin is CUDA-only): slower"
        return None, None
    sm = gpu.sm or 0
    if sm >= k.min_sm:
        return None, None
    if k.fallback_sm is not None and sm >= k.fallback_sm:
        return None, k.fallback_note or f"{scheme.name} runs through a fallback kernel here"
    return (
        f"no vLLM {scheme.name} kernels on {gpu.name} ({gpu.arch}, SM {sm / 10:.1f}; "
        f"needs SM {k.min_sm / 10:.1f}+)"
    ), None


def label_on(scheme: QuantScheme, gpu: GpuSpec | None) -> str:
    """The format's label as vLLM runs it on this GPU (None: the label as quoted).

    Below the SM of a format's full kernels vLLM falls back to weight-only Marlin: v0.18.0's
    fp8.py sets use_marlin when the device lacks capability 8.9 and leaves the activations
    unquantized, so online fp8 on an A100 is W8A16, not W8A8."""
    if gpu is None or not gpu.is_nvidia:
        return scheme.label
    _reject, fallback = kernel_verdict(scheme, gpu)
    if fallback is None:
        return scheme.label
    here = f", weight-only Marlin on SM {(gpu.sm or 0) / 10:.1f}"
    return scheme.label.replace("W8A8", "W8A16") + here
