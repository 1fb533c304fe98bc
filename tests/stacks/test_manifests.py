"""`--render` output, parsed back with the kubernetes client's models, for both plan shapes.

Expected numbers are worked out by hand from the plans (comments show the arithmetic); the
plans themselves come from the real planner (conftest.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from stack_harness import PlanFile, k8s_model

from stacks.options import DeployOptions
from stacks.render import write_render
from stacks.spec import build_spec

# Ours, on top of the plan's flags: KV dtype made explicit and the drain (default 90 s).
ADDED = ["--kv-cache-dtype", "auto", "--shutdown-timeout", "90"]


def render(tmp_path: Path, plan: PlanFile, **options: Any) -> dict[str, dict[str, Any]]:
    """Render through the same entry point as the CLI; return the documents by kind."""
    path = write_render(tmp_path / "out", build_spec(plan.doc, DeployOptions(**options)))
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left
    return {d["kind"]: d for d in docs}


def container(pod_template: Any) -> Any:
    (c,) = pod_template.spec.containers
    return c


def arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def prestop_seconds(c: Any) -> int:
    command = c.lifecycle.pre_stop._exec.command
    assert command[0] == "sleep"
    return int(command[1])


def test_one_node_is_a_deployment_running_the_plans_args(
    plans: dict[str, PlanFile], tmp_path: Path
) -> None:
    plan = plans["one"].doc.plans[0]
    assert (plan.nodes, plan.gpus_per_node, plan.tp * plan.pp) == (1, 8, 8)
    docs = render(tmp_path, plans["one"])
    assert set(docs) == {"Deployment", "Service", "PodDisruptionBudget"}
    dep = k8s_model(docs["Deployment"], "V1Deployment")
    c = container(dep.spec.template)

    assert c.image == "vllm/vllm-openai:v0.18.0"  # pinned, never :latest
    assert c.command == ["vllm", "serve"]
    assert c.args == plan.vllm_args + ADDED
    assert arg(c.args, "--tensor-parallel-size") == str(plan.tp)
    assert arg(c.args, "--pipeline-parallel-size") == str(plan.pp)
    assert arg(c.args, "--max-model-len") == "131072"  # 128k
    assert "--nnodes" not in c.args

    # The plan's node is gpu-h200-sxm_8gpu-128vcpu-1600gb: 90% of 128 vCPU and 1600 GiB.
    assert plan.instance_type == "gpu-h200-sxm_8gpu-128vcpu-1600gb"
    assert c.resources.requests == {"nvidia.com/gpu": "8", "cpu": "115", "memory": "1440Gi"}
    assert c.resources.limits == {"nvidia.com/gpu": "8", "memory": "1440Gi"}


def test_one_node_probes_shutdown_and_volumes(plans: dict[str, PlanFile], tmp_path: Path) -> None:
    docs = render(tmp_path, plans["one"])
    dep = k8s_model(docs["Deployment"], "V1Deployment")
    pod = dep.spec.template.spec
    c = container(dep.spec.template)

    assert c.startup_probe.http_get.path == "/health"
    assert c.liveness_probe.http_get.path == "/health"
    assert any("/v1/models" in part for part in c.readiness_probe._exec.command)
    # --weights hub, 594.2 GB of int4 weights (docs/recovery.md's hub column; this instance
    # type is not in the NIC table, so the measured Hub rate applies): 594.2 / 0.692 GB/s =
    # 859 s download + 594.2 / (8 x 1.80) = 41 s load + 60 engine + 113 cold compile + 44
    # graphs = 1,117 s in the container; x 2 = 2,235 s -> 224 x 10 s, and the API server's
    # engine timeout is the same budget.
    assert round(plans["one"].doc.model.weight_bytes / 1e9, 1) == 594.2
    assert (c.startup_probe.period_seconds, c.startup_probe.failure_threshold) == (10, 224)
    env = {e.name: e.value for e in c.env}
    assert 2230 <= int(env["VLLM_ENGINE_READY_TIMEOUT_S"]) <= 2240

    shutdown = int(arg(c.args, "--shutdown-timeout"))
    assert shutdown == 90
    assert pod.termination_grace_period_seconds >= shutdown + prestop_seconds(c)
    assert pod.termination_grace_period_seconds == 120  # 15 + 90 + 15: AWS's spot notice

    volumes = {v.name: v for v in pod.volumes}
    assert volumes["dshm"].empty_dir.medium == "Memory"
    assert volumes["hf-cache"].host_path.path == "/var/lib/prov/hf-cache"
    mounts = {m.mount_path: m.name for m in c.volume_mounts}
    assert mounts == {"/dev/shm": "dshm", "/root/.cache/huggingface": "hf-cache"}
    # Secrets only by reference, optional so that a render applies before they exist.
    refs = {e.name: e.value_from.secret_key_ref for e in c.env if e.value_from}
    assert {k: (r.name, r.optional) for k, r in refs.items()} == {
        "HF_TOKEN": ("kimi-k2-thinking-secrets", True),
        "VLLM_API_KEY": ("kimi-k2-thinking-secrets", True),
    }
    assert pod.node_selector is None  # kubeconfig target: any node with 8 free GPUs
    assert [(t.key, t.operator, t.effect) for t in pod.tolerations] == [
        ("nvidia.com/gpu", "Exists", "NoSchedule")
    ]


def test_service_is_private_and_the_pdb_covers_the_pods(
    plans: dict[str, PlanFile], tmp_path: Path
) -> None:
    docs = render(tmp_path, plans["one"])
    dep = k8s_model(docs["Deployment"], "V1Deployment")
    svc = k8s_model(docs["Service"], "V1Service")
    pdb = k8s_model(docs["PodDisruptionBudget"], "V1PodDisruptionBudget")
    pod_labels = dep.spec.template.metadata.labels

    assert svc.spec.type == "ClusterIP"
    assert [(p.port, p.target_port) for p in svc.spec.ports] == [(8000, "http")]
    assert svc.spec.selector.items() <= pod_labels.items()
    # one replica's pods may go (one node = one pod): a one-replica drain is never refused
    assert pdb.spec.max_unavailable == 1 and pdb.spec.min_available is None
    assert pdb.spec.selector.match_labels.items() <= pod_labels.items()


def test_public_adds_a_load_balancer(plans: dict[str, PlanFile], tmp_path: Path) -> None:
    docs = render(tmp_path, plans["one_aws"], public=True)
    svc = k8s_model(docs["Service"], "V1Service")
    assert svc.spec.type == "LoadBalancer"
    assert svc.metadata.annotations["service.beta.kubernetes.io/aws-load-balancer-type"] == "nlb"


def test_two_nodes_are_a_leader_worker_set(plans: dict[str, PlanFile], tmp_path: Path) -> None:
    plan = plans["two"].doc.plans[0]
    assert (plan.nodes, plan.gpus_per_node, plan.tp * plan.pp) == (2, 8, 16)
    docs = render(tmp_path, plans["two"])
    assert set(docs) == {"LeaderWorkerSet", "Service", "PodDisruptionBudget"}
    lws = docs["LeaderWorkerSet"]
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2  # one group = one replica = the plan's two nodes
    assert template["restartPolicy"] == "RecreateGroupOnPodRestart"
    leader = k8s_model(template["leaderTemplate"], "V1PodTemplateSpec")
    worker = k8s_model(template["workerTemplate"], "V1PodTemplateSpec")

    base = plan.vllm_args + ADDED
    assert arg(base, "--pipeline-parallel-size") == str(plan.pp)
    rendezvous = ["--master-addr", "$(LWS_LEADER_ADDRESS)", "--master-port", "29500"]
    assert container(leader).args == [*base, "--nnodes", "2", "--node-rank", "0", *rendezvous]
    assert container(worker).args == [
        *base,
        "--nnodes",
        "2",
        "--node-rank",
        "$(LWS_WORKER_INDEX)",
        *rendezvous,
        "--headless",
    ]
    for pod in (leader, worker):
        assert container(pod).resources.requests["nvidia.com/gpu"] == "8"
    # The leader drains for 90 s after its preStop; the workers it needs stay up meanwhile
    # (their preStop outlasts it) and are not killed before their own preStop ends.
    leader_stop = prestop_seconds(container(leader))
    worker_stop = prestop_seconds(container(worker))
    assert leader.spec.termination_grace_period_seconds >= 90 + leader_stop
    assert worker_stop >= leader_stop + 90
    assert worker.spec.termination_grace_period_seconds > worker_stop
    # Only the leader serves HTTP and is probed.
    assert container(leader).readiness_probe is not None
    assert container(worker).readiness_probe is None and container(worker).ports is None

    svc = k8s_model(docs["Service"], "V1Service")
    assert svc.spec.type == "ClusterIP"
    assert svc.spec.selector.items() <= leader.metadata.labels.items()
    assert not svc.spec.selector.items() <= worker.metadata.labels.items()
    pdb = k8s_model(docs["PodDisruptionBudget"], "V1PodDisruptionBudget")
    assert pdb.spec.max_unavailable == 2  # one whole group of two pods
    for pod in (leader, worker):
        assert pdb.spec.selector.match_labels.items() <= pod.metadata.labels.items()


def test_aws_target_pins_pods_to_the_stacks_gpu_pool(
    plans: dict[str, PlanFile], tmp_path: Path
) -> None:
    docs = render(tmp_path, plans["two_aws"])
    template = docs["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        assert template[role]["spec"]["nodeSelector"] == {"prov.dev/pool": "kimi-k2-thinking"}


def test_render_replaces_its_file_whole(plans: dict[str, PlanFile], tmp_path: Path) -> None:
    render(tmp_path, plans["two"])
    docs = render(tmp_path, plans["one"])  # same release name: the file is replaced
    assert "LeaderWorkerSet" not in docs


def test_round_trip_catches_a_misspelt_field(plans: dict[str, PlanFile], tmp_path: Path) -> None:
    dep = render(tmp_path, plans["one"])["Deployment"]
    dep["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 120
    with pytest.raises(AssertionError, match="unknown or mistyped"):
        k8s_model(dep, "V1Deployment")
