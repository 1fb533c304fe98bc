"""The Kubernetes manifests of a deployment, as plain dicts built from a DeploySpec.

The single source of truth: `prov deploy --render` dumps these as YAML and VllmService feeds
the same dicts to pulumi_kubernetes. Pure: no Pulumi, no Kubernetes client, no I/O.

One node: a Deployment. Several nodes: a LeaderWorkerSet (leaderworkerset.x-k8s.io/v1) whose
group is one replica of `nodes` pods. Every pod runs `vllm serve` with the plan's flags; the
leader adds `--nnodes N --node-rank 0 --master-addr $(LWS_LEADER_ADDRESS)` and serves HTTP,
each worker adds `--node-rank $(LWS_WORKER_INDEX) ... --headless` and joins it (vLLM's
multiprocessing multi-node mode: no Ray cluster to start or wait for). The LWS controller
injects LWS_LEADER_ADDRESS and LWS_WORKER_INDEX; Kubernetes expands $(VAR) in args.
"""

from __future__ import annotations

import json
import re
from typing import Any

from provisioner import fleet
from stacks import model_storage
from stacks.spec import MASTER_PORT, PORT, PRE_STOP_SECONDS, PROBE_PERIOD_SECONDS, DeploySpec
from stacks.vllm_argv import dp_node_args, serve_command

LWS_API = "leaderworkerset.x-k8s.io/v1"
CACHE_MOUNT = "/root/.cache/huggingface"  # HF_HOME inside the image
#: Weights cache on the node: survives pod restarts, so a recreated group skips the download.
HOST_CACHE_PATH = "/var/lib/prov/hf-cache"
SHM_SIZE = "16Gi"  # NCCL and vLLM's worker processes exchange tensors through /dev/shm
SECRET_KEYS = ("HF_TOKEN", "VLLM_API_KEY")
# Requests leave 10% of the node's CPU and RAM to the kubelet, the OS and DaemonSets.
NODE_SHARE = 0.9

# /v1/models needs the API key when one is set; an httpGet probe cannot read it from a Secret.
_MODELS_PROBE = (
    "import os, urllib.request as u; "
    f"u.urlopen(u.Request('http://127.0.0.1:{PORT}/v1/models', headers={{'Authorization': "
    "'Bearer ' + os.environ.get('VLLM_API_KEY', '')}), timeout=5)"
)

Manifest = dict[str, Any]


def service_name(spec: DeploySpec) -> str:
    # Not the workload's name: the LWS controller owns a headless Service of that name.
    return f"{spec.name}-api"


def secret_name(spec: DeploySpec) -> str:
    return f"{spec.name}-secrets"


def cluster_endpoint(spec: DeploySpec) -> str:
    """The in-cluster OpenAI-compatible base URL."""
    return f"http://{service_name(spec)}.{spec.namespace}.svc.cluster.local:{PORT}/v1"


def selector_labels(spec: DeploySpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": spec.name}


def common_labels(spec: DeploySpec) -> dict[str, str]:
    p = spec.plan
    shape = re.sub(r"[^a-z0-9]+", "-", spec.layout.lower())  # a label value: DP8+EP8 -> dp8-ep8
    return {
        **selector_labels(spec),
        "app.kubernetes.io/managed-by": "prov",
        fleet.MANAGED: fleet.MANAGED_VALUE,
        fleet.WORKLOAD_LABEL: fleet.WORKLOAD_VALUE,  # the daemon waits for these to be Ready
        fleet.GPU: p.gpu,
        fleet.SHAPE: shape,
    }


def _metadata(spec: DeploySpec, name: str) -> Manifest:
    return {"name": name, "namespace": spec.namespace, "labels": common_labels(spec)}


def plan_annotation(spec: DeploySpec) -> str:
    """What a reviewer (and the daemon) needs to know about the plan behind the workload."""
    p = spec.plan
    return json.dumps(
        {
            "model": spec.model_id,
            "rank": p.rank,
            "cloud": p.cloud,
            "region": p.region,
            "zone": p.zone,
            "instance_type": p.instance_type,
            "nodes": p.nodes,
            "gpus_per_node": p.gpus_per_node,
            "layout": spec.layout,  # as quote's table names it (layouts.layout_label)
            "tp": p.tp,
            "pp": p.pp,
            "dp": p.dp,
            "ep": p.ep,
            "dcp": p.dcp,
            "market": p.market,
            "usd_per_hour": p.usd_per_hour,
        },
        separators=(",", ":"),
    )


def container_args(spec: DeploySpec, role: str) -> list[str]:
    """`vllm serve` flags for a pod of `role` (server, leader or worker)."""
    args = spec.serve_args
    if role == "server":
        return args
    if spec.plan.dp > 1:  # DP across nodes: vLLM's DP flags, not --nnodes (stacks/vllm_argv.py)
        return [*args, *dp_node_args(spec.plan, role)]
    rank = "0" if role == "leader" else "$(LWS_WORKER_INDEX)"
    multi = [
        "--nnodes",
        str(spec.plan.nodes),
        "--node-rank",
        rank,
        "--master-addr",
        "$(LWS_LEADER_ADDRESS)",
        "--master-port",
        str(MASTER_PORT),
    ]
    return [*args, *multi] + (["--headless"] if role == "worker" else [])


def pre_stop_seconds(spec: DeploySpec, role: str) -> int:
    """Workers outlive the leader's drain: it needs them to finish in-flight requests."""
    return PRE_STOP_SECONDS + (spec.drain_seconds if role == "worker" else 0)


def _resources(spec: DeploySpec) -> Manifest:
    gpus = str(spec.plan.gpus_per_node)
    requests: dict[str, str] = {spec.gpu_resource: gpus}  # amd.com/gpu: AMD's device plugin
    limits: dict[str, str] = {spec.gpu_resource: gpus}
    if spec.node is not None:
        memory = f"{int(spec.node.memory_gib * NODE_SHARE)}Gi"
        requests |= {"cpu": str(int(spec.node.vcpus * NODE_SHARE)), "memory": memory}
        limits["memory"] = memory
    return {"requests": requests, "limits": limits}


def _env(spec: DeploySpec) -> list[Manifest]:
    env: list[Manifest] = [{"name": "HF_HOME", "value": CACHE_MOUNT}]
    env += [
        {
            "name": key,
            "valueFrom": {
                "secretKeyRef": {"name": secret_name(spec), "key": key, "optional": True}
            },
        }
        for key in SECRET_KEYS
    ]
    # vLLM's API server gives up on the engine after this (default 600 s, vllm/envs.py):
    # the same budget as the startup probe, from the plan's time to serve.
    env.append({"name": "VLLM_ENGINE_READY_TIMEOUT_S", "value": str(spec.startup_budget_seconds)})
    env += model_storage.weights_env(spec)  # streamer, region, compile cache
    if spec.multi_node:  # the address vLLM advertises to the other nodes
        pod_ip = {"fieldRef": {"fieldPath": "status.podIP"}}
        env.append({"name": "VLLM_HOST_IP", "valueFrom": pod_ip})
    return env


def _probes(spec: DeploySpec) -> Manifest:
    return {
        "startupProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": PROBE_PERIOD_SECONDS,
            "timeoutSeconds": 5,
            "failureThreshold": spec.startup_failure_threshold,
        },
        "readinessProbe": {
            "exec": {"command": ["python3", "-c", _MODELS_PROBE]},
            "periodSeconds": PROBE_PERIOD_SECONDS,
            "timeoutSeconds": 8,
            "failureThreshold": 3,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 30,
            "timeoutSeconds": 10,
            "failureThreshold": 4,
        },
    }


#: AKS taints every spot node pool so that only pods that tolerate it land there ("Spot nodes
#: are configured with ... the taint kubernetes.azure.com/scalesetpriority=spot:NoSchedule",
#: Microsoft Learn, "Add an Azure Spot node pool to an AKS cluster"): a plan priced on Azure
#: spot carries the toleration, or its pod would never schedule on the nodes it was priced on.
AKS_SPOT_TOLERATION: Manifest = {
    "key": "kubernetes.azure.com/scalesetpriority",
    "operator": "Equal",
    "value": "spot",
    "effect": "NoSchedule",
}


def pod_spec(spec: DeploySpec, role: str) -> Manifest:
    """The pod spec of a server (one node), a leader or a worker."""
    container: Manifest = {
        "name": "vllm",
        "image": spec.image,
        "command": serve_command(spec.plan, role),
        "args": container_args(spec, role),
        "env": _env(spec),
        "resources": _resources(spec),
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "hf-cache", "mountPath": CACHE_MOUNT},
            *model_storage.weights_mounts(spec),
        ],
        "lifecycle": {
            "preStop": {"exec": {"command": ["sleep", str(pre_stop_seconds(spec, role))]}}
        },
    }
    if role != "worker":
        container["ports"] = [{"name": "http", "containerPort": PORT, "protocol": "TCP"}]
        container |= _probes(spec)
    tolerations = [
        {"key": key, "operator": "Exists", "effect": fleet.GPU_TAINT_EFFECT}
        for key in dict.fromkeys((fleet.GPU_TAINT_KEY, spec.gpu_resource))
    ]
    if spec.plan.cloud == "azure" and spec.plan.market == "spot":
        tolerations.append(AKS_SPOT_TOLERATION)
    pod: Manifest = {
        "terminationGracePeriodSeconds": spec.grace_seconds,
        "automountServiceAccountToken": False,
        "tolerations": tolerations,
        "containers": [container, *model_storage.cache_sidecars(spec)],
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_SIZE}},
            {
                "name": "hf-cache",
                "hostPath": {"path": HOST_CACHE_PATH, "type": "DirectoryOrCreate"},
            },
            *model_storage.weights_volumes(spec),
        ],
    }
    restore = model_storage.cache_init_containers(spec)
    if restore:
        pod["initContainers"] = restore
    if spec.target == "aws-eks":
        pod["nodeSelector"] = {fleet.POOL: spec.name}
    return pod


def _template(spec: DeploySpec, role: str) -> Manifest:
    return {
        "metadata": {
            "labels": {**common_labels(spec), fleet.ROLE: role},
            "annotations": {fleet.PLAN_ANNOTATION: plan_annotation(spec)},
        },
        "spec": pod_spec(spec, role),
    }


def deployment(spec: DeploySpec) -> Manifest:
    # A new pod must load the weights before it serves: allow for that, then some.
    deadline = spec.startup_budget_seconds + 600
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, spec.name),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector_labels(spec)},
            # The pool has exactly one node per replica: a surge pod would wait for a node that
            # never comes and the rollout would never finish. Replace in place instead.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "progressDeadlineSeconds": deadline,
            "template": _template(spec, "server"),
        },
    }


def leader_worker_set(spec: DeploySpec) -> Manifest:
    return {
        "apiVersion": LWS_API,
        "kind": "LeaderWorkerSet",
        "metadata": _metadata(spec, spec.name),
        "spec": {
            "replicas": 1,
            "startupPolicy": "LeaderCreated",
            "rolloutStrategy": {
                "type": "RollingUpdate",
                # a fixed-size pool has no node for a surge group (see deployment())
                "rollingUpdateConfiguration": {"maxUnavailable": 1, "maxSurge": 0},
            },
            "leaderWorkerTemplate": {
                "size": spec.plan.nodes,
                # vLLM cannot lose a rank and continue: a restart anywhere restarts the group.
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": _template(spec, "leader"),
                "workerTemplate": _template(spec, "worker"),
            },
        },
    }


def workload(spec: DeploySpec) -> Manifest:
    return leader_worker_set(spec) if spec.multi_node else deployment(spec)


def service(spec: DeploySpec) -> Manifest:
    """ClusterIP by default; a LoadBalancer only with --public."""
    role = "leader" if spec.multi_node else "server"
    svc: Manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, service_name(spec)),
        "spec": {
            "type": "LoadBalancer" if spec.public else "ClusterIP",
            "selector": {**selector_labels(spec), fleet.ROLE: role},
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    if spec.public and spec.target == "aws-eks":
        # NLB: its 350 s idle timeout suits streamed completions better than a CLB's 60 s.
        svc["metadata"]["annotations"] = {
            "service.beta.kubernetes.io/aws-load-balancer-type": "nlb",
            "service.beta.kubernetes.io/aws-load-balancer-scheme": "internet-facing",
        }
    return svc


def pod_disruption_budget(spec: DeploySpec) -> Manifest:
    """At most one replica group's pods disrupted at a time.

    maxUnavailable is one replica's pods: a drain of one replica (the daemon's, kubectl's) is
    allowed, a second one waits. A minAvailable of one replica would refuse every eviction of a
    one-replica deployment until its node died, cutting its in-flight requests; the daemon
    requests the replacement first instead, and drains with the pods' own grace period.
    """
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(spec, spec.name),
        "spec": {
            "maxUnavailable": spec.plan.nodes,
            "selector": {"matchLabels": selector_labels(spec)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def secret(spec: DeploySpec, string_data: dict[str, Any]) -> Manifest:
    """The HF token and the vLLM API key (Pulumi only: --render never writes secrets)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(spec, secret_name(spec)),
        "type": "Opaque",
        "stringData": string_data,
    }


def namespace(spec: DeploySpec) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": spec.namespace, "labels": {fleet.MANAGED: fleet.MANAGED_VALUE}},
    }


def build_manifests(spec: DeploySpec) -> list[Manifest]:
    """The workload, its Service and its PodDisruptionBudget, in apply order (the Namespace,
    when it is not `default`, comes first: see ``namespace``)."""
    return [workload(spec), service(spec), pod_disruption_budget(spec)]
