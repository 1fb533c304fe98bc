"""A format's label on a GPU says what vLLM runs there (review8: `fit -q fp8` on an A100 said
W8A8). vLLM v0.18.0, model_executor/layers/quantization/fp8.py, Fp8LinearMethod: `use_marlin =
not current_platform.has_device_capability(89)`, and "Activations not quantized for marlin":
below SM 8.9 fp8 weights run weight-only (W8A16). The SMs are NVIDIA's: A100 8.0, L40S 8.9,
H100 9.0."""

from __future__ import annotations

import pytest

from provisioner.core.catalog import resolve_model
from provisioner.core.hardware import gpu_specs
from provisioner.core.planner.shape_rules import label_on
from provisioner.core.quant import resolve_quant

LLAMA = "meta-llama/Llama-3.1-8B"


@pytest.mark.parametrize(
    ("gpu", "label"),
    [
        ("A100-80GB-SXM", "fp8 W8A16 per-tensor (online), weight-only Marlin on SM 8.0"),
        ("L40S", "fp8 W8A8 per-tensor (online)"),  # 8.9: exactly vLLM's threshold
        ("H100-SXM", "fp8 W8A8 per-tensor (online)"),
        ("MI300X", "fp8 W8A8 per-tensor (online)"),  # ROCm: vLLM disables Marlin
        (None, "fp8 W8A8 per-tensor (online)"),  # no GPU named (fit --gpu-memory-gib)
    ],
)
def test_online_fp8_is_weight_only_below_sm_89(gpu: str | None, label: str) -> None:
    scheme = resolve_quant("fp8", resolve_model(LLAMA))
    assert label_on(scheme, gpu_specs()[gpu] if gpu else None) == label


def test_formats_with_full_kernels_keep_their_label() -> None:
    spec = resolve_model(LLAMA)
    a100 = gpu_specs()["A100-80GB-SXM"]
    for quant, label in [("int4", "int4 W4A16 AWQ/GPTQ group 128"), ("bf16", None)]:
        scheme = resolve_quant(quant, spec)
        assert label_on(scheme, a100) == (label or scheme.label)
