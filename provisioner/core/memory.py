"""Per-GPU memory of a vLLM shape (TP x PP [x DCP]), following vLLM's own accounting.

vLLM (V1 engine, docs/vllm-rules.md has the sources):
  budget  = gpu_memory_utilization x device memory
  KV pool = budget - (weights + activation peak + non-torch memory + CUDA-graph estimate)
  every rank gets the smallest KV block count of any rank (the poorest stage sets the cap);
  startup fails unless one request of max_model_len fits in the pool.
What changed by version (provisioner/core/vllm_rules.py): NCCL's start-up buffers count inside the
budget before v0.11 and sit in the (1 - utilization) headroom from v0.11; CUDA graphs are
captured after the KV cache (outside the budget) before v0.21 and estimated and subtracted
from v0.21. The profile run's sampler warm-up (max_num_seqs x vocab logits) is in every one.
The weight bytes each stage's GPU holds come from weight_placement.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from provisioner.core.models import ModelSpec
from provisioner.core.quant import QuantScheme
from provisioner.core.vllm_rules import VLLM_VERSION, VllmRules, rules_for
from provisioner.core.weight_placement import WeightPlacer, pp_partition

GIB = 1024**3
BLOCK_SIZE = 16  # vLLM's default KV block (tokens); requests are rounded up to whole blocks
ACT_BYTES = 2  # activations in bf16
FUSED_MOE_CHUNK = 32768  # fused-MoE processes at most this many tokens at once


@dataclass(frozen=True, slots=True)
class Calibration:
    """The constants vLLM measures on the GPU and prov cannot derive exactly (GiB).

    Read off the logged breakdowns of the declared fit cases (benchmarks/memory_logs/prov.json,
    set "fit"); the "check" cases were not used (docs/vllm-rules.md s10).
    """

    non_torch_single: float = 0.07  # cuBLAS / attention workspaces (logged 0.06-0.07 GiB)
    non_torch_pcie: float = 0.2  # TP/PP > 1 over PCIe (logged 0.17-0.21 GiB, TP8 L40S)
    non_torch_nvlink: float = 1.3  # TP > 1 over NVLink: custom all-reduce (logged 1.38, 2xH200)
    nccl_nvlink: float = 4.5  # NCCL start-up buffers on NVSwitch (PR #25359), in the headroom
    nccl_pcie: float = 0.3  # PCIe rings, and NVLink before Hopper, allocate far less (no NVLS)
    cuda_context: float = 0.45  # before the baseline snapshot (logged ~0.47 GiB, issue #50576)
    cuda_graphs_small: float = 0.5  # <= 20B params (logged estimates 0.48-0.52 GiB)
    cuda_graphs_large: float = 2.4  # logged 2.37 (2 x H200), 2.51 (TP4), 3.45 (TP8 L40S)


CALIBRATION = Calibration()


@dataclass(frozen=True, slots=True)
class MemorySettings:
    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    kv_bytes: int = 2  # per KV element: 2 for bf16, 1 for fp8
    enforce_eager: bool = False  # no CUDA graphs
    sm: int | None = None  # the GPU's compute capability x 10 (kernel paths that pad weights)
    rules: VllmRules | None = None  # None: the rules of VLLM_VERSION
    calibration: Calibration = CALIBRATION

    @property
    def vllm(self) -> VllmRules:
        return self.rules if self.rules is not None else rules_for(VLLM_VERSION)


@dataclass(frozen=True, slots=True)
class StageMemory:
    """One pipeline stage's worst GPU. All sizes in bytes."""

    stage: int
    layers: tuple[int, int]  # [start, end)
    weights: float
    activations: float  # torch peak increase of the profile run (forward or sampler)
    non_torch: float  # inside the budget: workspaces, all-reduce buffers (NCCL before v0.11)
    cuda_graphs: float  # CUDA-graph memory (inside the budget only from v0.21)
    graphs_in_budget: bool
    outside: float  # CUDA context + NCCL (+ graphs before v0.21), in the headroom
    kv_pool: float  # what vLLM allocates to the KV cache on this GPU
    kv_bytes_per_token: float  # full-attention accounting, this GPU
    device: float
    budget: float

    @property
    def overhead(self) -> float:
        """Inside the budget besides weights and activations."""
        return self.non_torch + (self.cuda_graphs if self.graphs_in_budget else 0.0)

    @property
    def free(self) -> float:
        """Device memory left after the budget and the out-of-budget items."""
        return self.device - self.budget - self.outside

    @property
    def at_startup(self) -> float:
        """What already sits outside the budget at vLLM's free-memory check (CUDA context, NCCL
        from v0.11; graphs come later): more than the headroom and vLLM refuses to start."""
        return self.outside - (0.0 if self.graphs_in_budget else self.cuda_graphs)


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
    max_concurrency: float = 0.0  # vLLM's "Maximum concurrency for ctx tokens" (fractional)

    @property
    def worst(self) -> StageMemory:
        """The stage that holds the fewest KV tokens: it caps the whole deployment."""
        return min(
            self.stages,
            key=lambda s: s.kv_pool / s.kv_bytes_per_token if s.kv_bytes_per_token else math.inf,
        )

    @property
    def weights_fit(self) -> bool:
        return all(s.kv_pool > 0 for s in self.stages)

    @property
    def short_stage(self) -> int:
        """The stage whose KV pool falls furthest short of one full request (refusals name it)."""
        need = self.request_bytes_per_stage
        return max(range(len(self.stages)), key=lambda i: need[i] - self.stages[i].kv_pool)


def forward_peak(spec: ModelSpec, tp: int, s: MemorySettings) -> float:
    """Live buffers of the profile run's forward pass over max_num_batched_tokens tokens.

    vLLM measures this on the GPU; here it is the largest live set: the residual stream, then
    the bigger of attention and MLP/MoE intermediates (vllm-rules.md s6).
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
    return residual + max(attn, mlp, moe)


# The sampler warm-up's live tensors per logit (row x vocab), read in vLLM's source and
# PyTorch's sort (docs/vllm-rules.md s10 has the line-by-line derivation):
LOGITS_BYTES = 2 + 4  # compute_logits' bf16 logits (held by _dummy_sampler_run) + fp32 copy
FLASHINFER_BYTES = LOGITS_BYTES + 4 + 4  # top_k_mask_logits output + softmax probs
SORT_BYTES = LOGITS_BYTES + 4 + 8 + 8 + 4 + 8  # sorted fp32, int64 idx, iota, cub alt pair
SORT_FEW_ROWS_BYTES = LOGITS_BYTES + 4 + 8 + 8 + 8 + 4 + 4 + 8  # 2-127 rows: full-sort path
TRITON_TOPK_BYTES = LOGITS_BYTES + 4 + 4  # in-place masking, then probs and the q noise
TRITON_SAMPLER_PROGRAMS = 132  # [min(SMs, rows) x vocab] fp32 buffer; H100 SXM has 132 SMs


def sampler_bytes_per_logit(rules: VllmRules, rows: int) -> float:
    """Peak bytes per row x vocab logit of the profile run's sampler warm-up (top-k and
    top-p both set, as _dummy_sampler_run sets them), by the path the rules resolve to."""
    if rules.sampler == "flashinfer":
        return FLASHINFER_BYTES
    if rules.triton_topk_topp and rows >= 8:
        return TRITON_TOPK_BYTES
    # torch.sort along the vocab: segmented radix sort from 128 rows (and one row), the
    # two-pass full sort with int2 (index, segment) pairs for 2-127 rows.
    return SORT_BYTES if rows == 1 or rows >= 128 else SORT_FEW_ROWS_BYTES


def sampler_peak(spec: ModelSpec, s: MemorySettings) -> float:
    """The profile run's sampler warm-up on the last stage: min(max_num_seqs, tokens) rows of
    vocab-size logits, gathered in full on every TP rank (gpu_model_runner._dummy_sampler_run),
    times the live bytes per logit of the sampler path."""
    rules = s.vllm
    rows = min(s.max_num_seqs, s.max_num_batched_tokens)
    peak = rows * spec.vocab_size * sampler_bytes_per_logit(rules, rows)
    if rules.sampler == "pytorch" and rules.triton_topk_topp and rows >= 8:
        programs = min(rows, TRITON_SAMPLER_PROGRAMS)  # the kernel's persistent buffer rows
        buffer_rows = min(1 << (programs - 1).bit_length(), TRITON_SAMPLER_PROGRAMS)
        peak += buffer_rows * spec.vocab_size * 4
    return peak


def activation_peak(spec: ModelSpec, tp: int, s: MemorySettings, last_stage: bool) -> float:
    """Torch peak increase of the profile run: the forward, or the sampler after it."""
    fwd = forward_peak(spec, tp, s)
    if not last_stage:
        return fwd
    hidden_out = s.max_num_batched_tokens * spec.hidden_size * ACT_BYTES
    return max(fwd, hidden_out + sampler_peak(spec, s))


def cuda_graph_bytes(spec: ModelSpec, s: MemorySettings) -> float:
    if s.enforce_eager:
        return 0.0
    c = s.calibration
    return (c.cuda_graphs_large if spec.params_total > 20e9 else c.cuda_graphs_small) * GIB


def _stage_kv_per_token(spec: ModelSpec, lo: int, hi: int, tp: int, s: MemorySettings) -> float:
    return (hi - lo) * spec.kv_elems_per_token_per_layer(tp) * s.kv_bytes


def request_kv_bytes(
    spec: ModelSpec, lo: int, hi: int, tp: int, dcp: int, tokens: int, s: MemorySettings
) -> float:
    """KV bytes one request of `tokens` needs on one GPU of a stage (vLLM's max_memory_usage)."""
    per_layer = spec.kv_elems_per_token_per_layer(tp) * s.kv_bytes
    key = (spec.layer_windows, lo, hi, per_layer, dcp, tokens, s.max_num_batched_tokens)
    found = _REQUEST_KV.get(key)
    if found is None:
        if len(_REQUEST_KV) > 4096:
            _REQUEST_KV.clear()
        found = _REQUEST_KV[key] = _request_kv(spec, lo, hi, per_layer, dcp, tokens, s)
    return found


# request_kv_bytes by its inputs: the planner asks for the same stages many times a quote
_REQUEST_KV: dict[tuple[Any, ...], float] = {}


def _request_kv(
    spec: ModelSpec, lo: int, hi: int, per_layer: float, dcp: int, tokens: int, s: MemorySettings
) -> float:
    full = math.ceil(math.ceil(tokens / dcp) / BLOCK_SIZE)
    total = 0.0
    for i in range(lo, hi):
        window = spec.layer_windows[i]
        if window is None:
            n = full
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
    """Per-GPU memory of every stage of a TP x PP shape on GPUs of `device_gib` GiB.

    `device_gib` is the memory CUDA reports (hardware.cuda_memory_gib), not the marketing size.
    """
    rules = settings.vllm
    cal = settings.calibration
    device = device_gib * GIB
    budget = settings.gpu_memory_utilization * device
    multi = tp * pp > 1
    # NVLS (NVLink SHARP) buffers, the bulk of the NVSwitch figure, need Hopper's NVSwitch
    # (sm >= 90); older NVLink and PCIe allocate ring/tree buffers only
    nvls = nvlink and (settings.sm is None or settings.sm >= 90)
    nccl = ((cal.nccl_nvlink if nvls else cal.nccl_pcie) * GIB) if multi else 0.0
    if not multi:
        non_torch = cal.non_torch_single * GIB
    else:  # measured inside the budget (with NCCL's before v0.11: the logged 1.38 GiB)
        non_torch = (cal.non_torch_nvlink if nvlink else cal.non_torch_pcie) * GIB
    if rules.nccl_in_budget:
        nccl = 0.0  # already inside the measured non-torch figure
    graphs = cuda_graph_bytes(spec, settings)
    in_budget = rules.cudagraph_in_budget
    outside = cal.cuda_context * GIB + nccl + (0.0 if in_budget else graphs)

    per_layer, first, last = (placer or WeightPlacer(spec, scheme)).layout(tp, settings.sm, rules)
    bounds = pp_partition(spec.num_layers, pp)
    stages: list[StageMemory] = []
    req: list[float] = []
    # the same for every stage but the last (pure in these arguments: computed once each)
    act_mid = activation_peak(spec, tp, settings, False) if pp > 1 else 0.0
    act_last = activation_peak(spec, tp, settings, True)
    for k, (lo, hi) in enumerate(bounds):
        is_first, is_last = k == 0, k == pp - 1
        w = sum(per_layer[lo:hi]) + (first if is_first else 0.0) + (last if is_last else 0.0)
        w = max(0.0, w - offload_gib * GIB)  # --cpu-offload-gb: that much stays in host RAM
        act = act_last if is_last else act_mid
        pool = budget - w - act - non_torch - (graphs if in_budget else 0.0)
        stages.append(
            StageMemory(
                stage=k,
                layers=(lo, hi),
                weights=w,
                activations=act,
                non_torch=non_torch,
                cuda_graphs=graphs,
                graphs_in_budget=in_budget,
                outside=outside,
                kv_pool=pool,
                kv_bytes_per_token=_stage_kv_per_token(spec, lo, hi, tp, settings) / dcp,
                device=device,
                budget=budget,
            )
        )
        req.append(request_kv_bytes(spec, lo, hi, tp, dcp, ctx, settings))

    # vLLM takes the minimum block count over all ranks; "GPU KV cache size" is blocks x 16
    # (x DCP, which shards tokens).
    blocks = min(
        (
            int(max(0.0, st.kv_pool) // (st.kv_bytes_per_token * dcp * BLOCK_SIZE))
            if st.kv_bytes_per_token
            else 0
        )
        for st in stages
    )
    kv_tokens = blocks * BLOCK_SIZE * dcp
    conc = min(
        int(max(0.0, st.kv_pool) // r) if r > 0 else 0 for st, r in zip(stages, req, strict=True)
    )
    frac = min(
        (max(0.0, st.kv_pool) / r) if r > 0 else 0.0 for st, r in zip(stages, req, strict=True)
    )
    return ShapeMemory(tp, pp, dcp, tuple(stages), kv_tokens, tuple(req), conc, ctx, frac)


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


def distinct_gib(a: float, b: float) -> tuple[str, str]:
    """Two byte counts as GiB with the fewest decimals (2 to 4) that tell them apart, so a
    refusal never reads "needs 4.00 GiB but 4.00 GiB is left"; bytes when even 4 do not."""
    for places in (2, 3, 4):
        x, y = f"{a / GIB:.{places}f}", f"{b / GIB:.{places}f}"
        if x != y:
            return f"{x} GiB", f"{y} GiB"
    return f"{a:,.0f} bytes", f"{b:,.0f} bytes"
