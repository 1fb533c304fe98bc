"""`prov quote --json` against the contract of DESIGN.md, and the invariants of its plans."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from pricing.offers import load_offers
from provisioner.cli.main import app
from provisioner.contract.document import Plan, PlanDocument, load_plan_document
from provisioner.core.offer import Offer, price_doubt
from provisioner.errors import UsageError


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def quote_json(args: list[str]) -> dict[str, Any]:
    result = _runner().invoke(app, ["quote", *args, "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


CASES: dict[str, str] = {
    "kimi-int4-128k-all": "-m moonshotai/Kimi-K2-Thinking -q int4 --ctx 128k --top 0",
    "kimi-int4-256k-dcp8": "-m moonshotai/Kimi-K2-Thinking -q int4 --ctx 256k --dcp 8 --top 20",
    "llama8b-bf16-32k": "-m meta-llama/Llama-3.1-8B -q bf16 --ctx 32k --top 200",
    "llama70b-fp8-kvfp8-conc4": (
        "-m meta-llama/Llama-3.1-70B -q fp8 --kv-dtype fp8 --ctx 128k --concurrency 4 --top 30"
    ),
    "deepseek-v3-spot": "-m deepseek-ai/DeepSeek-V3 --ctx 128k --market spot --top 50",
    "gpt-oss-120b-aws-gcp": "-m openai/gpt-oss-120b --ctx 64k --cloud aws,gcp --top 0",
    "scout-1m-on-demand": (
        "-m meta-llama/Llama-4-Scout-17B-16E-Instruct --ctx 1m --market on-demand --top 20"
    ),
    "glm-fp8-regions": "-m zai-org/GLM-4.5 -q fp8 --ctx 128k --region us-east-1,eastus2 --top 0",
    "qwen-gguf": "-m Qwen/Qwen3-235B-A22B -q q4_k_m --ctx 32k --top 20",
    "h100-only-2-nodes": "-m kimi-k2-thinking -q int4 --ctx 128k --gpu H100 --nodes 2 --top 0",
}


@pytest.fixture(scope="module", params=sorted(CASES))
def doc(request: pytest.FixtureRequest) -> tuple[dict[str, Any], PlanDocument]:
    raw = quote_json(CASES[request.param].split())
    return raw, PlanDocument.model_validate(raw)


@pytest.fixture(scope="module")
def offers_by_key() -> dict[tuple[str, str, str, str], Offer]:
    table = {(o.cloud, o.region, o.zone, o.instance_type): o for o in load_offers()}
    assert len(table) == len(load_offers()), "offers are not unique by cloud/region/zone/type"
    return table


def _offer(table: dict[tuple[str, str, str, str], Offer], p: Plan) -> Offer:
    key = (p.cloud, p.region, p.zone or "", p.instance_type)
    assert key in table, f"plan {p.rank} names no offer: {key}"
    return table[key]


def _arg(args: list[str], flag: str) -> str | None:
    if flag not in args:
        return None
    assert args.count(flag) == 1, f"{flag} given twice: {args}"
    i = args.index(flag)
    assert i + 1 < len(args), f"{flag} has no value: {args}"
    return args[i + 1]


# ---- the document itself --------------------------------------------------------------------


def test_document_has_plans_and_every_key_is_declared(
    doc: tuple[dict[str, Any], PlanDocument],
) -> None:
    raw, d = doc
    assert d.plans, "every case here has feasible plans"
    # The contract declares (and so type-checks) every key the planner emits: nothing may land
    # in the "extra" bucket. A new key in result_to_json/Plan.to_json belongs in contract.py.
    undeclared = {
        "top level": d.model_extra,
        "request": d.request.model_extra,
        "model": d.model.model_extra,
        "plans": {k: v for p in d.plans for k, v in (p.model_extra or {}).items()},
        "memory_gib_per_gpu": {
            k: v for p in d.plans for k, v in (p.memory_gib_per_gpu.model_extra or {}).items()
        },
        "rejected": {k: v for r in d.rejected for k, v in (r.model_extra or {}).items()},
    }
    undeclared = {where: sorted(keys) for where, keys in undeclared.items() if keys}
    assert not undeclared, f"keys missing from provisioner/contract/document.py: {undeclared}"
    # DESIGN.md's keys are present verbatim in the raw JSON, not filled by defaults.
    assert {"request", "model", "plans", "rejected", "prices_as_of"} <= raw.keys()
    assert {"id", "params_total", "params_active", "attention"} <= raw["model"].keys()
    design_plan_keys = {
        "rank", "cloud", "region", "zone", "instance_type", "gpu", "gpus_per_node", "nodes",
        "tp", "pp", "market", "usd_per_hour", "memory_gib_per_gpu", "kv_cache_tokens",
        "max_concurrent_full_ctx", "tokens_per_s", "usd_per_mtok", "vllm_args",
    }  # fmt: skip
    for p in raw["plans"]:
        assert design_plan_keys <= p.keys(), design_plan_keys - p.keys()
        assert {"weights", "kv_cache", "activations", "overhead", "free"} <= p[
            "memory_gib_per_gpu"
        ].keys()
    for r in raw["rejected"]:
        assert {"shape", "reason"} <= r.keys()


def test_ranks_are_1_to_n_and_the_objective_never_decreases(
    doc: tuple[dict[str, Any], PlanDocument],
) -> None:
    _, d = doc
    top = d.request.top
    assert d.choices is not None and d.headline is not None
    shown = [p for p in d.plans if not top or p.rank <= top]
    assert [p.rank for p in shown] == list(range(1, len(shown) + 1))
    assert len(shown) == len(d.plans)
    # beyond --top, the headline's picks (cheapest deployable / on-demand) ride separately
    assert {p.rank for p in d.headline_plans} <= set(d.headline.values())
    assert all(p.rank > len(shown) for p in d.headline_plans)
    if d.request.objective == "usd-per-hour" or d.model.engine == "llama.cpp":
        keys = [p.usd_per_hour for p in d.plans]
    else:
        keys = [p.usd_per_mtok or 0.0 for p in d.plans]
        # $/Mtok is $/h over the deployment's output tokens
        for p in d.plans:
            assert p.tokens_per_s and p.usd_per_mtok is not None
            assert p.usd_per_mtok == pytest.approx(
                p.usd_per_hour / (p.tokens_per_s * 3600) * 1e6, rel=2e-3
            )
    assert keys == sorted(keys)
    assert d.best is d.plans[0]
    assert d.feasible_plans is not None and d.feasible_plans >= d.choices >= len(shown)
    assert len(shown) == (d.choices if not top else min(top, d.choices))


def test_every_price_is_nodes_times_the_offer_price(
    doc: tuple[dict[str, Any], PlanDocument],
    offers_by_key: dict[tuple[str, str, str, str], Offer],
) -> None:
    _, d = doc
    for p in d.plans:
        o = _offer(offers_by_key, p)
        node_price = o.price(p.market)
        assert node_price is not None, f"plan {p.rank} on {p.market} has no such price"
        assert p.usd_per_hour == pytest.approx(p.nodes * node_price, abs=1e-4)
        assert p.usd_per_gpu_hour == pytest.approx(p.usd_per_hour / p.total_gpus, abs=1e-4)
        assert (p.gpu, p.gpus_per_node) == (o.gpu, o.gpus_per_node)
        assert (p.interconnect, p.fabric) == (o.interconnect, o.fabric)
        assert p.prices_as_of == o.prices_as_of
        assert p.price_flags == list(o.flags)
        assert price_doubt(o, p.market) is None, "a doubtful price was ranked"


def test_filters_are_respected(doc: tuple[dict[str, Any], PlanDocument]) -> None:
    _, d = doc
    req = d.request
    for p in d.plans:
        if req.market != "any":
            assert p.market == req.market
        if req.clouds:
            assert p.cloud in {c.lower() for c in req.clouds}
        if req.regions:
            wanted = {r.lower() for r in req.regions}
            assert p.region.lower() in wanted or (p.zone or "").lower() in wanted
        if req.gpus:
            assert any(p.gpu.lower().startswith(g.lower()) for g in req.gpus)
        if req.nodes:
            assert p.nodes == req.nodes
        else:
            assert p.nodes <= (req.max_nodes or 4)


def test_shapes_add_up_and_tp_stays_in_a_node(doc: tuple[dict[str, Any], PlanDocument]) -> None:
    _, d = doc
    for p in d.plans:
        assert p.tp * p.dp * p.pp == p.nodes * p.gpus_per_node
        # the planner's DP layouts: DP x EP (MoE), or a dense model's engines on one node
        assert p.ep or p.dp == 1 or (d.model.params_active == d.model.params_total and p.nodes == 1)
        assert p.gpus_per_node % p.tp == 0, "TP must stay inside a node"
        assert p.dcp == d.request.dcp
        if p.dcp > 1:
            assert p.tp % p.dcp == 0
        # without an explicit workload each request counts as --ctx tokens; one must fit
        assert p.max_concurrent_full_ctx >= (d.request.concurrency or 1)


def test_vllm_args_match_the_shape(doc: tuple[dict[str, Any], PlanDocument]) -> None:
    _, d = doc
    for p in d.plans:
        args = p.vllm_args
        if d.model.engine == "llama.cpp":
            assert args == []  # GGUF plans are memory-only estimates, not vLLM launches
            assert p.tp == 1
            continue
        assert _arg(args, "--model") == d.model.id
        assert _arg(args, "--tensor-parallel-size") == str(p.tp)
        assert _arg(args, "--pipeline-parallel-size") == str(p.pp)
        assert _arg(args, "--max-model-len") == str(d.request.ctx)
        assert _arg(args, "--gpu-memory-utilization") is not None
        dcp = _arg(args, "--decode-context-parallel-size")
        assert dcp == (str(p.dcp) if p.dcp > 1 else None)
        if d.request.kv_dtype == "fp8":
            assert _arg(args, "--kv-cache-dtype") == "fp8"


def test_memory_breakdown_adds_up(doc: tuple[dict[str, Any], PlanDocument]) -> None:
    _, d = doc
    util = d.request.gpu_memory_utilization or 0.9
    for p in d.plans:
        m = p.memory_gib_per_gpu
        assert m.device is not None and m.outside_budget is not None
        inside = m.weights + m.kv_cache + m.activations + m.overhead
        # vLLM's budget is util x device; the KV pool is what the rest leaves of it.
        assert inside == pytest.approx(util * m.device, abs=0.05)
        assert m.free == pytest.approx(m.device - util * m.device - m.outside_budget, abs=0.05)
        assert m.kv_cache > 0 and p.kv_cache_tokens > 0


def test_prices_as_of_is_the_oldest_date(doc: tuple[dict[str, Any], PlanDocument]) -> None:
    _, d = doc
    dated = [p.prices_as_of for p in d.plans if p.prices_as_of]
    if dated:
        assert d.prices_as_of is not None
        assert d.prices_as_of <= min(dated)


def test_rejections_name_real_offers(doc: tuple[dict[str, Any], PlanDocument]) -> None:
    from provisioner.core.layouts import Layout, layout_label

    raw, d = doc
    known = {(o.cloud, o.instance_type) for o in load_offers()}
    gguf = raw["request"]["quant"].lower().startswith(("q", "iq"))  # q4_k_m, iq2_xxs: llama.cpp
    for r in d.rejected:
        assert r.reason.strip()
        assert (r.cloud, r.instance_type) in known
        assert r.tp is not None and r.pp is not None
        # the shape's layout is named as the table names it (review7 #16)
        lay = Layout(r.tp, r.dp or 1, r.pp, bool(r.ep))
        assert r.shape.endswith(" " + layout_label(lay, engine="llama.cpp" if gguf else "vllm"))


def test_top_n_is_the_head_of_the_full_ranking() -> None:
    args = ["-m", "deepseek-ai/DeepSeek-V3", "--ctx", "32k", "--cloud", "aws,gcp,azure"]
    full = PlanDocument.model_validate(quote_json([*args, "--top", "0"]))
    top = PlanDocument.model_validate(quote_json([*args, "--top", "25"]))
    assert [p.usd_per_hour for p in top.plans] == [p.usd_per_hour for p in full.plans[:25]]


# ---- load_plan_document ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def kimi_raw() -> dict[str, Any]:
    return quote_json(["-m", "moonshotai/Kimi-K2-Thinking", "-q", "int4", "--ctx", "128k"])


def test_load_plan_document_round_trips(kimi_raw: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(kimi_raw), encoding="utf-8")
    d = load_plan_document(path)
    assert d.model.id == "moonshotai/Kimi-K2-Thinking"
    assert d.request.ctx == 131072
    assert len(d.plans) == 10
    assert json.loads(d.model_dump_json(exclude_unset=True)) == kimi_raw


def test_load_plan_document_keeps_unknown_keys(kimi_raw: dict[str, Any], tmp_path: Path) -> None:
    raw = copy.deepcopy(kimi_raw)
    raw["added_by_a_newer_prov"] = {"x": 1}
    raw["plans"][0]["ttft_ms"] = 120.0
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    d = load_plan_document(path)
    assert d.model_extra == {"added_by_a_newer_prov": {"x": 1}}
    assert d.plans[0].model_extra == {"ttft_ms": 120.0}


def _set(path: tuple[str | int, ...], value: Any) -> Any:
    def mutate(raw: dict[str, Any]) -> None:
        node: Any = raw
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return mutate


def _drop(path: tuple[str | int, ...]) -> Any:
    def mutate(raw: dict[str, Any]) -> None:
        node: Any = raw
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return mutate


BREAKAGES = {
    "no plans key": (_drop(("plans",)), "plans"),
    "no rejected key": (_drop(("rejected",)), "rejected"),
    "no prices_as_of": (_drop(("prices_as_of",)), "prices_as_of"),
    "no model id": (_drop(("model", "id")), "model.id"),
    "market unknown": (_set(("plans", 2, "market"), "preemptible"), "plans[2].market"),
    "market any": (_set(("plans", 0, "market"), "any"), "plans[0].market"),
    "price as string": (_set(("plans", 0, "usd_per_hour"), "12.5"), "plans[0].usd_per_hour"),
    "negative price": (_set(("plans", 0, "usd_per_hour"), -1.0), "plans[0].usd_per_hour"),
    "tp as string": (_set(("plans", 0, "tp"), "8"), "plans[0].tp"),
    "tp as bool": (_set(("plans", 0, "nodes"), True), "plans[0].nodes"),
    "tp*pp mismatch": (_set(("plans", 0, "tp"), 4), "plans[0]"),
    "tokens_per_s string": (_set(("plans", 0, "tokens_per_s"), "fast"), "tokens_per_s"),
    "no memory": (_drop(("plans", 1, "memory_gib_per_gpu")), "plans[1].memory_gib_per_gpu"),
    "no kv_cache": (_drop(("plans", 1, "memory_gib_per_gpu", "kv_cache")), "kv_cache"),
    "vllm_args not strings": (_set(("plans", 0, "vllm_args"), ["--tp", 8]), "vllm_args"),
    "date format": (_set(("prices_as_of",), "22/11/2026"), "prices_as_of"),
    "date not real": (_set(("prices_as_of",), "2026-02-30"), "prices_as_of"),
    "rejection reason missing": (_drop(("rejected", 0, "reason")), "rejected[0].reason"),
    "zone missing": (_drop(("plans", 0, "zone")), "plans[0].zone"),
}


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_load_plan_document_refuses_a_broken_contract(
    name: str, kimi_raw: dict[str, Any], tmp_path: Path
) -> None:
    mutate, where = BREAKAGES[name]
    raw = copy.deepcopy(kimi_raw)
    mutate(raw)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(UsageError) as info:
        load_plan_document(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg and where in msg, msg


def test_load_plan_document_accepts_nulls_the_contract_allows(
    kimi_raw: dict[str, Any], tmp_path: Path
) -> None:
    raw = copy.deepcopy(kimi_raw)
    raw["prices_as_of"] = None
    raw["plans"][0].update(zone=None, tokens_per_s=1234.5, usd_per_mtok=0.71)
    raw["plans"][1].update(usd_per_hour=3)  # an int is a fine JSON number for a float
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(raw), encoding="utf-8")
    d = load_plan_document(path)
    assert d.prices_as_of is None and d.plans[0].zone is None
    assert d.plans[0].tokens_per_s == 1234.5 and d.plans[1].usd_per_hour == 3.0


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        ("{", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "not a plan file"),
        ('"plan"', "not a plan file"),
        ('{"plans": []}', "schema_version"),
        ('{"schema_version": 3, "plans": []}', "newer prov"),
        ('{"schema_version": 1, "plans": []}', "older prov"),
        ('{"schema_version": 2, "plans": []}', "request"),
        (
            '{"schema_version": 2, "request": {"model": "x", "ctx": 1}, '
            '"model": {"id": "x", "params_total": 1, '
            '"params_active": 1, "attention": "gqa"}, "plans": [], "rejected": [], '
            '"prices_as_of": NaN}',
            "prices_as_of",
        ),
    ],
)
def test_load_plan_document_bad_files(content: str, expect: str, tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UsageError, match=expect) as info:
        load_plan_document(path)
    assert "\n" not in str(info.value)


def test_load_plan_document_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="cannot read"):
        load_plan_document(tmp_path / "missing.json")
    with pytest.raises(UsageError, match="cannot read"):
        load_plan_document(tmp_path)
    binary = tmp_path / "plan.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(UsageError, match="not UTF-8"):
        load_plan_document(binary)


def test_a_document_with_no_plans_is_valid(tmp_path: Path) -> None:
    args = "-m kimi-k2-thinking -q int4 --gpu L4 --max-nodes 1 --json"
    result = _runner().invoke(app, ["quote", *args.split()])
    assert result.exit_code == 1
    path = tmp_path / "plan.json"
    path.write_text(result.stdout, encoding="utf-8")
    d = load_plan_document(path)
    assert d.plans == [] and d.best is None and d.rejected


def test_quote_does_not_import_the_contract() -> None:
    """The contract (and its validators) stay off the `prov quote` hot path."""
    code = textwrap.dedent(
        """
        import sys
        from provisioner.cli.main import app
        try:
            app(["quote", "-m", "meta-llama/Llama-3.1-8B", "--ctx", "8k", "--json"])
        except SystemExit:
            pass
        print("contract-imported" if "provisioner.contract.document" in sys.modules else "clean",
              file=sys.stderr)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stderr.strip().endswith("clean"), out.stderr
