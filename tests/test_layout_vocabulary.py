"""One layout vocabulary in every view (review7 #16), and plan warnings on stderr naming their
rows (review7 #29, #31).

Expected labels are derived by hand from the shape asked for (vLLM recipes spell TP8, DP8+EP8;
2 nodes x 8 GPUs at TP8 leave PP2), never read back from the code.
"""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner, Result

from provisioner.cli.main import app
from provisioner.cli.quote_view import ranks_text
from provisioner.core.layouts import Layout, layout_label

ENV = {"COLUMNS": "80"}
# Llama-3.1-70B bf16 on exactly 2 nodes of 8 x H200, TP x PP only: TP8 per node, PP2 across
TWO_NODES = ["-m", "llama-3.1-70b", "--gpu", "H200", "--cloud", "aws", "--nodes", "2"]
TWO_NODES += ["--layout", "tp"]  # AWS sells H200 as p5en: 8 per node


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=ENV)


@pytest.mark.parametrize(
    ("layout", "dcp", "engine", "label"),
    [
        (Layout(8), 1, "vllm", "TP8"),
        (Layout(1), 1, "vllm", "TP1"),
        (Layout(8, 1, 2), 1, "vllm", "TP8xPP2"),
        (Layout(8), 2, "vllm", "TP8+DCP2"),  # DCP splits the KV inside TP: no extra GPUs
        (Layout(1, 8, 1, True), 1, "vllm", "DP8+EP8"),
        (Layout(4, 2, 1, True), 1, "vllm", "TP4xDP2+EP8"),
        (Layout(8, 1, 1, True), 1, "vllm", "TP8+EP8"),
        (Layout(1, 8), 1, "vllm", "DP8"),  # a dense model's eight engines
        (Layout(1, 1, 8), 1, "llama.cpp", "layers/8"),  # GGUF: llama.cpp's layer split
        (Layout(1, 1, 1), 1, "llama.cpp", "layers/1"),
    ],
)
def test_layout_label(layout: Layout, dcp: int, engine: str, label: str) -> None:
    assert layout_label(layout, dcp, engine) == label


def _table_layouts(stdout: str) -> dict[int, str]:
    """rank -> the layout cell of the quote table (the column under the 'layout' header)."""
    lines = stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if re.match(r"\s*# cloud:place", ln))
    start = lines[head].index("layout")
    out = {}
    for ln in lines[head + 1 :]:
        if not ln.strip():
            break
        out[int(ln.split()[0])] = ln[start:].split()[0]
    return out


def test_one_plan_has_one_label_in_table_explain_json_fit_and_deploy() -> None:
    table = run("quote", *TWO_NODES, "--top", "3", "--explain")
    assert table.exit_code == 0, table.output
    assert set(_table_layouts(table.stdout).values()) == {"TP8xPP2"}
    assert "8x2" not in table.stdout and "TP8 x PP2" not in table.stdout
    assert "\n  TP8xPP2: 16 GPUs; layers per stage" in table.stdout  # --explain's plan line

    doc = run("quote", *TWO_NODES, "--top", "3", "--json")
    assert doc.exit_code == 0, doc.output
    plans = json.loads(doc.stdout)["plans"]
    assert plans and {p["layout"] for p in plans} == {"TP8xPP2"}

    fit = run("fit", "-m", "llama-3.1-70b", "--gpu", "H200", "--tp", "8", "--pp", "2")
    assert fit.exit_code == 0, fit.output
    assert fit.stdout.splitlines()[1].startswith("  TP8xPP2, bf16")
    fit_args = ["fit", "-m", "llama-3.1-70b", "--gpu", "H200", "--tp", "8", "--pp", "2"]
    assert json.loads(run(*fit_args, "--json").stdout)["layout"] == "TP8xPP2"

    from provisioner.cli.deploy import _summary
    from provisioner.contract.document import PlanDocument

    plan = PlanDocument.model_validate(json.loads(doc.stdout)).plans[0]
    # the context deploy starts vLLM with: the quote's default --ctx, 32k = 32,768 tokens
    assert ", TP8xPP2, ctx 32,768, " in _summary(plan)


def test_dp_ep_label_is_the_same_in_table_and_fit() -> None:
    kimi = ["-m", "kimi-k2-thinking", "--ctx", "128k", "--gpu", "H200", "--layout", "dp-ep"]
    table = run("quote", *kimi, "--top", "3", "--cloud", "nebius")
    assert table.exit_code == 0, table.output
    assert _table_layouts(table.stdout)[1] == "DP8+EP8"
    fit = run("fit", "-m", "kimi-k2-thinking", "--gpu", "H200", "--tp", "1", "-dp", "8",
              "--enable-expert-parallel", "--ctx", "128k")  # fmt: skip
    assert fit.stdout.splitlines()[1].startswith("  DP8+EP8, int4")


def test_gguf_rows_say_layer_split_not_a_vllm_shape() -> None:
    # 4 x L4 (one g6.12xlarge): llama.cpp splits the layers over the 4 GPUs
    args = ["quote", "-m", "llama-3.1-70b", "-q", "q4_k_m", "--gpu", "L4", "--top", "3"]
    table = run(*args)
    assert table.exit_code == 0, table.output
    labels = _table_layouts(table.stdout)
    assert labels and all(re.fullmatch(r"layers/\d+", v) for v in labels.values()), labels
    assert "layers/4" in labels.values()
    plans = json.loads(run(*args, "--json").stdout)["plans"]
    assert {p["layout"] for p in plans} == set(labels.values())
    assert all(p["layout"] == f"layers/{p['gpus_per_node'] * p['nodes']}" for p in plans)


# ---- warnings: stderr, each naming its rows ---------------------------------------------


@pytest.mark.parametrize(
    ("ranks", "text"),
    [([1], "#1"), ([1, 9], "#1, #9"), ([3, 1, 2, 7], "#1-#3, #7"), ([2, 2, 4, 5], "#2, #4-#5")],
)
def test_ranks_text(ranks: list[int], text: str) -> None:
    assert ranks_text(ranks) == text


def test_plan_warnings_name_the_rows_they_are_about_on_stderr() -> None:
    # the README's first command: int4 MoE on ROCm warns about the MI300X rows only
    result = run("quote", "-m", "moonshotai/Kimi-K2-Thinking", "-q", "int4", "--ctx", "128k")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stdout  # stdout: the answer, pipeable
    rows = result.stdout.splitlines()
    mi300x = sorted(
        int(ln.split()[0]) for ln in rows if re.match(r"\s*\d+ ", ln) and "MI300X" in ln
    )
    assert mi300x, result.stdout
    text = " ".join(ln.strip() for ln in result.stderr.splitlines())
    want = ", ".join(f"#{r}" for r in mi300x)  # MI300X rows of the README example: #1, #9
    assert f"prov: warning: {want}: int4 MoE on ROCm" in text, text
    assert f"prov: warning: {want}: int4 on ROCm runs Triton kernels" in text
    assert all(len(ln) <= 80 for ln in result.stderr.splitlines())


def test_json_keeps_plan_warnings_in_the_document_and_stdout_pure_json() -> None:
    args = ["quote", "-m", "moonshotai/Kimi-K2-Thinking", "-q", "int4", "--ctx", "128k"]
    result = run(*args, "--json", "--gpu", "MI300X", "--top", "2")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # nothing but the document on stdout
    assert all(any("ROCm" in w for w in p["warnings"]) for p in doc["plans"])
    assert "ROCm" not in result.stderr  # the plans' warnings live in the document
