"""Fault scenarios: a PDB that holds the drain, a daemon killed mid-drain, duplicate notices,
no spot capacity, an on-demand floor, Kubernetes 500s, SIGTERM while draining, leader election."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

from daemon_harness import node_json, wait_until
from test_daemon_scenarios import handled, one_replica, state_of

from provisioner import fleet
from provisioner.daemon.config import Alternative


def test_pdb_blocks_eviction_until_the_replacement_is_ready(aws, agent, k8s, make_daemon):
    (inst,) = one_replica(aws, agent)
    k8s.evict_policy = k8s.pdb(min_available=1)  # the only replica cannot go first
    agent.load_delay = 0.5  # the replacement's model takes a while to load
    d = make_daemon(hold_for_replacement=False)  # evict at once: only the PDB holds the pod
    aws.spot_warning(inst["InstanceId"], seconds_left=10)
    [(_, out)] = handled(d)
    assert out.action == "replaced-and-drained"
    answers = [
        (a, t)
        for (p, a, _), t in zip(k8s.eviction_log, k8s.eviction_at, strict=True)
        if p == "vllm-r1-0"
    ]
    assert answers[0][0] == "429" and [a for a, _ in answers].count("201") == 1
    assert answers[-1][0] == "201"
    [new_pod] = [p for p in agent.ready_at if p != "vllm-r1-0"]
    ready_from, ready_by = agent.ready_span[new_pod]  # the new pod turned Ready in between
    assert answers[-1][1] >= ready_from  # evicted only once the new one was Ready
    assert all(t < ready_by for a, t in answers if a == "429")
    assert d.m.actions.labels("evict", "blocked")._value.get() == len(answers) - 1


def test_daemon_killed_mid_drain_resumes_without_relaunch_or_early_uncordon(
    aws, agent, core, k8s, make_daemon
):
    (inst,) = one_replica(aws, agent)
    name = inst["PrivateDnsName"]
    k8s.evict_policy = lambda ns, pod: False  # stuck mid-drain (a PDB that never allows it)
    aws.sqs.set_queue_attributes(QueueUrl=aws.queue_url, Attributes={"VisibilityTimeout": "1"})
    fast_redelivery = dict(hold_for_replacement=False, visibility_keepalive_seconds=0.5)
    d1 = make_daemon(**fast_redelivery)
    aws.spot_warning(inst["InstanceId"], seconds_left=20)
    wait_until(lambda: any(a == "429" for _, a, _ in k8s.eviction_log), what="draining")
    [first] = aws.replacements_of("r1")
    d1.kill()  # SIGKILL: nothing acknowledged
    st = state_of(node_json(core, name))
    assert (st["phase"] == "draining" and st["replacement"] == first["Tags"] and False) or st[
        "phase"
    ] == "draining"
    k8s.evict_policy = lambda ns, pod: True
    d2 = make_daemon(**fast_redelivery)  # fresh process, empty store: SQS redelivers
    [(_, out)] = handled(d2, timeout=20)
    assert out.action == "replaced-and-drained"
    assert [i["InstanceId"] for i in aws.replacements_of("r1")] == [first["InstanceId"]]
    for r in k8s.requests("patch", "nodes", name):  # never uncordoned on the way
        assert (r.data.get("spec") or {}).get("unschedulable", True) is True
    wait_until(lambda: aws.messages_left() == 0, what="message deleted")
    assert d1.outcomes == type(d1.outcomes)()  # the killed daemon finished nothing


def test_duplicate_notice_is_handled_once(aws, agent, k8s, make_daemon):
    (inst,) = one_replica(aws, agent)
    d = make_daemon()
    when = (datetime.now(UTC) - timedelta(seconds=115)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "EC2 Spot Instance Interruption Warning",
            "source": "aws.ec2",
            "account": "123456789012",
            "time": when,
            "region": "us-east-1",
            "resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{inst['InstanceId']}"],
            "detail": {"instance-id": inst["InstanceId"], "instance-action": "terminate"},
        }
    )
    for _ in range(2):  # EventBridge delivers at least once
        aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=body)
    handled(d)
    aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=body)  # and again, after the fact
    wait_until(lambda: aws.messages_left() == 0, what="all three acked")
    assert len(d.outcomes) == 1
    assert len(aws.replacements_of("r1")) == 1
    assert [e for e in k8s.eviction_log if e[1] == "201"] == [("vllm-r1-0", "201", 1)]
    assert d.m.duplicates.labels("sqs")._value.get() == 2


def _zone(aws, params) -> str:
    by_subnet = {v: k for k, v in aws.subnets.items()}
    return by_subnet.get(params.get("SubnetId", ""), params.get("Placement.AvailabilityZone", "?"))


def test_no_spot_capacity_falls_back_to_on_demand(aws, agent, k8s, ec2_proxy, make_daemon):
    (inst,) = one_replica(aws, agent)
    ec2_proxy.rules.append(
        lambda p: (
            (500, "InsufficientInstanceCapacity")
            if p.get("Action") == "RunInstances"
            and p.get("InstanceMarketOptions.MarketType") == "spot"
            else None
        )
    )
    d = make_daemon(alternatives=(Alternative("p5en.48xlarge"),))
    aws.spot_warning(inst["InstanceId"], seconds_left=8)
    [(_, out)] = handled(d)
    assert out.action == "replaced-and-drained"
    tried = [
        (
            p["InstanceType"],
            _zone(aws, p),
            p.get("InstanceMarketOptions.MarketType", "on-demand"),
            code,
        )
        for p, code in ec2_proxy.launches()
    ]
    ice = "InsufficientInstanceCapacity"
    # Spot: same type in the other zones (its own zone is blocked: just reclaimed), then the
    # alternative in every zone, own zone first; all out of capacity. Then on-demand, own pool.
    assert tried == [
        ("p5.48xlarge", "us-east-1b", "spot", ice),
        ("p5.48xlarge", "us-east-1c", "spot", ice),
        ("p5en.48xlarge", "us-east-1a", "spot", ice),
        ("p5en.48xlarge", "us-east-1b", "spot", ice),
        ("p5en.48xlarge", "us-east-1c", "spot", ice),
        ("p5.48xlarge", "us-east-1a", "on-demand", None),
    ]
    [new] = aws.replacements_of("r1")
    assert "InstanceLifecycle" not in new  # on-demand
    assert {t["Key"]: t["Value"] for t in new["Tags"]}[fleet.MARKET] == "on-demand"
    assert d.m.replacements.labels("on-demand")._value.get() == 1
    assert ("p5en.48xlarge", "us-east-1b", "spot") in d.blocks.active()  # remembered


def test_on_demand_floor_forces_an_on_demand_replacement(aws, agent, ec2_proxy, make_daemon):
    aws.launch_replica("r0", market="on-demand")
    (inst,) = one_replica(aws, agent, "r1")
    d = make_daemon(on_demand_floor=2)  # r0 is the only other on-demand replica: 1 < 2
    aws.spot_warning(inst["InstanceId"], seconds_left=8)
    handled(d)
    markets = [
        p.get("InstanceMarketOptions.MarketType", "on-demand") for p, _ in ec2_proxy.launches()
    ]
    assert markets == ["on-demand"]
    [new] = aws.replacements_of("r1")
    assert "InstanceLifecycle" not in new


def test_kubernetes_500s_then_recovery(aws, agent, core, k8s, make_daemon):
    (inst,) = one_replica(aws, agent)
    # More consecutive 500s than the client's own retries (2): the handler rides them out.
    k8s.faults.update({"get-node": 8, "patch-node": 4, "list-pods": 4, "evict": 4})
    d = make_daemon(api_retries=2)
    aws.spot_warning(inst["InstanceId"], seconds_left=10)
    [(_, out)] = handled(d)
    assert out.action == "replaced-and-drained"
    assert all(v == 0 for v in k8s.faults.values()), k8s.faults
    assert (
        sum(
            d.m.errors.labels(s)._value.get()
            for s in ("find-node", "cordon", "evict", "replacement-ready", "describe")
        )
        > 0
    )
    assert node_json(core, aws.replacements_of("r1")[0]["PrivateDnsName"]) is not None
    wait_until(lambda: aws.messages_left() == 0, what="message deleted")


def test_sigterm_hands_the_flow_over_and_takes_nothing_new(aws, agent, k8s, make_daemon):
    (a,) = one_replica(aws, agent, "r1")
    (b,) = one_replica(aws, agent, "r2")
    k8s.evict_policy = lambda ns, pod: False  # hold the first drain (a PDB)
    d = make_daemon(hold_for_replacement=False)
    aws.spot_warning(a["InstanceId"], seconds_left=20)
    wait_until(lambda: any(e[1] == "429" for e in k8s.eviction_log), what="draining")
    stopper = threading.Thread(target=d.stop)
    stopper.start()  # SIGTERM
    wait_until(lambda: d.stopping.is_set(), what="stopping")
    aws.spot_warning(b["InstanceId"], seconds_left=20)  # arrives after SIGTERM
    stopper.join(15)
    assert not stopper.is_alive()
    assert list(d.outcomes) == []  # the open flow was handed over, not finished or dropped
    assert aws.replacements_of("r2") == []
    assert aws.messages_left() == 2  # the first visible again at once, the second untouched
    k8s.evict_policy = lambda ns, pod: True
    d2 = make_daemon(hold_for_replacement=False)  # the next leader resumes from the nodes
    outcomes = {ev.instance_id: o.action for ev, o in handled(d2, 2)}
    assert outcomes == {
        a["InstanceId"]: "replaced-and-drained",
        b["InstanceId"]: "replaced-and-drained",
    }
    assert len(aws.replacements_of("r1")) == 1  # resumed: found, not launched again
    wait_until(lambda: aws.messages_left() == 0, what="messages deleted")


def test_leader_election_one_consumer_and_takeover(aws, agent, make_daemon):
    (inst,) = one_replica(aws, agent)
    # renewed every 1/3 of the lease: only a stall of a whole second could flip it
    lease = dict(leader_elect=True, lease_seconds=1.0, lease_namespace="kube-system")
    d1 = make_daemon(identity="a", **lease)
    d2 = make_daemon(identity="b", **lease)
    wait_until(lambda: d1.elector.is_leader != d2.elector.is_leader, what="exactly one leader")
    leader, follower = (d1, d2) if d1.elector.is_leader else (d2, d1)
    wait_until(lambda: leader.polls >= 3, what="the leader consumes the queue")
    assert follower.polls == 0 and not follower.elector.is_leader  # one consumer
    leader.kill()  # no release: the lease must expire
    wait_until(lambda: follower.elector.is_leader, timeout=5, what="takeover")
    aws.spot_warning(inst["InstanceId"], seconds_left=8)
    [(_, out)] = handled(follower)
    assert out.action == "replaced-and-drained"
