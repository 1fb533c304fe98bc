"""Scenarios ported from aws-node-termination-handler's end-to-end list, against a moto server
(EC2, SQS, EventBridge), kmock (Kubernetes API) and an IMDS stand-in, all on 127.0.0.1.

Each asserts state: nodes cordoned/tainted/labelled, pods evicted through the Eviction API,
replacement instances and their tags, SQS messages deleted, metrics.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from datetime import UTC, datetime, timedelta

import pytest
from daemon_harness import NAMESPACE, NodeAgent, node_json, scrape, wait_until

from provisioner import fleet

SPOT = "EC2 Spot Instance Interruption Warning"


def taint_keys(node: dict) -> set[str]:
    return {t["key"] for t in (node.get("spec") or {}).get("taints") or []}


def state_of(node: dict) -> dict:
    return json.loads((node["metadata"].get("annotations") or {}).get(fleet.STATE_ANNOTATION, "{}"))


def evictions(k8s, pod_prefix: str = "vllm-") -> list[tuple[str, str, int]]:
    return [e for e in k8s.eviction_log if e[0].startswith(pod_prefix)]


def one_replica(aws, agent, replica: str = "r1", **kw):
    """A running replica whose node and pods are already up when the test starts."""
    insts = aws.launch_replica(replica, **kw)
    agent.settle()
    assert all(i["PrivateDnsName"] in agent.pods_by_node() for i in insts)
    return insts


def handled(d, n: int = 1, timeout: float = 15):
    """The first n outcomes that finished (deferred steps are left out)."""

    def final():
        done = [(e, o) for e, o in list(d.outcomes) if o.status != "deferred"]
        return done[:n] if len(done) >= n else None

    return wait_until(final, timeout, what=f"{n} handled")


def test_spot_notice_via_sqs_replaces_first_then_drains(aws, agent, core, k8s, make_daemon):
    (inst,) = one_replica(aws, agent)
    name = inst["PrivateDnsName"]
    d = make_daemon()
    aws.spot_warning(inst["InstanceId"], seconds_left=5)
    [(ev, out)] = handled(d)
    assert (ev.kind, out.action) == ("spot-interruption", "replaced-and-drained")

    # Replacement: one spot instance, same type, tagged as the replacement of r1. The reclaimed
    # pool (p5.48xlarge, us-east-1a, spot) is blocked, so it went to the next zone.
    [new] = aws.replacements_of("r1")
    t = {x["Key"]: x["Value"] for x in new["Tags"]}
    assert t[fleet.MANAGED] == "true" and t[fleet.POOL] == "pool-a"
    assert t[fleet.REPLICA_SIZE] == "1" and t[fleet.MARKET] == "spot"
    assert new["InstanceLifecycle"] == "spot" and new["InstanceType"] == "p5.48xlarge"
    assert new["Placement"]["AvailabilityZone"] == "us-east-1b"

    # The old node was tainted, cordoned and pulled out of external load balancers before the
    # pod was evicted; the state annotation recorded the replacement; the instance is retired.
    wait_until(lambda: name in agent.gone, what="the retired node removed")  # loaded machine
    old = agent.gone[name]
    assert old["spec"]["unschedulable"] is True
    assert fleet.TAINT_KEY in taint_keys(old)
    assert old["metadata"]["labels"][fleet.EXCLUDE_LB_LABEL] == "true"
    assert state_of(old)["replacement"] == t[fleet.REPLICA]
    assert evictions(k8s) == [("vllm-r1-0", "201", 1)]  # grace = the pod's own (1 s)
    assert not [e for e in k8s.eviction_log if e[0].startswith("node-exporter")]  # DaemonSet stays
    seq = k8s.all_requests()
    first_patch = next(i for i, r in enumerate(seq) if r.method == "PATCH" and r.name == name)
    first_evict = next(i for i, r in enumerate(seq) if r.subresource == "eviction")
    assert first_patch < first_evict  # cordon before eviction
    assert (
        aws.ec2.describe_instances(InstanceIds=[inst["InstanceId"]])["Reservations"][0][
            "Instances"
        ][0]["State"]["Name"]
        == "terminated"
    )

    # The replacement is Ready with its pod, and the SQS message is gone.
    new_node = node_json(core, new["PrivateDnsName"])
    assert new_node is not None and not new_node["spec"].get("unschedulable")
    wait_until(lambda: aws.messages_left() == 0, what="message deleted")
    assert d.handler.timings.replacement[0] < d.handler.timings.cordon[0]  # replace FIRST


def test_spot_notice_via_imds(aws, agent, core, k8s, make_daemon, imds_server):
    (inst,) = one_replica(aws, agent)
    imds = imds_server(inst["InstanceId"])
    d = make_daemon(mode="imds", metadata_url=imds.url, node_name=inst["PrivateDnsName"])
    wait_until(lambda: d.polls >= 2, what="IMDS polled")
    assert not d.outcomes  # 404 on every path: nothing to do
    when = (datetime.now(UTC) + timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    imds.set("spot/instance-action", {"action": "terminate", "time": when})
    [(ev, out)] = handled(d)
    assert (ev.kind, ev.source, out.action) == ("spot-interruption", "imds", "replaced-and-drained")
    assert ev.start_time == datetime.fromisoformat(when.replace("Z", "+00:00"))
    assert len(aws.replacements_of("r1")) == 1
    assert evictions(k8s) == [("vllm-r1-0", "201", 1)]
    # IMDSv2: every GET carried a token (no 401), the same notice polled again is not redone.
    assert all(code != 401 for _, _, code in imds.hits)
    n = d.polls
    wait_until(lambda: d.polls >= n + 3, what="more polls")
    assert len(d.outcomes) == 1 and len(aws.replacements_of("r1")) == 1


def test_dry_run_changes_nothing_and_logs_decisions(aws, agent, core, k8s, make_daemon, caplog):
    (inst,) = one_replica(aws, agent)
    d = make_daemon(dry_run=True)
    with caplog.at_level("INFO", logger="prov"):
        aws.spot_warning(inst["InstanceId"], seconds_left=30)
        [(_, out)] = handled(d)
    assert out.action == "dry-run"
    decisions = out.detail["decisions"]
    # The reclaimed spot pool (us-east-1a) is skipped; then on-demand in every zone, own first.
    new_id = "r-" + hashlib.sha256(b"pool-a/r1").hexdigest()[:10]  # replaced once, same id
    assert decisions[0] == (
        f"request replacement {new_id} (1 node(s)) trying p5.48xlarge@us-east-1b/spot, "
        "p5.48xlarge@us-east-1c/spot, p5.48xlarge@us-east-1a/on-demand, "
        "p5.48xlarge@us-east-1b/on-demand, p5.48xlarge@us-east-1c/on-demand"
    )
    assert any(x.startswith("taint prov.dev/interruption=spot-interruption") for x in decisions)
    assert any(
        x.startswith(f"evict 1 pod(s) on {inst['PrivateDnsName']}: {NAMESPACE}/vllm-r1-0")
        for x in decisions
    )
    assert sum("dry-run: would" in r.getMessage() for r in caplog.records) == len(decisions)
    node = node_json(core, inst["PrivateDnsName"])
    assert not node["spec"].get("unschedulable") and not taint_keys(node)
    assert aws.replacements_of("r1") == [] and k8s.eviction_log == []
    assert aws.messages_left() == 1  # not even the queue is touched


def test_rebalance_cordons_only_by_default(aws, agent, core, k8s, make_daemon):
    (inst,) = one_replica(aws, agent)
    d = make_daemon(max_events=1)
    aws.put("EC2 Instance Rebalance Recommendation", {"instance-id": inst["InstanceId"]})
    [(ev, out)] = handled(d)
    assert (ev.kind, out.action) == ("rebalance-recommendation", "cordoned")
    node = node_json(core, inst["PrivateDnsName"])
    assert node["spec"]["unschedulable"] is True
    assert fleet.TAINT_KEY in taint_keys(node)
    assert fleet.EXCLUDE_LB_LABEL not in node["metadata"]["labels"]  # still serving
    assert k8s.eviction_log == [] and aws.replacements_of("r1") == []
    wait_until(lambda: aws.messages_left() == 0, what="message deleted")
    assert d.finished.is_set()  # --max-events 1: the daemon's run() returns now


def test_rebalance_drain_replaces_and_drains(aws, agent, core, k8s, make_daemon):
    (inst,) = one_replica(aws, agent)
    d = make_daemon(rebalance_drain=True)
    aws.put("EC2 Instance Rebalance Recommendation", {"instance-id": inst["InstanceId"]})
    [(_, out)] = handled(d)
    assert out.action == "replaced-and-drained"
    assert len(aws.replacements_of("r1")) == 1
    assert evictions(k8s) == [("vllm-r1-0", "201", 1)]
    wait_until(lambda: aws.messages_left() == 0, what="message deleted")
    print("timings", d.handler.timings)


def test_prewarm_on_rebalance_then_spot_reuses_the_replacement(aws, agent, core, k8s, make_daemon):
    (inst,) = one_replica(aws, agent)
    d = make_daemon(prewarm_on_rebalance=True)
    aws.put("EC2 Instance Rebalance Recommendation", {"instance-id": inst["InstanceId"]})
    [(_, out)] = handled(d)
    assert out.action == "cordoned+replacement" and k8s.eviction_log == []
    [pre] = aws.replacements_of("r1")
    aws.spot_warning(inst["InstanceId"], seconds_left=5)
    handled(d, 2)
    assert d.outcomes[1][1].action == "replaced-and-drained"
    assert [i["InstanceId"] for i in aws.replacements_of("r1")] == [pre["InstanceId"]]
    assert evictions(k8s) == [("vllm-r1-0", "201", 1)]


def test_late_notice_without_a_node_still_gets_its_replacement(aws, core, k8s, make_daemon):
    """The node is gone (or never joined) when the notice is handled: nothing to drain, but
    the replica must be restored, and the message is deleted only once that is Ready."""
    (inst,) = aws.launch_replica("r9")  # no node agent yet: no node for it
    d = make_daemon()
    aws.spot_warning(inst["InstanceId"], seconds_left=10)
    wait_until(lambda: aws.replacements_of("r9"), what="replacement launched")
    time.sleep(0.5)
    assert d.outcomes == deque() and aws.messages_left() == 1  # not Ready yet: kept
    aws.ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])  # reclaimed meanwhile
    agent = NodeAgent(aws.ec2, core, k8s).start()  # the replacement's node joins and loads
    try:
        [(_, out)] = handled(d)
        assert out.action == "replaced"
        wait_until(lambda: aws.messages_left() == 0, what="message deleted")
    finally:
        agent.stop()


def test_unmanaged_and_unknown_instances_are_ignored(aws, agent, core, k8s, make_daemon):
    (inst,) = aws.launch_replica("x1", managed=False)
    d = make_daemon()
    aws.spot_warning(inst["InstanceId"], seconds_left=10)
    aws.spot_warning("i-00000000000000001", seconds_left=10)  # not in this account/region
    outcomes = {ev.instance_id: o.action for ev, o in handled(d, 2)}
    assert outcomes == {
        inst["InstanceId"]: "ignored-unmanaged",
        "i-00000000000000001": "instance-not-found",
    }
    assert aws.replacements_of("x1") == [] and k8s.eviction_log == []
    wait_until(lambda: aws.messages_left() == 0, what="messages deleted")


def test_scheduled_maintenance_cordons_then_drains_at_start_minus_lead(
    aws, agent, core, k8s, make_daemon
):
    (inst,) = one_replica(aws, agent)
    # AWS Health: start in 3.5 s; lead 1.5 s: cordon now, drain from start - 1.5 s.
    start = datetime.now(UTC) + timedelta(seconds=3.5)
    d = make_daemon(maintenance_lead_seconds=1.5)
    t0 = time.monotonic()
    aws.put(
        "AWS Health Event",
        {
            "eventArn": "arn:aws:health:us-east-1::event/EC2/RETIREMENT/x1",
            "service": "EC2",
            "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
            "eventTypeCategory": "scheduledChange",
            "statusCode": "upcoming",
            "startTime": start.strftime("%a, %d %b %Y %H:%M:%S GMT"),
            "affectedEntities": [{"entityValue": inst["InstanceId"]}],
        },
        source="aws.health",
    )
    wait_until(
        lambda: (
            (node_json(core, inst["PrivateDnsName"]) or {}).get("spec", {}).get("unschedulable")
        ),
        what="cordoned at once",
    )
    assert k8s.eviction_log == []  # not yet: the drain waits for start - lead
    [(ev, out)] = handled(d, timeout=15)
    assert (ev.kind, out.action) == ("scheduled-change", "replaced-and-drained")
    first_evict = k8s.requests("post", "pods", "vllm-r1-0")[0]
    assert first_evict is not None
    # evicted no earlier than the start AWS announced (to the second) minus the 1.5 s lead
    announced = start.replace(microsecond=0)
    assert datetime.now(UTC) >= announced - timedelta(seconds=1.5)
    assert time.monotonic() > t0
    assert len(aws.replacements_of("r1")) == 1
    wait_until(lambda: aws.messages_left() == 0, what="message deleted")


def test_scheduled_maintenance_cancellation_uncordons(
    aws, agent, core, k8s, make_daemon, imds_server
):
    (inst,) = one_replica(aws, agent)
    imds = imds_server(inst["InstanceId"])
    d = make_daemon(
        mode="imds",
        metadata_url=imds.url,
        node_name=inst["PrivateDnsName"],
        maintenance_lead_seconds=600,
    )
    start = (datetime.now(UTC) + timedelta(hours=2)).strftime("%d %b %Y %H:%M:%S GMT")
    item = {
        "Code": "system-reboot",
        "Description": "scheduled reboot",
        "EventId": "instance-event-0abc",
        "NotBefore": start,
        "NotAfter": start,
        "State": "active",
    }
    imds.set("events/maintenance/scheduled", [item])
    wait_until(
        lambda: (
            (node_json(core, inst["PrivateDnsName"]) or {}).get("spec", {}).get("unschedulable")
        ),
        what="cordoned for the maintenance",
    )
    assert (
        state_of(node_json(core, inst["PrivateDnsName"]))["maintenance_id"] == "instance-event-0abc"
    )
    imds.set("events/maintenance/scheduled", [{**item, "State": "canceled"}])
    wait_until(lambda: any(o.action == "uncordoned" for _, o in d.outcomes), what="uncordoned")
    node = node_json(core, inst["PrivateDnsName"])
    assert not node["spec"].get("unschedulable")
    assert fleet.TAINT_KEY not in taint_keys(node)
    assert fleet.STATE_ANNOTATION not in (node["metadata"].get("annotations") or {})
    assert k8s.eviction_log == [] and aws.replacements_of("r1") == []
    assert d.store.counts()["pending"] == 0  # the deferred drain was cancelled


def test_state_change_terminated_without_notice_restores_the_replica(
    aws, agent, core, k8s, make_daemon
):
    (inst,) = one_replica(aws, agent)
    name = inst["PrivateDnsName"]
    agent.stop()  # nobody else removes the node: the daemon cleans it up
    d = make_daemon()
    aws.ec2.terminate_instances(InstanceIds=[inst["InstanceId"]])
    aws.put(
        "EC2 Instance State-change Notification",
        {"instance-id": inst["InstanceId"], "state": "terminated"},
    )
    [(_, out)] = handled(d)
    assert out.action == "replacement-requested"
    assert node_json(core, name) is None
    assert len(aws.replacements_of("r1")) == 1
    # The next state change for the same instance (duplicate 'terminated') changes nothing.
    aws.put(
        "EC2 Instance State-change Notification",
        {"instance-id": inst["InstanceId"], "state": "terminated"},
    )
    wait_until(lambda: aws.messages_left() == 0, what="acked")
    assert len(aws.replacements_of("r1")) == 1


def test_state_change_stopping_cordons(aws, agent, core, make_daemon):
    (inst,) = one_replica(aws, agent)
    d = make_daemon()
    aws.put(
        "EC2 Instance State-change Notification",
        {"instance-id": inst["InstanceId"], "state": "stopping"},
    )
    aws.put(
        "EC2 Instance State-change Notification",
        {"instance-id": inst["InstanceId"], "state": "running"},
    )
    [(_, out)] = handled(d)
    assert out.action == "cordoned"
    assert node_json(core, inst["PrivateDnsName"])["spec"]["unschedulable"] is True
    wait_until(lambda: aws.messages_left() == 0, what="both acked ('running' is irrelevant)")
    assert d.m.skipped.labels("irrelevant")._value.get() == 1


def test_cordon_only_replaces_and_cordons_but_never_evicts(aws, agent, core, k8s, make_daemon):
    (inst,) = one_replica(aws, agent)
    d = make_daemon(cordon_only=True)
    aws.spot_warning(inst["InstanceId"], seconds_left=10)
    [(_, out)] = handled(d)
    assert out.action == "cordoned+replacement"
    assert len(aws.replacements_of("r1")) == 1
    node = node_json(core, inst["PrivateDnsName"])
    assert node["spec"]["unschedulable"] is True
    # not drained, so still serving: it stays in the load balancers (they go at drain start)
    assert fleet.EXCLUDE_LB_LABEL not in node["metadata"]["labels"]
    assert k8s.eviction_log == []


def test_asg_lifecycle_drains_and_tries_to_continue(aws, agent, core, k8s, make_daemon):
    (inst,) = one_replica(aws, agent)
    d = make_daemon()
    aws.put(
        "EC2 Instance-terminate Lifecycle Action",
        {
            "LifecycleActionToken": "tok-1",
            "AutoScalingGroupName": "gpu",
            "LifecycleHookName": "drain",
            "EC2InstanceId": inst["InstanceId"],
            "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
        },
        source="aws.autoscaling",
    )
    [(_, out)] = handled(d)
    assert out.action == "drained-for-asg"
    assert evictions(k8s) == [("vllm-r1-0", "201", 1)]
    assert aws.replacements_of("r1") == []  # the ASG replaces its own instances...
    state = aws.ec2.describe_instances(InstanceIds=[inst["InstanceId"]])["Reservations"][0]
    assert state["Instances"][0]["State"]["Name"] == "running"  # ...and terminates them itself
    # moto does not implement CompleteLifecycleAction: the daemon logs it and moves on.
    assert d.m.errors.labels("complete-lifecycle")._value.get() == 1
    wait_until(lambda: aws.messages_left() == 0, what="message deleted")


def test_bad_payloads_are_logged_skips_never_fatal(aws, agent, make_daemon, caplog):
    d = make_daemon()
    with caplog.at_level("WARNING", logger="prov"):
        aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody="{not json")
        aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=json.dumps([1, 2]))
        aws.put("EC2 Fleet Spot Instance Request Error", {"x": 1})  # unknown kind
        aws.put(SPOT, {"instance-id": "not-an-instance"})
        wait_until(lambda: aws.messages_left() == 0, what="all skipped and deleted")
    assert d.m.skipped.labels("malformed")._value.get() == 3
    assert d.m.skipped.labels("unknown")._value.get() == 1
    assert sum(r.getMessage() == "skipping message" for r in caplog.records) == 4
    assert d.scheduler.running and d.health() is None


def test_prometheus_metrics_and_healthz(aws, agent, make_daemon):
    import urllib.error
    import urllib.request

    (inst,) = one_replica(aws, agent)
    d = make_daemon(metrics_port=0)
    port = d.server.port
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read() == b"ok\n"
    aws.spot_warning(inst["InstanceId"], seconds_left=5)
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody="garbage")
    handled(d)
    wait_until(lambda: aws.messages_left() == 0, what="acked")
    m = scrape(port)
    assert m[("prov_daemon_events_total", (("kind", "spot-interruption"), ("source", "sqs")))] == 1
    assert m[("prov_daemon_replacements_total", (("market", "spot"),))] == 1
    assert m[("prov_daemon_actions_total", (("action", "evict"), ("result", "ok")))] == 1
    assert m[("prov_daemon_actions_total", (("action", "cordon"), ("result", "ok")))] == 1
    assert m[("prov_daemon_skipped_total", (("reason", "malformed"),))] == 1
    assert m[("prov_daemon_drain_seconds_count", ())] == 1
    assert m[("prov_daemon_notice_to_cordon_seconds_count", ())] == 1
    assert 0 < m[("prov_daemon_notice_to_replacement_seconds_sum", ())] < 2.0
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=5)
    assert e.value.code == 404
    d.scheduler.shutdown(wait=True)  # a stopped scheduler makes the daemon unhealthy
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert e.value.code == 503
