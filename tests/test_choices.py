"""Distinct choices, the headline and the 80-column table (issue 17), through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from provisioner.cli.main import app
from provisioner.contract.document import PlanDocument

KIMI = ["quote", "--model", "moonshotai/Kimi-K2-Thinking", "--quant", "int4", "--ctx", "128k"]
HEADER = (
    "cloud,region,zone,instance_type,gpu,gpus_per_node,gpu_memory_gib,vcpus,memory_gib,"
    "interconnect,fabric,ondemand_usd_per_hour,spot_usd_per_hour,prices_as_of,flags"
)


def run(*args: str, columns: int = 80) -> Result:
    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        runner = CliRunner()
    return runner.invoke(app, list(args), env={"COLUMNS": str(columns)})


def doc_of(*args: str) -> PlanDocument:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return PlanDocument.model_validate(json.loads(result.stdout))


def key(p: Any) -> tuple[Any, ...]:
    return (p.cloud, p.gpu, p.gpus_per_node, p.nodes, p.tp, p.pp, p.dcp, p.market)


def table_rows(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("# "))
    rows = []
    for ln in lines[start + 1 :]:
        if not ln.strip():
            break
        rows.append(ln)
    return rows


def test_readme_question_fits_80_columns_one_line_per_choice() -> None:
    result = run(*KIMI)
    assert result.exit_code == 0, result.stderr
    assert all(len(ln) <= 80 for ln in result.stdout.splitlines()), result.stdout
    rows = table_rows(result.stdout)
    assert [int(r.split()[0]) for r in rows] == list(range(1, 11))  # ten rows, one line each
    head = result.stdout.splitlines()
    assert any(ln.startswith("Cheapest:") for ln in head)
    assert any(ln.startswith("Deployable:") for ln in head)
    assert any(ln.startswith("On-demand:") for ln in head)
    # the concurrency column counts --ctx-sized requests and says so in its header
    assert "@128k" in next(ln for ln in head if ln.lstrip().startswith("# "))


def test_ten_distinct_choices() -> None:
    for market in ("any", "on-demand", "spot"):
        d = doc_of(*KIMI, "--market", market)
        keys = [key(p) for p in d.plans]
        assert len(keys) == 10 and len(set(keys)) == 10, (market, keys)


def test_the_concurrency_column_is_max_concurrent_full_ctx() -> None:
    d = doc_of(*KIMI)
    rows = table_rows(run(*KIMI).stdout)
    for p, row in zip(d.plans, rows, strict=False):
        assert row.split()[-1] == str(p.max_concurrent_full_ctx)


def test_all_zones_expands_and_agrees_with_the_counts() -> None:
    grouped = doc_of(*KIMI, "--top", "0")
    every = doc_of(*KIMI, "--top", "0", "--all-zones")
    assert len(every.plans) > len(grouped.plans)
    first = grouped.plans[0]
    places = {(p.zone or p.region) for p in every.plans if key(p) == key(first)}
    assert places == {first.zone or first.region, *first.other_places}
    assert (every.plans[0].usd_per_hour, key(every.plans[0])) == (
        first.usd_per_hour,
        key(first),
    )


def _flat(text: str) -> str:
    return " ".join(ln.strip() for ln in text.splitlines())


@pytest.mark.parametrize("all_zones", [False, True])
def test_the_price_date_and_counts_describe_the_rows_shown(all_zones: bool) -> None:
    # review7 #9: with --all-zones the footer and prices_as_of said 2026-04-02 (a grouped
    # choice's cheapest place) while every row shown was dated 2026-05-20
    flags = (*KIMI, *(["--all-zones"] if all_zones else []))
    d = doc_of(*flags)
    oldest = min(p.prices_as_of for p in d.plans if p.prices_as_of)
    assert d.prices_as_of == oldest
    table = _flat(run(*flags).stdout)
    what = "places (a choice at each region/zone)" if all_zones else "distinct choices"
    assert f"10 of {d.choices} {what}, oldest price shown {oldest}" in table
    assert (
        f"note: embedded price snapshot (taken into prov 2026-11-22); oldest price shown {oldest}"
        in table
    )
    assert ("--all-zones for every place" in table) is not all_zones


def test_wide_does_not_advertise_itself_or_abbreviate() -> None:
    # review7 #21: --wide ended with "--wide for full names ..." and "od = on-demand" while its
    # market column says "on-demand"
    out = run(*KIMI, "--wide").stdout
    assert "--wide for" not in out and "od = on-demand" not in out
    assert " on-demand " in out and "--top 0 for all" in out


def test_headline_on_demand_is_the_best_on_demand_quote() -> None:
    d = doc_of(*KIMI)
    od = doc_of(*KIMI, "--market", "on-demand").plans[0]
    assert d.headline is not None
    pick = next(
        p for p in [*d.plans, *d.headline_plans] if p.rank == d.headline["cheapest_on_demand"]
    )
    assert key(pick)[:-1] == key(od)[:-1] and pick.usd_per_hour == od.usd_per_hour


def test_vendor_filter_amd() -> None:
    d = doc_of(*KIMI, "--gpu", "amd")
    assert {p.gpu for p in d.plans} == {"MI300X"}
    assert all(p.deployable for p in d.plans)  # kubeconfig target, vLLM's ROCm image


def _csv(tmp_path: Path, *rows: str) -> Path:
    path = tmp_path / "offers.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


P5 = "aws,us-east-1,use1-az{z},{it},H100-SXM,8,80,192,2048,nvlink,efa,{od},,2026-05-01,"


def test_sku_aliases_of_one_machine_are_one_choice(tmp_path: Path) -> None:
    """Two names of one 8xH100 machine, two zones: one choice per node count, at the cheaper
    name; the other name and zone listed with it (hand-made file, prices chosen so)."""
    prices = _csv(
        tmp_path,
        P5.format(z=1, it="p5.48xlarge", od="98.32"),
        P5.format(z=2, it="p5.48xlarge-alias", od="90.00"),
    )
    d = doc_of(
        "quote",
        "--model",
        "meta-llama/Llama-3.1-70B",
        "--ctx",
        "8k",
        "--prices",
        str(prices),
        "--top",
        "0",
        "--layout",  # one layout: a dense DP layout on the same machine is another choice
        "tp",
    )
    one_node = [p for p in d.plans if p.nodes == 1]
    assert len(one_node) == 1
    p = one_node[0]
    assert (p.instance_type, p.zone, p.usd_per_hour) == ("p5.48xlarge-alias", "use1-az2", 90.0)
    assert p.instance_aliases == ["p5.48xlarge"] and p.other_places == ["use1-az1"]
    assert p.deployable is True  # an AWS region with two zones: EKS can run it


def test_deployable_marks_follow_the_deploy_rule(tmp_path: Path) -> None:
    """One AWS zone in a region (EKS needs two) is not deployable; the headline skips it."""
    prices = _csv(
        tmp_path,
        P5.format(z=1, it="p5.48xlarge", od="50.00"),
        "runpod,US-TX-1,,8x_H100_SXM,H100-SXM,8,80,192,2048,nvlink,,80.00,,2026-05-01,",
    )
    result = run(
        "quote",
        "--model",
        "meta-llama/Llama-3.1-70B",
        "--ctx",
        "8k",
        "--prices",
        str(prices),
        "--nodes",
        "1",
        "--layout",  # TP8 only: the dense DP layout would be a second plan per machine
        "tp",
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.match(r"Cheapest: +#1 8xH100 on-demand, aws use1-az1: \$50\.00/h", lines[2])
    assert re.match(r"Deployable: +#2 8xH100 on-demand, runpod US-TX-1: \$80\.00/h", lines[3])
    d = doc_of(
        "quote",
        "--model",
        "meta-llama/Llama-3.1-70B",
        "--ctx",
        "8k",
        "--prices",
        str(prices),
        "--nodes",
        "1",
        "--layout",  # TP8 only: the dense DP layout would be a second plan per machine
        "tp",
    )
    assert [p.deployable for p in d.plans] == [False, True]
    assert "two availability zones" in (d.plans[0].not_deployable_reason or "")


def _headline_deployable(stdout: str) -> str:
    """The 'Deployable:' headline line, unwrapped (continuations are indented)."""
    lines = stdout.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("Deployable:"))
    more = [ln.strip() for ln in lines[i + 1 :] if ln.startswith("  ")][:2]
    return " ".join([lines[i], *more])


def test_llama_cpp_plans_are_not_deployable_and_the_headline_says_why() -> None:
    result = run("quote", "--model", "meta-llama/Llama-3.1-70B", "--quant", "q4_k_m", "--ctx", "8k")
    assert result.exit_code == 0, result.stderr
    # review7 #10: it said "(prov deploy runs vLLM on NVIDIA and AMD GPUs)" for GPUs it deploys;
    # every choice here is a GGUF plan, so the reason is llama.cpp, for all of them
    line = _headline_deployable(result.stdout)
    assert re.match(r"Deployable: +none: runs on llama\.cpp", line), line
    assert "NVIDIA and AMD" not in line and " of " not in line


def test_none_deployable_names_the_commonest_reason_and_its_share(tmp_path: Path) -> None:
    """One AWS zone in the region (EKS needs two): the reason is the zones, not the GPU."""
    prices = _csv(
        tmp_path,
        P5.format(z=6, it="p5.48xlarge", od="50.00"),
        "aws,us-east-1,use1-az6,p5.4xlarge,H100-SXM,1,80,16,256,nvlink,efa,7.00,,2026-05-01,",
    )
    args = ("quote", "-m", "meta-llama/Llama-3.1-70B", "--ctx", "8k", "--prices", str(prices))
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    line = _headline_deployable(result.stdout)
    assert "EKS needs two availability zones" in line and "NVIDIA and AMD" not in line, line
    d = doc_of(*args, "--top", "0")
    # the same reason the JSON gives every choice (so no "(N of M)" share is printed)
    assert {p.not_deployable_reason for p in d.plans} == {
        "EKS needs two availability zones and prov knows one in this region"
    }
    assert " of " not in line


@pytest.mark.parametrize("columns", [80, 100, 120])
def test_every_line_fits(columns: int) -> None:
    result = run(*KIMI, "--market", "on-demand", columns=columns)
    assert max(len(ln) for ln in result.stdout.splitlines()) <= columns


def test_wide_shows_full_names() -> None:
    # the first plan's machine name, whole (the 80-column table shortens long names)
    top = json.loads(run(*KIMI, "--top", "1", "--json").stdout)["plans"][0]["instance_type"]
    assert len(top) > 20  # a name the narrow table would shorten
    result = run(*KIMI, "--wide", "--top", "1")
    assert top in result.stdout
    assert "TPOT ms" in result.stdout


def test_models_list_whole_ids_and_aliases() -> None:
    result = run("models", "list")
    assert result.exit_code == 0
    assert "meta-llama/Llama-4-Maverick-17B-128E-Instruct" in result.stdout  # never cut
    assert "llama-4-maverick-17b-128e-instruct" in result.stdout
    assert max(len(ln) for ln in result.stdout.splitlines()) <= 80
    rows = json.loads(run("models", "list", "--json").stdout)
    kimi = next(r for r in rows if r["id"] == "moonshotai/Kimi-K2-Thinking")
    assert kimi["aliases"] == ["kimi-k2-thinking"]


def test_readme_question_renders(tmp_path: Path) -> None:
    """Done-when of issue 17: `prov quote ... --json > plan.json && prov deploy --plan plan.json
    --render out/` works for the README's question (its best plan is an MI300X one)."""
    result = run(*KIMI, "--json")
    assert result.exit_code == 0, result.stderr
    plan = tmp_path / "plan.json"
    plan.write_text(result.stdout)
    out = tmp_path / "out"
    # the plan's weight path is s3 (quote's default); with no bucket named, deploy renders the
    # Hub path and says how to stream from a bucket
    rendered = run("deploy", "--plan", str(plan), "--render", str(out))
    assert rendered.exit_code == 0, rendered.stderr
    assert "--weights-bucket" in rendered.stderr
    # the headline's Deployable pick (rank 1's Azure spot price is an estimate: docs/prices.md)
    quoted = json.loads(result.stdout)
    rank = quoted["headline"]["cheapest_deployable"]
    assert f"Using rank {rank}, the best plan prov deploy can run" in rendered.stdout
    (manifest,) = out.glob("*.yaml")
    text = manifest.read_text()
    best = quoted["plans"][rank - 1]
    assert f"--tensor-parallel-size\n        - '{best['tp']}'" in text
    if best["gpu"] == "MI300X":
        assert "vllm/vllm-openai-rocm:" in text and "amd.com/gpu" in text


# vLLM's own default for GPUs of >= 70 GiB (H200): max_num_seqs 1024 (vllm/engine/arg_utils.py
# EngineArgs: default_max_num_seqs = {..., UsageContext.OPENAI_API_SERVER: 1024} for GPUs with
# >= 70 GiB; read in the ROCm/vllm mirror), so 2000 asked is more than one engine batches
LLAMA_2000 = [
    "quote",
    "-m",
    "llama-3.1-8b",
    "--concurrency",
    "2000",
    "--isl",
    "100",
    "--osl",
    "100",
]


def test_concurrency_above_max_num_seqs_is_said_not_silently_capped() -> None:
    # review7 #11: the header said "concurrency 2000", the JSON plan 1024, and nothing explained
    # TP x PP plans: one engine, one max_num_seqs (a DP8 layout batches 2,000 as 8 x 250)
    d = doc_of(*LLAMA_2000, "--gpu", "H200", "--top", "3", "--layout", "tp")
    assert {p.concurrency for p in d.plans} == {1024}
    [note] = [n for n in d.notes if n.startswith("--concurrency 2,000")]
    assert "max_num_seqs caps the batch at 1,024 requests in 3 of the 3 plans" in note
    assert "queue" in note and "TTFT shown excludes the wait" in note
    table = _flat(run(*LLAMA_2000, "--gpu", "H200", "--top", "3", "--layout", "tp").stdout)
    assert "note: --concurrency 2,000 is more than vLLM batches" in table


def test_concurrency_within_max_num_seqs_gets_no_note() -> None:
    args = [a if a != "2000" else "1000" for a in LLAMA_2000]
    d = doc_of(*args, "--gpu", "H200", "--top", "3")
    assert {p.concurrency for p in d.plans} == {1000}
    assert not [n for n in d.notes if "max_num_seqs" in n]


def _ethernet_warnings(*args: str) -> dict[str, set[str]]:
    result = run(*args, "--json", "--top", "0")
    assert result.exit_code == 0, result.stderr
    out: dict[str, set[str]] = {}
    for p in json.loads(result.stdout)["plans"]:
        for w in p["warnings"]:
            if "over ethernet" in w:
                out.setdefault(p["layout"], set()).add(w.split(": ", 1)[1])
    return out


def test_the_ethernet_warning_names_the_traffic_of_the_layout() -> None:
    # review7 #12: DP9+EP9 over nine 1-GPU nebius VMs was warned of "PP hand-offs", but it has
    # no PP: its traffic between nodes is the expert-parallel all-to-all of every MoE layer
    ep = _ethernet_warnings("quote", "-m", "kimi-k2-thinking", "--nodes", "9")
    assert ep["DP9+EP9"] == {"the EP all-to-all in every MoE layer over ethernet"}
    pp = _ethernet_warnings(
        "quote", "-m", "llama-3.1-70b", "--nodes", "2", "--layout", "tp", "--cloud", "nebius"
    )
    assert pp and all(lay.endswith("xPP2") for lay in pp)
    assert set().union(*pp.values()) == {"PP hand-offs between stages over ethernet"}
