"""Per-GPU memory of a vLLM shape (TP x PP [x DCP]), following vLLM's own accounting.

vLLM (V1 engine, docs/vllm-rules.md has the sources):
  budget  = gpu_memory_utilization x device memory
  KV pool = budget - (weights + activation peak + non-torch memory + CUDA-graph estimate)
  every rank gets the smallest KV block count of any rank (the poorest stage sets the cap);
  startup fails unless one request of max_model_len fits in the pool.
The CUDA context and NCCL's start-up buffers are taken before vLLM's baseline snapshot, so they
live in the (1 - utilization) headroom, outside the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from provisioner.models import ModelSpec, WeightGroup
from provisioner.quant import QuantScheme

GIB = 1024**3
BLOCK_SIZE = 16  # vLLM's default KV block (tokens); requests are rounded up to whole blocks

# ---- documented constants (GiB); sources in docs/vllm-rules.md sections 6 and 7 -------------
# Inside the budget:
NON_TORCH_GIB_SINGLE = 0.5  # cuBLAS/attention workspaces (observed 0.16-1.8 GiB on one GPU)
NON_TORCH_GIB_MULTI = 1.0  # + custom all-reduce buffers with TP/PP > 1 (observed up to 3.6)
CUDA_GRAPHS_GIB_SMALL = 0.25  # <= 20B params: 0.13-0.36 GiB observed
CUDA_GRAPHS_GIB_LARGE = 1.0  # larger models: 0.5-2.5 GiB observed (DeepSeek-class TP4: 2.5)
# Outside the budget (the 1 - utilization headroom):
CUDA_CONTEXT_GIB = 0.5  # ~0.47 GiB in start-up logs
NCCL_GIB_NVLINK = 4.5  # NVSwitch systems at TP > 1 (PR #25359: 4.5 GiB on H100)
NCCL_GIB_PCIE = 1.0  # PCIe/ethernet rings allocate far less (no NVLS buffers)
ACT_BYTES = 2  # activations in bf16
LOGITS_BYTES = 4  # the sampler works in fp32
FUSED_MOE_CHUNK = 32768  # fused-MoE processes at most this many tokens at once


@dataclass(frozen=True, slots=True)
class MemorySettings:
    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    kv_bytes: int = 2  # per KV element: 2 for bf16, 1 for fp8


@dataclass(frozen=True, slots=True)
class StageMemory:
    """One pipeline stage's worst GPU. All sizes in bytes."""

    stage: int
    layers: tuple[int, int]  # [start, end)
    weights: float
    activations: float
    overhead: float  # inside the budget: non-torch + CUDA graphs
    outside: float  # CUDA context + NCCL, in the headroom
    kv_pool: float  # what vLLM allocates to the KV cache on this GPU
    kv_bytes_per_token: float  # full-attention accounting, this GPU
    device: float
    budget: float

    @property
    def free(self) -> float:
        """Device memory left after the budget and the out-of-budget items."""
        return self.device - self.budget - self.outside


@dataclass(frozen=True)
class ShapeMemory:
    tp: int
    pp: int
    dcp: int
    stages: tuple[StageMemory, ...]
    kv_cache_tokens: int  # tokens the pool holds (min over stages, x DCP)
    request_bytes_per_stage: tuple[float, ...]  # one request of ctx tokens, per GPU of each stage
    max_concurrent: int  # requests of ctx tokens that fit at once
    ctx: int

    @property
    def worst(self) -> StageMemory:
        """The stage that holds the fewest KV tokens: it caps the whole deployment."""
        return min(
            self.stages,
            key=lambda s: s.kv_pool / s.kv_bytes_per_token if s.kv_bytes_per_token else math.inf,
        )

    @property
    def fits_one_request(self) -> bool:
        return self.max_concurrent >= 1

    @property
    def weights_fit(self) -> bool:
        return all(s.kv_pool > 0 for s in self.stages)


def pp_partition(num_layers: int, pp: int) -> list[tuple[int, int]]:
    """vLLM's get_pp_indices: L // pp each, the remainder to the stages before the last."""
    sizes = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        sizes[-i] += 1
    bounds, start = [], 0
    for n in sizes:
        bounds.append((start, start + n))
        start += n
    return bounds


class WeightPlacer:
    """Per-rank weight bytes by layer for each TP size, computed once per (model, scheme).

    The planner asks for the same TP sizes on hundreds of hardware classes; group bytes are
    computed once and only divided per TP size.
    """

    def __init__(self, spec: ModelSpec, scheme: QuantScheme) -> None:
        self.spec = spec
        self._bytes = [(g, scheme.group_bytes(g)) for g in spec.groups]
        self._by_tp: dict[int, tuple[list[float], float, float]] = {}

    def _per_rank(self, g: WeightGroup, total: float, tp: int) -> float:
        spec = self.spec
        if g.tp == "replicate" or tp == 1:
            return total
        if g.kind == "attn" and spec.mla is None and tp > spec.num_kv_heads:
            # K/V projections are replicated once TP exceeds the KV heads: one head per rank.
            kv_frac = spec.num_kv_heads / (spec.num_heads + spec.num_kv_heads)
            return total * (1 - kv_frac) / tp + total * kv_frac / spec.num_kv_heads
        return total / tp

    def layout(self, tp: int) -> tuple[list[float], float, float]:
        """(bytes per decoder layer, bytes on the first stage only, on the last stage only)."""
        cached = self._by_tp.get(tp)
        if cached is not None:
            return cached
        per_layer = [0.0] * self.spec.num_layers
        first = last = 0.0
        for g, total in self._bytes:
            b = self._per_rank(g, total, tp)
            if g.layer is not None:
                per_layer[g.layer] += b
            elif g.kind in {"embed", "vision"}:
                first += b
            else:  # lm_head, final norm
                last += b
        self._by_tp[tp] = (per_layer, first, last)
        return per_layer, first, last


def _activation_peak(spec: ModelSpec, tp: int, s: MemorySettings, last_stage: bool) -> float:
    """Peak of the profile run (one forward of max_num_batched_tokens + the sampler).

    vLLM measures this on the GPU; here it is the largest live set of buffers:
    the residual stream, then the bigger of attention and MLP/MoE intermediates, plus the
    sampler's fp32 logits on the last stage. Observed peaks are 1.3-3.1 GiB (vllm-rules.md s6).
    """
    t = s.max_num_batched_tokens
    h = spec.hidden_size
    residual = 3 * t * h * ACT_BYTES
    heads = max(1, spec.num_heads // tp)
    head_dim = (
        spec.head_dim if spec.mla is None else spec.mla.qk_nope_head_dim + spec.mla.v_head_dim
    )
    attn = t * heads * head_dim * 4 * ACT_BYTES
    mlp = t * 3 * max(1, spec.intermediate_size // tp) * ACT_BYTES
    moe = 0.0
    if spec.moe is not None:
        chunk = min(t, FUSED_MOE_CHUNK)
        inter = max(1, spec.moe.moe_intermediate_size // tp)
        moe = chunk * spec.moe.experts_per_tok * (3 * inter + h) * ACT_BYTES
    logits = s.max_num_seqs * spec.vocab_size * LOGITS_BYTES if last_stage else 0
    return residual + max(attn, mlp, moe) + logits


def _stage_kv_per_token(spec: ModelSpec, lo: int, hi: int, tp: int, s: MemorySettings) -> float:
    return (hi - lo) * spec.kv_elems_per_token_per_layer(tp) * s.kv_bytes


def request_kv_bytes(
    spec: ModelSpec, lo: int, hi: int, tp: int, dcp: int, tokens: int, s: MemorySettings
) -> float:
    """KV bytes one request of `tokens` needs on one GPU of a stage (vLLM's max_memory_usage)."""
    per_layer = spec.kv_elems_per_token_per_layer(tp) * s.kv_bytes
    total = 0.0
    for i in range(lo, hi):
        window = spec.layer_windows[i]
        if window is None:
            n = math.ceil(math.ceil(tokens / dcp) / BLOCK_SIZE)
        else:  # sliding / chunked-local layers keep window + one batch of tokens
            n = math.ceil(min(window - 1 + s.max_num_batched_tokens, tokens) / BLOCK_SIZE) + 1
        total += n * BLOCK_SIZE * per_layer
    return total


def shape_memory(
    spec: ModelSpec,
    scheme: QuantScheme,
    tp: int,
    pp: int,
    device_gib: float,
    ctx: int,
    settings: MemorySettings,
    dcp: int = 1,
    nvlink: bool = True,
    placer: WeightPlacer | None = None,
    offload_gib: float = 0.0,
) -> ShapeMemory:
    """Per-GPU memory of every stage of a TP x PP shape on GPUs of `device_gib` GiB."""
    device = device_gib * GIB
    budget = settings.gpu_memory_utilization * device
    multi = tp * pp > 1
    non_torch = (NON_TORCH_GIB_MULTI if multi else NON_TORCH_GIB_SINGLE) * GIB
    graphs = (CUDA_GRAPHS_GIB_LARGE if spec.params_total > 20e9 else CUDA_GRAPHS_GIB_SMALL) * GIB
    nccl = ((NCCL_GIB_NVLINK if nvlink else NCCL_GIB_PCIE) * GIB) if multi else 0.0
    outside = CUDA_CONTEXT_GIB * GIB + nccl

    per_layer, first, last = (placer or WeightPlacer(spec, scheme)).layout(tp)

    stages: list[StageMemory] = []
    req: list[float] = []
    for k, (lo, hi) in enumerate(pp_partition(spec.num_layers, pp)):
        is_first, is_last = k == 0, k == pp - 1
        w = sum(per_layer[lo:hi]) + (first if is_first else 0.0) + (last if is_last else 0.0)
        w = max(0.0, w - offload_gib * GIB)  # --cpu-offload-gb: that much stays in host RAM
        act = _activation_peak(spec, tp, settings, is_last)
        pool = budget - w - act - non_torch - graphs
        stages.append(
            StageMemory(
                stage=k,
                layers=(lo, hi),
                weights=w,
                activations=act,
                overhead=non_torch + graphs,
                outside=outside,
                kv_pool=pool,
                kv_bytes_per_token=_stage_kv_per_token(spec, lo, hi, tp, settings) / dcp,
                device=device,
                budget=budget,
            )
        )
        req.append(request_kv_bytes(spec, lo, hi, tp, dcp, ctx, settings))

    # vLLM takes the minimum block count over all ranks.
    tokens = min(
        (max(0.0, st.kv_pool) / st.kv_bytes_per_token) if st.kv_bytes_per_token else math.inf
        for st in stages
    )
    kv_tokens = int(tokens // BLOCK_SIZE * BLOCK_SIZE) if math.isfinite(tokens) else 0
    conc = min(
        int(max(0.0, st.kv_pool) // r) if r > 0 else 0 for st, r in zip(stages, req, strict=True)
    )
    return ShapeMemory(tp, pp, dcp, tuple(stages), kv_tokens, tuple(req), conc, ctx)


def concurrent_requests(
    spec: ModelSpec, mem: ShapeMemory, tokens: int, settings: MemorySettings
) -> int:
    """Requests of `tokens` tokens that fit in the KV pools of a shape at once."""
    fits = []
    for st in mem.stages:
        need = request_kv_bytes(spec, *st.layers, mem.tp, mem.dcp, tokens, settings)
        fits.append(int(max(0.0, st.kv_pool) // need) if need > 0 else 0)
    return min(fits)


def weights_total_bytes(spec: ModelSpec, scheme: QuantScheme) -> float:
    """Checkpoint-equivalent bytes of all weights in this scheme (what must be loaded)."""
    return sum(scheme.group_bytes(g) for g in spec.groups)
