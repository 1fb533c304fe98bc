"""review9 #7: deploy names a plan's layout as quote's table does (layouts.layout_label), in
the rendered manifest's header, the Pulumi stack's `plan` output and the pods' annotation and
shape label; a DP8+EP8 plan said "TP1 x PP1" there.

Expected names by hand from the plan's vLLM flags: `--tensor-parallel-size 1
--data-parallel-size 8 --enable-expert-parallel` on one 8-GPU node is 8 data-parallel engines
with the experts spread over all 8 GPUs, which docs/quote.md's vocabulary names DP8+EP8; two
nodes of TP8 with `--pipeline-parallel-size 2` are TP8xPP2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from stack_harness import KIMI, TWO_NODE, PlanFile, StackRun, quote, run_stack

from provisioner import fleet
from stacks.options import DeployOptions
from stacks.render import write_render
from stacks.spec import build_spec

CASES = {
    # (quote, the workload's kind, the layout by hand, its label value, the plan's flags)
    "dp_ep": (
        [*KIMI, "--gpu", "H200", "--layout", "dp-ep", "--max-nodes", "1"],
        "Deployment",
        "DP8+EP8",
        "dp8-ep8",
        {"tp": 1, "dp": 8, "pp": 1, "ep": True},
    ),
    "tp_pp": (TWO_NODE, "LeaderWorkerSet", "TP8xPP2", "tp8xpp2", {"tp": 8, "dp": 1, "pp": 2}),
}


@pytest.fixture(scope="module")
def plan_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PlanFile]:
    tmp = tmp_path_factory.mktemp("layouts")
    return {name: quote(tmp, name, case[0]) for name, case in CASES.items()}


@pytest.fixture(scope="module")
def runs(plan_files: dict[str, PlanFile]) -> dict[str, StackRun]:
    return {name: run_stack(plan, DeployOptions()) for name, plan in plan_files.items()}


@pytest.mark.parametrize("name", CASES)
def test_render_pulumi_and_annotation_name_the_layout(
    name: str, plan_files: dict[str, PlanFile], runs: dict[str, StackRun], tmp_path: Path
) -> None:
    _args, kind, label, shape, flags = CASES[name]
    plan = plan_files[name].doc.plans[0]
    assert {k: getattr(plan, k) for k in flags} == flags  # the plan is the one named by hand
    # the manifest's header
    path = write_render(tmp_path, build_spec(plan_files[name].doc, DeployOptions()))
    text = path.read_text()
    header = text.splitlines()[1]
    assert f"({plan.gpus_per_node} x {plan.gpu}), {label}, {plan.market}," in header, header
    assert "TP1 x PP1" not in text and " x PP" not in header
    # the pods' annotation and shape label
    workload = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == kind)
    pod = (
        workload["spec"]["template"]
        if kind == "Deployment"
        else workload["spec"]["leaderWorkerTemplate"]["leaderTemplate"]
    )
    annotation = json.loads(pod["metadata"]["annotations"][fleet.PLAN_ANNOTATION])
    assert annotation["layout"] == label
    assert {k: annotation[k] for k in ("tp", "dp", "pp", "ep")} == {
        "ep": False,
        **flags,
    }
    assert pod["metadata"]["labels"][fleet.SHAPE] == shape
    # the Pulumi stack's `plan` output, under Pulumi's mocks
    out, secret = runs[name].outputs["plan"]
    assert not secret
    assert out.startswith(f"rank {plan.rank}: {plan.nodes} x {plan.instance_type} {label} ")
