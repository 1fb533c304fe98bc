"""Kernel paths that change vLLM's memory: the sampler warm-up and gpt-oss's mxfp4 backend.

Every expected number is a hand derivation from vLLM's source (docs/vllm-rules.md s10):
_dummy_sampler_run keeps compute_logits' bf16 logits (2 B) while Sampler.forward makes an
fp32 copy (4 B); then, per logit,
- FlashInfer (top_k_top_p_sampling_from_logits): top_k_mask_logits' output 4 + softmax 4;
- PyTorch sort (apply_top_k_top_p): sorted values 4 + int64 indices 8; torch's segmented
  sort (>= 128 rows, or 1 row) adds an int64 iota 8 and cub's alternate key/value buffers
  4 + 8; for 2-127 rows the full sort adds two int2 arrays 8 + 8, a key buffer 4 and cub's
  alternates 4 + 8;
- PyTorch with Triton masking (v0.17+, >= 8 rows): in place, then probs 4 and q 4, plus the
  kernel's [min(SMs, rows) rounded up to a power of 2, at most SMs] x vocab fp32 buffer.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from provisioner.cli.main import app
from provisioner.core.catalog import resolve_model
from provisioner.core.memory import MemorySettings, sampler_bytes_per_logit, sampler_peak
from provisioner.core.quant import expert_padding, resolve_quant
from provisioner.core.vllm_rules import VLLM_VERSION, rules_for, with_paths
from provisioner.errors import UsageError

runner = CliRunner()


def test_bytes_per_logit_by_path_by_hand() -> None:
    sort_path = with_paths(rules_for("0.11.0"), "pip")
    assert sort_path.sampler == "pytorch"
    assert sampler_bytes_per_logit(sort_path, 1024) == 2 + 4 + 4 + 8 + 8 + 4 + 8 == 38
    assert sampler_bytes_per_logit(sort_path, 1) == 38
    assert sampler_bytes_per_logit(sort_path, 64) == 2 + 4 + 4 + 8 + 8 + 8 + 4 + 4 + 8 == 50
    flashinfer = with_paths(rules_for("0.11.0"), "image")
    assert flashinfer.sampler == "flashinfer"
    assert sampler_bytes_per_logit(flashinfer, 1024) == 2 + 4 + 4 + 4 == 14
    triton = rules_for("0.18.0")
    assert triton.sampler == "pytorch" and triton.triton_topk_topp
    assert sampler_bytes_per_logit(triton, 1024) == 2 + 4 + 4 + 4 == 14
    assert sampler_bytes_per_logit(triton, 4) == 50  # under 8 rows: the sort path
    # the fitted 38 B per logit (v0.10-0.11 fit cases) is the sort path's derived value
    assert sampler_bytes_per_logit(rules_for("0.16.0"), 1024) == 38


def test_sampler_peak_adds_the_triton_buffer() -> None:
    spec = resolve_model("llama-3.1-8b")  # vocab 128,256
    v = 128_256
    r18 = rules_for("0.18.0")
    # 100 rows: 100 programs, buffer rounded up to 128 rows (<= 132 SMs)
    s = MemorySettings(max_num_seqs=100, max_num_batched_tokens=2048, rules=r18)
    assert sampler_peak(spec, s) == 100 * v * 14 + 128 * v * 4
    s = MemorySettings(max_num_seqs=1024, max_num_batched_tokens=8192, rules=r18)
    assert sampler_peak(spec, s) == 1024 * v * 14 + 132 * v * 4
    # rows are min(max_num_seqs, max_num_batched_tokens); FlashInfer has no buffer
    s = MemorySettings(max_num_seqs=1024, max_num_batched_tokens=512, rules=rules_for("0.21.0"))
    assert sampler_peak(spec, s) == 512 * v * 14


@pytest.mark.parametrize(
    ("version", "install", "sampler", "triton"),
    [
        ("0.10.2", "image", "flashinfer", False),  # image ships flashinfer, default on
        ("0.10.2", "pip", "pytorch", False),  # wheel: flashinfer only as an extra
        ("0.11.0", "image", "flashinfer", False),  # triton_kernels not in the v0.11 wheel
        # opt-in from v0.11.1: topk_topp_sampler.py:34-35 @v0.11.1 (PR #26859)
        ("0.11.1", "image", "pytorch", False),
        ("0.11.2", "image", "pytorch", False),
        ("0.12.0", "pip", "pytorch", True),  # triton_kernels bundled in the wheel
        ("0.18.0", "image", "pytorch", True),
        ("0.20.0", "pip", "pytorch", True),
        ("0.21.0", "pip", "flashinfer", True),  # default on again; flashinfer in the wheel
    ],
)
def test_auto_paths_by_version_and_install(
    version: str, install: str, sampler: str, triton: bool
) -> None:
    r = with_paths(rules_for(version), install)
    assert (r.sampler, r.triton_mxfp4_on_hopper) == (sampler, triton)


def test_image_and_pip_differ_only_where_the_wheel_lacks_flashinfers_default_sampler() -> None:
    """vLLM takes FlashInfer's sampler by default (topk_topp_sampler.py:46 @v0.11.0, 'is not
    False') when flashinfer imports; the image installs it (docker/Dockerfile vllm-base), the
    wheel only as an extra until v0.11.1, which makes the sampler opt-in (PR #26859) and
    requires flashinfer-python; v0.21 turns it on again with flashinfer in the wheel. So the
    two installs differ on v0.10.0-v0.11.0 only, and not at all at the version prov deploys."""
    versions = ["0.10.0", "0.10.1", "0.10.2", "0.11.0", "0.11.1", "0.11.2", "0.12.0"]
    versions += ["0.14.1", "0.17.0", VLLM_VERSION, "0.20.0", "0.21.0", "0.26.0", "0.30.0"]
    differ = [
        v
        for v in versions
        if with_paths(rules_for(v), "image").sampler != with_paths(rules_for(v), "pip").sampler
    ]
    assert differ == ["0.10.0", "0.10.1", "0.10.2", "0.11.0"]
    image, pip = with_paths(rules_for(VLLM_VERSION), "image"), with_paths(rules_for(), "pip")
    assert image == replace(pip, install="image")


def test_forced_paths_and_bad_names() -> None:
    r = with_paths(rules_for("0.18.0"), "image", "flashinfer", "marlin")
    assert (r.sampler, r.triton_mxfp4_on_hopper) == ("flashinfer", False)
    r = with_paths(rules_for("0.11.0"), "pip", "pytorch", "triton")
    assert (r.sampler, r.triton_mxfp4_on_hopper) == ("pytorch", True)
    for bad in (("docker", "auto", "auto"), ("image", "fast", "auto"), ("image", "auto", "x")):
        with pytest.raises(UsageError):
            with_paths(rules_for("0.18.0"), *bad)


def test_mxfp4_backend_input_sets_the_hopper_padding() -> None:
    spec = resolve_model("openai/gpt-oss-120b")  # hidden 2880, expert width 2880
    q = resolve_quant("auto", spec)
    marlin = with_paths(rules_for("0.11.0"), "image")
    triton = with_paths(rules_for("0.11.0"), "image", mxfp4="triton")
    # Marlin: width -> 2944 (x128), hidden -> 3072 (x256); triton: hidden -> 3072 only
    assert expert_padding(spec, q, 1, 90, marlin) == pytest.approx(3072 * 2944 / 2880**2)
    assert expert_padding(spec, q, 1, 90, triton) == pytest.approx(3072 / 2880)


def _fit_json(*args: str) -> dict[str, object]:
    res = runner.invoke(app, ["fit", "-m", "llama-3.1-8b", "--gpu", "H100", "--json", *args])
    assert res.exit_code == 0, res.output
    return dict(json.loads(res.output))


def test_cli_paths_and_the_quote_default_agree() -> None:
    from provisioner.core.planner.shapes import HardwareClass, memory_settings  # as `prov quote`
    from provisioner.core.request import QuoteRequest

    doc = _fit_json()
    assert (doc["install"], doc["sampler_path"]) == ("image", rules_for(VLLM_VERSION).sampler)
    spec = resolve_model("llama-3.1-8b")
    hw = HardwareClass("H100-SXM", 8, 79.19, "nvlink")
    settings = memory_settings(QuoteRequest(model="llama-3.1-8b", ctx=8192), spec, hw, 2)
    # the same rules and paths as `prov fit` with no path flags
    assert settings.vllm == with_paths(rules_for(VLLM_VERSION), "image", "auto", "auto")
    pip = _fit_json("--vllm-version", "0.11.0", "--install", "pip")
    image = _fit_json("--vllm-version", "0.11.0")
    assert (pip["sampler_path"], image["sampler_path"]) == ("pytorch", "flashinfer")
    # 1024 rows x 128,256 vocab x (38 - 14) B more on the sort path
    diff = float(str(pip["activation_peak_gib"])) - float(str(image["activation_peak_gib"]))
    assert diff == pytest.approx(1024 * 128_256 * 24 / 2**30, abs=0.002)


def test_cli_rejects_unknown_paths() -> None:
    for flag, value in (("--sampler", "fast"), ("--install", "conda"), ("--mxfp4-backend", "x")):
        res = runner.invoke(app, ["fit", "-m", "llama-3.1-8b", "--gpu", "H100", flag, value])
        assert res.exit_code == 2, res.output
        assert "allowed" in res.output and "Traceback" not in res.output
