"""The `prov quote --json` document as pydantic models: the contract of DESIGN.md.

quote writes the document (``planner.result_to_json``); deploy, the notebooks and users'
scripts read it back through :func:`load_plan_document`. The keys DESIGN.md lists are
required, with their types; the keys the planner adds on top are declared (optional, typed)
so that they are checked when present; unknown keys are kept (``extra="allow"``) so that a
newer prov can extend the document without breaking an older reader.

Not on the quote hot path: the planner and ``prov quote`` never import this module.
"""

from __future__ import annotations

import json
import os
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from provisioner.core.planner.result import SCHEMA_VERSION
from provisioner.errors import UsageError

__all__ = [
    "MemoryPerGpu",
    "ModelInfo",
    "Plan",
    "PlanDocument",
    "ReclaimInfo",
    "Rejection",
    "RequestInfo",
    "TimeToServeInfo",
    "load_plan_document",
]


def _check_date(text: str) -> str:
    try:
        date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a calendar date: {text!r}") from None
    return text


#: A YYYY-MM-DD date, as a string (what the JSON carries).
IsoDate = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$"), AfterValidator(_check_date)]
PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Market = Literal["spot", "on-demand"]

_CONFIG = ConfigDict(strict=True, extra="allow", allow_inf_nan=False, frozen=True)


class RequestInfo(BaseModel):
    """The validated request the plans answer (``QuoteRequest`` dumped as JSON)."""

    model_config = _CONFIG

    model: str = Field(min_length=1)
    ctx: PosInt
    quant: str = "auto"
    kv_dtype: str = "auto"
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    max_num_batched_tokens: PosInt | None = None
    concurrency: PosInt | None = None  # None: one request must fit; tok/s at saturation
    isl: PosInt | None = None
    osl: PosInt | None = None
    objective: Literal["usd-per-mtok", "usd-per-hour"] = "usd-per-mtok"
    max_tpot_ms: NonNegFloat | None = None
    max_ttft_s: NonNegFloat | None = None
    min_output_tps: NonNegFloat | None = None
    cpu_offload_gb: NonNegFloat = 0.0
    explore_splits: bool = False
    dcp: PosInt = 1
    max_nodes: PosInt | None = None
    nodes: PosInt | None = None
    market: Literal["any", "spot", "on-demand"] = "any"
    clouds: list[str] = Field(default_factory=list)
    regions: list[str] = Field(default_factory=list)
    gpus: list[str] = Field(default_factory=list)
    max_interruption: Annotated[int, Field(ge=0, le=100)] | None = None
    risk_adjusted: bool = False  # spot plans ranked by expected cost (docs/prices.md)
    weights: Literal["s3", "hub", "pvc"] = "s3"  # a replacement's weight path (docs/recovery.md)
    min_availability: float | None = Field(default=None, gt=0, lt=1)
    layout: Literal["tp", "dp-ep", "auto"] = "auto"  # which layouts were considered
    top: NonNegInt | None = None


class ModelInfo(BaseModel):
    """The model the plans serve."""

    model_config = _CONFIG

    id: str = Field(min_length=1)
    params_total: NonNegInt
    params_active: NonNegInt
    attention: str
    # planner extensions
    family: str | None = None
    layers: PosInt | None = None
    max_context: PosInt | None = None
    quant: str | None = None
    quant_label: str | None = None
    engine: str | None = None
    weight_bytes: NonNegInt | None = None
    kv_bytes_per_token: NonNegInt | None = None
    kv_tp_sharded: bool | None = None


class MemoryPerGpu(BaseModel):
    """GiB on the worst GPU of the shape (the stage that holds the fewest KV tokens)."""

    model_config = _CONFIG

    weights: NonNegFloat
    kv_cache: NonNegFloat
    activations: NonNegFloat
    overhead: NonNegFloat
    free: float  # negative when the out-of-budget items overflow the headroom
    # planner extensions
    device: NonNegFloat | None = None
    outside_budget: NonNegFloat | None = None


class SpotRiskInfo(BaseModel):
    """What a cloud publishes about a spot pool's interruptions (provisioner.core.spot_risk)."""

    model_config = _CONFIG

    interruption_per_month: str = Field(min_length=1)  # "<5%" ... or "unknown"
    notice: str | None = None  # warning before reclaim, e.g. "2 min"
    basis: str = Field(min_length=1)


class Plan(BaseModel):
    """One ranked way to serve the model: an offer x nodes x TP x PP on one market."""

    model_config = _CONFIG

    rank: PosInt
    cloud: str = Field(min_length=1)
    region: str
    zone: str | None
    instance_type: str = Field(min_length=1)
    gpu: str = Field(min_length=1)
    gpus_per_node: PosInt
    nodes: PosInt
    tp: PosInt
    pp: PosInt
    market: Market
    usd_per_hour: NonNegFloat
    memory_gib_per_gpu: MemoryPerGpu
    kv_cache_tokens: NonNegInt
    max_concurrent_full_ctx: NonNegInt
    tokens_per_s: NonNegFloat | None
    usd_per_mtok: NonNegFloat | None
    vllm_args: list[str]
    # schema 2: data-parallel ranks (vLLM --data-parallel-size); GPUs = TP x DP x PP
    dp: PosInt
    ep: bool  # --enable-expert-parallel (MoE): whole experts over TP x DP GPUs
    # planner extensions
    layout: str | None = None  # e.g. "TP8", "DP8+EP8", "TP4xDP2+EP8" (provisioner/core/layouts.py)
    dcp: PosInt = 1
    usd_per_gpu_hour: NonNegFloat | None = None
    # --risk-adjusted only: usd_per_hour x (1 + interruptions/h x restart h), docs/prices.md
    expected_usd_per_hour: NonNegFloat | None = None
    interconnect: str | None = None
    fabric: str | None = None
    prices_as_of: IsoDate | None = None
    price_age_days: NonNegInt | None = None  # days since prices_as_of; null = undated price
    # redundant with spot_risk.interruption_per_month (authoritative; docs/json.md): kept for
    # schema 2 readers, dropped at the next schema_version. AWS Spot Advisor bucket, e.g. "<5%"
    spot_interruption: str | None = None
    # spot plans: what is known about interruptions ("unknown" with why, never zero); else null
    spot_risk: SpotRiskInfo | None = None
    multi_node: bool | None = None  # the offer's nodes can form one cluster
    aliases: list[str] = Field(default_factory=list)  # other SKU names of the same machine
    # throughput model (issue 4): null for llama.cpp (GGUF) memory-only plans
    tokens_per_s_band: list[NonNegFloat] | None = None  # [est / (1 + band), est x (1 + band)]
    total_tokens_per_s: NonNegFloat | None = None  # input + output
    usd_per_mtok_blended: NonNegFloat | None = None  # per million input + output tokens
    tpot_ms: NonNegFloat | None = None
    ttft_s: NonNegFloat | None = None
    concurrency: PosInt | None = None  # requests in flight the estimate assumes
    perf_band: NonNegFloat | None = None
    perf_band_thin_data: bool | None = None  # too few published runs for this GPU family/regime
    perf_band_basis: str | None = None  # where the band comes from, in one line
    price_flags: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    # distinct choices (provisioner/core/choices.py): can `prov deploy` run it, and if not, why
    deployable: bool | None = None
    not_deployable_reason: str | None = None
    other_places: list[str] = Field(default_factory=list)  # regions/zones of the same choice
    instance_aliases: list[str] = Field(default_factory=list)  # SKU names of the same machine
    # issue 16: a replacement replica's time to serve, and (spot) what reclaims cost
    time_to_serve_s: NonNegInt | None = None
    time_to_serve: TimeToServeInfo | None = None
    reclaim: ReclaimInfo | None = None

    @model_validator(mode="after")
    def _gpus_add_up(self) -> Plan:
        gpus = self.nodes * self.gpus_per_node
        if self.tp * self.dp * self.pp != gpus:
            dp = f" x DP{self.dp}" if self.dp > 1 else ""
            raise ValueError(
                f"TP{self.tp}{dp} x PP{self.pp} = {self.tp * self.dp * self.pp} GPUs, but the "
                f"shape has {self.nodes} x {self.gpus_per_node} = {gpus}"
            )
        return self

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node


class TimeToServeTerm(BaseModel):
    """One term of a replacement replica's time to serve, with its rates' sources."""

    model_config = _CONFIG

    term: str = Field(min_length=1)
    seconds: NonNegFloat
    detail: str
    sources: list[str]


class TimeToServeInfo(BaseModel):
    """provisioner.core.time_to_serve: the sum behind ``time_to_serve_s``."""

    model_config = _CONFIG

    weights: Literal["s3", "hub", "pvc"]
    total_s: NonNegInt
    container_s: NonNegInt  # from the vLLM container's start (the startup probe's window)
    startup_probe_budget_s: PosInt
    terms: list[TimeToServeTerm]


class Alternative(BaseModel):
    model_config = _CONFIG

    usd_per_hour: NonNegFloat
    availability: Annotated[float, Field(ge=0, le=1)]


class ReclaimInfo(BaseModel):
    """provisioner.core.expected_cost: what spot reclaims cost a plan. Nulls = no published rate."""

    model_config = _CONFIG

    interruption_pct_per_month: NonNegFloat | None
    basis: str = Field(min_length=1)
    rate_as_of: IsoDate | None = None
    rate_age_days: int | None = None
    notice_s: NonNegFloat
    downtime_per_reclaim_s: NonNegInt
    interruptions_per_month: NonNegFloat | None = None
    capacity_lost_h_per_month: NonNegFloat | None = None
    availability: Annotated[float, Field(ge=0, le=1)] | None = None
    expected_usd_per_hour: NonNegFloat | None = None
    alternatives: dict[str, Alternative | None] | None = None


class Rejection(BaseModel):
    """A shape the planner refused, and why."""

    model_config = _CONFIG

    shape: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    # planner extensions
    cloud: str | None = None
    instance_type: str | None = None
    gpu: str | None = None
    nodes: PosInt | None = None
    tp: PosInt | None = None
    pp: PosInt | None = None
    dp: PosInt | None = None  # DP / EP layouts only
    ep: bool | None = None


class PlanDocument(BaseModel):
    """What `prov quote --json` prints."""

    model_config = _CONFIG

    schema_version: Literal[2]  # SCHEMA_VERSION; load_plan_document checks it first
    request: RequestInfo
    model: ModelInfo
    plans: list[Plan]
    rejected: list[Rejection]
    prices_as_of: IsoDate | None
    # planner extensions
    feasible_plans: NonNegInt | None = None
    skipped_prices: dict[str, NonNegInt] = Field(default_factory=dict)
    skipped_price_rows: list[dict[str, str | float | int | None]] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    workload: dict[str, int | bool] | None = None  # isl, osl, explicit
    compare_api: dict[str, Any] | None = None
    choices: NonNegInt | None = None  # distinct choices before --top
    # ranks of the cheapest, the cheapest `prov deploy` can run, the cheapest on-demand
    headline: dict[str, PosInt | None] | None = None
    headline_plans: list[Plan] = Field(default_factory=list)  # those ranked beyond --top

    def with_headline_plans(self) -> PlanDocument:
        """The document whose plans include the headline's picks beyond --top (deploy)."""
        if not self.headline_plans:
            return self
        return self.model_copy(update={"plans": [*self.plans, *self.headline_plans]})

    @property
    def best(self) -> Plan | None:
        """The first (cheapest) plan, or None when nothing fits."""
        return self.plans[0] if self.plans else None


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "document"


def _one_line(e: ValidationError) -> str:
    errors = e.errors(include_url=False)
    first = errors[0]
    msg = " ".join(str(first["msg"]).split())
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return f"{_where(tuple(first['loc']))}: {msg}" + (more if len(errors) > 1 else "")


def _version_problem(version: object) -> str | None:
    """Why a document of this schema_version cannot be read, checked before its shape: an
    older file lacks keys this prov needs, and its shape errors would mislead."""
    if version == SCHEMA_VERSION and type(version) is int:
        return None
    if version is None:
        return "no schema_version: not written by 'prov quote --json' (or by a very old prov)"
    if type(version) is not int:
        return f"schema_version {version!r} is not a whole number: quote again"
    if version < SCHEMA_VERSION:
        return (
            f"written by an older prov (schema_version {version}, this prov reads "
            f"{SCHEMA_VERSION}: plans now carry dp and ep): quote again"
        )
    return (
        f"written by a newer prov (schema_version {version}, this prov reads "
        f"{SCHEMA_VERSION}): upgrade prov or quote again with this one"
    )


def _carries_layouts(data: dict[str, Any]) -> bool:
    """Version 1 as the provs between DP/EP layouts and the bump wrote it: every plan has the
    dp and ep keys version 2 requires, so it reads as version 2."""
    plans = [*(data.get("plans") or []), *(data.get("headline_plans") or [])]
    return bool(plans) and all(isinstance(p, dict) and {"dp", "ep"} <= p.keys() for p in plans)


def load_plan_document(path: str | os.PathLike[str]) -> PlanDocument:
    """Read and validate a plan file written by `prov quote --json`.

    Raises ``UsageError`` with a one-line message naming the file and, for a document that
    breaks the contract, the first offending key.
    """
    name = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as e:
        raise UsageError(f"{name}: cannot read plan file ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{name}: not a plan file (not UTF-8 text)") from None
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(
            f"{name}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
            "expected the output of 'prov quote --json'"
        ) from None
    except RecursionError:
        raise UsageError(f"{name}: not a plan file (JSON nested too deeply)") from None
    if not isinstance(data, dict):
        raise UsageError(
            f"{name}: not a plan file (a JSON {type(data).__name__}, expected the object "
            "'prov quote --json' prints)"
        )
    version = data.get("schema_version")
    if type(version) is int and version == 1 and _carries_layouts(data):
        data = {**data, "schema_version": SCHEMA_VERSION}  # a version-1 file with dp and ep
    version_problem = _version_problem(data.get("schema_version"))
    if version_problem:
        raise UsageError(f"{name}: {version_problem}")
    try:
        return PlanDocument.model_validate(data)
    except ValidationError as e:
        raise UsageError(f"{name}: not a valid plan file: {_one_line(e)}") from None
