"""The Kubernetes side: nodes (taint, cordon, annotate), pods (evict), events and leases.

``Kube`` is the small Protocol the handler uses; ``KubeClient`` implements it with the official
``kubernetes`` client (imported lazily). The client retries 5xx, and 429 answers that carry a
Retry-After header (API priority and fairness), through urllib3's Retry; an Eviction's 429
without Retry-After is a PodDisruptionBudget saying "not now", which the handler retries on its
own schedule until the deadline. Reads skip the client's model deserialisation (plain JSON) so a
burst of notices stays cheap. Patches are JSON merge patches (null deletes a key, lists are
replaced whole, which is what we want for taints).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from provisioner import fleet
from provisioner.daemon.config import DaemonConfig

log = logging.getLogger("prov.daemon.kube")

MERGE_PATCH = "application/merge-patch+json"


class EvictResult(StrEnum):
    EVICTED = "evicted"
    BLOCKED = "blocked"  # 429: a PodDisruptionBudget does not allow it now
    GONE = "gone"  # 404: the pod is already gone


def _is_ready(obj: dict[str, Any]) -> bool:
    """A node's or pod's Ready condition is True."""
    status = obj.get("status") or {}
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


@dataclass(frozen=True)
class NodeInfo:
    name: str
    ready: bool
    unschedulable: bool
    taints: tuple[dict[str, Any], ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    provider_id: str | None = None

    @property
    def instance_id(self) -> str | None:
        """aws:///us-east-1a/i-0123... -> i-0123..."""
        if not self.provider_id:
            return None
        last = self.provider_id.rstrip("/").rsplit("/", 1)[-1]
        return last if last.startswith("i-") else None

    @property
    def tainted(self) -> bool:
        return any(t.get("key") == fleet.TAINT_KEY for t in self.taints)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NodeInfo:
        meta, spec = d.get("metadata", {}), d.get("spec", {})
        ready = _is_ready(d)
        return cls(
            name=meta.get("name", ""),
            ready=ready,
            unschedulable=bool(spec.get("unschedulable")),
            taints=tuple(spec.get("taints") or ()),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            provider_id=spec.get("providerID"),
        )


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    node: str | None
    labels: dict[str, str]
    ready: bool
    deleting: bool
    owner_kinds: tuple[str, ...] = ()
    mirror: bool = False
    grace_seconds: int | None = None  # spec.terminationGracePeriodSeconds (None: default)

    @property
    def evictable(self) -> bool:
        """DaemonSet and static (mirror) pods stay; everything else is drained."""
        return not self.mirror and "DaemonSet" not in self.owner_kinds

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PodInfo:
        meta, spec = d.get("metadata", {}), d.get("spec", {})
        ready = _is_ready(d)
        return cls(
            namespace=meta.get("namespace", "default"),
            name=meta.get("name", ""),
            node=spec.get("nodeName"),
            labels=dict(meta.get("labels") or {}),
            ready=ready,
            deleting=bool(meta.get("deletionTimestamp")),
            owner_kinds=tuple(o.get("kind", "") for o in meta.get("ownerReferences") or []),
            mirror="kubernetes.io/config.mirror" in (meta.get("annotations") or {}),
            grace_seconds=spec.get("terminationGracePeriodSeconds"),
        )


class Kube(Protocol):
    def get_node(self, name: str) -> NodeInfo | None: ...

    def find_node(self, private_dns: str | None, instance_id: str) -> NodeInfo | None: ...

    def cordon(
        self,
        name: str,
        taint_value: str,
        exclude_lb: bool,
        annotations: Mapping[str, str | None],
        known: NodeInfo | None = None,
    ) -> NodeInfo: ...

    def uncordon(self, name: str, annotations: Mapping[str, str | None]) -> NodeInfo: ...

    def annotate(self, name: str, annotations: Mapping[str, str | None]) -> bool: ...

    def label(self, name: str, labels: Mapping[str, str | None]) -> bool: ...

    def pods_on_node(self, name: str) -> list[PodInfo]: ...

    def evict(self, namespace: str, name: str, grace_seconds: int) -> EvictResult: ...

    def delete_node(self, name: str) -> None: ...

    def event(self, node: str, reason: str, message: str, type_: str = "Normal") -> None: ...

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create_lease(self, namespace: str, body: dict[str, Any]) -> bool: ...

    def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> bool: ...


def make_api_client(
    cfg: DaemonConfig,
    api_url: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> Any:
    """An ApiClient for: an explicit URL (kubectl proxy, tests), a kubeconfig, or in-cluster."""
    import os

    from kubernetes import client, config
    from urllib3.util.retry import Retry

    conf = client.Configuration()
    if api_url:
        conf.host = api_url.rstrip("/")
    elif kubeconfig or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=conf)
    else:
        config.load_incluster_config(client_configuration=conf)
    conf.retries = Retry(
        total=cfg.api_retries,
        connect=cfg.api_retries,
        read=cfg.api_retries,
        status=cfg.api_retries,
        status_forcelist=(500, 502, 503, 504),  # and 429/503 with Retry-After (urllib3 default)
        allowed_methods=None,  # our writes are idempotent
        backoff_factor=cfg.api_backoff_seconds,
        backoff_max=5.0,
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    conf.connection_pool_maxsize = max(4, cfg.workers + 4)
    return client.ApiClient(conf)


class KubeClient:
    def __init__(self, api_client: Any, cfg: DaemonConfig) -> None:
        from kubernetes import client

        self._client = client
        self.core = client.CoreV1Api(api_client)
        self.coord = client.CoordinationV1Api(api_client)
        self.timeout = cfg.http_timeout_seconds
        self.events_ns = cfg.namespace_events

    @staticmethod
    def _json(resp: Any) -> Any:
        return json.loads(resp.data or b"null")

    def get_node(self, name: str) -> NodeInfo | None:
        try:
            resp = self.core.read_node(name, _preload_content=False, _request_timeout=self.timeout)
        except self._client.ApiException as e:
            if e.status == 404:
                return None
            raise
        return NodeInfo.from_json(self._json(resp))

    def find_node(self, private_dns: str | None, instance_id: str) -> NodeInfo | None:
        """By name (EKS names nodes after the private DNS name), else by spec.providerID."""
        if private_dns:
            node = self.get_node(private_dns)
            if node is not None and node.instance_id in (None, instance_id):
                return node
        resp = self.core.list_node(_preload_content=False, _request_timeout=self.timeout)
        for item in self._json(resp).get("items", []):
            node = NodeInfo.from_json(item)
            if node.instance_id == instance_id:
                return node
        return None

    def _patch_node(self, name: str, body: dict[str, Any]) -> NodeInfo:
        resp = self.core.patch_node(
            name,
            body,
            _content_type=MERGE_PATCH,
            _preload_content=False,
            _request_timeout=self.timeout,
        )
        return NodeInfo.from_json(self._json(resp))

    def cordon(
        self,
        name: str,
        taint_value: str,
        exclude_lb: bool,
        annotations: Mapping[str, str | None],
        known: NodeInfo | None = None,
    ) -> NodeInfo:
        """Taint + cordon (+ label out of external LBs). ``known``: the node as just read, to
        keep its other taints without reading it again."""
        node = known or self.get_node(name)
        if node is None:
            raise LookupError(f"node {name} not found")
        taints = [t for t in node.taints if t.get("key") != fleet.TAINT_KEY]
        taints.append({"key": fleet.TAINT_KEY, "value": taint_value, "effect": "NoSchedule"})
        meta: dict[str, Any] = {"annotations": annotations}
        if exclude_lb:
            meta["labels"] = {fleet.EXCLUDE_LB_LABEL: "true"}
        return self._patch_node(
            name, {"metadata": meta, "spec": {"unschedulable": True, "taints": taints}}
        )

    def uncordon(self, name: str, annotations: Mapping[str, str | None]) -> NodeInfo:
        node = self.get_node(name)
        if node is None:
            raise LookupError(f"node {name} not found")
        taints = [t for t in node.taints if t.get("key") != fleet.TAINT_KEY]
        meta: dict[str, Any] = {"annotations": annotations}
        if fleet.EXCLUDE_LB_LABEL in node.labels:
            meta["labels"] = {fleet.EXCLUDE_LB_LABEL: None}
        return self._patch_node(
            name, {"metadata": meta, "spec": {"unschedulable": None, "taints": taints or None}}
        )

    def annotate(self, name: str, annotations: Mapping[str, str | None]) -> bool:
        """False when the node is gone (nothing left to record progress on)."""
        try:
            self._patch_node(name, {"metadata": {"annotations": annotations}})
        except self._client.ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def label(self, name: str, labels: Mapping[str, str | None]) -> bool:
        """Set (or, with None, remove) node labels; False when the node is gone."""
        try:
            self._patch_node(name, {"metadata": {"labels": labels}})
        except self._client.ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    def pods_on_node(self, name: str) -> list[PodInfo]:
        resp = self.core.list_pod_for_all_namespaces(
            field_selector=f"spec.nodeName={name}",
            _preload_content=False,
            _request_timeout=self.timeout,
        )
        pods = [PodInfo.from_json(p) for p in self._json(resp).get("items", [])]
        return [p for p in pods if p.node == name]  # do not trust the selector blindly

    def evict(self, namespace: str, name: str, grace_seconds: int) -> EvictResult:
        body: Any = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
            "deleteOptions": {"gracePeriodSeconds": max(0, int(grace_seconds))},
        }
        try:
            self.core.create_namespaced_pod_eviction(
                name, namespace, body, _preload_content=False, _request_timeout=self.timeout
            )
        except self._client.ApiException as e:
            if e.status == 429:
                return EvictResult.BLOCKED
            if e.status == 404:
                return EvictResult.GONE
            raise
        return EvictResult.EVICTED

    def delete_node(self, name: str) -> None:
        try:
            self.core.delete_node(name, _preload_content=False, _request_timeout=self.timeout)
        except self._client.ApiException as e:
            if e.status != 404:
                raise

    def event(self, node: str, reason: str, message: str, type_: str = "Normal") -> None:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        body: Any = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{node}.prov-{uuid.uuid4().hex[:12]}",
                "namespace": self.events_ns,
            },
            "involvedObject": {"kind": "Node", "name": node, "apiVersion": "v1"},
            "reason": reason,
            "message": message[:1000],
            "type": type_,
            "source": {"component": "prov-daemon"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.core.create_namespaced_event(
            self.events_ns, body, _preload_content=False, _request_timeout=self.timeout
        )

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            resp = self.coord.read_namespaced_lease(
                name, namespace, _preload_content=False, _request_timeout=self.timeout
            )
        except self._client.ApiException as e:
            if e.status == 404:
                return None
            raise
        data = self._json(resp)
        return data if isinstance(data, dict) else None

    def create_lease(self, namespace: str, body: Any) -> bool:
        try:
            self.coord.create_namespaced_lease(
                namespace, body, _preload_content=False, _request_timeout=self.timeout
            )
        except self._client.ApiException as e:
            if e.status == 409:
                return False
            raise
        return True

    def patch_lease(self, namespace: str, name: str, body: dict[str, Any]) -> bool:
        """A merge patch carrying metadata.resourceVersion: the API server rejects it with 409
        if someone else renewed the lease since we read it (optimistic concurrency)."""
        try:
            self.coord.patch_namespaced_lease(
                name,
                namespace,
                body,
                _content_type=MERGE_PATCH,
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except self._client.ApiException as e:
            if e.status == 409:
                return False
            raise
        return True
