"""One run of the whole spot chain, time-scaled, returning what happened (test_spot_chain.py
asserts on it). The real numbers are AWS's and the stack's: a 120 s spot notice, the pods'
120 s grace (15 s preStop + vLLM's 90 s --shutdown-timeout + 15 s), an instance that joins in
60 s, a replacement that loads its weights in ``load_ratio`` x the notice (5 x: 10 min, a
600 GB model read at ~1 GB/s from a warm cache), SQS visibility 120 s; every daemon interval
is its production default; all multiplied by ``scale``."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from cluster import Cluster, Result, Router, utc_second_boundary
from daemon_harness import KmockThread
from materialise import Materialised, as_moto_policy, materialise
from stack_harness import StackRun

from provisioner import fleet
from provisioner.daemon.config import DaemonConfig

NOTICE, GRACE_PRESTOP, VLLM_DRAIN, VISIBILITY = 120.0, 15.0, 90.0, 120.0
NOT_SCALED = {"http_timeout_seconds", "api_backoff_seconds", "sqs_wait_seconds"}


def scaled_config(scale: float, **kw: Any) -> DaemonConfig:
    """The daemon's production defaults with every interval multiplied by ``scale``."""
    base = DaemonConfig()
    fields = {
        f.name: max(0.01, getattr(base, f.name) * scale)
        for f in dataclasses.fields(base)
        if f.name.endswith("_seconds")
        and f.name not in NOT_SCALED
        and isinstance(getattr(base, f.name), float)
    }
    return DaemonConfig(**{**fields, "sqs_wait_seconds": 0, "metrics_port": None, **kw}).validate()


@dataclass
class Report:
    results: list[Result]
    old_pod: str
    old_instance: str
    new_pods: list[str]
    notice_at: float
    reclaimed_at: float
    replacement_ready_at: float | None
    message_gone_at: float | None
    live_instances: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    duplicates: float
    daemon_requests: list[tuple[str, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        """What went wrong, in words (empty: the chain held)."""
        out = []
        on_old = [r for r in self.results if r.pod == self.old_pod]
        bad = [r.outcome for r in self.results if r.outcome in ("cut", "aborted", "refused")]
        if not on_old:
            out.append("no request reached the interrupted replica")
        if bad:
            out.append(f"requests cut or refused: {sorted(set(bad))} x{len(bad)}")
        if self.replacement_ready_at is None:
            out.append("no replacement pod became Ready")
        if len(self.live_instances) != 1:
            ids = [(i["InstanceId"], i["State"]["Name"]) for i in self.live_instances]
            out.append(f"expected exactly one GPU instance after the chain, found {ids}")
        if self.message_gone_at is None:
            out.append("the notice's message was never deleted")
        elif self.replacement_ready_at is None or self.message_gone_at < self.replacement_ready_at:
            out.append("the message was deleted before the replacement was Ready")
        if self.duplicates:
            out.append(f"the message was received again {self.duplicates:.0f} time(s)")
        for n in self.nodes:
            spec = n.get("spec") or {}
            if spec.get("unschedulable") or any(
                t.get("key") == fleet.TAINT_KEY for t in spec.get("taints") or []
            ):
                out.append(f"node {n['metadata']['name']} left cordoned")
        out += self.errors
        return out


def _reset(moto_url: str, what: str, body: bytes = b"") -> None:
    req = urllib.request.Request(
        f"{moto_url}/moto-api/{what}",
        data=body,
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(req, timeout=10).read()


def run_chain(
    run: StackRun,
    moto_url: str,
    scale: float,
    load_ratio: float = 5.0,
    leave_out: frozenset[str] = frozenset(),
    slack: float = 6.0,
) -> Report:
    import boto3

    _reset(moto_url, "reset-auth", b"inf")
    _reset(moto_url, "reset")
    region = run.one("pulumi:providers:aws", "aws").inputs["region"]
    root = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
    )
    km = KmockThread()
    try:
        mat = materialise(
            run,
            lambda n: root.client(n, endpoint_url=moto_url),
            moto_url,
            max(1, round(VISIBILITY * scale)),
            km.url,
        )
        if leave_out:  # the least-privilege check: the stack's policy minus one action
            _narrow(root, moto_url, mat, leave_out)
        admin = _admin(root, moto_url, mat.region)
        _reset(moto_url, "reset-auth", b"0")  # from now on every call is checked against IAM
        return _chain(run, moto_url, mat, km, admin, scale, load_ratio, slack)
    finally:
        _reset(moto_url, "reset-auth", b"inf")
        km.stop()


def _narrow(root: Any, moto_url: str, mat: Materialised, leave_out: frozenset[str]) -> None:
    iam = root.client("iam", endpoint_url=moto_url)
    policy = json.loads(json.dumps(mat.policy))
    for st in policy["Statement"]:
        st["Action"] = [a for a in st["Action"] if a not in leave_out]
    policy["Statement"] = [st for st in policy["Statement"] if st["Action"]]
    iam.put_user_policy(
        UserName="prov-daemon",
        PolicyName="daemon",
        PolicyDocument=json.dumps(as_moto_policy(policy)),
    )


def _admin(root: Any, moto_url: str, region: str) -> Any:
    """The test's own hands (AWS itself, the kubelet's view of EC2): allowed everything."""
    import boto3

    iam = root.client("iam", endpoint_url=moto_url)
    iam.create_user(UserName="e2e-admin")
    iam.put_user_policy(
        UserName="e2e-admin",
        PolicyName="all",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
        ),
    )
    k = iam.create_access_key(UserName="e2e-admin")["AccessKey"]
    return boto3.session.Session(
        aws_access_key_id=k["AccessKeyId"],
        aws_secret_access_key=k["SecretAccessKey"],
        region_name=region,
    )


def _chain(
    run: StackRun,
    moto_url: str,
    mat: Materialised,
    km: KmockThread,
    admin: Any,
    scale: float,
    load_ratio: float,
    slack: float,
) -> Report:
    import boto3

    from provisioner.daemon.service import build_daemon

    c = lambda n: admin.client(n, endpoint_url=moto_url)  # noqa: E731
    ec2, asg, events, sqs = c("ec2"), c("autoscaling"), c("events"), c("sqs")
    load = NOTICE * load_ratio * scale
    cluster = Cluster(
        km,
        ec2,
        asg,
        mat,
        scale,
        load_seconds=0.2,
        prestop=GRACE_PRESTOP * scale,
        drain=VLLM_DRAIN * scale,
    ).start()
    d = None
    router = None
    try:
        deadline = time.monotonic() + 20
        while not cluster.timeline.pod_ready:  # the first start (not timed: the chain is)
            assert time.monotonic() < deadline, cluster.errors or "the first pod never got Ready"
            time.sleep(0.02)
        (old_pod,) = cluster.timeline.pod_ready
        old_node = cluster.timeline.pod_node[old_pod]
        (old,) = [i for i in cluster.instances() if i["PrivateDnsName"] == old_node]
        cluster.load = load  # from now on a pod loads like the real model
        key, secret = mat.daemon_keys
        session = boto3.session.Session(
            aws_access_key_id=key, aws_secret_access_key=secret, region_name=mat.region
        )
        cfg = scaled_config(
            scale,
            mode="queue",
            queue_url=mat.queue_url,
            region=mat.region,
            leader_elect=True,
            lease_namespace=fleet.DAEMON_NAMESPACE,
            identity="e2e",
        )
        endpoints = {"ec2": moto_url, "sqs": moto_url, "autoscaling": moto_url}
        d = build_daemon(cfg, api_url=km.url, session=session, endpoints=endpoints).start()
        # a 15 s streamed answer (20 chunks); endpoints propagate in ~1 s
        router = Router(cluster, tokens=20, token_delay=15.0 * scale / 20, refresh=1.0 * scale)
        router.start(3)
        time.sleep(0.3)
        when = utc_second_boundary()
        events.put_events(
            Entries=[
                {
                    "Source": "aws.ec2",
                    "DetailType": "EC2 Spot Instance Interruption Warning",
                    "Detail": json.dumps(
                        {"instance-id": old["InstanceId"], "instance-action": "terminate"}
                    ),
                    "Time": when,
                }
            ]
        )
        notice_at = time.monotonic()
        reclaim = threading.Timer(NOTICE * scale, cluster.reclaim, args=(old["InstanceId"],))
        reclaim.start()
        reclaimed_at = notice_at + NOTICE * scale
        ready_at = gone_at = None
        end = notice_at + NOTICE * scale + 60 * scale + load + slack
        while time.monotonic() < end:
            new = [p for p in cluster.timeline.pod_ready if p != old_pod]
            if new and ready_at is None:
                ready_at = cluster.timeline.pod_ready[new[0]]
            if gone_at is None and _messages(sqs, mat.queue_url) == 0:
                gone_at = time.monotonic()
            if ready_at is not None and gone_at is not None and time.monotonic() > reclaimed_at:
                break
            time.sleep(0.02)
        time.sleep(0.3)  # a few requests on the replacement
        router.stop()
        reclaim.join()
        time.sleep(0.2)  # let the cluster remove the reclaimed node
        with cluster.lock:
            nodes = cluster.nodes()
            live = [i for i in cluster.instances() if i["State"]["Name"] in ("pending", "running")]
        # A message deleted before Ready would show as gone_at < ready_at; deleted twice,
        # or received twice, shows in the daemon's duplicate counter.
        return Report(
            results=list(router.results),
            old_pod=old_pod,
            old_instance=old["InstanceId"],
            new_pods=[p for p in cluster.timeline.pod_ready if p != old_pod],
            notice_at=notice_at,
            reclaimed_at=reclaimed_at,
            replacement_ready_at=ready_at,
            message_gone_at=gone_at,
            live_instances=live,
            nodes=nodes,
            duplicates=d.m.duplicates.labels("sqs")._value.get(),
            daemon_requests=_daemon_requests(km),
            errors=list(cluster.errors),
        )
    finally:
        if router is not None:
            router.stop()
        if d is not None:
            d.stop(timeout=2)
        cluster.stop()


def _messages(sqs: Any, url: str) -> int:
    a = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


VERBS = {"GET": "get", "POST": "create", "PATCH": "patch", "DELETE": "delete", "PUT": "update"}


def _daemon_requests(km: KmockThread) -> list[tuple[str, str, str]]:
    """(verb, API group, resource[/subresource]) of every Kubernetes call the daemon made."""
    out = set()
    for r in km.all_requests():
        ua = (r.headers or {}).get("User-Agent", "")
        if r.resource is None or ua in ("e2e-cluster",) or ua.startswith("Python-urllib"):
            continue
        method = getattr(r.method, "value", r.method)
        verb = VERBS[str(method).upper()]
        if verb == "get" and not r.name:
            verb = "list"
        resource = r.resource.plural + (f"/{r.subresource}" if r.subresource else "")
        out.add((verb, r.resource.group or "", resource))
    return sorted(out)
