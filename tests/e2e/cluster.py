"""What EKS, the kubelet, the Deployment controller and kube-proxy do around the daemon, over
real HTTP (moto for EC2, kmock for the Kubernetes API), with time scaled by ``scale``.

* nodes: a running instance tagged by the stack joins after ``boot`` seconds, named after its
  private DNS name, with the labels and taints its launch template's nodeadm config gives it;
  a terminated instance's node is removed and the pods on it die at once (connections cut);
* the Deployment controller keeps ``replicas`` pods that are not terminating, from the
  Deployment's own template (labels, grace period, nodeSelector, tolerations);
* the scheduler binds a pending pod to a Ready, schedulable node whose labels match its
  nodeSelector, whose NoSchedule taints it tolerates, with no other pod of the workload (one
  pod takes all the node's GPUs);
* the kubelet starts a vLLM stand-in ``load`` seconds after binding (loading the weights) and
  marks the pod Ready; on eviction it runs the pod's shutdown: preStop (endpoints go first),
  then vLLM's drain (refuse new requests, finish in-flight ones within --shutdown-timeout,
  abort the rest cleanly), bounded by the eviction's grace period;
* Evictions honour the PodDisruptionBudget the stack rendered (maxUnavailable against the
  Deployment's replicas; never-Ready pods may always go);
* AWS reclaims the instance at its deadline: an instance still in its Auto Scaling group is
  terminated the way the ASG sees a lost spot instance (it launches a new one).

The router follows Kubernetes endpoint semantics and nothing more: a pod is an endpoint when it
matches the Service selector, is Ready and is not terminating (no node label is honoured: kube-
proxy honours none). Requests are streamed; each outcome is recorded with the pod it went to.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from daemon_harness import KmockThread, VllmStandIn, managed_instances


class Vllm(VllmStandIn):
    """vLLM's shutdown: preStop keeps serving, then --shutdown-timeout to finish in-flight
    requests; what is left is aborted cleanly (an error event, not a cut connection)."""

    def __init__(self, prestop: float, drain: float) -> None:
        super().__init__(prestop=prestop)
        self.drain = drain
        self.killed = False

    def shutdown(self, grace: float) -> None:
        start = time.monotonic()
        self.abort_at = start + min(grace, self.prestop + self.drain)
        time.sleep(min(self.prestop, grace))
        self.accepting = False
        while self.in_flight and time.monotonic() < start + grace:
            time.sleep(0.005)
        self.kill()

    def kill(self) -> None:
        """The process (or its node) is gone: open connections are cut."""
        if self.killed:
            return
        self.killed = True
        self.httpd.shutdown()
        self.httpd.server_close()


def _ready(obj: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (obj.get("status") or {}).get("conditions") or []
    )


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") not in (None, "", taint.get("effect")):
            continue
        if t.get("operator") == "Exists" and t.get("key") in (None, taint["key"]):
            return True
        if t.get("key") == taint["key"] and t.get("value") == taint.get("value"):
            return True
    return False


@dataclass
class Timeline:
    pod_ready: dict[str, float]  # pod -> monotonic time it became Ready
    pod_node: dict[str, str]


class Cluster:
    def __init__(
        self,
        km: KmockThread,
        ec2: Any,
        asg: Any,
        mat: Any,
        scale: float,
        load_seconds: float,
        prestop: float,
        drain: float,
    ) -> None:
        from kubernetes import client

        api = client.ApiClient(client.Configuration(host=km.url))
        api.user_agent = "e2e-cluster"  # the daemon's requests are told apart by this
        self.core = client.CoreV1Api(api)
        self.km, self.ec2, self.asg, self.mat = km, ec2, asg, mat
        self.boot = 60 * scale  # an instance takes about a minute to join the cluster
        self.load = load_seconds
        self.prestop, self.drain = prestop, drain
        self.ns = mat.namespace
        self.dep = mat.deployment
        self.selector = self.dep["spec"]["selector"]["matchLabels"]
        self.seen: dict[str, float] = {}
        self.bound_at: dict[str, float] = {}
        self.servers: dict[str, Vllm] = {}
        self.timeline = Timeline({}, {})
        self.errors: list[str] = []
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        km.evict_policy = self.pdb_allows
        self.threads = [
            threading.Thread(target=self._loop, daemon=True, name="cluster"),
            threading.Thread(target=self._evictions, daemon=True, name="kubelet-evict"),
        ]

    def start(self) -> Cluster:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(5)
        for s in self.servers.values():
            s.kill()

    # -- reads --------------------------------------------------------------------------------

    def pods(self) -> list[dict[str, Any]]:
        data = self.core.list_namespaced_pod(self.ns, _preload_content=False).data
        return json.loads(data)["items"]

    def nodes(self) -> list[dict[str, Any]]:
        return json.loads(self.core.list_node(_preload_content=False).data)["items"]

    def workload_pods(self) -> list[dict[str, Any]]:
        return [
            p
            for p in self.pods()
            if self.selector.items() <= (p["metadata"].get("labels") or {}).items()
        ]

    def instances(self) -> list[dict[str, Any]]:
        return managed_instances(self.ec2)

    # -- the PodDisruptionBudget ----------------------------------------------------------

    def _store_pods(self, namespace: str) -> list[dict[str, Any]]:
        """The workload's pods straight from kmock's store (runs on kmock's own loop: an HTTP
        call back into kmock from here would wait for itself)."""
        sel = self.mat.pdb["spec"]["selector"]["matchLabels"]
        return [
            obj.raw
            for (res, ns, _), obj in self.km.km.objects.items()
            if not obj.deleted
            and res.plural == "pods"
            and ns == namespace
            and sel.items() <= ((obj.raw.get("metadata") or {}).get("labels") or {}).items()
        ]

    def pdb_allows(self, namespace: str, name: str) -> bool:
        """policy/v1 semantics: disruptionsAllowed = currentHealthy - desiredHealthy."""
        spec = self.mat.pdb["spec"]
        pods = self._store_pods(namespace)
        pod = next((p for p in pods if p["metadata"]["name"] == name), None)
        if pod is None or not _ready(pod):
            return True  # unhealthyPodEvictionPolicy: AlwaysAllow
        healthy = sum(1 for p in pods if _ready(p) and not p["metadata"].get("deletionTimestamp"))
        expected = self.dep["spec"]["replicas"]
        if "maxUnavailable" in spec:
            desired_healthy = expected - spec["maxUnavailable"]
        else:
            desired_healthy = spec["minAvailable"]
        return healthy - desired_healthy >= 1

    # -- the control loop ---------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stop_flag.wait(0.02):
            try:
                with self.lock:
                    self.sync()
            except Exception as e:  # the test fails on these
                self.errors.append(f"{type(e).__name__}: {e}")

    def sync(self) -> None:
        now = time.monotonic()
        insts = {i["PrivateDnsName"]: i for i in self.instances()}
        nodes = {n["metadata"]["name"]: n for n in self.nodes()}
        for name, i in insts.items():
            state = i["State"]["Name"]
            if state == "running" and name not in nodes:
                first = self.seen.setdefault(name, now)
                if now - first >= self.boot:
                    self._join(i)
            elif state != "running" and name in nodes:
                self._node_gone(name)
        pods = self.workload_pods()
        active = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        for _ in range(self.dep["spec"]["replicas"] - len(active)):
            self._create_pod()
        nodes = {n["metadata"]["name"]: n for n in self.nodes()}
        for p in self.workload_pods():
            meta, spec = p["metadata"], p["spec"]
            if meta.get("deletionTimestamp"):
                continue
            if not spec.get("nodeName"):
                self._schedule(p, nodes, active)
            elif not _ready(p) and meta["name"] not in self.servers:
                bound = self.bound_at.setdefault(meta["name"], now)
                if now - bound >= self.load:
                    self._start(p)

    def _join(self, i: dict[str, Any]) -> None:
        name, zone = i["PrivateDnsName"], i["Placement"]["AvailabilityZone"]
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {**self.mat.node_labels, "kubernetes.io/hostname": name},
            },
            "spec": {
                "providerID": f"aws:///{zone}/{i['InstanceId']}",
                "taints": self.mat.node_taints,
            },
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }
        self.core.create_node(node, _preload_content=False)

    def _node_gone(self, name: str) -> None:
        for p in self.pods():
            if p["spec"].get("nodeName") == name:
                server = self.servers.get(p["metadata"]["name"])
                if server is not None:
                    server.kill()
                with contextlib.suppress(Exception):
                    self.core.delete_namespaced_pod(p["metadata"]["name"], self.ns)
        with contextlib.suppress(Exception):
            self.core.delete_node(name)

    def _create_pod(self) -> None:
        template = self.dep["spec"]["template"]
        name = f"{self.dep['metadata']['name']}-{uuid.uuid4().hex[:5]}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**template["metadata"], "name": name, "namespace": self.ns},
            "spec": template["spec"],
            "status": {"phase": "Pending"},
        }
        self.core.create_namespaced_pod(self.ns, pod, _preload_content=False)

    def _schedule(self, pod: dict[str, Any], nodes: dict[str, Any], active: list[Any]) -> None:
        spec = pod["spec"]
        taken = {p["spec"].get("nodeName") for p in active}
        for name, node in sorted(nodes.items()):
            labels = node["metadata"].get("labels") or {}
            nspec = node.get("spec") or {}
            if (
                name in taken
                or nspec.get("unschedulable")
                or not _ready(node)
                or not (spec.get("nodeSelector") or {}).items() <= labels.items()
                or not all(
                    _tolerates(spec.get("tolerations") or [], t)
                    for t in nspec.get("taints") or []
                    if t.get("effect") in ("NoSchedule", "NoExecute")
                )
            ):
                continue
            self.core.patch_namespaced_pod(
                pod["metadata"]["name"],
                self.ns,
                {"spec": {"nodeName": name}},
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )
            self.timeline.pod_node[pod["metadata"]["name"]] = name
            return

    def _start(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        server = Vllm(self.prestop, self.drain)
        self.servers[name] = server
        self.core.patch_namespaced_pod(
            name,
            self.ns,
            {
                "metadata": {"annotations": {"test/url": server.url}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]},
            },
            _content_type="application/merge-patch+json",
            _preload_content=False,
        )
        self.timeline.pod_ready[name] = time.monotonic()

    def _evictions(self) -> None:
        while not self.stop_flag.is_set():
            try:
                ns, pod, grace = self.km.evictions.get(timeout=0.05)
            except Exception:
                continue
            threading.Thread(target=self._terminate, args=(ns, pod, grace), daemon=True).start()

    def _terminate(self, ns: str, pod: str, grace: int) -> None:
        server = self.servers.get(pod)
        if server is not None:
            server.shutdown(grace)
        with contextlib.suppress(Exception):
            self.core.delete_namespaced_pod(pod, ns)

    # -- AWS reclaiming the instance ------------------------------------------------------

    def reclaim(self, instance_id: str) -> None:
        in_group = self.asg.describe_auto_scaling_instances(InstanceIds=[instance_id])[
            "AutoScalingInstances"
        ]
        if in_group:  # the ASG sees its instance lost and launches another
            self.asg.terminate_instance_in_auto_scaling_group(
                InstanceId=instance_id, ShouldDecrementDesiredCapacity=False
            )
        else:
            self.ec2.terminate_instances(InstanceIds=[instance_id])


@dataclass
class Result:
    outcome: str  # ok | aborted | cut | refused | no-endpoint
    pod: str | None
    at: float


class Router:
    """kube-proxy for the Service: endpoints are the selected pods that are Ready and not
    terminating, refreshed every ``refresh`` seconds; requests go round-robin."""

    def __init__(self, cluster: Cluster, tokens: int, token_delay: float, refresh: float) -> None:
        self.cluster = cluster
        self.selector = cluster.mat.service["spec"]["selector"]
        self.tokens, self.delay, self.refresh = tokens, token_delay, refresh
        self.endpoints: list[tuple[str, str]] = []
        self.results: list[Result] = []
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.rr = itertools.count()
        self.threads: list[threading.Thread] = []

    def _view(self) -> list[tuple[str, str]]:
        out = []
        for p in self.cluster.pods():
            meta = p["metadata"]
            url = (meta.get("annotations") or {}).get("test/url")
            if (
                self.selector.items() <= (meta.get("labels") or {}).items()
                and _ready(p)
                and not meta.get("deletionTimestamp")
                and url
            ):
                out.append((meta["name"], url))
        return sorted(out)

    def _watch(self) -> None:
        while not self.stop_flag.wait(self.refresh):
            with contextlib.suppress(Exception):
                self.endpoints = self._view()

    def send(self) -> Result:
        eps = self.endpoints
        if not eps:
            time.sleep(self.refresh)
            return Result("no-endpoint", None, time.monotonic())
        pod, url = eps[next(self.rr) % len(eps)]
        u = urllib.parse.urlsplit(url)
        try:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            conn.request(
                "POST",
                "/v1/completions",
                body=json.dumps({"tokens": self.tokens, "token_delay": self.delay}),
            )
            resp = conn.getresponse()
            body = resp.read().decode()
            conn.close()
        except Exception:
            return Result("cut", pod, time.monotonic())
        if resp.status == 503:
            return Result("refused", pod, time.monotonic())
        if "[DONE]" in body:
            return Result("ok", pod, time.monotonic())
        if '"error": "aborted' in body:
            return Result("aborted", pod, time.monotonic())
        return Result("cut", pod, time.monotonic())

    def start(self, workers: int) -> Router:
        self.endpoints = self._view()
        self.threads.append(threading.Thread(target=self._watch, daemon=True))

        def loop() -> None:
            while not self.stop_flag.is_set():
                r = self.send()
                with self.lock:
                    self.results.append(r)

        self.threads += [threading.Thread(target=loop, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(10)


def utc_second_boundary() -> datetime:
    """Sleep to just past a whole second and return it: EventBridge event times have one-second
    resolution, so a notice sent then carries its exact time (time-scaled deadlines are short)."""
    now = time.time()
    time.sleep(1 - (now % 1) + 0.005)
    return datetime.fromtimestamp(int(time.time()), UTC)
