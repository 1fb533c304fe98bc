"""QuoteRequest: the validated question `prov quote` answers."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provisioner.errors import UsageError

Market = Literal["any", "spot", "on-demand"]
Objective = Literal["usd-per-mtok", "usd-per-hour"]
LayoutChoice = Literal["tp", "dp-ep", "auto"]  # provisioner/core/layouts.py

_TOKENS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def parse_tokens(text: str | int, what: str = "--ctx") -> int:
    """'128k' -> 131072. k and m are binary (1024, 1048576), as context lengths are quoted."""
    if isinstance(text, int):
        value = text
    else:
        m = _TOKENS.match(text)
        if not m:
            raise UsageError(
                f"{what} {text!r} is not a token count; use an integer or a k/m suffix "
                "(e.g. 8192, 32k, 128k, 1m; k = 1024)"
            )
        scale = {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
        number = float(m.group(1)) * scale
        if number != int(number):
            raise UsageError(f"{what} {text!r} is not a whole number of tokens")
        value = int(number)
    if value <= 0:
        raise UsageError(f"{what} must be a positive number of tokens, got {text!r}")
    return value


class QuoteRequest(BaseModel):
    """Everything the planner needs; strict, immutable, and dumped into the JSON plan."""

    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    quant: str = "auto"
    ctx: int = Field(gt=0)
    kv_dtype: str = "auto"
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_num_batched_tokens: int = Field(default=8192, gt=0)
    concurrency: int | None = Field(default=None, ge=1)  # None: 1 must fit; tok/s at saturation
    isl: int | None = Field(default=None, gt=0)
    osl: int | None = Field(default=None, gt=0)
    objective: Objective = "usd-per-mtok"
    max_tpot_ms: float | None = Field(default=None, gt=0)
    max_ttft_s: float | None = Field(default=None, gt=0)
    min_output_tps: float | None = Field(default=None, gt=0)
    cpu_offload_gb: float = Field(default=0.0, ge=0)  # vLLM --cpu-offload-gb, per GPU
    explore_splits: bool = False  # rank every feasible TP x PP split by $/Mtok, not just TP=node
    dcp: int = Field(default=1, ge=1)
    max_nodes: int = Field(default=4, ge=1, le=64)
    nodes: int | None = Field(default=None, ge=1, le=64)
    market: Market = "any"
    clouds: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    gpus: tuple[str, ...] = ()
    top: int = Field(default=10, ge=0)
    max_interruption: int | None = Field(default=None, ge=0, le=100)
    risk_adjusted: bool = False  # rank spot plans by expected cost with restarts
    weights: Literal["s3", "hub", "pvc"] = "s3"  # a replacement's weight path (time to serve)
    min_availability: float | None = Field(default=None, gt=0, lt=1)  # drop spot plans below
    layout: LayoutChoice = "auto"  # tp: TP x PP only; dp-ep: DP/EP layouts (MoE); auto: both


_FLAG = {
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "max_num_batched_tokens": "--max-num-batched-tokens",
    "max_nodes": "--max-nodes",
    "kv_dtype": "--kv-dtype",
    "isl": "--isl",
    "osl": "--osl",
    "max_tpot_ms": "--max-tpot-ms",
    "max_ttft_s": "--max-ttft-s",
    "min_output_tps": "--min-output-tps",
    "cpu_offload_gb": "--cpu-offload-gb",
    "min_availability": "--min-availability",
}


def workload_tokens(req: QuoteRequest) -> tuple[int, int, bool]:
    """(isl, osl, explicit). Without --isl/--osl: 8000 in / 1000 out, shrunk to fit --ctx."""
    explicit = req.isl is not None or req.osl is not None
    osl = req.osl or min(1000, max(1, req.ctx // 8))
    isl = req.isl or max(0, min(8000, req.ctx - osl))
    if explicit and isl + osl > req.ctx:
        raise UsageError(
            f"--isl {isl} + --osl {osl} = {isl + osl} tokens exceed --ctx {req.ctx}: "
            "a request must fit the context"
        )
    return isl, osl, explicit


def make_request(**fields: object) -> QuoteRequest:
    """Build a QuoteRequest, turning pydantic's report into one line that names the flag."""
    try:
        return QuoteRequest(**fields)  # type: ignore[arg-type]
    except ValidationError as e:
        err = e.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "request"
        if name == "weights":
            raise UsageError(
                f"unknown --weights {fields.get(name)!r}; allowed: s3, hub, pvc"
            ) from None
        if name == "layout":
            raise UsageError(
                f"unknown --layout {fields.get(name)!r}; allowed: tp, dp-ep, auto"
            ) from None
        if name == "objective":
            raise UsageError(
                f"unknown --objective {fields.get(name)!r}; allowed: usd-per-mtok, usd-per-hour"
            ) from None
        flag = _FLAG.get(name, "--" + name.replace("_", "-"))
        got = fields.get(name, err.get("input"))
        raise UsageError(f"{flag} {got!r}: {err['msg'].lower()}") from None
