"""Real parts the daemon talks to in tests, all over HTTP on 127.0.0.1.

* moto's ThreadedMotoServer serves EC2, SQS, EventBridge (routed to SQS) and autoscaling;
* ``Ec2FaultProxy`` sits in front of moto for EC2 only and answers chosen calls with real-shaped
  EC2 errors (moto never runs out of capacity);
* ``KmockThread`` runs kmock's Kubernetes emulator on its own event loop, with an Eviction
  reaction that honours a PodDisruptionBudget rule by answering 429;
* ``ImdsServer`` stands in for instance metadata (IMDSv2 tokens enforced);
* ``NodeAgent`` does what the cluster does around the daemon: registers a Node for every running
  managed instance, puts the replica's vLLM pods on it, terminates evicted pods gracefully, and
  removes nodes of terminated instances;
* ``VllmStandIn`` streams tokens and follows vLLM's queueing and shutdown semantics, or is cut
  off at once (``kill``); ``LoadClient`` sends requests only to Ready endpoints, like a load
  balancer (tests/daemon/admission_router.py has the router that refuses the excess).

The last section (``FAST``, ``moto_server``, ``aws_stand``, ``build_test_daemon``, the burst
stream and its paced feeder) is shared by conftest.py and benchmarks/bench_daemon.py, which
imports this file by path.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import queue
import random
import socket
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from provisioner import fleet
from provisioner.daemon.config import DaemonConfig

REGION = "us-east-1"
AMI = "ami-0123456789abcdef0"  # made up: describe_images under moto is slow and not needed
NAMESPACE = "serving"


def wait_until(
    pred: Callable[[], Any], timeout: float = 10.0, every: float = 0.02, what: str = ""
) -> Any:
    """Poll a condition; fail the test with `what` if it does not hold within `timeout`."""
    end = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or pred}")
        time.sleep(every)


def _serve(server: ThreadingHTTPServer, name: str) -> threading.Thread:
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, args=(0.05,), name=name, daemon=True)
    t.start()
    return t


def managed_instances(ec2: Any) -> list[dict[str, Any]]:
    """Every instance carrying the fleet's managed tag, over all pages of describe_instances."""
    out: list[dict[str, Any]] = []
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": f"tag:{fleet.MANAGED}", "Values": ["true"]}]
    )
    for page in pages:
        for res in page["Reservations"]:
            out += res["Instances"]
    return out


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return

    def reply(self, code: int, body: bytes = b"", ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


# ---------------------------------------------------------------------------------------------
# IMDS
# ---------------------------------------------------------------------------------------------


class ImdsServer:
    """Instance metadata on 127.0.0.1: IMDSv2 token required, 404 for absent paths."""

    def __init__(self, instance_id: str) -> None:
        self.paths: dict[str, str] = {"instance-id": instance_id}
        self.tokens: set[str] = set()
        self.hits: list[tuple[str, str, int]] = []
        outer = self

        class H(_Quiet):
            def do_PUT(self) -> None:
                if self.path != "/latest/api/token" or not self.headers.get(
                    "X-aws-ec2-metadata-token-ttl-seconds"
                ):
                    outer.hits.append(("PUT", self.path, 400))
                    return self.reply(400)
                tok = uuid.uuid4().hex
                outer.tokens.add(tok)
                outer.hits.append(("PUT", self.path, 200))
                self.reply(200, tok.encode())

            def do_GET(self) -> None:
                if self.headers.get("X-aws-ec2-metadata-token") not in outer.tokens:
                    outer.hits.append(("GET", self.path, 401))
                    return self.reply(401)
                path = self.path.removeprefix("/latest/meta-data/")
                body = outer.paths.get(path)
                outer.hits.append(("GET", self.path, 200 if body is not None else 404))
                if body is None:
                    return self.reply(404, b"Not Found")
                self.reply(200, body.encode(), "application/json")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        _serve(self.httpd, "imds")

    def set(self, path: str, body: Any) -> None:
        if body is None:
            self.paths.pop(path, None)
        else:
            self.paths[path] = body if isinstance(body, str) else json.dumps(body)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------------------------
# EC2 fault proxy
# ---------------------------------------------------------------------------------------------

Rule = Callable[[dict[str, str]], tuple[int, str] | None]


class Ec2FaultProxy:
    """Forwards EC2 query-protocol calls to moto; a rule may answer one with an EC2 error."""

    def __init__(self, upstream: str) -> None:
        up = urllib.parse.urlsplit(upstream)
        self.up_host, self.up_port = up.hostname or "127.0.0.1", up.port or 80
        self.rules: list[Rule] = []
        self.calls: list[tuple[str, dict[str, str], str | None]] = []
        outer = self

        class H(_Quiet):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()}
                for rule in outer.rules:
                    hit = rule(params)
                    if hit:
                        status, code = hit
                        outer.calls.append((params.get("Action", ""), params, code))
                        xml = (
                            '<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
                            f"<Code>{code}</Code><Message>injected by the test proxy</Message>"
                            f"</Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>"
                        )
                        return self.reply(status, xml.encode(), "text/xml")
                outer.calls.append((params.get("Action", ""), params, None))
                conn = http.client.HTTPConnection(outer.up_host, outer.up_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        _serve(self.httpd, "ec2-proxy")

    def launches(self) -> list[tuple[dict[str, str], str | None]]:
        return [(p, code) for action, p, code in self.calls if action == "RunInstances"]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------------------------
# kmock on its own loop
# ---------------------------------------------------------------------------------------------


class KmockThread:
    """kmock's KubernetesEmulator served over HTTP from a background event loop.

    ``evict_policy(namespace, name) -> bool`` decides each Eviction: False answers 429 the way
    a PodDisruptionBudget does; True marks the pod terminating (deletionTimestamp, not Ready)
    and queues it on ``evictions`` for the kubelet stand-in to terminate gracefully.
    ``faults[name] > 0`` makes matching requests answer 500 (and counts down).
    """

    def __init__(self) -> None:
        import kmock

        self.kmock = kmock
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.evictions: queue.Queue[tuple[str, str, int]] = queue.Queue()
        self.evict_policy: Callable[[str, str], bool] = lambda ns, name: True
        self.eviction_log: list[tuple[str, str, int]] = []  # (pod, answer, grace)
        self.eviction_at: list[float] = []  # monotonic time of each eviction_log entry
        self.faults: dict[str, int] = {}
        self.log: list[Any] = []
        self.fault_hits: dict[str, int] = {}
        self.thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("kmock did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        km_mod = self.kmock
        outer = self

        class Emulator(km_mod.KubernetesEmulator):  # type: ignore[misc]
            async def _handle(self, request: Any) -> Any:
                # kmock matches each request against its whole request history, so a long
                # history makes every request slower; keep the last few (enough for the
                # requests in flight) and move the rest to ``log`` for assertions.
                if len(self._requests) > 16:
                    outer.log.extend(self._requests[:-8])
                    del self._requests[:-8]
                return await super()._handle(request)

        async with Emulator() as km, km_mod.Server(km) as srv:
            self.km = km
            self.url = str(srv.url).rstrip("/")
            self._stop = asyncio.Event()
            pods = km_mod.resource("v1/pods")
            for res in ("v1/nodes", "v1/pods", "v1/events", "coordination.k8s.io/v1/leases"):
                km.resources[res] = {}  # known even before the first object exists
            # One reaction for all injected faults (kmock checks every reaction on every request).
            km[lambda req: self._fault_for(req) is not None] << (
                lambda req: self._fail(self._fault_for(req) or "")
            )
            # after the faults: kmock tries reactions in the order they were added
            km["post", pods, km_mod.subresource("eviction")] << self._on_evict
            self.ready.set()
            await self._stop.wait()

    def _fault_for(self, req: Any) -> str | None:
        if not self.faults or req.resource is None:
            return None
        name = {
            ("nodes", "GET"): "get-node",
            ("nodes", "PATCH"): "patch-node",
            ("pods", "GET"): "list-pods",
            ("pods", "POST"): "evict" if req.subresource == "eviction" else None,
        }.get((req.resource.plural, getattr(req.method, "value", req.method)))
        return name if name and self.faults.get(name, 0) > 0 else None

    def _fail(self, name: str) -> Any:
        self.faults[name] -= 1
        self.fault_hits[name] = self.fault_hits.get(name, 0) + 1
        return self.kmock.Response(
            status=500,
            payload={
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "code": 500,
                "reason": "InternalError",
                "message": f"injected {name} failure",
            },
        )

    def _on_evict(self, req: Any) -> Any:
        self.eviction_at.append(time.monotonic())
        grace = int(((req.data or {}).get("deleteOptions") or {}).get("gracePeriodSeconds") or 30)
        key = (self.kmock.resource("v1/pods"), req.namespace, req.name)
        if key not in self.km.objects or self.km.objects[key].deleted:
            self.eviction_log.append((req.name, "404", grace))
            return self.kmock.Response(status=404, payload={"kind": "Status", "code": 404})
        if not self.evict_policy(req.namespace, req.name):
            self.eviction_log.append((req.name, "429", grace))
            return self.kmock.Response(
                status=429,
                payload={
                    "kind": "Status",
                    "apiVersion": "v1",
                    "status": "Failure",
                    "code": 429,
                    "reason": "TooManyRequests",
                    "message": "Cannot evict pod as it would violate the pod's disruption budget.",
                },
            )
        obj = self.km.objects[key]
        if not (obj.get("metadata") or {}).get("deletionTimestamp"):
            obj.patch(
                {
                    "metadata": {"deletionTimestamp": datetime.now(UTC).isoformat()},
                    "status": {"conditions": [{"type": "Ready", "status": "False"}]},
                }
            )
            self.evictions.put((req.namespace, req.name, grace))
        self.eviction_log.append((req.name, "201", grace))
        return self.kmock.Response(
            status=201, payload={"kind": "Status", "apiVersion": "v1", "status": "Success"}
        )

    def put_nodes(self, instances: list[dict[str, Any]]) -> None:
        """Register Ready nodes for instances straight into kmock's store (bulk set-up)."""
        res = self.kmock.resource("v1/nodes")

        def put() -> None:
            for i in instances:
                zone = i["Placement"]["AvailabilityZone"]
                self.km.objects[res, None, i["PrivateDnsName"]] = {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {"name": i["PrivateDnsName"], "labels": {}},
                    "spec": {"providerID": f"aws:///{zone}/{i['InstanceId']}"},
                    "status": {"conditions": ready_condition(True)},
                }

        self.call(put)

    def ready_pods(self, namespace: str, exclude: str | None = None) -> list[str]:
        """Ready, not terminating vLLM pods (call on kmock's loop, e.g. from evict_policy)."""
        out = []
        for (res, ns, name), obj in self.km.objects.items():
            if obj.deleted or res.plural != "pods" or ns != namespace or name == exclude:
                continue
            raw = obj.raw
            meta = raw.get("metadata") or {}
            if meta.get("deletionTimestamp"):
                continue
            if (meta.get("labels") or {}).get(fleet.WORKLOAD_LABEL) != fleet.WORKLOAD_VALUE:
                continue
            conds = (raw.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                out.append(name)
        return out

    def pdb(self, min_available: int) -> Callable[[str, str], bool]:
        """A PodDisruptionBudget over the vLLM pods: minAvailable=N."""
        return lambda ns, name: len(self.ready_pods(ns, exclude=name)) >= min_available

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run fn on kmock's loop (to read or change its objects safely)."""

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def all_requests(self) -> list[Any]:
        """Every request served so far, in order."""
        return self.call(lambda: self.log + list(self.km._requests))

    def requests(self, method: str, plural: str, name: str | None = None) -> list[Any]:
        def pick() -> list[Any]:
            return [
                r
                for r in self.log + list(self.km._requests)
                if r.method == method.upper()
                and r.resource is not None
                and r.resource.plural == plural
                and (name is None or r.name == name)
            ]

        return self.call(pick)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


# ---------------------------------------------------------------------------------------------
# The cluster around the daemon
# ---------------------------------------------------------------------------------------------


def ready_condition(ready: bool) -> list[dict[str, str]]:
    return [{"type": "Ready", "status": "True" if ready else "False"}]


@dataclass
class PodSpec:
    name: str
    node: str
    replica: str
    role: str  # "leader" serves; "worker" holds the other pipeline stages
    url: str | None = None


class NodeAgent:
    """Kubelet + node lifecycle controller + LeaderWorkerSet stand-in, over real HTTP.

    Every ``period`` it looks at EC2 (moto) and Kubernetes (kmock): a running managed instance
    without a Node gets one (after ``boot_delay``), named after its private DNS name like EKS,
    with providerID, Ready; each node of a replica gets the replica's pod (leader on the first),
    Ready after ``load_delay`` (the model loading); a DaemonSet pod too. Evicted pods are
    terminated by ``terminate(pod, grace)`` on their own thread (default: a short shutdown,
    then the pod is deleted). Nodes of terminated instances are removed (kept in ``gone``).
    """

    def __init__(
        self,
        ec2: Any,
        core: Any,
        km: KmockThread,
        boot_delay: float = 0.05,
        load_delay: float = 0.1,
        period: float = 0.05,
        on_pod: Callable[[PodSpec], str | None] | None = None,
        terminate: Callable[[PodSpec, int], None] | None = None,
        pod_grace: int = 1,
    ) -> None:
        self.ec2 = ec2
        self.pod_grace = pod_grace  # the vLLM pods' terminationGracePeriodSeconds
        self.core = core
        self.km = km
        self.boot_delay = boot_delay
        self.load_delay = load_delay
        self.period = period
        self.on_pod = on_pod
        self.terminate = terminate or (lambda pod, grace: time.sleep(min(0.1, grace)))
        self.seen: dict[str, float] = {}
        self.registered: set[str] = set()
        self.pods: dict[str, PodSpec] = {}
        self.pending_ready: dict[str, float] = {}
        self.ready_at: dict[str, float] = {}
        self.ready_span: dict[str, tuple[float, float]] = {}
        self.gone: dict[str, dict[str, Any]] = {}
        self.stop_flag = threading.Event()
        self.errors: list[str] = []
        self._sync_lock = threading.Lock()
        self.thread = threading.Thread(target=self._loop, name="node-agent", daemon=True)

    def start(self) -> NodeAgent:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(10)

    def _instances(self) -> list[dict[str, Any]]:
        return managed_instances(self.ec2)

    def _loop(self) -> None:
        while not self.stop_flag.wait(self.period):
            try:
                self.sync()
            except Exception as e:  # keep going, but remember (tests can assert none)
                self.errors.append(f"{type(e).__name__}: {e}")

    def settle(self) -> None:
        """Register what is running now, Ready at once (the cluster as it was before the test)."""
        with self._sync_lock:
            past = time.monotonic() - 3600
            self._sync_locked(seen_at=past)
            for pod in self.pending_ready:
                self.pending_ready[pod] = past
            self._sync_locked()

    def sync(self) -> None:
        with self._sync_lock:
            self._sync_locked()

    def _sync_locked(self, seen_at: float | None = None) -> None:
        now = time.monotonic()
        insts = self._instances()
        by_replica: dict[str, list[dict[str, Any]]] = {}
        for i in insts:
            t = {x["Key"]: x["Value"] for x in i.get("Tags", [])}
            by_replica.setdefault(t.get(fleet.REPLICA, i["InstanceId"]), []).append(i)
        for replica, members in by_replica.items():
            members.sort(key=lambda i: i["InstanceId"])
            for idx, i in enumerate(members):
                name = i["PrivateDnsName"]
                state = i["State"]["Name"]
                if state == "running":
                    # settle(): booted long ago, even if the background loop saw it a moment ago
                    first = self.seen.get(i["InstanceId"], now)
                    self.seen[i["InstanceId"]] = min(first, seen_at) if seen_at else first
                    booted = now - self.seen[i["InstanceId"]] >= self.boot_delay
                    if i["InstanceId"] not in self.registered and booted:
                        self._register(i, replica, idx)
                        self.registered.add(i["InstanceId"])
                elif state in ("shutting-down", "terminated", "stopped"):
                    self._remove(name)
        for pod, since in list(self.pending_ready.items()):
            if now - since >= self.load_delay:
                del self.pending_ready[pod]
                before = time.monotonic()
                self._patch_pod(pod, {"status": {"conditions": ready_condition(True)}})
                self.ready_at[pod] = time.monotonic()
                # kmock applied the patch somewhere in this span (the daemon may see it Ready
                # before the response comes back here)
                self.ready_span[pod] = (before, self.ready_at[pod])
        while True:
            try:
                ns, pod, grace = self.km.evictions.get_nowait()
            except queue.Empty:
                break
            spec = self.pods.get(pod)
            threading.Thread(
                target=self._terminate, args=(ns, pod, spec, grace), daemon=True
            ).start()

    def pods_by_node(self) -> dict[str, str]:
        return {p.node: p.name for p in self.pods.values()}

    def _register(self, i: dict[str, Any], replica: str, idx: int) -> None:
        t = {x["Key"]: x["Value"] for x in i.get("Tags", [])}
        name = i["PrivateDnsName"]
        zone = i["Placement"]["AvailabilityZone"]
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "topology.kubernetes.io/zone": zone,
                    "node.kubernetes.io/instance-type": i["InstanceType"],
                    fleet.POOL: t.get(fleet.POOL, ""),
                    fleet.REPLICA: replica,
                },
            },
            "spec": {"providerID": f"aws:///{zone}/{i['InstanceId']}"},
            "status": {"conditions": ready_condition(True)},
        }
        with contextlib.suppress(Exception):  # 409 when it exists already
            self.core.create_node(node, _preload_content=False)
        role = "leader" if idx == 0 else "worker"
        spec = PodSpec(f"vllm-{replica}-{idx}", name, replica, role)
        if self.on_pod is not None and role == "leader":
            spec.url = self.on_pod(spec)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": spec.name,
                "namespace": NAMESPACE,
                "labels": {
                    fleet.WORKLOAD_LABEL: fleet.WORKLOAD_VALUE,
                    fleet.REPLICA: replica,
                    "role": role,
                },
                "annotations": {"test/url": spec.url or ""},
                "ownerReferences": [
                    {"kind": "LeaderWorkerSet", "name": "vllm", "apiVersion": "x/v1", "uid": "1"}
                ],
            },
            "spec": {
                "nodeName": name,
                "terminationGracePeriodSeconds": self.pod_grace,
                "containers": [{"name": "vllm", "image": "vllm"}],
            },
            "status": {"conditions": ready_condition(False)},
        }
        self.core.create_namespaced_pod(NAMESPACE, pod, _preload_content=False)
        ds = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"node-exporter-{name}",
                "namespace": "kube-system",
                "ownerReferences": [
                    {"kind": "DaemonSet", "name": "ne", "apiVersion": "apps/v1", "uid": "2"}
                ],
            },
            "spec": {"nodeName": name, "containers": [{"name": "ne", "image": "ne"}]},
            "status": {"conditions": ready_condition(True)},
        }
        with contextlib.suppress(Exception):
            self.core.create_namespaced_pod("kube-system", ds, _preload_content=False)
        self.pods[spec.name] = spec
        self.pending_ready[spec.name] = time.monotonic()

    def _patch_pod(self, name: str, body: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):  # deleted meanwhile
            self.core.patch_namespaced_pod(
                name,
                NAMESPACE,
                body,
                _content_type="application/merge-patch+json",
                _preload_content=False,
            )

    def _terminate(self, ns: str, pod: str, spec: PodSpec | None, grace: int) -> None:
        if spec is not None:
            self.terminate(spec, grace)
        with contextlib.suppress(Exception):
            self.core.delete_namespaced_pod(pod, ns, _preload_content=False)
        self.pods.pop(pod, None)
        self.pending_ready.pop(pod, None)

    def _remove(self, node: str) -> None:
        if node in self.gone:
            return
        try:
            obj = json.loads(self.core.read_node(node, _preload_content=False).data)
        except Exception:
            obj = None
        if obj is None and node not in self.pods_by_node():
            return
        self.gone[node] = obj or {}
        for p in [p for p in self.pods.values() if p.node == node]:
            with contextlib.suppress(Exception):
                self.core.delete_namespaced_pod(p.name, NAMESPACE, _preload_content=False)
            self.pods.pop(p.name, None)
            self.pending_ready.pop(p.name, None)
        with contextlib.suppress(Exception):
            self.core.delete_namespaced_pod(
                f"node-exporter-{node}", "kube-system", _preload_content=False
            )
        with contextlib.suppress(Exception):
            self.core.delete_node(node, _preload_content=False)


# ---------------------------------------------------------------------------------------------
# AWS helpers
# ---------------------------------------------------------------------------------------------


@dataclass
class Aws:
    ec2: Any
    sqs: Any
    events: Any
    autoscaling: Any
    queue_url: str = ""
    vpc: str = ""
    subnets: dict[str, str] = field(default_factory=dict)
    template: str = ""

    def setup(self) -> Aws:
        self.vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        for k, zone in enumerate(("us-east-1a", "us-east-1b", "us-east-1c")):
            sid = self.ec2.create_subnet(
                VpcId=self.vpc, CidrBlock=f"10.0.{k + 1}.0/24", AvailabilityZone=zone
            )["Subnet"]["SubnetId"]
            self.ec2.create_tags(Resources=[sid], Tags=[{"Key": fleet.MANAGED, "Value": "true"}])
            self.subnets[zone] = sid
        self.template = self.ec2.create_launch_template(
            LaunchTemplateName="prov-gpu",
            LaunchTemplateData={"ImageId": AMI, "InstanceType": "p5.48xlarge"},
        )["LaunchTemplate"]["LaunchTemplateId"]
        self.queue_url = self.sqs.create_queue(
            QueueName="prov-interruptions", Attributes={"VisibilityTimeout": "30"}
        )["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.events.put_rule(
            Name="prov-interruptions",
            EventPattern=json.dumps({"source": ["aws.ec2", "aws.health", "aws.autoscaling"]}),
        )
        self.events.put_targets(Rule="prov-interruptions", Targets=[{"Id": "q", "Arn": arn}])
        return self

    def launch_replica(
        self,
        replica: str | None,
        size: int = 1,
        pool: str = "pool-a",
        instance_type: str = "p5.48xlarge",
        zone: str = "us-east-1a",
        market: str = "spot",
        managed: bool = True,
    ) -> list[dict[str, Any]]:
        tag_list = [{"Key": fleet.POOL, "Value": pool}]
        if replica is not None:  # without it, every instance is its own one-node replica
            tag_list += [
                {"Key": fleet.REPLICA, "Value": replica},
                {"Key": fleet.REPLICA_SIZE, "Value": str(size)},
            ]
        if managed:
            tag_list.append({"Key": fleet.MANAGED, "Value": "true"})
        kw: dict[str, Any] = {
            "LaunchTemplate": {"LaunchTemplateId": self.template, "Version": "$Latest"},
            "InstanceType": instance_type,
            "MinCount": size,
            "MaxCount": size,
            "SubnetId": self.subnets[zone],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list}],
        }
        if market == "spot":
            kw["InstanceMarketOptions"] = {"MarketType": "spot"}
        return sorted(self.ec2.run_instances(**kw)["Instances"], key=lambda i: i["InstanceId"])

    def instances(self, **tag_filter: str) -> list[dict[str, Any]]:
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tag_filter.items()]
        out = []
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for res in page["Reservations"]:
                out += res["Instances"]
        return out

    def live(self, **tag_filter: str) -> list[dict[str, Any]]:
        return [
            i for i in self.instances(**tag_filter) if i["State"]["Name"] in ("pending", "running")
        ]

    def replacements_of(self, replica: str) -> list[dict[str, Any]]:
        return self.instances(**{fleet.REPLACES: replica})

    def put(
        self,
        detail_type: str,
        detail: dict[str, Any],
        source: str = "aws.ec2",
        time_: datetime | None = None,
    ) -> None:
        entry: dict[str, Any] = {
            "Source": source,
            "DetailType": detail_type,
            "Detail": json.dumps(detail),
        }
        if time_ is not None:
            entry["Time"] = time_
        resp = self.events.put_events(Entries=[entry])
        assert resp["FailedEntryCount"] == 0, resp

    def spot_warning(self, instance_id: str, seconds_left: float) -> None:
        """A spot interruption warning whose 2-minute deadline is `seconds_left` (up to 1 s
        more) from now: EventBridge times have whole seconds, so the time is rounded up; cut,
        a "3 s" notice could leave 2.0 s, too little on a loaded machine."""
        when = datetime.now(UTC) - timedelta(seconds=120 - seconds_left)
        if when.microsecond:
            when = when.replace(microsecond=0) + timedelta(seconds=1)
        self.put(
            "EC2 Spot Instance Interruption Warning",
            {"instance-id": instance_id, "instance-action": "terminate"},
            time_=when,
        )

    def messages_left(self) -> int:
        a = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(a["ApproximateNumberOfMessages"]) + int(
            a["ApproximateNumberOfMessagesNotVisible"]
        )


# ---------------------------------------------------------------------------------------------
# vLLM stand-in and the load client (chaos test)
# ---------------------------------------------------------------------------------------------


class VllmStandIn:
    """Streams tokens with vLLM's queueing and shutdown rules (vLLM v0.18.0, read from the
    release wheel):

    * ``max_num_seqs``: at most that many requests run at once; more wait in the scheduler's
      queue (vLLM has no bound on that queue and never refuses for load). None: no limit;
    * on SIGTERM (``shutdown``, with the pod's grace period) it keeps accepting for
      ``prestop`` (the preStop sleep: endpoint removal propagates), then refuses new requests
      with a 503 (``EngineCore._reject_add_in_shutdown``), lets running ones finish until the
      grace period ends and aborts the rest cleanly with an error event, then exits;
    * ``kill()`` is the instance vanishing: open connections are cut mid-stream (a real socket
      shutdown, not an error event).

    ``started`` holds the monotonic start of every accepted request."""

    def __init__(self, prestop: float = 0.25, max_num_seqs: int | None = None) -> None:
        self.prestop = prestop
        self.slots = threading.Semaphore(max_num_seqs) if max_num_seqs else None
        self.accepting = True
        self.abort_at: float | None = None
        self.killed = False
        self.started: list[float] = []
        self.in_flight = 0
        self.aborted = 0
        self.refused = 0
        self._lock = threading.Lock()
        self._conns: set[Any] = set()
        outer = self

        class H(_Quiet):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                req = json.loads(self.rfile.read(n) or b"{}")
                if not outer.accepting:
                    with outer._lock:
                        outer.refused += 1
                    return self.reply(503, b"shutting down")
                with outer._lock:
                    outer.started.append(time.monotonic())
                    outer.in_flight += 1
                    outer._conns.add(self.connection)
                try:
                    with outer.slots or contextlib.nullcontext():  # the waiting queue
                        outer._stream(
                            self, int(req.get("tokens", 10)), float(req.get("token_delay", 0.02))
                        )
                except OSError:
                    pass  # killed: the connection is gone
                finally:
                    self.close_connection = True
                    with outer._lock:
                        outer.in_flight -= 1
                        outer._conns.discard(self.connection)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        _serve(self.httpd, "vllm")

    def _stream(self, h: BaseHTTPRequestHandler, tokens: int, delay: float) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        for k in range(tokens):
            if self.abort_at is not None and time.monotonic() >= self.abort_at:
                h.wfile.write(b'data: {"error": "aborted: server shutting down"}\n\n')
                with self._lock:
                    self.aborted += 1
                return
            time.sleep(delay)
            h.wfile.write(f'data: {{"token": {k}}}\n\n'.encode())
            h.wfile.flush()
        h.wfile.write(b"data: [DONE]\n\n")

    def shutdown(self, grace: float) -> None:
        """SIGTERM with a grace period (the pod's terminationGracePeriod, from the eviction)."""
        start = time.monotonic()
        self.abort_at = start + max(0.0, grace - 0.05)
        time.sleep(min(self.prestop, grace))  # preStop: the endpoint is removed, keep serving
        self.accepting = False
        while self.in_flight and time.monotonic() < start + grace + 0.5:
            time.sleep(0.01)
        self.httpd.shutdown()
        self.httpd.server_close()

    def kill(self) -> None:
        """The instance is gone: every open connection is cut."""
        self.killed = True
        self.accepting = False
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            self.httpd.shutdown()
            self.httpd.server_close()


@dataclass
class RequestResult:
    kind: str  # "short" | "long"
    outcome: str  # "ok" | "aborted" | "failed"
    retried: bool = False
    detail: str = ""


def ready_endpoints(core: Any, workload_only: bool = False) -> list[str]:
    """What an endpoints controller lists: the URLs of Ready pods (not being deleted) on nodes
    not excluded from load balancers; ``workload_only``: only pods labelled as the workload."""
    nodes = json.loads(core.list_node(_preload_content=False).data)["items"]
    excluded = {
        n["metadata"]["name"]
        for n in nodes
        if (n["metadata"].get("labels") or {}).get(fleet.EXCLUDE_LB_LABEL) == "true"
    }
    pods = json.loads(core.list_namespaced_pod(NAMESPACE, _preload_content=False).data)["items"]
    out = []
    for p in pods:
        meta = p["metadata"]
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (p.get("status") or {}).get("conditions", [])
        )
        url = (meta.get("annotations") or {}).get("test/url")
        labelled = (meta.get("labels") or {}).get(fleet.WORKLOAD_LABEL) == fleet.WORKLOAD_VALUE
        if (
            ready
            and url
            and (labelled or not workload_only)
            and not meta.get("deletionTimestamp")
            and p["spec"]["nodeName"] not in excluded
        ):
            out.append(url)
    return out


class LoadClient:
    """Sends requests only to Ready endpoints (Ready pods on nodes not excluded from load
    balancers), refreshing its view every ``refresh`` seconds like an endpoints controller."""

    def __init__(self, core: Any, refresh: float = 0.03) -> None:
        self.core = core
        self.refresh = refresh
        self.endpoints: list[str] = []
        self.results: list[RequestResult] = []
        self._lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.threads: list[threading.Thread] = []

    def _view(self) -> list[str]:
        return ready_endpoints(self.core)

    def _watch(self) -> None:
        while not self.stop_flag.wait(self.refresh):
            with contextlib.suppress(Exception):
                self.endpoints = self._view()

    def send(self, url: str, tokens: int, delay: float) -> tuple[str, str]:
        u = urllib.parse.urlsplit(url)
        try:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=tokens * delay + 5)
            conn.request(
                "POST", "/v1/completions", body=json.dumps({"tokens": tokens, "token_delay": delay})
            )
            resp = conn.getresponse()
            if resp.status != 200:
                return "failed", f"HTTP {resp.status}"
            body = resp.read().decode()
            conn.close()
        except Exception as e:
            return "failed", f"{type(e).__name__}: {e}"
        if "[DONE]" in body:
            return "ok", ""
        if '"error": "aborted' in body:
            return "aborted", ""
        return "failed", "stream ended without [DONE] or an abort"

    def request(
        self, kind: str, tokens: int, delay: float, url: str | None = None
    ) -> RequestResult:
        eps = self.endpoints
        target = url or (random.choice(eps) if eps else None)
        if target is None:
            res = RequestResult(kind, "failed", detail="no Ready endpoint")
        else:
            outcome, why = self.send(target, tokens, delay)
            res = RequestResult(kind, outcome, detail=why)
            if outcome == "aborted":  # one client retry, on another Ready endpoint
                others = [e for e in self.endpoints if e != target] or self.endpoints
                retry_outcome, why = (
                    self.send(random.choice(others), tokens, delay)
                    if others
                    else ("failed", "no endpoint")
                )
                res = RequestResult(kind, retry_outcome, retried=True, detail=why)
        with self._lock:
            self.results.append(res)
        return res

    def start(self, workers: int, tokens: int, delay: float) -> LoadClient:
        self.endpoints = self._view()
        self.threads.append(threading.Thread(target=self._watch, daemon=True))

        def loop() -> None:
            while not self.stop_flag.is_set():
                self.request("short", tokens, delay)

        self.threads += [threading.Thread(target=loop, daemon=True) for _ in range(workers)]
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join(10)


def node_json(core: Any, name: str) -> dict[str, Any] | None:
    from kubernetes.client import ApiException

    try:
        return json.loads(core.read_node(name, _preload_content=False).data)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics and parse it with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


# ---------------------------------------------------------------------------------------------
# Shared with benchmarks/bench_daemon.py: the stand, a test daemon, the burst
# ---------------------------------------------------------------------------------------------

# Production defaults shrunk ~100x; each test overrides what it is about.
FAST: dict[str, Any] = dict(
    step_interval_seconds=0.05,
    dispatch_interval_seconds=0.05,
    ack_flush_seconds=0.05,
    poll_interval_seconds=0.05,
    sqs_wait_seconds=0,
    housekeeping_interval_seconds=0.5,
    jitter_seconds=0.01,
    shutdown_timeout_seconds=1.0,
    drain_margin_seconds=0.5,
    api_backoff_seconds=0.02,
    replacement_timeout_seconds=20.0,
    spare_interval_seconds=0.1,
    stop_timeout_seconds=10.0,
    workers=4,
    metrics_port=None,
    metrics_host="127.0.0.1",
    namespace_events="default",
)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on 127.0.0.1 (any free port); yields its URL. No environment variable is
    changed: clients get explicit endpoints and credentials."""
    import logging

    import moto.backends
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    # moto's server lists its own package directory on every request to route it (a stat of
    # ~150 folders): the listing never changes, so remember it. Behaviour is unchanged.
    original = moto.backends.list_of_moto_modules
    modules = tuple(original())
    moto.backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        moto.backends.list_of_moto_modules = original  # type: ignore[assignment]


def new_boto_session() -> Any:
    import boto3

    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
    )


def aws_stand(moto_url: str, session: Any) -> Aws:
    """Reset moto, then the account the daemon works in: VPC, subnets, template, queue, rule."""
    req = urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST")
    urllib.request.urlopen(req, timeout=10).read()

    def c(name: str) -> Any:
        return session.client(name, endpoint_url=moto_url)

    return Aws(c("ec2"), c("sqs"), c("events"), c("autoscaling")).setup()


def build_test_daemon(
    aws: Aws, kube_url: str, moto_url: str, session: Any, ec2_url: str | None = None, **kw: Any
) -> Any:
    """A real daemon (build_daemon) on the stand, with FAST intervals and ``kw`` overrides."""
    from provisioner.daemon.service import build_daemon

    cfg = DaemonConfig(**{**FAST, "mode": "queue", "queue_url": aws.queue_url, **kw}).validate()
    endpoints = {"ec2": ec2_url or moto_url, "sqs": moto_url, "autoscaling": moto_url}
    return build_daemon(cfg, api_url=kube_url, session=session, endpoints=endpoints)


# The burst: what an availability zone losing capacity looks like to one fleet. For each replica
# a rebalance recommendation, then the instance going through stopping, stopped and
# shutting-down, all as distinct EventBridge events; at-least-once delivery repeats some.
BURST_KINDS: tuple[tuple[str, dict[str, str]], ...] = (
    ("EC2 Instance Rebalance Recommendation", {}),
    ("EC2 Instance State-change Notification", {"state": "stopping"}),
    ("EC2 Instance State-change Notification", {"state": "stopped"}),
    ("EC2 Instance State-change Notification", {"state": "shutting-down"}),
)


def eventbridge_body(instance_id: str, detail_type: str, extra: dict[str, str]) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": "aws.ec2",
            "account": "123456789012",
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": REGION,
            "resources": [f"arn:aws:ec2:{REGION}:123456789012:instance/{instance_id}"],
            "detail": {"instance-id": instance_id, **extra},
        }
    )


def burst_stream(
    instance_ids: list[str], redelivered: int, seed: int = 6
) -> tuple[list[str], list[str]]:
    """(the distinct notices, the stream to send: them shuffled, then ``redelivered`` repeats).
    In a storm nothing orders the notices of one instance: any order must work."""
    rng = random.Random(seed)
    notices = [eventbridge_body(i, dt, extra) for i in instance_ids for dt, extra in BURST_KINDS]
    order = list(range(len(notices)))
    rng.shuffle(order)
    stream = [notices[k] for k in order] + [notices[k] for k in rng.sample(order, redelivered)]
    return notices, stream


def feed(aws: Aws, daemon: Any, stream: list[str], ahead: int = 30) -> None:
    """Send the stream in batches of 10, a little ahead of the daemon's acknowledgements
    (moto's SQS receive costs O(queue depth) per message, a real queue does not)."""
    sent = 0
    acked = daemon.m.actions.labels("ack", "ok")
    while sent < len(stream):
        if sent - acked._value.get() < ahead:
            batch = stream[sent : sent + 10]
            aws.sqs.send_message_batch(
                QueueUrl=aws.queue_url,
                Entries=[{"Id": str(k), "MessageBody": b} for k, b in enumerate(batch)],
            )
            sent += len(batch)
        else:
            time.sleep(0.01)
