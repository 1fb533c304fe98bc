"""The throughput model's factors: what was measured, what was fitted, and the printed bands. Pure.

Three layers of factors, all in data/perf_calibration.json:
  hardware  per GPU family, MEASURED by microbenchmarks (STREAM-like HBM copy/triad and a large
            GEMM, each as a fraction of the datasheet peak): what the silicon gives any software;
  software  per engine step, FITTED to published serving measurements (benchmarks/accuracy.py
            --fit): what fraction of that vLLM reaches in decode/prefill, the per-layer latency
            floor by architecture class, MoE grouped-GEMM terms, per-step and per-sequence costs;
  family    a serving multiplier per GPU family, fitted only where the calibration set has that
            family's own runs (1.0 and a "thin data" band otherwise), and a MoE multiplier on top
            where it has that family's own MoE runs (fused-MoE kernels are tuned per family);
  era       what an older engine costs (engine_era): vLLM's V0 engine (< 0.8) and SGLang < 0.5
            keep per-step CPU work (scheduling, input preparation, detokenisation) on the
            critical path and run older kernels: a per-step and a per-sequence overhead and
            kernel-efficiency factors, FITTED only on calibration runs of that era. prov deploys
            a current engine, so its own plans carry none of it; the accuracy checks read a
            published run's engine version as part of its setup;
and the band each family and regime prints, from calibration errors (never from held-out rows).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from provisioner.core.hardware import GpuSpec
from provisioner.core.models import ModelSpec
from provisioner.core.quant import QuantScheme

ARCH_CLASSES = ("mla_moe", "moe", "dense")
CURRENT_ERA = "current"
LATENCY_MAX_BATCH = 8  # up to this many requests in flight a plan is in the "latency" regime


@dataclass(frozen=True, slots=True)
class Link:
    """One communication path: per-direction bandwidth (GB/s) and per-message latency (us)."""

    gbps: float
    latency_us: float


@dataclass(frozen=True, slots=True)
class Band:
    """The +- a plan prints: estimate / (1 + rel) .. estimate x (1 + rel)."""

    rel: float
    regime: str  # "latency" (<= LATENCY_MAX_BATCH in flight) or "throughput"
    thin: bool  # True: too few own measurements for this family and regime
    basis: str  # one line: where the number comes from


@dataclass(frozen=True, slots=True)
class Calibration:
    family: str
    calibrated: bool  # the family has its own serving runs in the calibration set
    hbm_eff: float  # measured HBM fraction x fitted decode fraction x family multiplier
    gemm_eff: float  # measured GEMM fraction x fitted decode fraction x family multiplier
    prefill_eff: float  # measured GEMM fraction x fitted prefill fraction (by architecture class)
    moe_eff: float  # grouped-GEMM bandwidth relative to a dense GEMM at 1 token per expert
    moe_tok_half: float  # tokens per expert at which the grouped GEMM reaches half its deficit
    moe_tok_ns: float  # routing/permute cost per (token x expert) per MoE layer
    layer_us: float  # latency floor of one layer's kernels for this architecture class
    step_overhead_ms: float  # scheduler, sampler, launch per decode step
    seq_overhead_us: float  # per sequence per step (input prep, sampling, detokenising)
    multinode_pp_ms: float  # per decode step and node boundary crossed by PP
    pp_stage_ms: float  # per decode step and PP boundary inside a node (assumption)
    attn_prefill_eff: float = 0.0  # prefill attention (FlashAttention, bf16): share of bf16 peak
    lowbit_mem_eff: float = 1.0  # HBM fraction of sub-16-bit weight reads vs bf16 (dequant GEMMs)
    moe_scale: float = 1.0  # the family's MoE-kernel multiplier (fitted where it has MoE runs)
    era: str = CURRENT_ERA  # engine era (engine_era): "current" or an older engine's key
    era_step_ms: float = 0.0  # the era's CPU time per schedule (scheduling, input preparation)
    era_seq_us: float = 0.0  # ... and per sequence per schedule (block tables, input tensors)
    era_kernel: float = 1.0  # the era's kernel efficiency relative to the current engine's
    # an idle request's time to first token beyond the prefill FLOPs, per layer: eager kernel
    # launches (prefills run without CUDA graphs), plus API server, scheduling, sampling and
    # detokenising folded in (fitted on the calibration TTFTs; the split is not measured)
    prefill_layer_us: float = 0.0


@cache
def calibration_data() -> dict[str, Any]:
    text = resources.files("provisioner").joinpath("data/perf_calibration.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def gpu_family(gpu: GpuSpec, data: dict[str, Any] | None = None) -> str:
    return str((data or calibration_data())["arch_family"].get(gpu.arch, "hopper"))


def arch_class(spec: ModelSpec) -> str:
    """mla_moe (DeepSeek/Kimi), moe (GQA MoE: Qwen3, GLM-4.5, gpt-oss, Mixtral) or dense."""
    if spec.moe is not None:
        return "mla_moe" if spec.mla is not None else "moe"
    return "dense"


def engine_era(engine: str, version: str | None, data: dict[str, Any] | None = None) -> str:
    """The era of an engine build: CURRENT_ERA, or the key of data["eras"] whose engine matches
    and whose `before` version the build is older than. A version string that names the engine
    core ("V0" / "V1", as ROCm builds of vLLM 0.8 state it) decides for vLLM. No version: current.
    """
    if not version:
        return CURRENT_ERA
    text = str(version)
    m = re.search(r"(\d+)\.(\d+)", text)
    for key, row in (data or calibration_data()).get("eras", {}).items():
        if row.get("engine") != engine:
            continue
        core = re.search(r"\bV([01])\b", text)
        if engine == "vllm" and core is not None:
            if core[1] == "0":
                return str(key)
            continue
        before = tuple(int(x) for x in str(row["before"]).split("."))
        if m is not None and (int(m[1]), int(m[2])) < before:
            return str(key)
    return CURRENT_ERA


def calibration_for(
    gpu: GpuSpec,
    engine: str = "vllm",
    data: dict[str, Any] | None = None,
    arch: str = "dense",
    era: str = CURRENT_ERA,
) -> Calibration:
    data = data or calibration_data()
    fam = gpu_family(gpu, data)
    hw = data["hardware"].get(fam) or data["hardware"]["hopper"]
    sw = data["software"]
    famrow = data["families"].get(fam, {})
    scale = float(famrow.get("scale", 1.0)) * _engine_arch_factor(
        data["engines"].get(engine, 1.0), arch, fam
    )
    # fused-MoE kernels are tuned per GPU family: a family's own MoE runs may move its MoE factor
    moe_scale = float(famrow.get("moe_scale", 1.0)) if arch != "dense" else 1.0
    erarow = data.get("eras", {}).get(era, {}) if era != CURRENT_ERA else {}
    # an older engine's kernels: one factor, and its fused-MoE kernels per GPU family where its
    # calibration runs have that family's MoE runs (early ROCm MoE kernels differ from CUDA's)
    kernel = float(erarow.get("kernel", 1.0))
    if arch != "dense":
        kernel *= _engine_factor(erarow.get("moe_kernel", 1.0), fam)
    scale *= moe_scale * kernel
    # the era's prefill kernels, per architecture class where its runs had that class
    prefill = _engine_factor(erarow.get("prefill", 1.0), arch)
    return Calibration(
        family=fam,
        calibrated=bool(famrow.get("calibrated", False)),
        hbm_eff=min(1.0, hw["hbm"] * sw["mem_eff"] * scale),
        gemm_eff=min(1.0, hw["gemm"] * sw["compute_eff"] * scale),
        prefill_eff=min(1.0, hw["gemm"] * _by_arch(sw["prefill_eff"], arch) * scale * prefill),
        moe_eff=sw["moe_eff"],
        moe_tok_half=sw["moe_tok_half"],
        moe_tok_ns=sw["moe_tok_ns"] / scale,
        layer_us=_by_arch(sw["layer_us"], arch) / scale,
        step_overhead_ms=sw["step_overhead_ms"] / scale,
        seq_overhead_us=sw["seq_overhead_us"] / scale,
        multinode_pp_ms=sw["multinode_pp_ms"] / scale,
        pp_stage_ms=sw["pp_stage_ms"] / scale,
        attn_prefill_eff=min(1.0, hw["gemm"] * float(sw.get("attn_prefill_eff", 0.0)) * scale),
        lowbit_mem_eff=float(sw.get("lowbit_mem_eff", 1.0)),
        moe_scale=moe_scale,
        era=era if erarow else CURRENT_ERA,
        era_step_ms=float(erarow.get("step_ms", 0.0)),
        era_seq_us=float(erarow.get("seq_us", 0.0)),
        era_kernel=kernel,
        prefill_layer_us=_ttft_layer_us(sw.get("prefill_layer_us", 0.0), engine)
        / float(famrow.get("scale", 1.0)),
    )


def _engine_factor(value: float | dict[str, float], key: str) -> float:
    """An engine's factor: one number, or {"_all": x, key: y} where the calibration set has that
    engine's runs of more than one architecture class (kernels differ: MLA, MoE, dense), or an
    era's MoE-kernel factor per GPU family."""
    if isinstance(value, dict):
        return float(value.get(key, value.get("_all", 1.0)))
    return float(value)


def _engine_arch_factor(value: float | dict[str, float], arch: str, fam: str) -> float:
    """An engine's factor for an architecture class on a GPU family: {"mla_moe@cdna3": x} where
    the calibration set has the engine's runs of that class on that family (an engine's MLA and
    MoE kernels are per vendor: FlashInfer/FlashMLA on CUDA, AITER/Triton on ROCm), else the
    class's factor, else the engine's."""
    if isinstance(value, dict) and f"{arch}@{fam}" in value:
        return float(value[f"{arch}@{fam}"])
    return _engine_factor(value, arch)


def _ttft_layer_us(value: float | dict[str, float], engine: str) -> float:
    """The idle TTFT's per-layer floor of an engine: its API server, scheduler and eager
    launches, not its kernels (so not scaled by the engine's kernel factor); vLLM's where the
    engine has no TTFT runs of its own."""
    if isinstance(value, dict):
        return float(value.get(engine, value.get("vllm", 0.0)))
    return float(value)


def _by_arch(value: float | dict[str, float], arch: str) -> float:
    return float(value[arch]) if isinstance(value, dict) else float(value)


def band_for(
    gpu: GpuSpec, batch: int, data: dict[str, Any] | None = None, engine: str = "vllm"
) -> Band:
    """The band a plan prints for this GPU family at this many requests in flight."""
    data = data or calibration_data()
    fam = gpu_family(gpu, data)
    regime = "latency" if batch <= LATENCY_MAX_BATCH else "throughput"
    bands = data["bands"]
    row = bands.get(fam, {}).get(regime) or bands["_default"]
    rel = float(row["rel"])
    if engine not in {"vllm", "sglang"}:
        rel = max(rel, float(bands["_other_engine"]["rel"]))
    return Band(rel, regime, bool(row.get("thin", True)), str(row.get("basis", "")))


def intra_link(
    gpu: GpuSpec, interconnect: str, data: dict[str, Any] | None = None, tp: int = 2
) -> Link:
    """The TP link inside a node (table in perf_calibration.json, bandwidth from gpus.csv)."""
    links = (data or calibration_data())["links"]
    if interconnect == "nvlink-bridge" and tp > 2:  # bridges join pairs: beyond TP2 it is PCIe
        row = links["pcie"]
        return Link(row["default_gbps_bidir"] / 2 * row["efficiency"], row["latency_us"])
    row = links.get(interconnect) or links["pcie"]
    bidir = gpu.intra_node_gbps or row["default_gbps_bidir"]
    return Link(bidir / 2 * row["efficiency"], row["latency_us"])


def fabric_link(fabric: str, data: dict[str, Any] | None = None) -> Link:
    """The network between nodes, per node (documented table in perf_calibration.json)."""
    fabrics = (data or calibration_data())["fabrics"]
    row = fabrics.get(fabric) or fabrics["ethernet"]
    return Link(row["gbps"], row["latency_us"])


def compute_dtype(gpu: GpuSpec, scheme: QuantScheme) -> str:
    """The dtype the matmuls run in: a format's own math only where the GPU has it.

    FP8 math needs Ada/Hopper or newer (or CDNA3); before that vLLM runs FP8 weight-only (Marlin)
    in bf16. MXFP4/NVFP4 math needs Blackwell's FP4 tensor cores; Hopper, Ampere and MI300X
    dequantise to bf16 (W4A16). int8 W8A8 runs on int8 tensor cores where the GPU has them.
    """
    fp8_ok = gpu.fp8_tflops is not None and (gpu.sm is None or gpu.sm >= 89)
    if scheme.compute == "fp8":
        return "fp8" if fp8_ok else "bf16"
    if scheme.compute == "fp4":
        return "fp4" if gpu.fp4_tflops else "bf16"
    if scheme.compute == "int8":
        return "int8" if gpu.int8_tops else "bf16"
    return "bf16"


def compute_tflops(gpu: GpuSpec, scheme: QuantScheme) -> float:
    """Datasheet dense TFLOPs of the dtype the matmuls run in (compute_dtype)."""
    bf16 = gpu.bf16_tflops or (gpu.fp8_tflops or 100.0) / 2
    dtype = compute_dtype(gpu, scheme)
    if dtype == "fp8":
        return gpu.fp8_tflops or bf16
    if dtype == "fp4":
        return gpu.fp4_tflops or bf16
    if dtype == "int8":
        return gpu.int8_tops or bf16
    return bf16
