"""DP / EP plans rendered by `prov deploy --render`, checked against vLLM v0.18.0's own parser.

tests/data/vllm_serve_flags_v0.18.0.txt is the list of option strings of the real `vllm serve`
parser of the pinned release (built on CPU from the PyPI wheel; its header says how). Every flag
a pod runs must be in it; the DP flags must be those of vLLM's multi-node DP recipe
(recipes moonshotai/Kimi-K2.md; docs/serving/data_parallel_deployment.md): the leader serves
the API, workers are --headless with --data-parallel-start-rank = index x local ranks.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from stack_harness import KIMI, PlanFile, quote

from stacks.options import DeployOptions
from stacks.render import write_render
from stacks.spec import build_spec
from stacks.vllm_argv import DP_RPC_PORT

FLAGS_FILE = Path(__file__).parents[1] / "data" / "vllm_serve_flags_v0.18.0.txt"


@cache
def vllm_flags() -> frozenset[str]:
    lines = FLAGS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(s for s in (x.strip() for x in lines) if s and not s.startswith("#"))


def unknown_flags(argv: list[str]) -> list[str]:
    """Option strings vLLM v0.18.0's parser would reject (its preprocessing: _ -> -, =value)."""
    bad = []
    for tok in argv:
        if not tok.startswith("-") or re.fullmatch(r"-\d+(\.\d+)?", tok):
            continue
        name = tok.split("=", 1)[0]
        if name.startswith("--"):
            name = "--" + name[2:].replace("_", "-")
        if name not in vllm_flags():
            bad.append(tok)
    return bad


def value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


@pytest.fixture(scope="module")
def dp_plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PlanFile]:
    tmp = tmp_path_factory.mktemp("dp_plans")
    return {
        "one": quote(tmp, "one", [*KIMI, "--gpu", "H200", "--nodes", "1", "--layout", "dp-ep"]),
        # a dense model's DP layout (independent engines, no EP): --layout dp, one node
        "dense": quote(
            tmp,
            "dense",
            [
                *("quote", "-m", "meta-llama/Llama-3.1-8B", "--gpu", "H200", "--cloud", "aws"),
                *("--layout", "dp", "--ctx", "32k", "--weights", "hub", "--json"),
            ],
        ),
        "two": quote(
            tmp,
            "two",
            [*KIMI, "--gpu", "H100-SXM", "--nodes", "2", "--market", "spot", "--layout", "dp-ep"],
        ),
    }


def render(tmp_path: Path, plan: PlanFile) -> dict[str, Any]:
    path = write_render(tmp_path / "out", build_spec(plan.doc, DeployOptions()))
    return {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}


def worker_argv(command: list[str], args: list[str], index: int, leader: str) -> list[str]:
    """What a worker pod runs: Kubernetes expands $(VAR) and $$, then /bin/sh -c runs the
    script with $0 = command[3] and "$@" = args."""

    def k8s(s: str) -> str:
        return s.replace("$(LWS_LEADER_ADDRESS)", leader).replace("$$", "$")

    assert command[:2] == ["/bin/sh", "-c"]
    script = k8s(command[2])
    script = re.sub(
        r"\$\(\(LWS_WORKER_INDEX \* (\d+)\)\)", lambda m: str(index * int(m[1])), script
    )
    words = shlex.split(script)
    assert words[:3] == ["exec", "vllm", "serve"]
    i = words.index("$@")
    return ["vllm", "serve", *words[3:i], *[k8s(a) for a in args], *words[i + 1 :]]


def test_the_flag_list_is_vllms(dp_plans: dict[str, PlanFile]) -> None:
    # a few flags every vLLM since 0.9 has, and one it never had: the check can fail
    assert {"--data-parallel-size", "--enable-expert-parallel", "--headless"} <= vllm_flags()
    assert unknown_flags(["--data-parallel-sise", "8"]) == ["--data-parallel-sise"]
    assert unknown_flags(["--max_model_len=8192", "--tensor-parallel-size", "8"]) == []


def test_one_node_dp_ep_runs_the_recipe_flags(
    dp_plans: dict[str, PlanFile], tmp_path: Path
) -> None:
    plan = dp_plans["one"].doc.plans[0]
    assert (plan.nodes, plan.ep, plan.tp * plan.dp, plan.pp) == (1, True, 8, 1)
    docs = render(tmp_path, dp_plans["one"])
    assert "LeaderWorkerSet" not in docs
    (c,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["vllm", "serve"]
    argv = c["args"]
    assert unknown_flags(argv) == []
    assert value(argv, "--data-parallel-size") == str(plan.dp)
    assert value(argv, "--tensor-parallel-size") == str(plan.tp)
    assert "--enable-expert-parallel" in argv
    assert not {"--nnodes", "--headless", "--data-parallel-address"} & set(argv)


def test_one_node_dense_dp_runs_without_expert_parallel(
    dp_plans: dict[str, PlanFile], tmp_path: Path
) -> None:
    plan = dp_plans["dense"].doc.plans[0]
    # 8B on 8 x H200: eight TP1 engines (tests/test_dense_dp.py derives why DP8 ranks first)
    assert (plan.nodes, plan.tp, plan.dp, plan.pp, plan.ep) == (1, 1, 8, 1, False)
    docs = render(tmp_path, dp_plans["dense"])
    assert "LeaderWorkerSet" not in docs
    (c,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["vllm", "serve"]
    argv = c["args"]
    assert unknown_flags(argv) == []
    assert value(argv, "--data-parallel-size") == "8"
    assert value(argv, "--tensor-parallel-size") == "1"
    assert "--enable-expert-parallel" not in argv
    assert not {"--nnodes", "--headless", "--data-parallel-address"} & set(argv)


def test_two_node_dp_renders_vllms_multi_node_dp_flags(
    dp_plans: dict[str, PlanFile], tmp_path: Path
) -> None:
    plan = dp_plans["two"].doc.plans[0]
    assert (plan.nodes, plan.gpus_per_node, plan.ep) == (2, 8, True)
    local = plan.dp // 2  # hand: DP ranks per node = 8 GPUs / TP
    assert local * plan.tp == 8
    docs = render(tmp_path, dp_plans["two"])
    tmpl = docs["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]
    (lead,) = tmpl["leaderTemplate"]["spec"]["containers"]
    (work,) = tmpl["workerTemplate"]["spec"]["containers"]

    assert lead["command"] == ["vllm", "serve"]
    leader = lead["args"]
    assert unknown_flags(leader) == []
    assert value(leader, "--data-parallel-size") == str(plan.dp)
    assert value(leader, "--data-parallel-size-local") == str(local)
    assert value(leader, "--data-parallel-address") == "$(LWS_LEADER_ADDRESS)"
    assert value(leader, "--data-parallel-rpc-port") == str(DP_RPC_PORT)
    assert "--headless" not in leader and "--data-parallel-start-rank" not in leader
    assert not {"--nnodes", "--node-rank", "--master-addr"} & set(leader)  # TP/PP-only flags

    worker = worker_argv(work["command"], work["args"], index=1, leader="10.0.0.1")
    assert unknown_flags(worker) == []
    assert value(worker, "--data-parallel-start-rank") == str(local)  # 1 x local
    assert value(worker, "--data-parallel-address") == "10.0.0.1"
    assert "--headless" in worker and "--enable-expert-parallel" in worker
    assert value(worker, "--data-parallel-size") == str(plan.dp)
    # a third node (index 2) would start at rank 2 x local
    third = worker_argv(work["command"], work["args"], index=2, leader="10.0.0.1")
    assert value(third, "--data-parallel-start-rank") == str(2 * local)


def test_plan_edited_to_drop_ep_is_refused(dp_plans: dict[str, PlanFile]) -> None:
    from provisioner.errors import UsageError

    doc = dp_plans["one"].doc
    plan = doc.plans[0].model_copy(update={"ep": False})
    edited = doc.model_copy(update={"plans": [plan]})
    with pytest.raises(UsageError, match="enable-expert-parallel"):
        build_spec(edited, DeployOptions())
