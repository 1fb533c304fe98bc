"""QuoteRequest: the validated question `prov quote` answers."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from dataclasses import fields as dataclass_fields
from typing import Any, Literal

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


@dataclass(frozen=True)
class _Rule:
    """One field's check, as strict as pydantic's strict mode (no coercion but int -> float)."""

    kind: str  # str, int, float, bool, strs (a tuple of str) or one of `choices`
    optional: bool = False  # None allowed
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] = ()


# Every field of QuoteRequest, in its order, with its rule; the messages are pydantic's (the
# request was a pydantic model: tests/test_request.py checks both say the same).
_RULES: dict[str, _Rule] = {
    "model": _Rule("str", ge=1),  # ge on a str: at least that many characters
    "quant": _Rule("str"),
    "ctx": _Rule("int", gt=0),
    "kv_dtype": _Rule("str"),
    "gpu_memory_utilization": _Rule("float", gt=0, le=1),
    "max_num_batched_tokens": _Rule("int", optional=True, gt=0),
    "concurrency": _Rule("int", optional=True, ge=1),
    "isl": _Rule("int", optional=True, gt=0),
    "osl": _Rule("int", optional=True, gt=0),
    "objective": _Rule("literal", choices=("usd-per-mtok", "usd-per-hour")),
    "max_tpot_ms": _Rule("float", optional=True, gt=0),
    "max_ttft_s": _Rule("float", optional=True, gt=0),
    "min_output_tps": _Rule("float", optional=True, gt=0),
    "cpu_offload_gb": _Rule("float", ge=0),
    "explore_splits": _Rule("bool"),
    "dcp": _Rule("int", ge=1),
    "max_nodes": _Rule("int", ge=1, le=64),
    "nodes": _Rule("int", optional=True, ge=1, le=64),
    "market": _Rule("literal", choices=("any", "spot", "on-demand")),
    "clouds": _Rule("strs"),
    "regions": _Rule("strs"),
    "gpus": _Rule("strs"),
    "top": _Rule("int", ge=0),
    "max_interruption": _Rule("int", optional=True, ge=0, le=100),
    "risk_adjusted": _Rule("bool"),
    "weights": _Rule("literal", choices=("s3", "hub", "pvc")),
    "min_availability": _Rule("float", optional=True, gt=0, lt=1),
    "layout": _Rule("literal", choices=("tp", "dp-ep", "auto")),
}
_REQUIRED = ("model", "ctx")


def _num(x: float) -> str:
    return f"{x:g}"


def _problem(rule: _Rule, value: object) -> str | None:
    """Why `value` breaks `rule` (pydantic's wording), or None."""
    if value is None and rule.optional:
        return None
    kind = rule.kind
    if kind == "literal":
        if isinstance(value, str) and value in rule.choices:
            return None
        names = [f"'{c}'" for c in rule.choices]
        return f"Input should be {', '.join(names[:-1])} or {names[-1]}"
    if kind == "str":
        if not isinstance(value, str):
            return "Input should be a valid string"
        if rule.ge is not None and len(value) < rule.ge:
            return f"String should have at least {rule.ge:g} character"
        return None
    if kind == "bool":
        return None if isinstance(value, bool) else "Input should be a valid boolean"
    if kind == "strs":
        if not isinstance(value, tuple):
            return "Input should be a valid tuple"
        ok = all(isinstance(v, str) for v in value)
        return None if ok else "Input should be a valid string"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return (
            "Input should be a valid integer" if kind == "int" else "Input should be a valid number"
        )
    if kind == "int" and not isinstance(value, int):
        return "Input should be a valid integer"
    # pydantic checks the upper bounds first (it matters for NaN, which fails every bound)
    if rule.le is not None and not value <= rule.le:
        return f"Input should be less than or equal to {_num(rule.le)}"
    if rule.lt is not None and not value < rule.lt:
        return f"Input should be less than {_num(rule.lt)}"
    if rule.ge is not None and not value >= rule.ge:
        return f"Input should be greater than or equal to {_num(rule.ge)}"
    if rule.gt is not None and not value > rule.gt:
        return f"Input should be greater than {_num(rule.gt)}"
    return None


def _first_error(fields: dict[str, object]) -> tuple[str, str] | None:
    """(field, message) of the first problem in field order, then unknown fields; or None."""
    for name, rule in _RULES.items():
        if name not in fields:
            if name in _REQUIRED:
                return name, "Field required"
            continue
        problem = _problem(rule, fields[name])
        if problem:
            return name, problem
    for name in fields:
        if name not in _RULES:
            return name, "Extra inputs are not permitted"
    return None


@dataclass(frozen=True, kw_only=True)
class QuoteRequest:
    """Everything the planner needs; strict, immutable, and dumped into the JSON plan.

    A plain dataclass with pydantic's strict checks and messages (no pydantic on the quote path:
    its import costs a third of a cold `prov quote`)."""

    model: str
    quant: str = "auto"
    ctx: int
    kv_dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int | None = None  # None: vLLM's default for each shape's GPU
    concurrency: int | None = None  # None: 1 must fit; tok/s at saturation
    isl: int | None = None
    osl: int | None = None
    objective: Objective = "usd-per-mtok"
    max_tpot_ms: float | None = None
    max_ttft_s: float | None = None
    min_output_tps: float | None = None
    cpu_offload_gb: float = 0.0  # vLLM --cpu-offload-gb, per GPU
    explore_splits: bool = False  # rank every feasible TP x PP split by $/Mtok, not just TP=node
    dcp: int = 1
    max_nodes: int = 4
    nodes: int | None = None
    market: Market = "any"
    clouds: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    gpus: tuple[str, ...] = ()
    top: int = 10
    max_interruption: int | None = None
    risk_adjusted: bool = False  # rank spot plans by expected cost with restarts
    weights: Literal["s3", "hub", "pvc"] = "s3"  # a replacement's weight path (time to serve)
    min_availability: float | None = None  # drop spot plans below
    layout: LayoutChoice = "auto"  # tp: TP x PP only; dp-ep: DP layouts (EP for MoE); auto: both

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclass_fields(self)}
        err = _first_error(values)
        if err:
            raise _usage_error(values, *err)
        for name, rule in _RULES.items():  # a float field keeps an int as a float, as pydantic
            v = values[name]
            if rule.kind == "float" and isinstance(v, int):
                object.__setattr__(self, name, float(v))

    def model_dump(self, mode: str = "json") -> dict[str, Any]:
        """The fields in order, tuples as lists (the `request` of the JSON plan)."""
        out = {f.name: getattr(self, f.name) for f in dataclass_fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def model_copy(self, *, update: dict[str, Any]) -> QuoteRequest:
        """A copy with some fields replaced (checked again)."""
        return replace(self, **update)


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
    if isl < 1:  # the default workload shrank to no prompt: nothing vLLM could serve
        raise UsageError(
            f"--ctx {req.ctx} leaves no room for a prompt: a request needs at least 1 input "
            "and 1 output token (--ctx 2 or more)"
        )
    if explicit and isl + osl > req.ctx:
        raise UsageError(
            f"--isl {isl} + --osl {osl} = {isl + osl} tokens exceed --ctx {req.ctx}: "
            "a request must fit the context"
        )
    return isl, osl, explicit


def _usage_error(fields: dict[str, object], name: str, msg: str) -> UsageError:
    """One line naming the flag, as `prov quote` prints it."""
    if name == "weights":
        return UsageError(f"unknown --weights {fields.get(name)!r}; allowed: s3, hub, pvc")
    if name == "layout":
        return UsageError(
            f"unknown --layout {fields.get(name)!r}; allowed: tp, dp (or dp-ep), auto"
        )
    if name == "objective":
        return UsageError(
            f"unknown --objective {fields.get(name)!r}; allowed: usd-per-mtok, usd-per-hour"
        )
    flag = _FLAG.get(name, "--" + name.replace("_", "-"))
    got = fields.get(name, fields)  # a missing field: pydantic showed the whole input
    return UsageError(f"{flag} {got!r}: {msg.lower()}")


def make_request(**fields: object) -> QuoteRequest:
    """Build a QuoteRequest; a bad field is one line that names the flag."""
    err = _first_error(fields)
    if err:
        raise _usage_error(fields, *err)
    return QuoteRequest(**fields)  # type: ignore[arg-type]
