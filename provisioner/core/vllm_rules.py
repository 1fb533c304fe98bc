"""What changed in vLLM's memory accounting, version by version (V1 engine, 0.10 onward).

One row per change, each citing the vLLM source that holds for it (docs/vllm-rules.md has the
longer story). ``rules_for(version)`` folds the rows up to a version into one ``VllmRules``.
``VLLM_VERSION`` is the release ``prov deploy`` runs: its image tag is built from it, and it is
the default of ``--vllm-version`` for ``prov fit`` and ``prov quote``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from functools import cache

from provisioner.errors import UsageError

#: The vLLM release prov deploys (stacks/spec.py builds the image tag from it).
VLLM_VERSION = "0.18.0"
OLDEST = (0, 10, 0)
#: The newest release line whose memory accounting was read for CHANGES (the v0.30 row). A
#: newer --vllm-version still gets an answer, with these rules and a warning (rules_warning).
NEWEST_MODELLED = (0, 30)

Version = tuple[int, int, int]


@dataclass(frozen=True, slots=True)
class VllmRules:
    """The memory rules of one vLLM version."""

    version: Version
    gpu_memory_utilization: float = 0.9  # EngineArgs default
    big_gpu_gib: float = 70.0  # get_batch_defaults: >= this and not an A100 -> large defaults
    max_num_batched_tokens_big: int = 8192  # `vllm serve` (OPENAI_API_SERVER usage context)
    max_num_seqs_big: int = 1024
    max_num_batched_tokens_small: int = 2048
    max_num_seqs_small: int = 256
    huge_gpu_gib: float | None = None  # from this size, max_num_batched_tokens_huge
    max_num_batched_tokens_huge: int = 16384
    # A defaulted max_num_batched_tokens is capped at max_num_seqs x max_model_len.
    cap_batched_tokens_by_seqs: bool = False
    nccl_in_budget: bool = True  # baseline snapshot taken before NCCL init (so NCCL counts)
    cudagraph_in_budget: bool = False  # CUDA-graph memory estimated and subtracted
    # gpt-oss MoE on SM90 via triton_kernels (else Marlin). From v0.12 the wheel bundles
    # triton_kernels; before, only an install that added it gets Triton (see with_paths).
    triton_mxfp4_on_hopper: bool = False
    triton_kernels_bundled: bool = False
    # The profile run's top-k/top-p sampler (provisioner/core/memory.py sampler_bytes_per_logit):
    # "flashinfer" (no full-vocab sort) or "pytorch". flashinfer_sampler_default: vLLM takes
    # FlashInfer's sampler unless VLLM_USE_FLASHINFER_SAMPLER=0, when flashinfer imports;
    # flashinfer_in_wheel: flashinfer-python is a dependency of the wheel (else only the image
    # has it). Both decide the "auto" path per install.
    sampler: str = "pytorch"
    flashinfer_sampler_default: bool = True
    flashinfer_in_wheel: bool = False
    triton_topk_topp: bool = False  # PyTorch path masks top-k/top-p in Triton, >= 8 rows
    install: str = "image"  # "image" (vllm/vllm-openai, what prov deploy runs) or "pip"

    @property
    def label(self) -> str:
        return ".".join(map(str, self.version))


@dataclass(frozen=True, slots=True)
class Change:
    since: Version
    what: str  # one line for humans
    values: tuple[tuple[str, object], ...]
    source: str  # vllm-project/vllm file (and PR) at the version it holds from


# Every row: from `since` on, these field values hold. Rows are applied in order.
CHANGES: tuple[Change, ...] = (
    Change(
        (0, 10, 0),
        "batch defaults by GPU memory: >= 70 GiB and not A100 -> 8192 tokens / 1024 seqs, "
        "else 2048 / 256 (vllm serve)",
        (
            ("big_gpu_gib", 70.0),
            ("max_num_batched_tokens_big", 8192),
            ("max_num_seqs_big", 1024),
            ("max_num_batched_tokens_small", 2048),
            ("max_num_seqs_small", 256),
        ),
        "vllm/engine/arg_utils.py EngineArgs.get_batch_defaults @v0.10.0 (by memory since PR "
        "#17073, v0.8.5; PR #17885, v0.9.0, keeps A100 on the small defaults)",
    ),
    Change(
        (0, 10, 0),
        "the profile run samples min(max_num_seqs, batched tokens) rows of vocab-size logits "
        "(sampler warm-up) and counts the NCCL start-up buffers as non-torch memory inside the "
        "budget",
        (("nccl_in_budget", True),),
        "vllm/v1/worker/gpu_model_runner.py profile_run/_dummy_sampler_run; "
        "vllm/v1/worker/gpu_worker.py init_device (snapshot before init_distributed) @v0.10.0",
    ),
    Change(
        (0, 10, 0),
        "sampler: FlashInfer's top-k/top-p (no full-vocab sort, 14 B per logit) whenever "
        "flashinfer imports and VLLM_USE_FLASHINFER_SAMPLER is unset; flashinfer is only a "
        "wheel extra, the official image installs it: image -> FlashInfer, pip -> PyTorch "
        "sort (38 B per logit)",
        (
            ("sampler", "flashinfer"),
            ("flashinfer_sampler_default", True),
            ("flashinfer_in_wheel", False),
        ),
        "vllm/v1/sample/ops/topk_topp_sampler.py:46 TopKTopPSampler.__init__ ('envs."
        "VLLM_USE_FLASHINFER_SAMPLER is not False') @v0.11.0; wheel METADATA: flashinfer-python "
        "only under extra 'flashinfer' @v0.10.1-v0.11.0 (PR #21959); docker/Dockerfile:375-417 "
        "vllm-base 'Install FlashInfer from source' at upstream 78336a0c3 (2025-09-05); logs: "
        "pip L16 'FlashInfer is not available', image flashinfer-ai/flashinfer#1180 'Using "
        "FlashInfer'",
    ),
    Change(
        (0, 11, 0),
        "baseline snapshot taken after distributed init: CUDA context and NCCL buffers sit "
        "outside the budget, in the (1 - utilization) headroom",
        (("nccl_in_budget", False),),
        "vllm/v1/worker/gpu_worker.py init_device @v0.11.0 (PR #25359)",
    ),
    Change(
        (0, 11, 1),
        "FlashInfer sampler opt-in only (VLLM_USE_FLASHINFER_SAMPLER=1): every install samples "
        "on the PyTorch path (full-vocab sort, 38 B per logit)",
        (
            ("sampler", "pytorch"),
            ("flashinfer_sampler_default", False),
            ("flashinfer_in_wheel", True),
        ),
        "vllm/v1/sample/ops/topk_topp_sampler.py:34-35 __init__ ('Users must opt in "
        "explicitly') @v0.11.1 (PR #26859, opened 2025-10-15), also read @v0.11.2, v0.12.0, "
        "v0.16.0, v0.17.0, v0.18.0, v0.20.0; the v0.11.1 wheel METADATA requires "
        "flashinfer-python==0.5.2",
    ),
    Change(
        (0, 11, 1),
        "a defaulted max_num_batched_tokens is capped at max_num_seqs x max_model_len (then "
        "a defaulted max_num_seqs at max_num_batched_tokens)",
        (("cap_batched_tokens_by_seqs", True),),
        "vllm/engine/arg_utils.py EngineArgs._set_default_max_num_seqs_and_batched_tokens_args "
        "('Ensure max_num_batched_tokens does not exceed model limit') @v0.11.1 (arg_utils.py:"
        "2021-2026), v0.11.2 and v0.14.1; absent in _set_default_args @v0.11.0",
    ),
    Change(
        (0, 12, 0),
        "gpt-oss mxfp4 MoE on Hopper through triton_kernels (hidden padded to 256 only) instead "
        "of Marlin for every install: the wheel bundles triton_kernels; flashinfer-python "
        "becomes a wheel dependency",
        (
            ("triton_mxfp4_on_hopper", True),
            ("triton_kernels_bundled", True),
            ("flashinfer_in_wheel", True),
        ),
        "vllm/model_executor/layers/quantization/mxfp4.py get_mxfp4_backend (TRITON on SM90 "
        "when has_triton_kernels() and torch >= 2.8); vllm/third_party/triton_kernels in the "
        "v0.12.0 wheel (absent in v0.11.0, where a pip install gets Marlin); wheel METADATA "
        "'Requires-Dist: flashinfer-python==0.5.3'",
    ),
    Change(
        (0, 17, 0),
        "PyTorch sampler path masks top-k/top-p with a Triton kernel (no sort) for >= 8 rows: "
        "14 B per logit plus a [SMs x vocab] fp32 buffer",
        (("triton_topk_topp", True),),
        "vllm/v1/sample/ops/topk_topp_sampler.py apply_top_k_top_p + ops/topk_topp_triton.py "
        "@v0.17.0 (PR #33538; absent in v0.16.0)",
    ),
    Change(
        (0, 21, 0),
        "CUDA-graph memory profiled and subtracted from the KV budget by default "
        "(VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1)",
        (("cudagraph_in_budget", True),),
        "vllm/v1/worker/gpu_worker.py determine_available_memory @v0.21.0 (PR #30515; log: "
        "'CUDA graph memory profiling is enabled (default since v0.21.0)'; PR #45197 to turn "
        "it off again was closed unmerged)",
    ),
    Change(
        (0, 21, 0),
        "FlashInfer sampler on by default again (VLLM_USE_FLASHINFER_SAMPLER defaults to True) "
        "on GPUs FlashInfer supports: every install samples on the FlashInfer path",
        (("sampler", "flashinfer"), ("flashinfer_sampler_default", True)),
        "vllm/envs.py and vllm/v1/sample/ops/topk_topp_sampler.py @v0.21.0 (PR #40376; "
        "v0.20.0 still opt-in)",
    ),
    Change(
        (0, 26, 0),
        "16384 batched tokens on GPUs of 160 GiB or more (B200, MI300X/MI355X)",
        (("huge_gpu_gib", 160.0), ("max_num_batched_tokens_huge", 16384)),
        "vllm/engine/arg_utils.py get_batch_defaults (ROCm/MAD PR #235, 2026-08-26: 'vLLM now "
        "defaults to 16384'; first release not confirmed)",
    ),
    Change(
        (0, 30, 0),
        "gpu_memory_utilization default 0.92",
        (("gpu_memory_utilization", 0.92),),
        "vllm/config/cache.py at v0.30.0 (third-party read of the source; first release not "
        "confirmed)",
    ),
)

# vLLM's tags and PEP 440 forms: 0.20, 0.18.0, v0.10.1.1, 0.11.1rc2, 0.11.1.dev12+gabc.cu128
_VERSION = re.compile(
    r"^v?(\d{1,4})\.(\d{1,4})(?:\.(\d{1,4}))?(?:\.\d{1,4})?"
    r"(?:(?:a|b|rc)\d+)?(?:\.post\d+)?(?:\.dev\d+)?(?:\+[0-9A-Za-z.]+)?$"
)


def parse_version(text: str) -> Version:
    """'0.11.2', 'v0.18.0', '0.10.1.1' or '0.20' -> (0, 11, 2); exit 2 when before 0.10."""
    m = _VERSION.match(text.strip())
    if not m:
        raise UsageError(
            f"--vllm-version {text!r} is not a vLLM version like 0.18.0 (or 0.11.1rc2)"
        )
    v = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
    if v < OLDEST:
        raise UsageError(
            f"--vllm-version {text}: prov models vLLM 0.10.0 and later (the V1 engine's "
            "memory profiler); older releases account memory differently"
        )
    return v


def rules_warning(version: Version) -> str | None:
    """A warning when `version` is newer than the newest release line prov models (its
    accounting may have changed since; the newest rules are the best guess), else None."""
    if version[:2] <= NEWEST_MODELLED:
        return None
    newest = ".".join(map(str, NEWEST_MODELLED))
    return (
        f"vLLM {'.'.join(map(str, version))} is newer than v{newest}, the newest release prov "
        f"models: its memory rules are used (docs/vllm-rules.md section 10)"
    )


@cache
def rules_for(version: str | Version = VLLM_VERSION) -> VllmRules:
    """The rules of one vLLM version (rows up to and including it)."""
    v = parse_version(version) if isinstance(version, str) else version
    names = {f.name for f in fields(VllmRules)}
    rules = VllmRules(version=v)
    for change in CHANGES:
        if change.since <= v:
            vals = {k: val for k, val in change.values if k in names}
            rules = replace(rules, **vals)  # type: ignore[arg-type]
    return with_paths(rules)  # the official image's paths (what prov deploy runs)


INSTALLS = ("image", "pip")
SAMPLERS = ("auto", "flashinfer", "pytorch")
MXFP4_BACKENDS = ("auto", "triton", "marlin")


def with_paths(
    rules: VllmRules, install: str = "image", sampler: str = "auto", mxfp4: str = "auto"
) -> VllmRules:
    """The rules with the kernel paths that depend on the install, not only on the version.

    install: "image" is the official vllm/vllm-openai image `prov deploy` runs (it ships
    FlashInfer at every version); "pip" is `pip install vllm`, whose wheel lacks FlashInfer
    before v0.11.1. The two differ only where vLLM takes FlashInfer's sampler by default and
    the wheel lacks it: v0.10.0-v0.11.0 (image: FlashInfer, pip: PyTorch sort). At
    VLLM_VERSION, what prov deploys, they are the same.
    sampler / mxfp4: "auto" follows the version's default for that install;
    "flashinfer"/"pytorch" and "triton"/"marlin" force a path (VLLM_USE_FLASHINFER_SAMPLER,
    VLLM_MXFP4_USE_MARLIN, or an install that added triton_kernels before v0.12).
    """
    if install not in INSTALLS:
        raise UsageError(f"unknown install {install!r}; allowed: {', '.join(INSTALLS)}")
    if sampler not in SAMPLERS:
        raise UsageError(f"unknown sampler path {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    if mxfp4 not in MXFP4_BACKENDS:
        raise UsageError(f"unknown mxfp4 backend {mxfp4!r}; allowed: {', '.join(MXFP4_BACKENDS)}")
    if sampler == "auto":
        has_flashinfer = install == "image" or rules.flashinfer_in_wheel
        default_on = rules.flashinfer_sampler_default and has_flashinfer
        sampler = "flashinfer" if default_on else "pytorch"
    triton = rules.triton_kernels_bundled if mxfp4 == "auto" else mxfp4 == "triton"
    return replace(rules, install=install, sampler=sampler, triton_mxfp4_on_hopper=triton)


def batch_defaults(rules: VllmRules, gpu_name: str, device_gib: float) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) `vllm serve` picks on this GPU."""
    if device_gib >= rules.big_gpu_gib and "a100" not in gpu_name.lower():
        tokens = rules.max_num_batched_tokens_big
        if rules.huge_gpu_gib is not None and device_gib >= rules.huge_gpu_gib:
            tokens = rules.max_num_batched_tokens_huge
        return tokens, rules.max_num_seqs_big
    return rules.max_num_batched_tokens_small, rules.max_num_seqs_small


def scheduler_defaults(
    rules: VllmRules,
    gpu_name: str,
    device_gib: float,
    max_model_len: int,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    usage: str = "serve",
) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) vLLM ends up with, given the user's values.

    Follows EngineArgs._set_default_max_num_seqs_and_batched_tokens_args (chunked prefill on,
    as in V1): the GPU's defaults fill what the user left unset; from v0.11.1 a defaulted
    token budget is capped at max_num_seqs x max_model_len; a defaulted max_num_seqs never
    exceeds the token budget.
    """
    tokens, seqs = batch_defaults(rules, gpu_name, device_gib)
    if usage == "llm":  # the LLM class doubles `vllm serve`'s token default on big GPUs
        tokens = 16384 if tokens >= 8192 else 8192
    seqs = max_num_seqs or seqs
    if max_num_batched_tokens is not None:
        tokens = max_num_batched_tokens
    elif rules.cap_batched_tokens_by_seqs:
        tokens = min(seqs * max_model_len, tokens)
    if max_num_seqs is None:
        seqs = min(seqs, tokens)
    return tokens, seqs
