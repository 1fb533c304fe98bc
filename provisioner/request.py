"""QuoteRequest: the validated question `prov quote` answers."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provisioner.errors import UsageError

Market = Literal["any", "spot", "on-demand"]

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
    concurrency: int = Field(default=1, ge=1)
    dcp: int = Field(default=1, ge=1)
    max_nodes: int = Field(default=4, ge=1, le=64)
    nodes: int | None = Field(default=None, ge=1, le=64)
    market: Market = "any"
    clouds: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    gpus: tuple[str, ...] = ()
    top: int = Field(default=10, ge=0)
    max_interruption: int | None = Field(default=None, ge=0, le=100)


_FLAG = {
    "gpu_memory_utilization": "--gpu-memory-utilization",
    "max_num_batched_tokens": "--max-num-batched-tokens",
    "max_nodes": "--max-nodes",
    "kv_dtype": "--kv-dtype",
}


def make_request(**fields: object) -> QuoteRequest:
    """Build a QuoteRequest, turning pydantic's report into one line that names the flag."""
    try:
        return QuoteRequest(**fields)  # type: ignore[arg-type]
    except ValidationError as e:
        err = e.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "request"
        flag = _FLAG.get(name, "--" + name.replace("_", "-"))
        got = fields.get(name, err.get("input"))
        raise UsageError(f"{flag} {got!r}: {err['msg'].lower()}") from None
