"""FakeKube: the Kubernetes API objects the daemon touches, in memory, behind ``kube.Kube``.

Like the API server (and ``kube.KubeClient`` over it): objects are the JSON the API serves
(nodes, pods, events, leases), read back through ``NodeInfo``/``PodInfo``; node patches are
JSON merge patches (None deletes a key, lists are replaced whole); a missing node reads as None
and ``cordon``/``uncordon`` of one raise LookupError; an Eviction answers 429 (BLOCKED) while
``evict_policy`` refuses it, like a PodDisruptionBudget, 404 (GONE) for a missing pod, and
otherwise marks the pod terminating (deletionTimestamp, not Ready) for ``kubelet`` to delete;
creating a lease that exists answers False (409), and so does a patch whose
``metadata.resourceVersion`` is not the lease's (optimistic concurrency); every write bumps it.
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from provisioner import fleet
from provisioner.daemon.capacity import InstanceInfo
from provisioner.daemon.kube import EvictResult, Kube, NodeInfo, PodInfo


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, Mapping) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _ready(value: bool) -> list[dict[str, str]]:
    return [{"type": "Ready", "status": "True" if value else "False"}]


class FakeKube:
    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.evict_policy: Callable[[str, str], bool] = lambda ns, name: True
        self.evictions: list[tuple[str, str, int]] = []  # (namespace/pod, answer, grace)
        self._rv = itertools.count(1)
        self._lock = threading.RLock()

    # -- the world, as a test (or a kubelet stand-in) sets it up ------------------------------

    def add_node(
        self, name: str, instance_id: str, zone: str = "us-east-1a", ready: bool = True
    ) -> None:
        with self._lock:
            self.nodes[name] = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {}, "annotations": {}},
                "spec": {"providerID": f"aws:///{zone}/{instance_id}"},
                "status": {"conditions": _ready(ready)},
            }

    def add_pod(
        self,
        namespace: str,
        name: str,
        node: str,
        labels: Mapping[str, str] | None = None,
        ready: bool = True,
        grace_seconds: int | None = 120,
        owner_kind: str = "StatefulSet",
    ) -> None:
        with self._lock:
            self.pods[namespace, name] = {
                "metadata": {
                    "namespace": namespace,
                    "name": name,
                    "labels": dict(labels or {}),
                    "ownerReferences": [{"kind": owner_kind, "name": "owner"}],
                },
                "spec": {"nodeName": node, "terminationGracePeriodSeconds": grace_seconds},
                "status": {"conditions": _ready(ready)},
            }

    def join(self, instance: InstanceInfo, pod: str | None = None, ready: bool = True) -> str:
        """The instance's node joins (named after its private DNS name, as on EKS), with a
        serving pod of the workload (``pod``: its name) on it."""
        name = instance.private_dns or instance.id
        self.add_node(name, instance.id, instance.zone, ready=ready)
        if pod:
            labels = {fleet.WORKLOAD_LABEL: fleet.WORKLOAD_VALUE}
            self.add_pod("serving", pod, name, labels, ready=ready)
        return name

    def kubelet(self) -> int:
        """Delete the pods marked terminating (their grace is over); how many were."""
        with self._lock:
            gone = [k for k, p in self.pods.items() if p["metadata"].get("deletionTimestamp")]
            for k in gone:
                del self.pods[k]
        return len(gone)

    # -- kube.Kube ----------------------------------------------------------------------------

    def get_node(self, name: str) -> NodeInfo | None:
        with self._lock:
            raw = self.nodes.get(name)
            return NodeInfo.from_json(copy.deepcopy(raw)) if raw is not None else None

    def find_node(self, private_dns: str | None, instance_id: str) -> NodeInfo | None:
        if private_dns:
            node = self.get_node(private_dns)
            if node is not None and node.instance_id in (None, instance_id):
                return node
        with self._lock:
            for raw in self.nodes.values():
                node = NodeInfo.from_json(copy.deepcopy(raw))
                if node.instance_id == instance_id:
                    return node
        return None

    def _patch_node(self, name: str, body: dict[str, Any]) -> NodeInfo | None:
        with self._lock:
            if name not in self.nodes:
                return None
            self.nodes[name] = merge_patch(self.nodes[name], body)
            return NodeInfo.from_json(copy.deepcopy(self.nodes[name]))

    def cordon(
        self,
        name: str,
        taint_value: str,
        exclude_lb: bool,
        annotations: Mapping[str, str | None],
        known: NodeInfo | None = None,
    ) -> NodeInfo:
        node = known or self.get_node(name)
        if node is None:
            raise LookupError(f"node {name} not found")
        taints = [t for t in node.taints if t.get("key") != fleet.TAINT_KEY]
        taints.append({"key": fleet.TAINT_KEY, "value": taint_value, "effect": "NoSchedule"})
        meta: dict[str, Any] = {"annotations": dict(annotations)}
        if exclude_lb:
            meta["labels"] = {fleet.EXCLUDE_LB_LABEL: "true"}
        out = self._patch_node(
            name, {"metadata": meta, "spec": {"unschedulable": True, "taints": taints}}
        )
        if out is None:
            raise LookupError(f"node {name} not found")
        return out

    def uncordon(self, name: str, annotations: Mapping[str, str | None]) -> NodeInfo:
        node = self.get_node(name)
        if node is None:
            raise LookupError(f"node {name} not found")
        taints = [t for t in node.taints if t.get("key") != fleet.TAINT_KEY]
        meta: dict[str, Any] = {"annotations": dict(annotations)}
        if fleet.EXCLUDE_LB_LABEL in node.labels:
            meta["labels"] = {fleet.EXCLUDE_LB_LABEL: None}
        body = {"metadata": meta, "spec": {"unschedulable": None, "taints": taints or None}}
        out = self._patch_node(name, body)
        if out is None:
            raise LookupError(f"node {name} not found")
        return out

    def annotate(self, name: str, annotations: Mapping[str, str | None]) -> bool:
        return self._patch_node(name, {"metadata": {"annotations": dict(annotations)}}) is not None

    def label(self, name: str, labels: Mapping[str, str | None]) -> bool:
        return self._patch_node(name, {"metadata": {"labels": dict(labels)}}) is not None

    def pods_on_node(self, name: str) -> list[PodInfo]:
        with self._lock:
            raws = [copy.deepcopy(p) for p in self.pods.values()]
        return [p for p in map(PodInfo.from_json, raws) if p.node == name]

    def evict(self, namespace: str, name: str, grace_seconds: int) -> EvictResult:
        grace = max(0, int(grace_seconds))
        with self._lock:
            pod = self.pods.get((namespace, name))
            if pod is None:
                self.evictions.append((f"{namespace}/{name}", "404", grace))
                return EvictResult.GONE
            if not self.evict_policy(namespace, name):
                self.evictions.append((f"{namespace}/{name}", "429", grace))
                return EvictResult.BLOCKED
            if not pod["metadata"].get("deletionTimestamp"):
                pod["metadata"]["deletionTimestamp"] = datetime.now(UTC).isoformat()
                pod["status"] = {"conditions": _ready(False)}
            self.evictions.append((f"{namespace}/{name}", "201", grace))
            return EvictResult.EVICTED

    def delete_node(self, name: str) -> None:
        with self._lock:
            self.nodes.pop(name, None)

    def event(self, node: str, reason: str, message: str, type_: str = "Normal") -> None:
        with self._lock:
            self.events.append(
                {
                    "involvedObject": {"kind": "Node", "name": node},
                    "reason": reason,
                    "message": message[:1000],
                    "type": type_,
                }
            )

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            lease = self.leases.get((namespace, name))
            return copy.deepcopy(lease) if lease is not None else None

    def create_lease(self, namespace: str, body: dict[str, Any]) -> bool:
        name = body["metadata"]["name"]
        with self._lock:
            if (namespace, name) in self.leases:
                return False
            lease = copy.deepcopy(body)
            lease["metadata"] = {**lease["metadata"], "resourceVersion": str(next(self._rv))}
            self.leases[namespace, name] = lease
        return True

    def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> bool:
        with self._lock:
            lease = self.leases.get((namespace, name))
            if lease is None:
                raise LookupError(f"lease {namespace}/{name} not found")
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv is not None and rv != lease["metadata"]["resourceVersion"]:
                return False
            patched = merge_patch(lease, body)
            patched["metadata"]["resourceVersion"] = str(next(self._rv))
            self.leases[namespace, name] = patched
        return True


if TYPE_CHECKING:  # mypy holds the fake to the Protocol the policy uses
    _is_kube: Kube = FakeKube()
