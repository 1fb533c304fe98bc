"""What plan_quote returns, and its JSON: the `prov quote --json` document of DESIGN.md
(extended, never broken; provisioner/contract/document.py reads it back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from provisioner.core.memory import weights_total_bytes
from provisioner.core.models import ModelSpec
from provisioner.core.planner.ranked_plan import Ranked, RankedPlan
from provisioner.core.quant import QuantScheme
from provisioner.core.request import QuoteRequest, workload_tokens

# of the `prov quote --json` document; bump when a reader needs a key older files lack
# (2: plans carry dp and ep, without which TP x PP no longer says how the GPUs are used)
SCHEMA_VERSION = 2


@dataclass
class QuoteResult:
    request: QuoteRequest
    model: ModelSpec
    scheme: QuantScheme
    kv_dtype_bytes: int
    plans: list[RankedPlan]
    feasible_count: int  # plans before --top
    rejected: list[dict[str, Any]]
    skipped_prices: dict[str, int]
    prices_as_of: str | None
    notes: list[str] = field(default_factory=list)
    best_by_market: dict[str, RankedPlan] = field(default_factory=dict)
    # the cheapest plan of each layout on the best plan's hardware and node count (--explain)
    layout_alternatives: list[RankedPlan] = field(default_factory=list)
    # plan_quote(distinct=...): every distinct choice, best first, its plan built on demand
    # (`plans` is then empty until the caller picks what to show: choices.group)
    ranked: list[Ranked] = field(default_factory=list)
    # each skipped price named (place, instance, prices, rule) when rejections are collected
    skipped_price_rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best(self) -> RankedPlan | None:
        return self.plans[0] if self.plans else None


def result_to_json(result: QuoteResult) -> dict[str, Any]:
    """The JSON contract of DESIGN.md (extended, never broken)."""
    spec, scheme = result.model, result.scheme

    weights = weights_total_bytes(spec, scheme)
    return {
        "schema_version": SCHEMA_VERSION,
        "request": result.request.model_dump(mode="json"),
        "model": {
            "id": spec.id,
            "params_total": spec.params_total,
            "params_active": spec.params_active,
            "attention": spec.attention,
            "family": spec.family,
            "layers": spec.num_layers,
            "max_context": spec.max_position_embeddings,
            "quant": scheme.name,
            "quant_label": scheme.label,
            "engine": scheme.engine,
            "weight_bytes": int(weights),
            "kv_bytes_per_token": spec.kv_bytes_per_token(result.kv_dtype_bytes, 1),
            "kv_tp_sharded": spec.mla is None,
        },
        "plans": [p.to_json() for p in result.plans],
        "workload": dict(
            zip(("isl", "osl", "explicit"), workload_tokens(result.request), strict=True)
        ),
        "feasible_plans": result.feasible_count,
        "rejected": result.rejected,
        "skipped_prices": result.skipped_prices,
        "skipped_price_rows": result.skipped_price_rows,
        "notes": result.notes,
        "prices_as_of": result.prices_as_of,
    }
