"""QuoteRequest checks its fields as the pydantic model it replaced did (strict, same words).

The request left pydantic so `prov quote` does not import it (a third of a cold quote). The
reference below is that model, field for field as it stood (provisioner/core/request.py before
the change); every bad input must get the same first error, and good ones the same dump.
"""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provisioner.core.request import QuoteRequest, make_request
from provisioner.errors import UsageError


class PydanticRequest(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")

    model: str = Field(min_length=1)
    quant: str = "auto"
    ctx: int = Field(gt=0)
    kv_dtype: str = "auto"
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    max_num_batched_tokens: int | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1)
    isl: int | None = Field(default=None, gt=0)
    osl: int | None = Field(default=None, gt=0)
    objective: Literal["usd-per-mtok", "usd-per-hour"] = "usd-per-mtok"
    max_tpot_ms: float | None = Field(default=None, gt=0)
    max_ttft_s: float | None = Field(default=None, gt=0)
    min_output_tps: float | None = Field(default=None, gt=0)
    cpu_offload_gb: float = Field(default=0.0, ge=0)
    explore_splits: bool = False
    dcp: int = Field(default=1, ge=1)
    max_nodes: int = Field(default=4, ge=1, le=64)
    nodes: int | None = Field(default=None, ge=1, le=64)
    market: Literal["any", "spot", "on-demand"] = "any"
    clouds: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    gpus: tuple[str, ...] = ()
    top: int = Field(default=10, ge=0)
    max_interruption: int | None = Field(default=None, ge=0, le=100)
    risk_adjusted: bool = False
    weights: Literal["s3", "hub", "pvc"] = "s3"
    min_availability: float | None = Field(default=None, gt=0, lt=1)
    layout: Literal["tp", "dp-ep", "auto"] = "auto"


NAN, INF = math.nan, math.inf
BAD: list[dict[str, Any]] = [
    {"model": ""},
    {"model": 3},
    {"quant": None},
    {"ctx": 0},
    {"ctx": -5},
    {"ctx": 1.0},
    {"ctx": "5"},
    {"ctx": True},
    {"ctx": None},
    {"kv_dtype": 1},
    {"gpu_memory_utilization": 0},
    {"gpu_memory_utilization": 1.5},
    {"gpu_memory_utilization": "0.5"},
    {"gpu_memory_utilization": True},
    {"gpu_memory_utilization": NAN},
    {"gpu_memory_utilization": INF},
    {"gpu_memory_utilization": -INF},
    {"max_num_batched_tokens": 0},
    {"concurrency": 0},
    {"concurrency": 1.5},
    {"isl": 0},
    {"isl": True},
    {"osl": -1},
    {"objective": "x"},
    {"objective": None},
    {"max_tpot_ms": 0},
    {"max_tpot_ms": NAN},
    {"max_ttft_s": -1.0},
    {"min_output_tps": -INF},
    {"cpu_offload_gb": -1},
    {"cpu_offload_gb": NAN},
    {"explore_splits": "yes"},
    {"explore_splits": 1},
    {"dcp": 0},
    {"max_nodes": 0},
    {"max_nodes": 65},
    {"nodes": 0},
    {"nodes": 65},
    {"market": "x"},
    {"market": None},
    {"clouds": ["aws"]},
    {"clouds": "aws"},
    {"clouds": ("aws", 1)},
    {"regions": ("a", 1, 2)},
    {"gpus": [1]},
    {"top": -1},
    {"top": None},
    {"max_interruption": -1},
    {"max_interruption": 101},
    {"risk_adjusted": 1},
    {"weights": "x"},
    {"min_availability": 0},
    {"min_availability": 1},
    {"min_availability": 1.0},
    {"min_availability": NAN},
    {"min_availability": INF},
    {"min_availability": -INF},
    {"layout": "x"},
    {"foo": 1},
    {"foo": 1, "ctx": 0},  # a field's error comes before an unknown field's
    {"ctx": 0, "model": ""},  # fields in order
    {"model": None},
]
GOOD: list[dict[str, Any]] = [
    {},
    {"gpu_memory_utilization": 1},  # an int for a float: kept as 1.0
    {"cpu_offload_gb": 2, "max_tpot_ms": INF},
    {"clouds": ("aws", "gcp"), "gpus": ("H200",), "regions": ()},
    {"concurrency": None, "nodes": 64, "max_interruption": 100, "top": 0},
    {"min_availability": 0.99, "weights": "hub", "layout": "dp-ep", "market": "on-demand"},
    {"objective": "usd-per-hour", "explore_splits": True, "risk_adjusted": True, "ctx": 10**12},
]


def _pydantic_error(fields: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as info:
        PydanticRequest(**fields)
    first = info.value.errors()[0]
    return str(first["loc"][0]), first["msg"]


@pytest.mark.parametrize("change", BAD, ids=repr)
def test_a_bad_field_gets_pydantics_first_error(change: dict[str, Any]) -> None:
    fields = {"model": "m", "ctx": 8192, **change}
    name, msg = _pydantic_error(fields)
    with pytest.raises(UsageError) as info:
        make_request(**fields)
    text = str(info.value)
    if name in ("weights", "layout", "objective"):  # named with their allowed values
        assert text.startswith(f"unknown --{name} ")
    else:
        assert text.endswith(f": {msg.lower()}"), (text, msg)
        assert text.startswith("--"), text


def test_a_missing_field_is_named() -> None:
    with pytest.raises(UsageError, match=r"^--model \{'ctx': 5\}: field required$"):
        make_request(ctx=5)
    with pytest.raises(UsageError, match=r"^--ctx \{'model': 'm'\}: field required$"):
        make_request(model="m")


@pytest.mark.parametrize("change", GOOD, ids=repr)
def test_a_good_request_dumps_as_pydantic_did(change: dict[str, Any]) -> None:
    fields = {"model": "m", "ctx": 8192, **change}
    ours = make_request(**fields)
    theirs = PydanticRequest(**fields)
    assert ours.model_dump(mode="json") == theirs.model_dump(mode="json")
    assert list(ours.model_dump(mode="json")) == list(theirs.model_dump(mode="json"))
    for name, value in theirs.model_dump().items():
        assert type(getattr(ours, name)) is type(value), name


def test_a_request_is_frozen_and_a_copy_is_checked_again() -> None:
    req = make_request(model="m", ctx=8192)
    with pytest.raises(AttributeError):
        req.top = 3  # type: ignore[misc]
    assert req.model_copy(update={"top": 0}).top == 0 and req.top == 10
    assert req == make_request(model="m", ctx=8192) and hash(req) == hash(req.model_copy(update={}))
    with pytest.raises(UsageError, match=r"^--top -1: input should be greater than or equal to 0$"):
        req.model_copy(update={"top": -1})
    with pytest.raises(UsageError, match=r"^--ctx 0: input should be greater than 0$"):
        QuoteRequest(model="m", ctx=0)


def test_prov_quote_imports_no_pydantic() -> None:
    """The reason QuoteRequest is no pydantic model: a cold `prov quote` must not import it
    (nor pandas); benchmarks/bench_quote.py times the difference."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from provisioner.cli.main import app\n"
        "r = CliRunner().invoke(app, ['quote', '--model', 'meta-llama/Llama-3.1-8B', "
        "'--ctx', '8k', '--top', '1', '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'pandas'}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_context_with_no_room_for_a_prompt_is_refused() -> None:
    # the default workload is osl = max(1, ctx // 8), isl = ctx - osl: at --ctx 1 that is 0 input
    # tokens, a request vLLM cannot serve; --ctx 2 is the smallest that holds 1 in + 1 out
    from provisioner.core.request import workload_tokens

    with pytest.raises(UsageError, match="--ctx 1 leaves no room for a prompt"):
        workload_tokens(make_request(model="m", ctx=1))
    assert workload_tokens(make_request(model="m", ctx=2)) == (1, 1, False)
    assert workload_tokens(make_request(model="m", ctx=16)) == (14, 2, False)
