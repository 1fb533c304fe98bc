"""Re-check a plan from a file with the planner's own rules before deploying or rendering it.

A plan file is user input: it may be hand-edited (TP24 on a 64-head model), or written by an
older prov. `prov deploy` runs the same checks `prov quote` ran to rank it: vLLM's layout
rules, TP inside a node, kernels for the quant format on that GPU, and the memory arithmetic.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from provisioner.contract.document import Plan, PlanDocument
from provisioner.errors import ProvError, UsageError

if TYPE_CHECKING:
    from provisioner.core.deployable import DeployFacts
    from provisioner.core.quant import QuantScheme


def plan_scheme(doc: PlanDocument) -> QuantScheme | None:
    """The quant scheme a plan file's request resolves to, or None when this machine cannot
    resolve its model (a config.json that is not here): check_plan then says so."""
    return _scheme(doc.request.model, doc.request.quant)


@lru_cache(maxsize=8)
def _scheme(model: str, quant: str) -> QuantScheme | None:
    from provisioner.core.catalog import resolve_model
    from provisioner.core.quant import resolve_quant

    try:
        return resolve_quant(quant, resolve_model(model))
    except ProvError:
        return None


def deploy_facts(doc: PlanDocument, plan: Plan) -> DeployFacts:
    """What provisioner/core/deployable.py's rule needs about `plan`, re-derived from the file's
    model and --quant (not from its `deployable` mark, which a hand edit could flip): the same
    facts quote marked the plan with."""
    from provisioner.core.deployable import DeployFacts

    return DeployFacts(
        plan.cloud,
        plan.gpu,
        plan.zone,
        bool(plan.vllm_args),
        model=doc.model.id,
        scheme=plan_scheme(doc),
    )


def check_plan(doc: PlanDocument, plan: Plan) -> str | None:
    """Raise UsageError when the planner would refuse `plan`; return a note when it cannot
    re-check it (a model that is not in the catalog nor on this machine), else None."""
    from provisioner.core.catalog import resolve_model
    from provisioner.core.hardware import gpu_specs
    from provisioner.core.layouts import Layout, layout_label
    from provisioner.core.planner.shape_rules import kernel_verdict
    from provisioner.core.planner.shapes import HardwareClass, evaluate_shape
    from provisioner.core.quant import kv_bytes, resolve_quant
    from provisioner.core.request import make_request

    shape = layout_label(Layout(plan.tp, plan.dp, plan.pp, plan.ep), plan.dcp)
    where = f"rank {plan.rank} ({plan.gpu}, {shape})"  # as the quote table names it
    if plan.gpus_per_node % plan.tp:
        raise UsageError(
            f"{where}: TP{plan.tp} does not divide the node's {plan.gpus_per_node} GPUs; "
            "vLLM keeps TP inside a node: quote again"
        )
    gpu = gpu_specs().get(plan.gpu)
    if gpu is None:
        raise UsageError(f"{where}: unknown GPU {plan.gpu!r}; allowed: {', '.join(gpu_specs())}")
    try:
        spec = resolve_model(doc.model.id)
        scheme = resolve_quant(doc.request.quant, spec)
    except ProvError as e:
        return f"the plan's shape was not re-checked ({e})"
    try:
        fields = doc.request.model_dump(exclude_none=True)
        known = {k: v for k, v in fields.items() if k in _REQUEST_KEYS}
        req = make_request(**known)
    except ProvError as e:
        raise UsageError(f"the plan file's request is not valid: {e}") from None
    reject, _warn = kernel_verdict(scheme, gpu)
    if reject:
        raise UsageError(f"{where}: {reject}; quote again")
    device = plan.memory_gib_per_gpu.device or gpu.memory_gb * 1e9 / 2**30
    hw = HardwareClass(plan.gpu, plan.gpus_per_node, device, plan.interconnect or gpu.interconnect)
    layout = None
    if plan.dp > 1 or plan.ep:  # DP/EP plans (provisioner/core/layouts.py)
        from provisioner.core.layouts import Layout

        layout = Layout(plan.tp, plan.dp, plan.pp, plan.ep)
    verdict = evaluate_shape(
        spec,
        scheme,
        req,
        hw,
        plan.nodes,
        plan.tp,
        plan.pp,
        kv_bytes(req.kv_dtype, spec),
        layout=layout,
    )
    if verdict.reason:
        raise UsageError(f"{where}: {verdict.reason}; prov quote would not rank it: quote again")
    # the flags vLLM receives: re-derived from the plan's fields, as prov quote wrote them
    from provisioner.core.planner.ranked_plan import vllm_args

    want = vllm_args(
        spec,
        scheme,
        req,
        plan.tp,
        plan.pp,
        kv_bytes(req.kv_dtype, spec),
        plan.dp,
        plan.ep,
        verdict.max_num_batched_tokens,
        served_batch=plan.concurrency,  # a latency SLO's batch caps each engine's sequences
    )
    edit = args_edit(want, plan.vllm_args)
    cap = want.index("--max-num-seqs") if "--max-num-seqs" in want else -1
    if edit and cap >= 0 and want[:cap] + want[cap + 2 :] == plan.vllm_args:
        # an SLO plan quoted before prov capped each engine (2026-11-30): same contract, older
        # prov; everything but the cap is what its fields give
        raise UsageError(
            f"rank {plan.rank}: {edit}: quoted before prov capped an SLO plan's batch at the "
            "one its latency holds at; quote again"
        )
    if edit:
        raise UsageError(f"rank {plan.rank}: {edit}; the file was edited by hand: quote again")
    return None


def _flags(args: list[str]) -> dict[str, str | None]:
    """`--flag value` / `--switch` pairs of an argv (a stray value keys under itself)."""
    out: dict[str, str | None] = {}
    i = 0
    while i < len(args):
        key = args[i]
        value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("--") else None
        out[key] = value
        i += 2 if value is not None and key.startswith("--") else 1
    return out


def args_edit(want: list[str], got: list[str]) -> str | None:
    """How the plan's vllm_args `got` differ from the `want` its fields give, or None."""
    w, g = _flags(want), _flags(got)
    for flag, value in w.items():
        if flag not in g:
            return f"vllm_args lack {flag}{'' if value is None else ' ' + value}"
        if g[flag] != value:
            return (
                f"vllm_args say {flag} {g[flag] or '(no value)'} but the plan's fields give "
                f"{value or '(no value)'}"
            )
    extra = next((flag for flag in g if flag not in w), None)
    if extra is not None:
        return f"vllm_args carry {extra}, which prov quote does not write"
    return None


_REQUEST_KEYS = frozenset(
    {
        "model",
        "quant",
        "ctx",
        "kv_dtype",
        "gpu_memory_utilization",
        "max_num_batched_tokens",
        "concurrency",
        "max_tpot_ms",
        "max_ttft_s",
        "isl",
        "osl",
        "objective",
        "cpu_offload_gb",
        "dcp",
        "layout",
    }
)
