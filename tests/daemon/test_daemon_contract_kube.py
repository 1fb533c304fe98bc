"""The Kubernetes contract: the same assertions against ``fakes.kube.FakeKube`` and
``kube.KubeClient`` (the official client over HTTP against kmock, with the harness's Eviction
reaction: 429 like a PodDisruptionBudget, or the pod marked terminating), so the fake the fast
policy tests use cannot drift from the adapter it stands for.

kmock keeps no ``metadata.resourceVersion``; the API server does, and rejects a write carrying
a stale one with 409 (https://kubernetes.io/docs/reference/using-api/api-concepts/
#resource-versions), which is how two daemons cannot both renew one Lease. The fake does too,
so that assertion runs on the fake only.
"""

from __future__ import annotations

from typing import Any

import pytest

from provisioner import fleet
from provisioner.daemon.config import DaemonConfig
from provisioner.daemon.fakes.kube import FakeKube
from provisioner.daemon.kube import EvictResult, Kube, KubeClient, make_api_client

NS = "serving"
OTHER_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


class FakeWorld:
    def __init__(self) -> None:
        self.kube = FakeKube()

    def node(self, name: str, instance_id: str) -> None:
        self.kube.add_node(name, instance_id)
        self.kube.nodes[name]["spec"]["taints"] = [dict(OTHER_TAINT)]

    def pod(self, name: str, node: str) -> None:
        self.kube.add_pod(NS, name, node, {"app": "vllm"}, grace_seconds=90)

    def refuse_evictions(self) -> None:
        self.kube.evict_policy = lambda ns, name: False

    def events(self) -> list[tuple[str, str, str]]:
        return [(e["involvedObject"]["name"], e["reason"], e["message"]) for e in self.kube.events]


class RealWorld:
    def __init__(self, k8s: Any, core: Any) -> None:
        self.k8s, self.core = k8s, core
        cfg = DaemonConfig(namespace_events="default", api_retries=0)
        self.kube = KubeClient(make_api_client(cfg, k8s.url), cfg)

    def node(self, name: str, instance_id: str) -> None:
        self.core.create_node(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": name, "labels": {}},
                "spec": {"providerID": f"aws:///us-east-1a/{instance_id}", "taints": [OTHER_TAINT]},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            }
        )

    def pod(self, name: str, node: str) -> None:
        self.core.create_namespaced_pod(
            NS,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": NS, "labels": {"app": "vllm"}},
                "spec": {
                    "nodeName": node,
                    "terminationGracePeriodSeconds": 90,
                    "containers": [{"name": "vllm", "image": "vllm"}],
                },
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            },
        )

    def refuse_evictions(self) -> None:
        self.k8s.evict_policy = lambda ns, name: False

    def events(self) -> list[tuple[str, str, str]]:
        import json

        items = json.loads(self.core.list_namespaced_event("default", _preload_content=False).data)[
            "items"
        ]
        return [(e["involvedObject"]["name"], e["reason"], e["message"]) for e in items]


@pytest.fixture(params=["fake", "kmock"])
def world(request: pytest.FixtureRequest) -> Any:
    if request.param == "fake":
        return FakeWorld()
    return RealWorld(request.getfixturevalue("k8s"), request.getfixturevalue("core"))


def test_both_are_the_protocol(world):
    kube: Kube = world.kube
    assert callable(kube.evict)


def test_nodes_are_found_by_name_or_provider_id(world):
    world.node("ip-10-0-1-5.ec2.internal", "i-00000000000000005")
    assert world.kube.get_node("nope") is None
    by_name = world.kube.find_node("ip-10-0-1-5.ec2.internal", "i-00000000000000005")
    assert by_name is not None and by_name.ready and not by_name.unschedulable
    by_id = world.kube.find_node(None, "i-00000000000000005")
    assert by_id is not None and by_id.name == "ip-10-0-1-5.ec2.internal"
    assert world.kube.find_node("ip-10-0-1-5.ec2.internal", "i-00000000000000009") is None


def test_cordon_then_uncordon_keeps_other_taints_and_labels(world):
    world.node("n1", "i-00000000000000001")
    node = world.kube.cordon("n1", "spot-interruption", True, {"prov.dev/x": "1", "keep": "k"})
    assert node.unschedulable and node.tainted
    assert [t["key"] for t in node.taints] == ["nvidia.com/gpu", fleet.TAINT_KEY]
    assert node.labels[fleet.EXCLUDE_LB_LABEL] == "true"
    assert node.annotations["prov.dev/x"] == "1"
    back = world.kube.uncordon("n1", {"prov.dev/x": None})
    assert not back.unschedulable and not back.tainted
    assert [t["key"] for t in back.taints] == ["nvidia.com/gpu"]
    assert fleet.EXCLUDE_LB_LABEL not in back.labels
    assert "prov.dev/x" not in back.annotations and back.annotations["keep"] == "k"


def test_a_missing_node_is_said_not_raised_where_the_policy_expects_it(world):
    with pytest.raises(LookupError):
        world.kube.cordon("gone", "x", False, {})
    with pytest.raises(LookupError):
        world.kube.uncordon("gone", {})
    assert world.kube.annotate("gone", {"a": "b"}) is False
    assert world.kube.label("gone", {"a": "b"}) is False
    world.kube.delete_node("gone")  # not an error either
    world.node("n1", "i-00000000000000001")
    assert world.kube.label("n1", {"a": "b"}) is True
    assert world.kube.get_node("n1").labels["a"] == "b"
    world.kube.delete_node("n1")
    assert world.kube.get_node("n1") is None


def test_pods_and_evictions(world):
    world.node("n1", "i-00000000000000001")
    world.node("n2", "i-00000000000000002")
    world.pod("vllm-0", "n1")
    world.pod("vllm-1", "n2")
    (pod,) = world.kube.pods_on_node("n1")
    assert (pod.namespace, pod.name, pod.node, pod.grace_seconds) == (NS, "vllm-0", "n1", 90)
    assert pod.ready and not pod.deleting and pod.evictable and pod.labels == {"app": "vllm"}
    assert world.kube.evict(NS, "vllm-0", 30) is EvictResult.EVICTED
    (pod,) = world.kube.pods_on_node("n1")
    assert pod.deleting and not pod.ready  # terminating: out of the endpoints
    assert world.kube.evict(NS, "no-such-pod", 30) is EvictResult.GONE
    world.refuse_evictions()
    assert world.kube.evict(NS, "vllm-1", 30) is EvictResult.BLOCKED
    (pod,) = world.kube.pods_on_node("n2")
    assert not pod.deleting


def test_leases_are_optimistic(world):
    assert world.kube.get_lease("kube-system", "prov-daemon") is None
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "prov-daemon", "namespace": "kube-system"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }
    assert world.kube.create_lease("kube-system", body) is True
    assert world.kube.create_lease("kube-system", body) is False  # 409: it exists
    lease = world.kube.get_lease("kube-system", "prov-daemon")
    assert lease["spec"] == body["spec"]
    rv = lease["metadata"].get("resourceVersion")
    meta = {"resourceVersion": rv} if rv else {}  # what LeaseElector sends
    ok = world.kube.patch_lease(
        "kube-system", "prov-daemon", {"metadata": meta, "spec": {"holderIdentity": "b"}}
    )
    assert ok is True
    assert world.kube.get_lease("kube-system", "prov-daemon")["spec"]["holderIdentity"] == "b"
    if rv is None:  # kmock keeps no resourceVersion (module docstring): the rest is the fake's
        assert isinstance(world, RealWorld)
        return
    stale = world.kube.patch_lease(
        "kube-system",
        "prov-daemon",
        {"metadata": {"resourceVersion": rv}, "spec": {"holderIdentity": "c"}},
    )
    assert stale is False  # someone renewed it since rv was read
    assert world.kube.get_lease("kube-system", "prov-daemon")["spec"]["holderIdentity"] == "b"


def test_events_name_the_node(world):
    world.kube.event("n1", "CordonedForInterruption", "spot interruption; replacement r-1")
    assert world.events() == [
        ("n1", "CordonedForInterruption", "spot interruption; replacement r-1")
    ]
