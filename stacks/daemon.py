"""The interruption daemon's Kubernetes objects, as plain dicts (no SDK): the aws-eks stack
deploys them, and `kubectl apply` can use them too.

Queue mode runs as a Deployment of two replicas with leader election (one consumes, the other
takes over within a lease); IMDS mode (optional) as a DaemonSet on the GPU nodes. The RBAC is
generated from provisioner/fleet.py's KUBE_CALLS, the list of what the daemon calls.
"""

from __future__ import annotations

from typing import Any

from provisioner import fleet
from stacks.options import DAEMON_IMAGE as IMAGE

METRICS_PORT = 9092
RUN_AS_USER = 65532  # the Dockerfile's non-root uid
#: SIGTERM: hand flows over (the other replica resumes them from the node annotations).
GRACE_SECONDS = 30

Manifest = dict[str, Any]


def _labels(mode: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": fleet.DAEMON_NAME, "app.kubernetes.io/component": mode}


def namespace() -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": fleet.DAEMON_NAMESPACE, "labels": {fleet.MANAGED: "true"}},
    }


def rbac(leader_elect: bool = True) -> list[Manifest]:
    """ServiceAccount, ClusterRole(+Binding) and, for leader election, a Role(+Binding) on
    leases in the daemon's own namespace."""
    ns, name = fleet.DAEMON_NAMESPACE, fleet.DAEMON_NAME
    sa = {"kind": "ServiceAccount", "name": fleet.DAEMON_SERVICE_ACCOUNT, "namespace": ns}
    out: list[Manifest] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": fleet.DAEMON_SERVICE_ACCOUNT, "namespace": ns},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": fleet.rbac_rules(namespaced=False),
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [sa],
        },
    ]
    if leader_elect:
        out += [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": name, "namespace": ns},
                "rules": fleet.rbac_rules(namespaced=True),
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": name, "namespace": ns},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
                "subjects": [sa],
            },
        ]
    return out


def _container(args: list[str], env: list[Manifest], image: str) -> Manifest:
    return {
        "name": "daemon",
        "image": image,
        "args": ["daemon", *args, "--metrics-port", str(METRICS_PORT)],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 10},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 20,
            "failureThreshold": 6,
        },
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS_USER,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def deployment(
    queue_url: str,
    region: str | None = None,
    replicas: int = 2,
    image: str = IMAGE,
    extra_args: list[str] | None = None,
) -> Manifest:
    """Queue mode. The ServiceAccount gets its IAM role from EKS Pod Identity (the stack)."""
    args = ["--mode", "queue", "--queue-url", queue_url]
    if region:
        args += ["--region", region]
    if replicas > 1:
        args += ["--leader-elect", "--lease-namespace", fleet.DAEMON_NAMESPACE]
    env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    spec = {
        "serviceAccountName": fleet.DAEMON_SERVICE_ACCOUNT,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "containers": [_container(args + (extra_args or []), env, image)],
    }
    labels = _labels("queue")
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": fleet.DAEMON_NAME,
            "namespace": fleet.DAEMON_NAMESPACE,
            "labels": labels,
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def daemonset(image: str = IMAGE, extra_args: list[str] | None = None) -> Manifest:
    """IMDS mode, on prov's GPU nodes only (the label the stack's nodes carry); tolerates the
    GPU and interruption taints."""
    env = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    spec = {
        "serviceAccountName": fleet.DAEMON_SERVICE_ACCOUNT,
        "terminationGracePeriodSeconds": GRACE_SECONDS,
        "nodeSelector": {fleet.MANAGED: fleet.MANAGED_VALUE, fleet.NVIDIA_GPU_PRESENT: "true"},
        "tolerations": [
            {"key": fleet.GPU_TAINT_KEY, "operator": "Exists", "effect": fleet.GPU_TAINT_EFFECT},
            {"key": fleet.TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"},
        ],
        "priorityClassName": "system-node-critical",
        "containers": [_container(["--mode", "imds", *(extra_args or [])], env, image)],
    }
    labels = _labels("imds")
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": fleet.DAEMON_NAME,
            "namespace": fleet.DAEMON_NAMESPACE,
            "labels": labels,
        },
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }


def build_daemon_manifests(
    queue_url: str,
    region: str | None,
    image: str = IMAGE,
    mode: str = "queue",
    prewarm: bool = False,
    time_to_serve_s: int | None = None,
) -> list[Manifest]:
    """Everything the daemon needs, in apply order. One mode, never both: two daemons acting
    on the same notice would race for the same replica. ``prewarm``: start the replacement on
    a rebalance recommendation (DeploySpec.prewarm_on_rebalance: it cannot beat the notice).
    ``time_to_serve_s``: the plan's time to serve (DeploySpec.time_to_serve_seconds)."""
    extra = ["--prewarm-on-rebalance"] if prewarm else []
    if time_to_serve_s is not None:  # the plan's: the daemon's own decisions follow from it
        extra += ["--time-to-serve", str(time_to_serve_s)]
    if mode == "imds":
        return [namespace(), *rbac(leader_elect=False), daemonset(image=image, extra_args=extra)]
    return [
        namespace(),
        *rbac(leader_elect=True),
        deployment(queue_url, region, image=image, extra_args=extra),
    ]
