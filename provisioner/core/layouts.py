"""Parallel layouts of a vLLM deployment: TP x DP x PP, with expert parallelism (EP) for MoE.

The rules follow vLLM v0.18.0 (the version `prov deploy` runs); docs/ep-dp-layouts.md has the
sources and the checks against published numbers. In short:

* Rank layout DP x PP x TP; every DP rank is its own engine (scheduler, KV cache,
  --max-num-seqs) and owns TP worker GPUs (docs/serving/data_parallel_deployment.md).
* EP group = all DP x TP ranks of a PP stage, so EP size = TP x DP
  (distributed/parallel_state.py:1650-1665; config/parallel.py:107-109).
* MoE layers (fused_moe/config.py:1003-1129): with --enable-expert-parallel each GPU holds
  whole experts, E / EP of them (the first E % EP ranks one more, fused_moe/layer.py:67-142),
  and the MoE tensor-parallel size is 1; without it the experts are tensor-parallel over all
  TP x DP GPUs ("flatten_tp_across_dp").
* Replicated on every DP rank, split over its TP group: attention, dense layers, embeddings,
  lm_head, shared experts (models/deepseek_v2.py). Shared experts run un-split on every GPU when
  sequence-parallel MoE is on: EP, TP > 1 and DP > 1 with the default all-to-all backend
  (config/parallel.py:577-603, deepseek_v2.py:193-222).
* KV cache per DP rank, holding only that rank's requests; MLA's latent is not split by TP
  (attention/mla_attention.py:317), so DP x EP stops replicating it.
* Expert-width kernel rules (fp8 block 128, Marlin int4) use the MoE TP size: always met with
  EP, TP x DP without it (quantization/fp8.py:703-728, utils/marlin_utils.py:230-246).
* All-to-all dispatch/combine only when DP > 1 and EP (fused_moe/config.py:945-946); TP x EP
  with DP = 1 combines through the TP all-reduce.
* Dense models: DP works too (docs/serving/data_parallel_deployment.md: "This will work with
  both dense and MoE models"); only MoE ranks must stay in step ("In these cases [MoE] the data
  parallel ranks are not completely independent"), so a dense DP rank is an independent TP x PP
  engine, a full copy of the weights. prov models it on one node (across nodes it is replicas).

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from provisioner.core.hardware import GpuSpec
from provisioner.core.models import ModelSpec
from provisioner.core.quant import QuantScheme


@dataclass(frozen=True, slots=True)
class Layout:
    """TP x DP x PP GPUs; ep = --enable-expert-parallel (MoE only)."""

    tp: int
    dp: int = 1
    pp: int = 1
    ep: bool = False

    @property
    def gpus(self) -> int:
        return self.tp * self.dp * self.pp

    @property
    def ep_size(self) -> int:
        """GPUs each MoE layer's experts are spread over as whole experts (1: no EP)."""
        return self.tp * self.dp if self.ep else 1

    @property
    def moe_tp(self) -> int:
        """Tensor-parallel size of the MoE layers: 1 with EP, TP x DP without."""
        return 1 if self.ep else self.tp * self.dp

    @property
    def all_to_all(self) -> bool:
        """Tokens are dispatched to the experts' GPUs (fused_moe/config.py:945-946)."""
        return self.ep and self.dp > 1

    @property
    def sequence_parallel_moe(self) -> bool:
        """vLLM's use_sequence_parallel_moe: shared experts then run un-split on every GPU."""
        return self.ep and self.tp > 1 and self.dp > 1

    @property
    def family(self) -> str:
        """What `--layout` selects: 'tp' (TP x PP) or 'dp-ep' (data parallel and/or EP; dense
        models' DP layouts have no EP)."""
        return "dp-ep" if self.dp > 1 or self.ep else "tp"

    @property
    def label(self) -> str:
        """TP8, TP4xPP2, DP8+EP8, TP4xDP2+EP8, TP8+EP8 (vLLM recipes' spelling); dense DP:
        DP8, TP2xDP4."""
        parts = []
        if self.tp > 1 or self.dp == 1:
            parts.append(f"TP{self.tp}")
        if self.dp > 1:
            parts.append(f"DP{self.dp}")
        if self.pp > 1:
            parts.append(f"PP{self.pp}")
        text = "x".join(parts)
        return text + (f"+EP{self.ep_size}" if self.ep else "")


def layout_label(layout: Layout, dcp: int = 1, engine: str = "vllm") -> str:
    """The one name of a layout in every view (quote table, --explain, fit, deploy's summary,
    the JSON's `layout`). vLLM: Layout.label, plus +DCPn for decode context parallelism (it
    splits the KV inside the TP group: no more GPUs, like +EPn), e.g. TP8, TP8xPP2, TP8+DCP2,
    DP8+EP8. llama.cpp (GGUF): one process splitting the layers over the GPUs (its default
    --split-mode layer), no TP or PP, e.g. layers/8."""
    if engine != "vllm":
        return f"layers/{layout.gpus}"
    return layout.label + (f"+DCP{dcp}" if dcp > 1 else "")


def expert_width_violation(spec: ModelSpec, scheme: QuantScheme, layout: Layout) -> str | None:
    """The per-GPU expert-width rules of the quant kernels, at the MoE TP size."""
    if spec.moe is None or scheme.engine != "vllm" or scheme.bits >= 16 or layout.ep:
        return None
    over = f"TP{layout.tp}xDP{layout.dp}" if layout.dp > 1 else f"TP{layout.moe_tp}"
    return expert_width_rule(
        scheme,
        spec.moe.moe_intermediate_size,
        layout.moe_tp,
        over,
        over,
        "; --enable-expert-parallel keeps experts whole",
    )


def expert_width_rule(
    scheme: QuantScheme, inter: int, split: int, who: str, per: str, fp8_hint: str = ""
) -> str | None:
    """Experts cut `split` ways (by `who`, written width/`per`): vLLM's quantized MoE kernels
    need whole tiles per GPU (fp8 block-128: 128 columns; int4 Marlin: max(64, group))."""
    if inter % split:
        return f"{who} does not divide the expert width {inter}"
    part = inter // split
    if scheme.name == "fp8" and "block" in scheme.label and part % 128:
        return (
            f"fp8 block-128 experts need width/{per} % 128 == 0 ({inter}/{split} = {part})"
            + fp8_hint
        )
    if scheme.name == "int4":
        need = max(64, scheme.group_size or 128)
        if part % need:
            return (
                f"int4 Marlin MoE needs expert width/{per} % {need} == 0 ({inter}/{split} = {part})"
            )
    return None


# Which MoE kernels run with EP (vLLM v0.18.0 modular-kernel oracle, docs/ep-dp-layouts.md s3).
# name -> (works with EP, note). Notes are warnings, not rejections.
_EP_KERNELS: dict[str, tuple[bool, str]] = {
    "bf16": (True, ""),
    "fp16": (True, ""),
    # oracle/fp8.py:85-95: on Hopper FlashInfer-CUTLASS is tried first when ep_size > 1
    "fp8": (True, ""),
    # MarlinExperts / BatchedMarlinExperts support an expert map (compressed_tensors_moe.py)
    "int4": (True, ""),
    # CutlassExpertsFp4 is ep_size == 1 only, but the oracle prefers FlashInfer-TRTLLM on
    # Blackwell and Marlin on Hopper, both of which take EP (oracle/nvfp4.py:130-147)
    "nvfp4": (True, ""),
    "mxfp4": (True, "EPLB is not supported for mxfp4 (quantization/mxfp4.py:1050)"),
    "int8": (True, "EP with int8 MoE kernels was not checked against vLLM v0.18.0's source"),
}


def ep_kernel_verdict(scheme: QuantScheme, gpu: GpuSpec) -> tuple[str | None, str | None]:
    """(rejection, warning) for --enable-expert-parallel with this format on this GPU."""
    if scheme.engine != "vllm":
        return "expert parallelism needs vLLM (GGUF runs on llama.cpp)", None
    ok, note = _EP_KERNELS.get(scheme.name, (False, ""))
    if not ok:
        return f"no vLLM MoE kernel with expert parallelism for {scheme.name}", None
    if scheme.name == "int4" and not gpu.is_nvidia:
        # ROCm: the Triton WNA16 MoE has no modular all-to-all kernel; the default
        # allgather/reduce-scatter path still works (compressed_tensors_moe.py:1854-1877)
        return None, "int4 MoE on ROCm: Triton kernels, allgather_reducescatter all-to-all only"
    return None, note or None


def unmodelled_layout(spec: ModelSpec, layout: Layout, dcp: int = 1) -> str | None:
    """A layout prov does not model (its own limit, not a vLLM refusal: vLLM v0.18.0 starts
    these), as one reason or None."""
    if layout.ep and spec.moe is None:  # no FusedMoE layer for the flag to act on
        return "--enable-expert-parallel on a model without experts"
    if layout.dp > 1 and dcp > 1:
        return "decode context parallelism with DP"
    if layout.dp > 1 and layout.pp > 1:
        return "DP with pipeline parallelism"
    return None


def dp_ep_layouts(spec: ModelSpec, gpus_per_node: int, nodes: int) -> list[Layout]:
    """The DP layouts the planner tries on `nodes` nodes (bounded: one per TP size that divides
    the node and the heads, PP = 1). MoE: DP x EP spanning the nodes. Dense: DP independent
    engines on one node only (DP over nodes is what replicas already are)."""
    dense = spec.moe is None
    if dense and nodes > 1:
        return []
    total = gpus_per_node * nodes
    out = []
    for tp in range(gpus_per_node, 0, -1):
        if gpus_per_node % tp or spec.num_heads % tp:
            continue
        dp = total // tp
        if dp > 1:
            out.append(Layout(tp, dp, 1, not dense))
    return out
