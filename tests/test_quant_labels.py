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


# ---- prov fit says the same (its header, and quote's kernel rule) ---------------------------


def _fit(gpu: str, quant: str) -> tuple[int, str, str]:
    from typer.testing import CliRunner

    from provisioner.cli.main import app

    res = CliRunner().invoke(app, ["fit", "-m", LLAMA, "--gpu", gpu, "--quant", quant])
    return res.exit_code, res.stdout, res.stderr


def test_fit_names_fp8_on_an_a100_as_vllm_runs_it() -> None:
    code, out, _ = _fit("A100-80GB-SXM", "fp8")
    assert code == 0
    assert "fp8 W8A16 per-tensor (online), weight-only Marlin on SM 8.0" in out.splitlines()[1]


def test_fit_warns_of_a_weight_only_fallback_as_quote_does() -> None:
    # NVFP4's FP4 compute needs Blackwell (SM 10.0); an L4 (SM 8.9) runs FP4 Marlin, weight-only
    code, _, err = _fit("L4", "nvfp4")
    assert code == 0
    assert "prov: warning: NVFP4 runs weight-only" in err


def test_fit_refuses_a_format_with_no_kernels_on_the_gpu_as_quote_does() -> None:
    # vLLM has no ROCm kernels for NVFP4 (an NVIDIA format); quote rejects every MI300X shape
    # for it, so fit must not say FITS
    code, out, _ = _fit("MI300X", "nvfp4")
    assert code == 1
    assert "DOES NOT FIT: vLLM cannot run it: no ROCm kernels for nvfp4 on MI300X" in out


def test_quote_explain_says_how_its_plan_runs_the_format_as_fit_does() -> None:
    from typer.testing import CliRunner

    from provisioner.cli.main import app

    args = ["quote", "-m", "meta-llama/Llama-3.1-70B", "--quant", "fp8", "--explain"]
    a100 = CliRunner().invoke(app, [*args, "--gpu", "A100-80GB-SXM"])
    assert a100.exit_code == 0
    assert "runs as fp8 W8A16 per-tensor (online), weight-only Marlin on SM 8.0" in a100.stdout
    h100 = CliRunner().invoke(app, [*args, "--gpu", "H100-SXM"])  # SM 9.0: full FP8, no line
    assert h100.exit_code == 0 and "runs as" not in h100.stdout
