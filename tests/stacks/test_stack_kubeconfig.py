"""The Pulumi program, kubeconfig target (VllmService only), under Pulumi's runtime mocks.

Plans quoted without --cloud: rank 1 is a Nebius node, so the stack deploys into an existing
cluster. Expected values come from the plan by hand, as in test_manifests.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pulumi.runtime import rpc
from stack_harness import (
    API_KEY,
    HF_TOKEN,
    PlanFile,
    StackRun,
    numbers_as_ints,
    run_stack,
    without_secrets,
)

from stacks.options import DeployOptions
from stacks.render import write_render
from stacks.spec import build_spec

ADDED = ["--kv-cache-dtype", "auto", "--shutdown-timeout", "90"]
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
LWS = "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"
SERVICE = "kubernetes:core/v1:Service"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
SECRET = "kubernetes:core/v1:Secret"


@pytest.fixture(scope="module")
def one(plans: dict[str, PlanFile]) -> StackRun:
    return run_stack(plans["one"], DeployOptions(), hf_token=HF_TOKEN)


@pytest.fixture(scope="module")
def two(plans: dict[str, PlanFile]) -> StackRun:
    return run_stack(plans["two"], DeployOptions(target="kubeconfig"))


def test_only_the_vllm_service_is_created(one: StackRun) -> None:
    assert not [r.typ for r in one.resources if not r.typ.startswith(("kubernetes:", "prov:"))]
    assert sorted(r.typ for r in one.resources) == sorted(
        ["prov:k8s:VllmService", SECRET, DEPLOYMENT, SERVICE, PDB]
    )
    # Children of the component (parent=self): their URNs carry its type.
    children = [u for u in one.urns if "prov:k8s:VllmService$" in u]
    assert len(children) == 4


def test_deployment_runs_the_plans_args_on_its_gpus(
    one: StackRun, plans: dict[str, PlanFile]
) -> None:
    plan = plans["one"].doc.plans[0]
    spec = one.one(DEPLOYMENT).inputs["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == plan.vllm_args + ADDED
    assert c["resources"]["requests"]["nvidia.com/gpu"] == "8"  # gpus_per_node
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert numbers_as_ints(spec["replicas"]) == 1
    shutdown = int(c["args"][c["args"].index("--shutdown-timeout") + 1])
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert numbers_as_ints(pod["terminationGracePeriodSeconds"]) >= shutdown + pre_stop


def test_pulumi_and_render_share_the_manifests(
    one: StackRun, two: StackRun, plans: dict[str, PlanFile], tmp_path: Path
) -> None:
    for run, name, kind in ((one, "one", DEPLOYMENT), (two, "two", LWS)):
        path = write_render(tmp_path / name, build_spec(plans[name].doc, DeployOptions()))
        rendered = {d["kind"]: d for d in yaml.safe_load_all(path.read_text()) if d}
        by_kind = {kind: rendered[kind.rsplit(":", 1)[1]], SERVICE: rendered["Service"]}
        by_kind[PDB] = rendered["PodDisruptionBudget"]
        for typ, doc in by_kind.items():
            inputs = run.one(typ).inputs
            assert numbers_as_ints(inputs["spec"]) == doc["spec"], typ
            assert inputs["metadata"] == doc["metadata"], typ


def test_no_public_endpoint_and_a_pdb(one: StackRun, two: StackRun) -> None:
    for run in (one, two):
        (svc,) = run.of(SERVICE)
        assert svc.inputs["spec"]["type"] == "ClusterIP"
        pdb = run.one(PDB).inputs["spec"]
        assert pdb["selector"]["matchLabels"]["app.kubernetes.io/instance"] == "kimi-k2-thinking"
    assert numbers_as_ints(one.one(PDB).inputs["spec"]["maxUnavailable"]) == 1
    assert numbers_as_ints(two.one(PDB).inputs["spec"]["maxUnavailable"]) == 2


def test_two_nodes_make_one_leader_worker_set_group(
    two: StackRun, plans: dict[str, PlanFile]
) -> None:
    plan = plans["two"].doc.plans[0]
    lws = two.one(LWS).inputs
    assert (lws["apiVersion"], lws["kind"]) == ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet")
    template = lws["spec"]["leaderWorkerTemplate"]
    assert numbers_as_ints(template["size"]) == plan.nodes == 2
    for role in ("leaderTemplate", "workerTemplate"):
        (c,) = template[role]["spec"]["containers"]
        assert c["args"][: len(plan.vllm_args) + 4] == plan.vllm_args + ADDED
        assert c["resources"]["requests"]["nvidia.com/gpu"] == "8"
    assert not two.of(DEPLOYMENT)


def test_secrets_stay_pulumi_secrets(one: StackRun, two: StackRun) -> None:
    # Nothing but Pulumi secrets holds the key or the token: not the pod spec, not an output.
    for run in (one, two):
        for r in run.resources:
            clear = json.dumps(without_secrets(r.inputs))
            assert API_KEY not in clear and HF_TOKEN not in clear, r.typ
    assert one.outputs["apiKey"] == (API_KEY, True)
    endpoint = "http://kimi-k2-thinking-api.default.svc.cluster.local:8000/v1"
    assert one.outputs["endpoint"] == (endpoint, False)
    data = one.one(SECRET).inputs["stringData"]
    assert rpc.is_rpc_secret(data)
    assert rpc.unwrap_rpc_secret(data) == {"VLLM_API_KEY": API_KEY, "HF_TOKEN": HF_TOKEN}
    without_token = two.one(SECRET).inputs["stringData"]
    assert rpc.is_rpc_secret(without_token)
    assert rpc.unwrap_rpc_secret(without_token) == {"VLLM_API_KEY": API_KEY}
    (c,) = one.one(DEPLOYMENT).inputs["spec"]["template"]["spec"]["containers"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "secretKeyRef" in str(e)}
    assert refs == {one.one(SECRET).inputs["metadata"]["name"]}


def test_kube_context_gets_its_own_provider(plans: dict[str, PlanFile]) -> None:
    run = run_stack(plans["one"], DeployOptions(kube_context="gpu-cluster"))
    provider = run.one("pulumi:providers:kubernetes", "kubeconfig")
    assert provider.inputs["context"] == "gpu-cluster"
    assert "pulumi:providers:kubernetes::kubeconfig::" in run.one(DEPLOYMENT).provider
