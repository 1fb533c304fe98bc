"""The pure parts: payload parsers (stable ids, bad payloads), deadlines, the store's dedupe,
the fallback order, blocks, config. Expected values are worked out by hand from the inputs."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from provisioner.daemon.capacity import Blocklist, plan_attempts, replacement_id
from provisioner.daemon.config import Alternative, DaemonConfig
from provisioner.daemon.events import (
    EventKind,
    PayloadError,
    parse_imds_rebalance,
    parse_imds_scheduled,
    parse_imds_spot,
    parse_sqs_body,
)
from provisioner.daemon.logs import JsonFormatter
from provisioner.daemon.store import AddResult, EventStore, deadline_for
from provisioner.errors import UsageError

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
I1, I2 = "i-0123456789abcdef0", "i-0fedcba9876543210"


def eb(
    detail_type: str,
    detail: dict,
    source: str = "aws.ec2",
    id_: str = "e-1",
    time: str = "2026-11-22T11:59:00Z",
) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": id_,
            "detail-type": detail_type,
            "source": source,
            "time": time,
            "region": "us-east-1",
            "resources": [],
            "detail": detail,
        }
    )


def test_eventbridge_kinds():
    [spot] = parse_sqs_body(
        eb(
            "EC2 Spot Instance Interruption Warning",
            {"instance-id": I1, "instance-action": "terminate"},
        ),
        NOW,
    )
    assert (spot.id, spot.kind, spot.instance_id, spot.source) == (
        "e-1",
        EventKind.SPOT_INTERRUPTION,
        I1,
        "sqs",
    )
    assert (
        spot.notice_time == datetime(2026, 11, 22, 11, 59, tzinfo=UTC) and spot.start_time is None
    )
    [reb] = parse_sqs_body(eb("EC2 Instance Rebalance Recommendation", {"instance-id": I1}), NOW)
    assert reb.kind is EventKind.REBALANCE and reb.key == f"rebalance-recommendation/{I1}"
    [st] = parse_sqs_body(
        eb("EC2 Instance State-change Notification", {"instance-id": I1, "state": "stopping"}), NOW
    )
    assert (st.kind, st.state, st.key) == (
        EventKind.STATE_CHANGE,
        "stopping",
        f"state-change/{I1}/stopping",
    )
    assert (
        parse_sqs_body(
            eb("EC2 Instance State-change Notification", {"instance-id": I1, "state": "running"}),
            NOW,
        )
        == []
    )
    [asg] = parse_sqs_body(
        eb(
            "EC2 Instance-terminate Lifecycle Action",
            {
                "EC2InstanceId": I1,
                "AutoScalingGroupName": "g",
                "LifecycleHookName": "h",
                "LifecycleActionToken": "t",
                "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
            },
            source="aws.autoscaling",
        ),
        NOW,
    )
    assert asg.kind is EventKind.ASG_LIFECYCLE and asg.detail == {
        "group": "g",
        "hook": "h",
        "token": "t",
    }


def test_aws_health_one_event_per_instance_and_cancellation():
    detail = {
        "eventArn": "arn:h/1",
        "service": "EC2",
        "eventTypeCategory": "scheduledChange",
        "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
        "statusCode": "upcoming",
        "startTime": "Sun, 22 Nov 2026 14:00:00 GMT",
        "affectedEntities": [{"entityValue": I1}, {"entityValue": I2}],
    }
    evs = parse_sqs_body(eb("AWS Health Event", detail, source="aws.health"), NOW)
    assert [e.instance_id for e in evs] == [I1, I2]
    assert len({e.id for e in evs}) == 2 and all(e.kind is EventKind.SCHEDULED_CHANGE for e in evs)
    assert evs[0].start_time == datetime(2026, 11, 22, 14, tzinfo=UTC)
    closed = parse_sqs_body(
        eb("AWS Health Event", {**detail, "statusCode": "closed"}, source="aws.health"), NOW
    )
    assert closed[0].kind is EventKind.SCHEDULED_CANCELLED
    assert closed[0].key.replace("scheduled-cancelled", "scheduled-change") == evs[0].key
    assert (
        parse_sqs_body(
            eb("AWS Health Event", {**detail, "service": "RDS"}, source="aws.health"), NOW
        )
        == []
    )


def test_sns_envelope_and_test_notification():
    inner = eb("EC2 Instance Rebalance Recommendation", {"instance-id": I1})
    [e] = parse_sqs_body(json.dumps({"Type": "Notification", "Message": inner}), NOW)
    assert e.kind is EventKind.REBALANCE
    assert parse_sqs_body(json.dumps({"Event": "autoscaling:TEST_NOTIFICATION"}), NOW) == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("{nope", "malformed"),
        ("[1]", "malformed"),
        (json.dumps({"hello": "world"}), "malformed"),
        (eb("EC2 Spot Instance Interruption Warning", {"instance-id": "i-XYZ"}), "malformed"),
        (
            eb("EC2 Spot Instance Interruption Warning", {"instance-id": I1}, time="yesterday"),
            "malformed",
        ),
        (
            json.dumps(
                {
                    "source": "aws.ec2",
                    "detail-type": "EC2 Instance Rebalance Recommendation",
                    "detail": {"instance-id": I1},
                }
            ),
            "malformed",
        ),
        (eb("EC2 Fleet Error", {"x": 1}), "unknown"),
        (eb("Object Created", {"bucket": "b"}, source="aws.s3"), "unknown"),
    ],
)
def test_bad_payloads_raise_payload_error(body, reason):
    with pytest.raises(PayloadError) as e:
        parse_sqs_body(body, NOW)
    assert e.value.reason == reason


def test_imds_parsers_have_stable_ids():
    a = parse_imds_spot(I1, '{"action": "terminate", "time": "2026-11-22T12:02:00Z"}', NOW)
    b = parse_imds_spot(
        I1, '{"action":"terminate","time":"2026-11-22T12:02:00Z"}', NOW + timedelta(seconds=2)
    )
    assert a.id == b.id and a.start_time == datetime(2026, 11, 22, 12, 2, tzinfo=UTC)
    r = parse_imds_rebalance(I1, '{"noticeTime": "2026-11-22T11:58:00Z"}', NOW)
    assert r.id == f"imds:rebalance:{I1}:2026-11-22T11:58:00+00:00"
    text = json.dumps(
        [
            {
                "Code": "system-reboot",
                "EventId": "instance-event-1",
                "NotBefore": "22 Nov 2026 16:00:00 GMT",
                "State": "active",
            },
            {
                "Code": "system-reboot",
                "EventId": "instance-event-2",
                "NotBefore": "23 Nov 2026 16:00:00 GMT",
                "State": "canceled",
            },
            {
                "Code": "instance-stop",
                "EventId": "instance-event-0",
                "NotBefore": "21 Nov 2026 16:00:00 GMT",
                "State": "completed",
            },
        ]
    )
    active, cancelled = parse_imds_scheduled(I1, text, NOW)
    assert active.kind is EventKind.SCHEDULED_CHANGE and active.start_time == datetime(
        2026, 11, 22, 16, tzinfo=UTC
    )
    assert (
        cancelled.kind is EventKind.SCHEDULED_CANCELLED
        and cancelled.detail["event_id"] == "instance-event-2"
    )
    for bad in ('{"action": "terminate"}', "not json", '{"time": 5}'):
        with pytest.raises(PayloadError):
            parse_imds_spot(I1, bad, NOW)
    with pytest.raises(PayloadError):
        parse_imds_scheduled(I1, '{"EventId": "x"}', NOW)


def test_deadlines():
    cfg = DaemonConfig(
        spot_notice_seconds=120, rebalance_window_seconds=600, maintenance_lead_seconds=300
    )
    [sqs_spot] = parse_sqs_body(
        eb("EC2 Spot Instance Interruption Warning", {"instance-id": I1}), NOW
    )
    assert deadline_for(sqs_spot, cfg) == (
        datetime(2026, 11, 22, 12, 1, tzinfo=UTC),
        NOW,
    )  # 11:59 + 2 min
    imds_spot = parse_imds_spot(I1, '{"action": "stop", "time": "2026-11-22T12:01:30Z"}', NOW)
    assert deadline_for(imds_spot, cfg)[0] == datetime(2026, 11, 22, 12, 1, 30, tzinfo=UTC)
    [reb] = parse_sqs_body(eb("EC2 Instance Rebalance Recommendation", {"instance-id": I1}), NOW)
    assert deadline_for(reb, cfg)[0] == NOW + timedelta(minutes=10)


class FakeAck:
    def __init__(self):
        self.acked = 0

    def ack(self):
        self.acked += 1

    def release(self):
        pass

    def keepalive(self):
        pass


def test_store_dedupes_by_id_and_by_key():
    clock = [0.0]
    store = EventStore(DaemonConfig(done_ttl_seconds=10), now=lambda: NOW, mono=lambda: clock[0])
    body = eb("EC2 Spot Instance Interruption Warning", {"instance-id": I1})
    [a] = parse_sqs_body(body, NOW)
    [same_key] = parse_sqs_body(
        eb("EC2 Spot Instance Interruption Warning", {"instance-id": I1}, id_="e-2"), NOW
    )
    acks = [FakeAck(), FakeAck(), FakeAck(), FakeAck()]
    assert store.add(a, acks[0]) is AddResult.NEW
    assert store.add(a, acks[1]) is AddResult.DUPLICATE  # same id, still pending
    assert store.add(same_key, acks[2]) is AddResult.DUPLICATE  # another id, same interruption
    [entry] = store.due(limit=5)
    assert store.due(limit=5) == []  # active now
    for ack in store.finish(entry, "done"):
        ack.ack()
    assert [x.acked for x in acks[:3]] == [1, 1, 1]
    assert store.add(a, acks[3]) is AddResult.DONE  # the caller acknowledges it at once
    clock[0] = 11.0
    assert store.forget_done() == 1
    assert store.add(a, None) is AddResult.NEW  # forgotten after the TTL


def test_store_failed_deferred_and_cancelled():
    store = EventStore(DaemonConfig(), now=lambda: NOW)
    [a] = parse_sqs_body(eb("EC2 Instance Rebalance Recommendation", {"instance-id": I1}), NOW)
    [b] = parse_sqs_body(
        eb("EC2 Instance Rebalance Recommendation", {"instance-id": I2}, id_="e-2"), NOW
    )
    store.add(a)
    store.add(b)
    first, second = store.due(limit=1) + store.due(limit=1)
    assert {first.event.id, second.event.id} == {"e-1", "e-2"}
    assert store.finish(first, "failed") == []
    assert store.add(a) is AddResult.NEW  # a redelivery after a failure is tried again
    store.finish(second, "deferred", not_before=NOW + timedelta(hours=1), stage="drain")
    assert [e.event.id for e in store.due(limit=5)] == ["e-1"]  # e-2 waits for its time
    assert store.cancel(second.event.key) is second and store.counts()["pending"] == 0


def test_store_hands_out_earliest_deadline_first():
    store = EventStore(DaemonConfig(), now=lambda: NOW + timedelta(minutes=5))
    late = parse_imds_spot(I1, '{"time": "2026-11-22T12:03:00Z"}', NOW)
    soon = parse_imds_spot(I2, '{"time": "2026-11-22T12:01:00Z"}', NOW)
    store.add(late)
    store.add(soon)
    assert [e.event.instance_id for e in store.due(limit=2)] == [I2, I1]


def test_fallback_order_blocks_and_on_demand():
    blocks = Blocklist(mono=lambda: 0.0)
    # in preference order (pick_subnets_by_zone's); the reclaimed instance's own zone goes first
    zones = ["us-east-1b", "us-east-1a", "us-east-1c"]
    alts = [
        Alternative("p5en.48xlarge"),
        Alternative("p4de.24xlarge", "us-east-1b"),
        Alternative("g6e.48xlarge", "eu-west-1a"),
    ]
    blocks.block("p5.48xlarge", "us-east-1a", "spot", 60)  # just reclaimed
    got = [
        a.label
        for a in plan_attempts(
            "p5.48xlarge", "us-east-1a", zones, alts, blocks, on_demand_only=False
        )
    ]
    pools = [
        "p5.48xlarge@us-east-1a",
        "p5.48xlarge@us-east-1b",
        "p5.48xlarge@us-east-1c",
        "p5en.48xlarge@us-east-1a",
        "p5en.48xlarge@us-east-1b",
        "p5en.48xlarge@us-east-1c",
        "p4de.24xlarge@us-east-1b",
    ]  # g6e is pinned to a zone with no subnet: skipped
    assert got == [f"{p}/spot" for p in pools[1:]] + [f"{p}/on-demand" for p in pools]
    od = plan_attempts("p5.48xlarge", "us-east-1a", zones, alts, blocks, on_demand_only=True)
    assert [a.label for a in od] == [f"{p}/on-demand" for p in pools]


def test_a_rebalanced_pool_is_tried_last_of_its_market_not_dropped():
    """A rebalance recommendation is advice (AWS: move to pools "not at an elevated risk"), so
    its spot pool goes after every other spot pool instead of out: a single-zone multi-node
    pool with no other type still gets spot before on-demand (review of session 8's diff)."""
    blocks = Blocklist(mono=lambda: 0.0)
    blocks.flag("p5en.48xlarge", "use2-az1", "spot", 60)
    # one zone (a cluster placement group), one alternative type there
    alts = [Alternative("p5.48xlarge")]
    got = [
        a.label
        for a in plan_attempts(
            "p5en.48xlarge", "use2-az1", ["use2-az1"], alts, blocks, on_demand_only=False
        )
    ]
    assert got == [
        "p5.48xlarge@use2-az1/spot",
        "p5en.48xlarge@use2-az1/spot",  # at risk: last of spot, still before on-demand
        "p5en.48xlarge@use2-az1/on-demand",
        "p5.48xlarge@use2-az1/on-demand",
    ]
    assert not blocks.blocked("p5en.48xlarge", "use2-az1", "spot")
    dry = blocks.snapshot()  # --dry-run's copy keeps the flag, and changes nothing of ours
    dry.block("p5.48xlarge", "use2-az1", "spot", 60)
    assert dry.at_risk("p5en.48xlarge", "use2-az1", "spot")
    assert not blocks.blocked("p5.48xlarge", "use2-az1", "spot")


def test_blocklist_expires():
    clock = [100.0]
    blocks = Blocklist(mono=lambda: clock[0])
    blocks.block("p5.48xlarge", "us-east-1a", "spot", 30)
    assert blocks.blocked("p5.48xlarge", "us-east-1a", "spot")
    assert not blocks.blocked("p5.48xlarge", "us-east-1a", "on-demand")
    clock[0] = 130.5
    assert not blocks.blocked("p5.48xlarge", "us-east-1a", "spot") and blocks.active() == []


def test_config_and_alternatives():
    assert Alternative.parse("p5.48xlarge@us-east-1b") == Alternative("p5.48xlarge", "us-east-1b")
    assert Alternative.parse(" g6e.48xlarge ") == Alternative("g6e.48xlarge", None)
    for bad in ("p5", "p5.48xlarge@mars", "@us-east-1a"):
        with pytest.raises(UsageError):
            Alternative.parse(bad)
    with pytest.raises(UsageError, match="--workers 0"):
        DaemonConfig(queue_url="q", workers=0).validate()
    assert DaemonConfig(workload_selector="a=b").workload_label == ("a", "b")
    assert DaemonConfig(workload_selector="").workload_label is None
    assert (
        replacement_id("pool-a", "r1")
        == replacement_id("pool-a", "r1")
        != replacement_id("pool-a", "r2")
    )


def test_json_log_lines_carry_the_extras():
    rec = logging.LogRecord("prov.daemon", logging.INFO, __file__, 1, "notice received", None, None)
    rec.event = "e-1"
    rec.kind = "spot-interruption"
    out = json.loads(JsonFormatter().format(rec))
    assert (out["msg"], out["level"], out["event"], out["kind"]) == (
        "notice received",
        "info",
        "e-1",
        "spot-interruption",
    )


def test_imds_unreachable_or_malformed_is_a_logged_skip(imds_server, caplog):
    import socket

    from provisioner.daemon.metrics import Metrics
    from provisioner.daemon.monitors.imds import ImdsMonitor

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    got: list = []
    m = Metrics()
    mon = ImdsMonitor(
        DaemonConfig(metadata_url=dead, http_timeout_seconds=1), lambda e, a: got.append(e), m
    )
    with caplog.at_level("WARNING", logger="prov"):
        assert mon.poll() == 0
    assert m.errors.labels("imds")._value.get() == 1 and "IMDS poll failed" in caplog.text
    imds = imds_server(I1)
    imds.set("spot/instance-action", "<html>oops</html>")
    imds.set("events/recommendations/rebalance", {"noticeTime": "2026-11-22T11:58:00Z"})
    mon = ImdsMonitor(DaemonConfig(metadata_url=imds.url), lambda e, a: got.append(e), m)
    assert mon.poll() == 1  # the rebalance; the bad spot answer is skipped
    assert [e.kind for e in got] == [EventKind.REBALANCE]
    assert m.skipped.labels("malformed")._value.get() == 1
    assert mon.poll() == 1 and got[0].id == got[1].id  # polled again: same stable id
    assert [c for _, _, c in imds.hits].count(401) == 0  # every GET carried the IMDSv2 token


def test_manifests_parse_and_rbac_is_generated_from_the_declared_calls():
    from kubernetes import client

    from provisioner import fleet
    from stacks import daemon as manifests

    def load(d, kind):  # the kubernetes client's own models must accept them
        model = getattr(client, kind)
        if hasattr(model, "from_dict"):  # kubernetes >= 37 (pydantic models)
            return model.from_dict(d)

        class R:  # older clients deserialize a response object
            data = json.dumps(d)

        return client.ApiClient().deserialize(R(), kind)

    dep = load(manifests.deployment("https://sqs.example/q", replicas=2), "V1Deployment")
    c = dep.spec.template.spec.containers[0]
    assert c.args[:5] == ["daemon", "--mode", "queue", "--queue-url", "https://sqs.example/q"]
    assert "--leader-elect" in c.args and c.security_context.read_only_root_filesystem
    ds = load(manifests.daemonset(), "V1DaemonSet")
    # the labels the stack's GPU nodes carry (stacks/gpu_node_pool.node_labels)
    assert ds.spec.template.spec.node_selector == {
        "prov.dev/managed": "true",
        "nvidia.com/gpu.present": "true",
    }
    assert (
        ds.spec.template.spec.containers[0].env[0].value_from.field_ref.field_path
        == "spec.nodeName"
    )
    objs = manifests.rbac()
    [role] = [o for o in objs if o["kind"] == "ClusterRole"]
    load(role, "V1ClusterRole")
    grants = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert grants == {
        ("nodes", "get"),
        ("nodes", "list"),
        ("nodes", "patch"),
        ("nodes", "delete"),
        ("pods", "list"),
        ("pods/eviction", "create"),
        ("events", "create"),
    }
    assert all(fleet.allowed(v, "", r) for r, v in grants)
    assert not any("*" in str(r) for r in role["rules"])
    [lease_role] = [o for o in objs if o["kind"] == "Role"]
    assert lease_role["metadata"]["namespace"] == "prov-system"
    assert [o["kind"] for o in manifests.rbac(leader_elect=False)] == [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    ]


def test_imds_mode_takes_the_region_from_metadata(imds_server, monkeypatch):
    from provisioner.daemon.service import build_daemon

    for k in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_CONFIG_FILE", "AWS_PROFILE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    imds = imds_server(I1)
    imds.set("placement/region", "eu-west-3")
    cfg = DaemonConfig(mode="imds", node_name="n1", metadata_url=imds.url, metrics_port=None)
    d = build_daemon(cfg, api_url="http://127.0.0.1:9")  # nothing is called at build time
    assert d.capacity.ec2.meta.region_name == "eu-west-3"
    d.pool.shutdown()
