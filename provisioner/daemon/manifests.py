"""Kubernetes manifests for the daemon, as plain dicts (no SDK import): the deploy stack and
`kubectl apply` can both use them. Queue mode runs as a Deployment (fleet-wide, leader-elected
when it has more than one replica); IMDS mode as a DaemonSet on the GPU nodes.

RBAC is least privilege: exactly the verbs the handler uses, nothing on secrets or workloads.
"""

from __future__ import annotations

from typing import Any

from provisioner.daemon import tags

NAME = "prov-daemon"
IMAGE = "ghcr.io/prov-dev/prov-daemon:0.1.0"

# The verbs the daemon needs, per resource (see handler.py and kube.py).
RULES: list[dict[str, Any]] = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch", "delete"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
]
LEASE_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "patch"],
    }
]


def _labels(mode: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": NAME, "app.kubernetes.io/component": mode}


def rbac(namespace: str = "kube-system", leader_elect: bool = True) -> list[dict[str, Any]]:
    sa = {"kind": "ServiceAccount", "name": NAME, "namespace": namespace}
    out: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": NAME, "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": NAME},
            "rules": RULES,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": NAME,
            },
            "subjects": [sa],
        },
    ]
    if leader_elect:  # leases only in the daemon's own namespace
        out += [
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": NAME, "namespace": namespace},
                "rules": LEASE_RULES,
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": NAME, "namespace": namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
                "subjects": [sa],
            },
        ]
    return out


def _container(args: list[str], env: list[dict[str, Any]], image: str) -> dict[str, Any]:
    return {
        "name": "daemon",
        "image": image,
        "args": ["daemon", *args, "--metrics-port", "9092"],
        "env": env,
        "ports": [{"name": "metrics", "containerPort": 9092}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "metrics"}, "periodSeconds": 10},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 20,
            "failureThreshold": 6,
        },
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def deployment(
    queue_url: str,
    namespace: str = "kube-system",
    replicas: int = 2,
    image: str = IMAGE,
    extra_args: list[str] | None = None,
    service_account_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Queue mode. Give the ServiceAccount an IAM role (IRSA / Pod Identity) for SQS and EC2."""
    args = ["--mode", "queue", "--queue-url", queue_url]
    if replicas > 1:
        args += ["--leader-elect", "--lease-namespace", namespace]
    env = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    spec = {
        "serviceAccountName": NAME,
        # SIGTERM: finish in-flight drains (bounded by the 2-minute notice) before exiting.
        "terminationGracePeriodSeconds": 150,
        "containers": [_container(args + (extra_args or []), env, image)],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": namespace, "labels": _labels("queue")},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": _labels("queue")},
            "template": {"metadata": {"labels": _labels("queue")}, "spec": spec},
        },
    }


def daemonset(
    namespace: str = "kube-system", image: str = IMAGE, extra_args: list[str] | None = None
) -> dict[str, Any]:
    """IMDS mode, on prov-managed nodes only; tolerates the GPU and interruption taints."""
    env = [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]
    spec = {
        "serviceAccountName": NAME,
        "terminationGracePeriodSeconds": 150,
        "nodeSelector": {tags.MANAGED: tags.MANAGED_VALUE},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": tags.TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"},
        ],
        "priorityClassName": "system-node-critical",
        "containers": [_container(["--mode", "imds", *(extra_args or [])], env, image)],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": NAME, "namespace": namespace, "labels": _labels("imds")},
        "spec": {
            "selector": {"matchLabels": _labels("imds")},
            "template": {"metadata": {"labels": _labels("imds")}, "spec": spec},
        },
    }


# The AWS permissions the daemon uses (for the deploy stack's IAM role).
IAM_ACTIONS = {
    "sqs": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"],
    "ec2": [
        "ec2:DescribeInstances",
        "ec2:DescribeSubnets",
        "ec2:RunInstances",
        "ec2:CreateTags",  # tags on RunInstances (TagSpecifications); promoting a warm spare
        "ec2:TerminateInstances",  # condition: aws:ResourceTag/prov.dev/managed = true
    ],
    "autoscaling": [
        "autoscaling:CompleteLifecycleAction",
        "autoscaling:TerminateInstanceInAutoScalingGroup",
    ],
    "iam": ["iam:PassRole"],  # the node instance profile, when replacements copy it
}
