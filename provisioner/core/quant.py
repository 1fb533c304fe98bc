"""Quantization schemes: bits per weight (scales included), what stays unquantized, kernels.

A scheme is resolved against a model: when the checkpoint ships its own quantization_config
(Kimi-K2-Thinking's compressed-tensors int4 g32, DeepSeek's fp8 block 128, gpt-oss's mxfp4)
and the user asks for that format (or for `auto`), the model's own ignore list decides what
stays in bf16. Otherwise the generic rule applies: embeddings, lm_head, norms and routers stay
unquantized; attention, dense MLPs and experts are quantized.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from provisioner.core.models import QUANTIZABLE_KINDS, ModelSpec
from provisioner.core.vllm_rules import VllmRules
from provisioner.core.weights import WeightGroup
from provisioner.errors import ConfigError, UsageError

Engine = Literal["vllm", "llama.cpp"]

VLLM_QUANTS = ("auto", "bf16", "fp16", "fp8", "int8", "int4", "nvfp4", "mxfp4")
# GGUF k-quants: effective bits per weight of llama.cpp's mixes, from the k-quants table of
# llama.cpp PR #1684 (LLaMA-7B file sizes: Q2_K 3.35, Q3_K_M 3.91, Q4_K_M 4.84, Q5_K_M 5.69,
# Q6_K 6.56 bpw) and the block layouts in ggml-common.h (Q8_0 = 32 int8 + fp16 scale = 8.5;
# IQ2_XXS = 66 bytes per 256 weights = 2.0625). Mixes vary by model: +-5%.
GGUF_BITS: dict[str, float] = {
    "q2_k": 3.35,
    "q3_k_m": 3.91,
    "q4_k_m": 4.84,
    "q5_k_m": 5.69,
    "q6_k": 6.5625,
    "q8_0": 8.5,
    "iq2_xxs": 2.0625,
}
ALL_QUANTS = VLLM_QUANTS + tuple(GGUF_BITS)
KV_DTYPES = ("auto", "bf16", "fp8")


@dataclass(frozen=True)
class Kernels:
    """Where vLLM has kernels for a format. SM = CUDA compute capability x 10."""

    min_sm: int  # full-speed kernels from this SM on
    fallback_sm: int | None = None  # weight-only (Marlin) fallback from this SM, with a warning
    amd: bool = True  # ROCm (MI300X) kernels exist
    fallback_note: str = ""


# Kernel availability per format; see docs/vllm-rules.md for the sources.
KERNELS: dict[str, Kernels] = {
    "bf16": Kernels(80),
    "fp16": Kernels(70),
    "fp8": Kernels(
        89, 80, True, "FP8 weights run weight-only (FP8 Marlin, no FP8 compute) before Ada/Hopper"
    ),
    "int8": Kernels(75),
    "int4": Kernels(80, None, True),
    "nvfp4": Kernels(100, 80, False, "NVFP4 runs weight-only (FP4 Marlin) before Blackwell"),
    "mxfp4": Kernels(90, 80, True, "MXFP4 runs weight-only (Marlin) before Hopper"),
}


@dataclass(frozen=True)
class QuantScheme:
    name: str  # what the user asked for, normalised: bf16, int4, q4_k_m, ...
    label: str  # one line for humans
    bits: float  # bits per quantized weight, scales/zero points included
    engine: Engine = "vllm"
    native: bool = False  # the checkpoint's own format
    compute: str = "bf16"  # dtype of the matmuls (for the performance model)
    vllm_quantization: str | None = None  # value for --quantization, when vLLM needs it
    kinds: frozenset[str] = QUANTIZABLE_KINDS
    skip: Callable[[str], bool] = field(default=lambda _m: False, repr=False)
    model_dtype_bytes: int = 2
    group_size: int | None = None  # weights per scale, for kernel shape checks
    exact: bool = False  # the checkpoint as stored: safetensors bytes apply when known
    notes: tuple[str, ...] = ()
    # The checkpoint format this scheme needs that the model's published one is not (and vLLM
    # cannot make from it at load time), and the published one's format: see checkpoint_rule.
    checkpoint: str | None = None
    published: str = ""

    def is_quantized(self, g: WeightGroup) -> bool:
        if self.bits >= 16:
            return False
        return g.kind in self.kinds and not self.skip(g.module)

    def group_bytes(self, g: WeightGroup) -> float:
        """Bytes of one weight group in this scheme (exact when read from a checkpoint)."""
        if g.exact_bytes is not None and self.exact:
            return float(g.exact_bytes)
        if self.is_quantized(g):
            return g.params * self.bits / 8 + g.extra_params * self.model_dtype_bytes
        return g.total_params * self.model_dtype_bytes

    @property
    def kernels(self) -> Kernels | None:
        return KERNELS.get(self.name) if self.engine == "vllm" else None


# ---- reading a checkpoint's quantization_config -------------------------------------------


def _skip_matcher(patterns: list[str]) -> Callable[[str], bool]:
    """HF/compressed-tensors ignore lists: 're:' regexes, globs, or module-name suffixes."""
    try:
        regexes = [re.compile(p[3:]) for p in patterns if p.startswith("re:")]
    except re.error as e:
        raise ConfigError(
            f"quantization_config: bad 're:' pattern in the ignore list ({e})"
        ) from None
    plain = [p for p in patterns if not p.startswith("re:")]
    seen: dict[str, bool] = {}  # module -> answer: the planner asks about each many times

    def skip(module: str) -> bool:
        found = seen.get(module)
        if found is None:
            found = seen[module] = _matches(module)
        return found

    def _matches(module: str) -> bool:
        if any(r.match(module) for r in regexes):
            return True
        for p in plain:
            if "*" in p:
                if fnmatch.fnmatch(module, p) or fnmatch.fnmatch(module, p + ".*"):
                    return True
            elif (
                module == p
                or module.endswith("." + p)
                or module.startswith(p + ".")
                or (p in module and "." in p)
            ):
                return True
        return False

    return skip


def native_scheme(spec: ModelSpec) -> QuantScheme | None:
    """The checkpoint's own quantization, or None for a plain bf16/fp16 checkpoint."""
    qc: Mapping[str, Any] | None = spec.quantization_config
    if not qc:
        return None
    method = str(qc.get("quant_method", "")).lower()
    ignore = qc.get("ignore") or qc.get("modules_to_not_convert") or []
    if not isinstance(ignore, list):
        raise ConfigError(f"quantization_config: the ignore list must be a list, got {ignore!r}")
    skip = _skip_matcher([str(p) for p in ignore])
    scheme = _native_scheme(method, qc, skip)
    return replace(scheme, exact=True) if scheme is not None else None


def _qint(qc: Mapping[str, Any], key: str, default: int, lo: int = 0) -> int:
    """An integer field of a quantization_config, or ConfigError (exit 2)."""
    value = qc.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"quantization_config: '{key}' must be an integer >= {lo}, got {value!r}")
    return int(value)  # an int already (bool excluded): int() for the type checker


def _qmap(qc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = qc.get(key) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"quantization_config: '{key}' must be an object, got {value!r}")
    return value


def _native_scheme(
    method: str, qc: Mapping[str, Any], skip: Callable[[str], bool]
) -> QuantScheme | None:
    if method == "compressed-tensors":
        groups = _qmap(qc, "config_groups")
        first: Any = next(iter(groups.values()), {}) if groups else {}
        if not isinstance(first, Mapping):
            raise ConfigError("quantization_config: config_groups entries must be objects")
        weights = _qmap(first, "weights")
        num_bits = _qint(weights, "num_bits", 0)
        wtype = str(weights.get("type", "int"))
        gsize = _qint(weights, "group_size", 0) if weights.get("group_size") != -1 else 0
        sym = bool(weights.get("symmetric", True))
        fmt = str(qc.get("format", ""))
        if "nvfp4" in fmt:
            return QuantScheme(
                "nvfp4",
                "nvfp4 (checkpoint's compressed-tensors)",
                4.5,
                native=True,
                compute="fp4",
                skip=skip,
            )
        if num_bits == 4 and wtype == "int" and gsize:
            bits = 4 + 16 / gsize + (0 if sym else 8 / gsize)
            label = (
                f"int4 W4A16 group {gsize} {'symmetric' if sym else 'asymmetric'} "
                f"(checkpoint's compressed-tensors {fmt})"
            )
            return QuantScheme("int4", label, bits, native=True, skip=skip, group_size=gsize)
        if num_bits == 8:
            name = "fp8" if wtype == "float" else "int8"
            return QuantScheme(
                name,
                f"{name} (checkpoint's compressed-tensors)",
                8.0,
                native=True,
                compute=name,
                skip=skip,
            )
        return None
    if method == "fp8":
        block = qc.get("weight_block_size")
        if block is not None and not (
            isinstance(block, list)
            and len(block) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)
        ):
            raise ConfigError(
                f"quantization_config: weight_block_size must be two positive integers, "
                f"got {block!r}"
            )
        bits = 8 + (32 / (block[0] * block[1]) if block else 0.0)
        layout = "block " + "x".join(map(str, block)) if block else "per-tensor"
        label = f"fp8 e4m3 {layout} (checkpoint's)"
        return QuantScheme("fp8", label, bits, native=True, compute="fp8", skip=skip)
    if method == "fbgemm_fp8":  # per-output-channel FP8 weights (vLLM's fbgemm_fp8.py)
        return QuantScheme(
            "fp8",
            "fp8 e4m3 per-channel (checkpoint's fbgemm_fp8)",
            8.0,
            native=True,
            compute="fp8",
            skip=skip,
        )
    if method == "mxfp4":
        return QuantScheme(
            "mxfp4",
            "mxfp4 (checkpoint's; e8m0 scale per 32)",
            4.25,
            native=True,
            compute="fp4",
            skip=skip,
        )
    if method in {"awq", "gptq"}:
        bits_w = _qint(qc, "bits", 0, 1) or _qint(qc, "w_bit", 4, 1)
        gsize = _qint(qc, "group_size", 0, -1) or _qint(qc, "q_group_size", 128, 1)
        if gsize < 1:  # -1: one group per output channel
            gsize = 1 << 30
        bits = bits_w + (16 + bits_w) / gsize
        return QuantScheme(
            "int4" if bits_w == 4 else "int8",
            f"{method} {bits_w}-bit g{gsize} (checkpoint's)",
            bits,
            native=True,
            skip=skip,
            group_size=gsize,
        )
    if method == "modelopt" and "FP4" in str(qc.get("quant_algo", "")).upper():
        return QuantScheme(
            "nvfp4", "nvfp4 (checkpoint's modelopt)", 4.5, native=True, compute="fp4", skip=skip
        )
    return None


# ---- which checkpoint a scheme needs ------------------------------------------------------

#: What a checkpoint of each format is, with its article, for notes and deploy's reason.
_CHECKPOINT_KINDS = {
    "bf16": "a bf16",
    "fp16": "an fp16",
    "fp8": "an fp8",
    "int8": "a W8A8 int8 (compressed-tensors)",
    "int4": "an AWQ/GPTQ int4",
    "nvfp4": "an NVFP4 (modelopt)",
    "mxfp4": "an MXFP4",
}


def checkpoint_phrase(fmt: str) -> str:
    """'an fp8', 'an AWQ/GPTQ int4' ...: the checkpoint of a format, as notes name it."""
    return _CHECKPOINT_KINDS.get(fmt, f"a {fmt}")


def _plain_format(spec: ModelSpec) -> str:
    """The format of an unquantized checkpoint: its torch dtype."""
    return "fp16" if spec.dtype in {"float16", "fp16"} else "bf16"


def checkpoint_rule(key: str, native: QuantScheme | None) -> tuple[str | None, str | None]:
    """For a vLLM format `key` other than the published checkpoint's own: the --quantization
    value with which vLLM makes it from the published checkpoint at load time, or the format of
    the checkpoint it needs instead (one of the two is None).

    vLLM v0.18.0 (the image prov deploys, vllm_rules.VLLM_VERSION) quantizes at load time only
    one of prov's formats: fp8 from a bf16/fp16 checkpoint. `--quantization fp8` on a checkpoint
    without a quantization_config builds Fp8Config(is_checkpoint_fp8_serialized=False), which
    creates the weights in the checkpoint's dtype and quantizes them to fp8 e4m3 with a
    per-tensor scale after loading (model_executor/layers/quantization/fp8.py; docs
    "Online Dynamic Quantization", docs.vllm.ai v0.5.4 on; PR #31914 makes the load stream, so
    the bf16 weights are never all on the GPU). Its int8/int4/nvfp4/mxfp4 need a checkpoint in
    that format (vLLM's in-flight bitsandbytes and experts_int8 are other formats, not modelled
    here); a quantized checkpoint is never dequantized to another format.
    """
    if key == "fp8" and native is None:
        return "fp8", None
    return None, key


def resolve_quant(name: str, spec: ModelSpec) -> QuantScheme:
    """The scheme for --quant NAME on this model."""
    key = name.strip().lower().replace("-", "_")
    key = {
        "bfloat16": "bf16",
        "float16": "fp16",
        "w4a16": "int4",
        "awq": "int4",
        "gptq": "int4",
        "w8a8": "int8",
        "native": "auto",
    }.get(key, key)
    if key not in ALL_QUANTS:
        raise UsageError(f"unknown --quant {name!r}; allowed: {', '.join(ALL_QUANTS)}")
    native = native_scheme(spec)
    if key == "auto":
        if native is not None:
            return native
        key = _plain_format(spec)
    if native is not None and native.name == key:
        return native
    if native is None and key in {"bf16", "fp16"}:
        return QuantScheme(key, f"{key} (unquantized, as the checkpoint)", 16.0, exact=True)
    if key in GGUF_BITS:
        return QuantScheme(
            key,
            f"GGUF {key.upper()} (~{GGUF_BITS[key]} bits/weight, llama.cpp mix)",
            GGUF_BITS[key],
            engine="llama.cpp",
            kinds=QUANTIZABLE_KINDS | {"embed", "lm_head"},
            notes=("GGUF is a llama.cpp format: a memory-only estimate, not a vLLM TP shape",),
        )
    published = native.name if native is not None else _plain_format(spec)
    online, checkpoint = checkpoint_rule(key, native)
    notes: list[str] = []
    if checkpoint is not None:
        notes.append(
            f"needs {checkpoint_phrase(key)} checkpoint of this model; the published one is "
            f"{published}"
        )
    if online is not None:
        notes.append(
            f"vLLM quantizes the {published} weights to fp8 at load time (--quantization fp8)"
        )
    scheme = _generic_scheme(key, spec, online)
    return replace(scheme, notes=tuple(notes), checkpoint=checkpoint, published=published)


def _generic_scheme(key: str, spec: ModelSpec, online: str | None) -> QuantScheme:
    """A vLLM format by the generic rule (not the checkpoint's own)."""
    if key in {"bf16", "fp16"}:
        return QuantScheme(key, f"{key} (unquantized)", 16.0)
    if key == "fp8":
        label = "fp8 W8A8 per-tensor" + (" (online)" if online else "")
        return QuantScheme("fp8", label, 8.0, compute="fp8", vllm_quantization=online)
    if key == "int8":
        bits = 8 + 32 / spec.hidden_size  # one fp32 scale per output channel
        return QuantScheme("int8", "int8 W8A8 per-channel", bits, compute="int8")
    if key == "int4":
        bits = 4 + (16 + 4) / 128  # fp16 scale + 4-bit zero point per group of 128
        return QuantScheme("int4", "int4 W4A16 AWQ/GPTQ group 128", bits, group_size=128)
    if key == "nvfp4":
        return QuantScheme("nvfp4", "nvfp4 (fp8 scale per 16)", 4.5, compute="fp4")
    return QuantScheme("mxfp4", "mxfp4 (e8m0 scale per 32)", 4.25, compute="fp4")


def kv_bytes(kv_dtype: str, spec: ModelSpec) -> int:
    """Bytes per KV element for --kv-dtype."""
    key = kv_dtype.strip().lower()
    if key not in KV_DTYPES:
        raise UsageError(f"unknown --kv-dtype {kv_dtype!r}; allowed: {', '.join(KV_DTYPES)}")
    if key == "fp8":
        return 1
    if key == "auto":
        qc = spec.quantization_config or {}
        if qc.get("kv_cache_scheme") and "8" in str(qc.get("kv_cache_scheme")):
            return 1
        return 2
    return 2


def _round_up(x: int, n: int) -> int:
    return -(-x // n) * n


def expert_padding(
    spec: ModelSpec, scheme: QuantScheme, tp: int, sm: int | None, rules: VllmRules
) -> float:
    """Factor on the routed experts' bytes from the padding of vLLM's mxfp4 MoE kernel path.

    vLLM allocates the gpt-oss experts at padded sizes that depend on the backend it picks by
    GPU (vllm/model_executor/layers/quantization/mxfp4.py, create_weights): Marlin (below SM90,
    and on SM90 without triton_kernels: before v0.12 the wheel does not bundle it, see
    vllm_rules.with_paths) pads the per-rank intermediate to a multiple of 128 and hidden to
    256; SM100 FlashInfer pads both to 256; SM90 triton pads the intermediate to 64 and hidden
    to 256. gpt-oss's 2880 x 2880 experts grow 9% under
    Marlin (logged 65.97 GiB, v0.10.1 H100), 6.7% under triton (64.38 GiB, v0.14.1 H100).
    """
    if scheme.name != "mxfp4" or spec.moe is None or sm is None:
        return 1.0
    h, inter = spec.hidden_size, spec.moe.moe_intermediate_size
    part = max(1, inter // tp)
    if sm >= 100:
        hp, ip = _round_up(h, 256), _round_up(part, 256)
    elif sm >= 90 and rules.triton_mxfp4_on_hopper:
        hp, ip = _round_up(h, 256), _round_up(part, 64)
    else:
        hp, ip = _round_up(h, 256), _round_up(part, 128)
    return (hp * ip) / (h * part)
