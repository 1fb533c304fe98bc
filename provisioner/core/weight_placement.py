"""Where a TP x PP shape's weight bytes sit: vLLM's layer split over the PP stages and each
weight group's bytes on one TP rank. Pure.

vLLM's get_pp_indices gives each stage num_layers // pp layers (the remainder to the stages
before the last); the embedding sits on the first stage, lm_head and the final norm on the last.
On a rank a group is sharded 1/TP or replicated (weights.TpLayout); GQA's K/V projections are
replicated once TP exceeds the KV heads, and a MoE kernel path that pads expert widths pads
them (quant.expert_padding). memory.py budgets these bytes against the GPU; perf.py reads the
stage split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from provisioner.core.models import ModelSpec
from provisioner.core.quant import QuantScheme, expert_padding
from provisioner.core.vllm_rules import VLLM_VERSION, VllmRules, rules_for
from provisioner.core.weights import WeightGroup


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
    computed once and only divided per TP size (and padded per kernel path when one pads).
    Layers with the same groups hold the same bytes: each kind of layer is summed once.
    """

    def __init__(self, spec: ModelSpec, scheme: QuantScheme) -> None:
        self.spec = spec
        self.scheme = scheme
        self._bytes = [(g, scheme.group_bytes(g)) for g in spec.groups]
        self._by_key: dict[tuple[int, float], tuple[list[float], float, float]] = {}
        self._kinds = layer_kinds(spec.num_layers, self._bytes)

    def _per_rank(self, g: WeightGroup, total: float, tp: int) -> float:
        spec = self.spec
        if g.tp == "replicate" or tp == 1:
            return total
        if g.kind == "attn" and spec.mla is None and tp > spec.num_kv_heads:
            # K/V projections are replicated once TP exceeds the KV heads: one head per rank.
            kv_frac = spec.num_kv_heads / (spec.num_heads + spec.num_kv_heads)
            return total * (1 - kv_frac) / tp + total * kv_frac / spec.num_kv_heads
        return total / tp

    def _group_bytes(self, tp: int, pad: float) -> Callable[[WeightGroup, float], float]:
        """Bytes of one group on one rank at this TP size and expert padding."""
        dtype = self.scheme.model_dtype_bytes

        def on_rank(g: WeightGroup, total: float) -> float:
            b = self._per_rank(g, total, tp)
            if g.kind == "experts" and pad != 1.0:
                b = (b - g.extra_params * dtype / tp) * pad + (g.extra_params * dtype / tp)
            return b

        return on_rank

    def _pad(self, tp: int, sm: int | None, rules: VllmRules) -> float:
        return expert_padding(self.spec, self.scheme, tp, sm, rules)

    def layout(
        self, tp: int, sm: int | None = None, rules: VllmRules | None = None
    ) -> tuple[list[float], float, float]:
        """(bytes per decoder layer, bytes on the first stage only, on the last stage only)."""
        pad = self._pad(tp, sm, rules or rules_for(VLLM_VERSION))
        key = (tp, pad)
        cached = self._by_key.get(key)
        if cached is not None:
            return cached
        on_rank = self._group_bytes(tp, pad)
        kinds, kind_of, outside = self._kinds
        by_kind = []
        for groups in kinds:  # a layer's groups in their order, as one running sum
            b = 0.0
            for g, total in groups:
                b += on_rank(g, total)
            by_kind.append(b)
        per_layer = [by_kind[k] for k in kind_of]
        first = last = 0.0
        for g, total in outside:
            if g.kind in {"embed", "vision"}:
                first += on_rank(g, total)
            else:  # lm_head, final norm
                last += on_rank(g, total)
        self._by_key[key] = (per_layer, first, last)
        return per_layer, first, last


Sized = list[tuple[WeightGroup, float]]  # groups with their bytes in a scheme
LayerKinds = tuple[list[Sized], list[int], Sized]


def layer_kinds(num_layers: int, sized: Sized) -> LayerKinds:
    """(the groups of each distinct kind of layer, each layer's kind, the groups outside the
    layers), all in the groups' order. Layers whose groups match in kind, TP layout and size hold
    the same bytes on a rank (a MoE model's layers are one or two kinds)."""
    in_layer: list[Sized] = [[] for _ in range(num_layers)]
    outside = []
    for g, total in sized:
        if g.layer is None:
            outside.append((g, total))
        else:
            in_layer[g.layer].append((g, total))
    seen: dict[tuple[Any, ...], int] = {}
    kinds: list[Sized] = []
    kind_of = []
    for groups in in_layer:
        sig = tuple((g.kind, g.tp, g.params, g.extra_params, total) for g, total in groups)
        k = seen.get(sig)
        if k is None:
            k = seen[sig] = len(kinds)
            kinds.append(groups)
        kind_of.append(k)
    return kinds, kind_of, outside
