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
    nccl_in_budget: bool = True  # baseline snapshot taken before NCCL init (so NCCL counts)
    cudagraph_in_budget: bool = False  # CUDA-graph memory estimated and subtracted
    triton_mxfp4_on_hopper: bool = False  # gpt-oss MoE on SM90 via triton_kernels
    # Bytes per (row x vocab) logit of the profile run's sampler warm-up: fp32 logits plus the
    # sort / softmax / mask copies of top-k/top-p. Fitted per version range (see CHANGES).
    sampler_bytes_per_logit: float = 38.0

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
        "the profile run samples max_num_seqs rows of vocab-size fp32 logits (sampler warm-up) "
        "and counts the NCCL start-up buffers as non-torch memory inside the budget",
        (("nccl_in_budget", True), ("sampler_bytes_per_logit", 38.0)),
        "vllm/v1/worker/gpu_model_runner.py profile_run/_dummy_sampler_run; "
        "vllm/v1/worker/gpu_worker.py init_device (snapshot before init_distributed) @v0.10.0",
    ),
    Change(
        (0, 11, 0),
        "baseline snapshot taken after distributed init: CUDA context and NCCL buffers sit "
        "outside the budget, in the (1 - utilization) headroom",
        (("nccl_in_budget", False),),
        "vllm/v1/worker/gpu_worker.py init_device @v0.11.0 (PR #25359)",
    ),
    Change(
        (0, 12, 0),
        "gpt-oss mxfp4 MoE on Hopper through triton_kernels (hidden padded to 256 only) instead "
        "of Marlin; sampler warm-up ~23 B per logit (38 before)",
        (("triton_mxfp4_on_hopper", True), ("sampler_bytes_per_logit", 23.0)),
        "vllm/model_executor/layers/quantization/mxfp4.py get_mxfp4_backend ('Using Triton "
        "backend' in v0.14.1 logs; v0.11.0 logs show Marlin sizes; first release not confirmed)",
    ),
    Change(
        (0, 21, 0),
        "CUDA-graph memory profiled and subtracted from the KV budget by default "
        "(VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1)",
        (("cudagraph_in_budget", True), ("sampler_bytes_per_logit", 12.0)),
        "vllm/v1/worker/gpu_worker.py determine_available_memory @v0.21.0 (PR #30515; log: "
        "'CUDA graph memory profiling is enabled (default since v0.21.0)'; PR #45197 to turn "
        "it off again was closed unmerged)",
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

_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?(?:\.\d+)?(?:[.+-].*)?$")


def parse_version(text: str) -> Version:
    """'0.11.2', 'v0.18.0', '0.10.1.1' or '0.20' -> (0, 11, 2); exit 2 when before 0.10."""
    m = _VERSION.match(text.strip())
    if not m:
        raise UsageError(f"--vllm-version {text!r} is not a version like 0.18.0")
    v = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
    if v < OLDEST:
        raise UsageError(
            f"--vllm-version {text}: prov models vLLM 0.10.0 and later (the V1 engine's "
            "memory profiler); older releases account memory differently"
        )
    return v


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
    return rules


def batch_defaults(rules: VllmRules, gpu_name: str, device_gib: float) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) `vllm serve` picks on this GPU."""
    if device_gib >= rules.big_gpu_gib and "a100" not in gpu_name.lower():
        tokens = rules.max_num_batched_tokens_big
        if rules.huge_gpu_gib is not None and device_gib >= rules.huge_gpu_gib:
            tokens = rules.max_num_batched_tokens_huge
        return tokens, rules.max_num_seqs_big
    return rules.max_num_batched_tokens_small, rules.max_num_seqs_small


def changes_table() -> list[str]:
    """One line per change, for `prov fit --help` and docs."""
    return [f"v{'.'.join(map(str, c.since))}: {c.what} [{c.source}]" for c in CHANGES]
