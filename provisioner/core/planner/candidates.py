"""Phase 1 of plan_quote: enumerate shapes per hardware class and make ranked candidates.

For each hardware class (offers that differ only in price and place) and node count, the
TP x PP splits and, on vLLM, the DP layouts (DP/EP for MoE; for dense models DP engines on
one node) are evaluated once
(shapes.evaluate_shape, memoised across classes that share a GPU, its memory and link). Each
offer and market then gets one Candidate per group of feasible shapes: the fastest member
meeting the SLOs, priced on that offer. The candidates of one shape on a fabric's offers are
kept as one block of prices (candidate_rows.py): the ranking makes the rows it needs. Refusals
are collected as rejection rows when asked.
"""

from __future__ import annotations

import math
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple

from provisioner.core.expected_cost import reclaim
from provisioner.core.hardware import gpu_specs
from provisioner.core.layout_memory import LayoutPlacer
from provisioner.core.layouts import (
    Layout,
    dp_ep_layouts,
    ep_kernel_verdict,
    expert_width_violation,
)
from provisioner.core.memory import MemorySettings
from provisioner.core.models import ModelSpec
from provisioner.core.perf import PerfEstimate
from provisioner.core.planner.candidate_rows import (
    NO_SPEED,
    PER_HOUR,
    PER_MTOK,
    Block,
    CandidateRows,
)
from provisioner.core.planner.estimates import (
    availability_miss,
    estimate_speed,
    host_ram_needed,
    slo_violation,
    weight_split,
)
from provisioner.core.planner.offer_prices import OfferPrices
from provisioner.core.planner.shape_rules import kernel_verdict, shape_rule_violation
from provisioner.core.planner.shapes import (
    HardwareClass,
    ShapeVerdict,
    evaluate_shape,
    memory_settings,
    rejection_row,
    weights_cannot_fit,
)
from provisioner.core.quant import QuantScheme, kv_bytes
from provisioner.core.request import QuoteRequest, workload_tokens
from provisioner.core.weight_placement import WeightPlacer

if TYPE_CHECKING:
    from provisioner.core.offer import Offer


class Candidate(NamedTuple):
    """One offer and market with its fastest feasible shape, ordered as it ranks: by the
    objective, then $/h, fewer nodes, more concurrent requests, market, enumeration order."""

    rank_key: float  # $/Mtok or $/h (per hour of serving with --risk-adjusted)
    usd_per_hour: float  # the whole replica (nodes x node price)
    nodes: int
    neg_concurrency: int  # -(requests of --ctx tokens held at once): more ranks first
    market: str
    verdict: int  # index into Enumeration.verdicts
    offer: int  # index into Enumeration.class_offers[verdict]


@cache
def _divisors_desc(n: int) -> tuple[int, ...]:
    return tuple(d for d in range(n, 0, -1) if n % d == 0)


class Enumeration(OfferPrices):
    """The enumeration's state: memoised verdicts, estimates, prices and times to serve, and
    what it found (verdicts, candidates, rejections, skipped prices)."""

    def __init__(
        self,
        req: QuoteRequest,
        spec: ModelSpec,
        scheme: QuantScheme,
        markets: tuple[str, ...],
        collect_rejected: bool,
    ) -> None:
        super().__init__(req, spec, scheme, markets)
        self.collect_rejected = collect_rejected
        self.kvb = kv_bytes(req.kv_dtype, spec)
        self.specs = gpu_specs()
        self.isl, self.osl, _explicit = workload_tokens(req)
        self.by_hour = req.objective == "usd-per-hour" or scheme.engine != "vllm"
        self.moe_vllm = spec.moe is not None and scheme.engine == "vllm"
        # without the rejection list, hopeless shapes are refused by a bound (no reason kept)
        self.quick = not collect_rejected

        self.candidates = CandidateRows()  # every candidate (Candidate's fields, when made)
        self.verdicts: list[ShapeVerdict] = []
        self.class_offers: list[list[Offer]] = []  # per verdict index: its class's offers
        self.rejected: list[dict[str, Any]] = []
        self.offer_misses: dict[tuple[int, str], str] = {}  # (verdict index, fabric): SLO miss
        self.lone: set[tuple[int, str, str]] = set()  # (nodes, cloud, type) refused single boxes

        self.placer = WeightPlacer(spec, scheme)
        self.placers: dict[Layout, LayoutPlacer] = {}
        self.memo: dict[tuple[Any, ...], ShapeVerdict] = {}
        self.settings: dict[tuple[str, float], MemorySettings] = {}  # by GPU and its memory
        # a verdict depends on the class only through the GPU, its memory and the interconnect:
        # classes that differ in GPUs per node (or node count) share it for the same layout
        self.same_gpu: dict[tuple[str, float, str, Layout], ShapeVerdict] = {}
        self.dp_found: set[HardwareClass] = set()
        self.perf_memo: dict[tuple[int, str], PerfEstimate | None] = {}
        self.stage_cache: dict[tuple[int, int], Any] = {}
        self.instances: dict[int, list[tuple[str, str]]] = {}  # id(class offers) -> types

    # -- memoised pieces ------------------------------------------------------------------

    def perf_of(self, v: ShapeVerdict, fabric: str) -> PerfEstimate | None:
        """Throughput of a feasible shape on one fabric (cached; None for llama.cpp). A shape
        on one node never crosses the fabric: one estimate serves every fabric."""
        k = (id(v), fabric if v.nodes > 1 else "")
        memo = self.perf_memo
        if k not in memo:
            memo[k] = estimate_speed(
                self.spec, self.scheme, self.req, v, fabric, self.kvb, self.isl, self.osl,
                self.stage_cache,
            )  # fmt: skip
        return memo[k]

    def verdict_of(self, hw: HardwareClass, nodes: int, lay: Layout) -> ShapeVerdict:
        key = (hw, nodes, lay)
        v = self.memo.get(key)
        if v is not None:
            return v
        shared = (hw.gpu, hw.gpu_memory_gib, hw.interconnect, lay)
        v = self.same_gpu.get(shared)
        if v is not None:
            v = self.memo[key] = v.on(hw, nodes)
            return v
        spec, scheme = self.spec, self.scheme
        plain = lay.dp == 1 and not lay.ep
        pl = self.placer if plain else self.placers.get(lay)
        if pl is None:
            pl = self.placers[lay] = LayoutPlacer(spec, scheme, lay, base=self.placer)
        ep_bad, ep_warn = ep_kernel_verdict(scheme, self.specs[hw.gpu]) if lay.ep else (None, None)
        if ep_bad:
            v = ShapeVerdict(hw, nodes, lay.tp, lay.pp, None, ep_bad, dp=lay.dp, ep=lay.ep)
        elif (
            self.quick
            and plain
            and not shape_rule_violation(spec, scheme, lay.tp, lay.pp, self.req.dcp)
            and weights_cannot_fit(self.req, hw, lay.tp * lay.pp, self.weight_bytes)
        ):  # the table path needs no reason: skip the memory model
            v = ShapeVerdict(hw, nodes, lay.tp, lay.pp, None, "weights exceed", too_heavy=True)
        else:
            mem_key = (hw.gpu, hw.gpu_memory_gib)  # what memory_settings reads of the class
            settings = self.settings.get(mem_key)
            if settings is None:
                settings = self.settings[mem_key] = memory_settings(self.req, spec, hw, self.kvb)
            v = evaluate_shape(
                spec, scheme, self.req, hw, nodes, lay.tp, lay.pp, self.kvb, pl, lay, settings
            )
        if v.reason is None and ep_warn:
            v = v.warned(ep_warn)
        self.memo[key] = self.same_gpu[shared] = v
        return v

    # -- the enumeration ------------------------------------------------------------------

    def run(self, classes: dict[HardwareClass, list[Offer]], node_counts: list[int]) -> None:
        for hw, hw_offers in classes.items():
            kernel_reject, kernel_warn = kernel_verdict(self.scheme, self.specs[hw.gpu])
            for nodes in node_counts:
                self._class_at(hw, hw_offers, nodes, kernel_reject, kernel_warn)
        if self.collect_rejected:
            self._reject_misses()

    def _class_at(
        self,
        hw: HardwareClass,
        hw_offers: list[Offer],
        nodes: int,
        kernel_reject: str | None,
        kernel_warn: str | None,
    ) -> None:
        """The shapes of one class at one node count, and the candidates of its offers."""
        req, spec, scheme, moe_vllm = self.req, self.spec, self.scheme, self.moe_vllm
        total = nodes * hw.gpus_per_node
        splits = (
            [(1, total)]
            if scheme.engine == "llama.cpp"
            else [(tp, total // tp) for tp in _divisors_desc(hw.gpus_per_node)]
        )
        fits: list[ShapeVerdict] = []
        fails: list[ShapeVerdict] = []
        tp_ep = req.layout == "dp-ep" and moe_vllm  # dp-ep: TP x PP shapes only with EP
        for tp, pp in splits if req.layout != "dp-ep" or tp_ep else ():
            if kernel_reject:
                v = ShapeVerdict(hw, nodes, tp, pp, None, kernel_reject)
            else:
                v = self.verdict_of(hw, nodes, Layout(tp, 1, pp, tp_ep and tp > 1))
                if (
                    v.reason
                    and req.layout == "auto"
                    and moe_vllm
                    and expert_width_violation(spec, scheme, Layout(tp, 1, pp))
                ):  # the fp8-block / Marlin width rule: vLLM runs it with EP
                    v = self.verdict_of(hw, nodes, Layout(tp, 1, pp, True))
            if v.reason is None:
                fits.append(v.warned(kernel_warn) if kernel_warn else v)
                # vLLM's canonical layout is TP inside a node, PP across nodes: smaller TP with
                # PP inside the node only when that fails, or when --explore-splits asks
                # (in-node PP is outside the throughput model's calibration)
                if self.by_hour or not req.explore_splits:
                    break
            else:
                fails.append(v)
        # each group gives one candidate per offer and market, its fastest member: the
        # layouts of one offer share its price, so the fastest has the lowest $/Mtok
        groups = [fits] if fits else []
        dp_fits: list[ShapeVerdict] = []
        # bounded: DP/EP only on the fewest nodes where one fits (more nodes scale price
        # and tokens/s alike, plus all-to-all over the fabric), unless --nodes is given
        if (
            req.layout != "tp"
            and scheme.engine == "vllm"  # dense: DP independent engines on one node
            and req.dcp == 1
            and not kernel_reject
            and hw not in self.dp_found
            # DP replicates what TP x PP splits: when no TP x PP split holds the weights
            # on these GPUs, no DP layout does either
            and not (fails and not fits and all(f.weights_overflow for f in fails))
        ):
            for lay in dp_ep_layouts(spec, hw.gpus_per_node, nodes):
                v = self.verdict_of(hw, nodes, lay)
                if v.reason is None:
                    dp_fits.append(v.warned(kernel_warn) if kernel_warn else v)
                else:
                    fails.append(v)
        if dp_fits:
            groups.append(dp_fits)
            self.dp_found.add(hw)
        if self.collect_rejected:
            instances = self.instances.get(id(hw_offers))
            if instances is None:
                instances = self.instances[id(hw_offers)] = sorted(
                    {(o.cloud, o.instance_type) for o in hw_offers}
                )
            for v in fails:
                for cloud, itype in instances:
                    self.rejected.append(rejection_row(v, cloud, itype, v.reason or ""))
        for group in groups:
            self._add_candidates(hw_offers, nodes, group)

    def _add_candidates(self, hw_offers: list[Offer], nodes: int, fits: list[ShapeVerdict]) -> None:
        """One candidate per offer and market: the fastest of `fits` meeting the SLOs (it
        depends on the offer only through its fabric)."""
        first_vi = len(self.verdicts)
        self.verdicts.extend(fits)
        self.class_offers.extend([hw_offers] * len(fits))
        if not self.collect_rejected:  # the table path: no refusal to note, order is free
            for fabric, rows in self.eligible(hw_offers, nodes > 1).items():
                best = self._fastest(fits, first_vi, fabric)
                if best[0] >= 0:
                    self._price_rows(rows, nodes, best)
            return
        req = self.req
        fastest: dict[str, tuple[int, PerfEstimate | None, int]] = {}  # and -concurrency
        for oi, o in self.notable(hw_offers, nodes > 1):
            if nodes > 1 and not o.multi_node:  # a single machine: no cluster to join
                if (nodes, o.cloud, o.instance_type) not in self.lone:
                    self.lone.add((nodes, o.cloud, o.instance_type))
                    self.rejected.append(
                        rejection_row(
                            fits[0],
                            o.cloud,
                            o.instance_type,
                            f"{o.instance_type} is a single machine on {o.cloud}: the "
                            "catalog declares no cluster fabric to join several",
                        )
                    )
                continue
            if req.cpu_offload_gb and o.memory_gib < host_ram_needed(req, o.gpus_per_node):
                self.offer_misses[(first_vi, o.fabric)] = (
                    f"--cpu-offload-gb {req.cpu_offload_gb:g} x {o.gpus_per_node} GPUs needs "
                    f"{host_ram_needed(req, o.gpus_per_node):g} GiB of host RAM; "
                    f"{o.instance_type} has {o.memory_gib:g}"
                )
                continue
            hit = fastest.get(o.fabric)
            if hit is None:
                hit = fastest[o.fabric] = self._fastest(fits, first_vi, o.fabric)
            if hit[0] >= 0:
                if self.timed:
                    self._price_rows([(oi, o)], nodes, hit)
                elif not self.doubtless(o):
                    self.usable_prices(o)  # doubtful prices are counted in offer order
        if not self.timed:  # the same candidates, priced by fabric (order is free)
            for fabric, rows in self.eligible(hw_offers, nodes > 1).items():
                hit = fastest.get(fabric)
                if hit is not None and hit[0] >= 0:
                    self._price_rows(rows, nodes, hit)

    def _price_rows(
        self,
        rows: list[tuple[int, Offer]],
        nodes: int,
        hit: tuple[int, PerfEstimate | None, int],
    ) -> None:
        """The candidates of `rows` (offers with their index) on `nodes` nodes of the shape
        `hit` (verdict index, estimate, -concurrency): one per usable market price."""
        best_vi, est, neg_conc = hit
        per_mtok = not self.by_hour and est is not None
        tps = est.output_tps if est is not None else 0.0
        if self.timed:
            self._timed_rows(rows, nodes, best_vi, neg_conc, per_mtok, tps)
            return
        # rows come from eligible_memo (their id is stable) and come back for each node count
        # and group: their usable prices are kept
        priced = self.prices_of(rows)
        # one block of rows, made when the ranking asks (candidate_rows.py)
        if per_mtok and tps > 0:
            block = Block(priced, nodes, neg_conc, best_vi, PER_MTOK, tps * 3600)
        else:
            block = Block(priced, nodes, neg_conc, best_vi, NO_SPEED if per_mtok else PER_HOUR, 0.0)
        self.candidates.add_block(block)

    def _timed_rows(
        self,
        rows: list[tuple[int, Offer]],
        nodes: int,
        best_vi: int,
        neg_conc: int,
        per_mtok: bool,
        tps: float,
    ) -> None:
        """_price_rows with --risk-adjusted or --min-availability: the time to serve sets the
        rank and may drop a spot price."""
        req = self.req
        add = self.candidates.add
        for oi, o in rows:
            for market, price in self.usable_prices(o):
                usd = price * nodes
                if not per_mtok:
                    rank_key = usd
                elif tps > 0:
                    rank_key = usd / (tps * 3600) * 1e6
                else:
                    rank_key = math.inf
                tts = self.tts_of(o, weight_split(self.verdicts[best_vi]))
                if tts:
                    loss = reclaim(o, market, nodes, tts)
                    miss = availability_miss(req, loss)
                    if miss:
                        self.skip(miss, o, market)
                        continue
                    if req.risk_adjusted:  # rank per hour of serving: / availability
                        rank_key = loss.expected_usd_per_hour(rank_key)
                add((rank_key, usd, nodes, neg_conc, market, best_vi, oi))

    def _fastest(
        self, fits: list[ShapeVerdict], first_vi: int, fabric: str
    ) -> tuple[int, PerfEstimate | None, int]:
        """(verdict index, estimate, -concurrency) of the fastest of `fits` on `fabric` that
        meets the SLOs; index -1 when none does (the misses are kept for the rejections)."""
        best_vi, est = -1, None
        for k, v in enumerate(fits):
            e = self.perf_of(v, fabric)
            miss = slo_violation(self.req, e)
            if miss:
                self.offer_misses.setdefault((first_vi + k, fabric), miss)
            elif best_vi < 0 or (e and est and e.output_tps > est.output_tps):
                best_vi, est = first_vi + k, e
        neg_conc = 0
        if best_vi >= 0:
            self.offer_misses.pop((best_vi, fabric), None)
            mem = self.verdicts[best_vi].memory
            neg_conc = -mem.max_concurrent if mem else 0
        return best_vi, est, neg_conc

    def _reject_misses(self) -> None:
        """Shapes that fit but missed an SLO (or host RAM) on every offer of a fabric."""
        for (vi, fabric), reason in self.offer_misses.items():
            v = self.verdicts[vi]
            for cloud, itype in sorted(
                {(o.cloud, o.instance_type) for o in self.class_offers[vi] if o.fabric == fabric}
            ):
                self.rejected.append(rejection_row(v, cloud, itype, reason))
