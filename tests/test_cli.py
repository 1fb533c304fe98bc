"""The CLI boundary end to end (typer's CliRunner): the Kimi case, bad input, the catalog."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from provisioner.cli.main import app
from provisioner.contract.document import Plan, PlanDocument
from provisioner.core.catalog import catalog_ids

DATA = Path(__file__).resolve().parents[1] / "provisioner" / "data" / "models"
KIMI = ["quote", "--model", "moonshotai/Kimi-K2-Thinking", "--quant", "int4", "--ctx", "128k"]


def _runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return _runner().invoke(app, list(args), env=env)


def assert_one_line_error(result: Result, code: int) -> str:
    """Exit `code`, a single 'prov: error: ...' line on stderr, no traceback anywhere."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("prov: error: ")
    return lines[0]


def stderr_warnings(stderr: str) -> list[str]:
    """The 'prov: warning:' messages of stderr, each unwrapped (continuations are indented);
    a line that is neither is returned as is, so a caller's check sees it."""
    out: list[str] = []
    for ln in stderr.splitlines():
        if ln.startswith("  ") and out:
            out[-1] += " " + ln.strip()
        else:
            out.append(ln)
    return out


def only_price_age_warning(stderr: str) -> bool:
    """stderr holds one warning, the price-age one (wrapped: its continuations are indented)."""
    lines = stderr.splitlines()
    return (
        bool(lines)
        and lines[0].startswith("prov: warning: of ")
        and "prices shown" in lines[0]
        and all(ln.startswith("  ") for ln in lines[1:])
    )


# ---- the Kimi K2 Thinking case --------------------------------------------------------------


@pytest.fixture(scope="module")
def kimi_all() -> PlanDocument:
    # issue 2's view: every feasible shape ranked by $/h (largest TP per node count)
    result = run(*KIMI, "--objective", "usd-per-hour", "--json", "--top", "0")
    assert result.exit_code == 0, result.output
    # the only stderr: the price-age warning (the embedded catalogs are months old)
    assert only_price_age_warning(result.stderr)
    return PlanDocument.model_validate(json.loads(result.stdout))


def _shape(p: Plan) -> tuple[str, int, int, int, int]:
    return (p.gpu, p.gpus_per_node, p.nodes, p.tp, p.pp)


def test_kimi_exits_0_with_ten_plans() -> None:
    result = run(*KIMI, "--json")
    assert result.exit_code == 0, result.output
    doc = PlanDocument.model_validate(json.loads(result.stdout))
    assert len(doc.plans) == 10
    assert doc.request.ctx == 128 * 1024 and doc.model.attention == "mla"


def test_kimi_never_plans_one_node_of_8_h100(kimi_all: PlanDocument) -> None:
    # 594 GB of int4 weights / 8 + the replicated MLA projections do not fit 0.9 x 80 GiB.
    assert not [p for p in kimi_all.plans if p.gpu == "H100-SXM" and p.nodes == 1]
    refused = [
        r
        for r in kimi_all.rejected
        if r.gpu == "H100-SXM" and r.nodes == 1 and r.tp == 8 and r.pp == 1
    ]
    assert refused, "the 1-node 8xH100 TP8 shape must be listed as rejected"
    for r in refused:
        assert "8xH100-SXM" in r.shape and r.shape.endswith(" TP8")  # as the table names it
        assert "GiB" in r.reason and "weights" in r.reason, r.reason
    assert any(r.cloud == "aws" and r.instance_type == "p5.48xlarge" for r in refused)


@pytest.mark.parametrize(
    ("label", "match"),
    [
        ("1 node of 8xH200", lambda p: _shape(p) == ("H200-SXM", 8, 1, 8, 1)),
        ("2 nodes of 8xH100, TP8xPP2", lambda p: _shape(p) == ("H100-SXM", 8, 2, 8, 2)),
        ("multi-node L40S", lambda p: p.gpu == "L40S" and p.nodes > 1),
        ("multi-node A100", lambda p: p.gpu.startswith("A100") and p.nodes > 1),
    ],
)
def test_kimi_plans_include_shape_on_both_markets(
    kimi_all: PlanDocument, label: str, match: Any
) -> None:
    markets = {p.market for p in kimi_all.plans if match(p)}
    assert markets == {"spot", "on-demand"}, f"{label}: found on {markets or 'no market'}"


def test_kimi_first_plan_is_the_cheapest(kimi_all: PlanDocument) -> None:
    cheapest = min(p.usd_per_hour for p in kimi_all.plans)
    assert kimi_all.plans[0].usd_per_hour == cheapest
    top = PlanDocument.model_validate(json.loads(run(*KIMI, "--json").stdout))
    assert top.plans[0].usd_per_hour == cheapest


def test_kimi_table_output() -> None:
    result = run(*KIMI, "--top", "3")
    assert result.exit_code == 0, result.output
    assert "Kimi-K2-Thinking" in result.stdout
    assert "distinct choices" in result.stdout
    # stderr: the price-age warning, then the shown plans' warnings, each naming its rows
    # (review7 #29, #31); stdout has no warning line
    price, *plans = stderr_warnings(result.stderr)
    assert price.startswith("prov: warning: of 3 prices shown"), price
    assert plans and all(re.match(r"prov: warning: #[1-3](, #[1-3])*: ", w) for w in plans), plans
    assert "warning" not in result.stdout


def test_nothing_fits_exits_1_and_still_prints_the_rejections() -> None:
    result = run(*KIMI, "--gpu", "L4", "--max-nodes", "1", "--json")
    line = assert_one_line_error(result, 1)
    assert "no offer can run" in line
    doc = PlanDocument.model_validate(json.loads(result.stdout))
    assert doc.plans == []
    assert doc.rejected and all(r.gpu == "L4" and r.nodes == 1 for r in doc.rejected)


def test_nothing_fits_in_table_mode_points_at_show_rejected() -> None:
    result = run(*KIMI, "--gpu", "L4", "--max-nodes", "1")
    line = assert_one_line_error(result, 1)
    assert "--show-rejected" in line


# ---- bad input: exit 2, one line, no traceback ----------------------------------------------


def _bad_json(tmp: Path) -> str:
    path = tmp / "bad" / "config.json"
    path.parent.mkdir()
    path.write_text('{"model_type": "llama", "hidden_size": 4096,', encoding="utf-8")
    return str(path)


def _partial_json(tmp: Path) -> str:
    cfg = json.loads((DATA / "meta-llama__Llama-3.1-8B.json").read_text(encoding="utf-8"))
    del cfg["num_hidden_layers"]
    path = tmp / "partial.json"
    path.write_text(json.dumps(cfg), encoding="utf-8")
    return str(path)


BAD_INPUT: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "unknown model": (["-m", "kimi-k2-thinkin"], ("kimi-k2-thinkin", "Kimi-K2-Thinking")),
    "missing config path": (["-m", "./no/such/config.json"], ("no such file",)),
    "int5": (["-m", "kimi-k2-thinking", "-q", "int5"], ("int5", "int4", "--quant")),
    "ctx 12q": (["-m", "kimi-k2-thinking", "--ctx", "12q"], ("--ctx", "12q", "128k")),
    "ctx -5": (["-m", "kimi-k2-thinking", "--ctx", "-5"], ("--ctx", "-5")),
    "ctx 0": (["-m", "kimi-k2-thinking", "--ctx", "0"], ("--ctx", "positive")),
    "ctx 1.5": (["-m", "kimi-k2-thinking", "--ctx", "1.5"], ("--ctx", "whole")),
    "ctx above max": (["-m", "meta-llama/Llama-3.1-8B", "--ctx", "1m"], ("131072",)),
    "unknown cloud": (["-m", "kimi-k2-thinking", "--cloud", "nocloud"], ("nocloud", "aws")),
    "unknown gpu": (["-m", "kimi-k2-thinking", "--gpu", "X999"], ("X999", "H100-SXM")),
    "gmu 0": (["-m", "kimi-k2-thinking", "--gpu-memory-utilization", "0"],
              ("--gpu-memory-utilization",)),
    "gmu 1.5": (["-m", "kimi-k2-thinking", "--gpu-memory-utilization", "1.5"],
                ("--gpu-memory-utilization",)),
    "concurrency -1": (["-m", "kimi-k2-thinking", "--concurrency", "-1"], ("--concurrency",)),
    "unknown market": (["-m", "kimi-k2-thinking", "--market", "cheap"], ("cheap", "spot")),
    "unknown kv dtype": (["-m", "kimi-k2-thinking", "--kv-dtype", "int3"], ("--kv-dtype",)),
    "max nodes 0": (["-m", "kimi-k2-thinking", "--max-nodes", "0"], ("--max-nodes",)),
    "explain with json": (["-m", "kimi-k2-thinking", "--explain", "--json"],
                          ("--explain", "--json", "use one")),
}  # fmt: skip


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
@pytest.mark.parametrize("name", sorted(BAD_INPUT))
def test_bad_input_exits_2_with_one_line(name: str, as_json: bool) -> None:
    args, needles = BAD_INPUT[name]
    result = run("quote", *args, *(["--json"] if as_json else []))
    line = assert_one_line_error(result, 2)
    for needle in needles:
        assert needle in line, (needle, line)
    assert result.stdout == ""  # nothing half-printed


def test_unknown_model_suggests_each_close_match_once() -> None:
    line = assert_one_line_error(run("quote", "-m", "kimi-k2-thinkin"), 2)
    assert "did you mean" in line
    hint = line.split("did you mean", 1)[1].split("?", 1)[0]
    names = [n.strip() for n in hint.split(",")]
    assert names[0] == "moonshotai/Kimi-K2-Thinking"
    assert len(names) == len(set(names)), f"duplicate suggestions: {names}"


def test_malformed_config_json_exits_2(tmp_path: Path) -> None:
    path = _bad_json(tmp_path)
    line = assert_one_line_error(run("quote", "-m", path, "--ctx", "8k"), 2)
    assert path in line and "not valid JSON" in line
    # the folder holding it is read the same way
    line = assert_one_line_error(run("quote", "-m", str(Path(path).parent), "--ctx", "8k"), 2)
    assert "not valid JSON" in line


def test_partial_config_json_exits_2(tmp_path: Path) -> None:
    line = assert_one_line_error(run("quote", "-m", _partial_json(tmp_path), "--ctx", "8k"), 2)
    assert "num_hidden_layers" in line


@pytest.mark.parametrize("content", ["[]", '"config"', "null"])
def test_config_json_that_is_not_an_object_exits_2(content: str, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(content, encoding="utf-8")
    line = assert_one_line_error(run("quote", "-m", str(path)), 2)
    assert "JSON object" in line


def test_click_usage_errors_exit_2_without_traceback() -> None:
    for args in (["quote"], ["quote", "-m", "kimi-k2-thinking", "--top", "many"], ["nope"]):
        result = run(*args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output


def test_debug_after_the_command_says_where_it_goes() -> None:
    # review7 #19: "No such option: --debug (Possible options: --wide)" did not say that --debug
    # is prov's own option, given before the command
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "provisioner.cli.main", "quote", "-m", "llama-3.1-8b", "--debug"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "prov: error: --debug goes before the command: prov --debug quote ..."
    ]


def test_bad_price_file_exits_2(tmp_path: Path) -> None:
    prices = tmp_path / "offers.csv"
    prices.write_text("cloud,region\naws,us-east-1\n", encoding="utf-8")
    line = assert_one_line_error(run("quote", "-m", "kimi-k2-thinking", "--prices", str(prices)), 2)
    assert str(prices) in line


# ---- the model catalog ----------------------------------------------------------------------


def test_models_list() -> None:
    result = run("models", "list", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for mid in catalog_ids():
        assert mid in result.stdout
    rows = json.loads(run("models", "list", "--json").stdout)
    assert [r["id"] for r in rows] == list(catalog_ids())
    kimi = next(r for r in rows if r["id"] == "moonshotai/Kimi-K2-Thinking")
    assert kimi["attention"] == "mla" and kimi["layers"] == 61
    assert kimi["params_total"] == pytest.approx(1.03e12, rel=0.01)


def test_models_show_kimi() -> None:
    result = run("models", "show", "kimi-k2-thinking")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("moonshotai/Kimi-K2-Thinking")
    assert "MLA" in out and "70,272 B/token" in out
    info = json.loads(run("models", "show", "kimi-k2-thinking", "--json").stdout)
    assert info["id"] == "moonshotai/Kimi-K2-Thinking"
    assert info["kv_bytes_per_token"] == 70272
    assert info["experts"]["routed"] == 384


def test_models_show_a_snapshot_folder(tmp_path: Path) -> None:
    folder = tmp_path / "Llama-3.1-8B"
    folder.mkdir()
    (folder / "config.json").write_bytes((DATA / "meta-llama__Llama-3.1-8B.json").read_bytes())
    result = run("models", "show", str(folder))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Llama-3.1-8B")
    assert "8.03B total" in result.stdout
    mine = json.loads(run("models", "show", str(folder), "--json").stdout)
    ref = json.loads(run("models", "show", "meta-llama/Llama-3.1-8B", "--json").stdout)
    for key in ("params_total", "params_active", "layers", "kv_bytes_per_token", "weight_bytes"):
        assert mine[key] == ref[key], key
    # and the folder quotes like the catalog entry
    plan = run("quote", "-m", str(folder), "--ctx", "8k", "--json", "--top", "1")
    assert plan.exit_code == 0, plan.output
    assert json.loads(plan.stdout)["plans"][0]["vllm_args"]


def test_models_show_errors(tmp_path: Path) -> None:
    assert "no config.json" in assert_one_line_error(run("models", "show", str(tmp_path)), 2)
    assert "did you mean" in assert_one_line_error(run("models", "show", "llama-3.1-8"), 2)
    line = assert_one_line_error(run("models", "show", "kimi-k2-thinking", "-q", "int5"), 2)
    assert "int5" in line


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and result.stdout.startswith("prov ")


def _command_paths() -> list[list[str]]:
    """Every command and subcommand of the app, as the words that name it."""
    import typer.main

    out: list[list[str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        out.append(path)
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return out


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "prov")
def test_every_help_renders_in_80_columns(path: list[str]) -> None:
    """typer renders help text as rich markup: a '[/...]' in it ('s3://BUCKET[/PREFIX]' once)
    is a closing tag and crashed 'prov deploy --help' with a traceback."""
    res = _runner().invoke(app, [*path, "--help"], terminal_width=80, env={"COLUMNS": "80"})
    assert res.exit_code == 0 and res.exception is None, res.output
    assert "Usage:" in res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80


@pytest.mark.parametrize("path", [["quote"], ["prices", "show"]])
def test_max_price_age_defaults_to_the_one_constant(path: list[str]) -> None:
    import typer.main

    from pricing.price_dates import DEFAULT_MAX_PRICE_AGE_DAYS

    cmd: Any = typer.main.get_command(app)
    for word in path:
        cmd = cmd.commands[word]
    (opt,) = [p for p in cmd.params if "--max-price-age" in p.opts]
    assert opt.default == DEFAULT_MAX_PRICE_AGE_DAYS == 90  # docs/prices.md: default 90
