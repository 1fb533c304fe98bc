"""The daemon's policy on the in-memory fakes (provisioner/daemon/fakes): the capacity fallback
and whole notice flows through the real Daemon (store, worker pool, handler, acknowledgement),
in milliseconds instead of the seconds the moto/kmock scenarios take. The fakes are held to the
real adapters by the contract tests (test_daemon_contract_*.py).

Expected values come from docs/daemon.md, not from the code: the fallback order ("the same type
in its own zone and then the other zones, then each --alternative TYPE[@ZONE] in order, all on
spot, skipping blocked pools; then the same list on-demand"), a reclaimed pool blocked for
--block-minutes, the replacement requested before the cordon, the pods' own grace cut to the
time left, the message deleted only once the replacement serves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from daemon_harness import FAST, wait_until

from provisioner import fleet
from provisioner.daemon.capacity import Blocklist, NoCapacity, launch_replacement
from provisioner.daemon.config import Alternative, DaemonConfig
from provisioner.daemon.fakes.ec2 import FakeCapacity
from provisioner.daemon.fakes.imds import FakeMetadata
from provisioner.daemon.fakes.kube import FakeKube
from provisioner.daemon.fakes.sqs import FakeSqs
from provisioner.daemon.service import Daemon

P5, P5EN, P4D = "p5.48xlarge", "p5en.48xlarge", "p4d.24xlarge"
A, B, C = "us-east-1a", "us-east-1b", "us-east-1c"

# -- the capacity fallback ------------------------------------------------------------------


def fallback(cap: FakeCapacity, blocks: Blocklist, on_demand_only: bool = False, **kw: Any):
    (lead,) = cap.replica_members("pool-a", "r1")
    cfg = DaemonConfig(
        alternatives=(Alternative(P5EN), Alternative(P4D, B)), block_seconds=900, **kw
    )
    return launch_replacement(cap, blocks, 1, lead, "r-new", cfg, on_demand_only)


def test_fallback_order_spot_everywhere_then_on_demand():
    cap = FakeCapacity()
    cap.add("r1", zone=B)
    # hand-derived from docs/daemon.md: own zone, other zones (sorted), each alternative (its
    # own zone first unless pinned), on spot; then the same pools on-demand
    expected = [
        (P5, B), (P5, A), (P5, C), (P5EN, B), (P5EN, A), (P5EN, C), (P4D, B),
    ]  # fmt: skip
    cap.no_capacity = {(t, z, m) for t, z in expected for m in ("spot", "on-demand")}
    blocks = Blocklist()
    with pytest.raises(NoCapacity) as e:
        fallback(cap, blocks)
    tried = [(a.instance_type, a.zone, a.market) for a, _ in e.value.tried]
    assert tried == [(t, z, "spot") for t, z in expected] + [
        (t, z, "on-demand") for t, z in expected
    ]
    assert {code for _, code in e.value.tried} == {"InsufficientInstanceCapacity"}
    assert len(blocks.active()) == 14  # every refusing pool is avoided for 15 minutes
    # right after, nothing is tried again: every pool is blocked
    with pytest.raises(NoCapacity) as again:
        fallback(cap, blocks)
    assert again.value.tried == []


def test_the_first_pool_with_capacity_wins_and_refusers_are_blocked():
    cap = FakeCapacity()
    cap.add("r1", zone=A)
    cap.no_capacity = {(P5, A, "spot"), (P5, B, "spot"), (P5, C, "spot")}
    blocks = Blocklist()
    got = fallback(cap, blocks)
    assert (got.attempt.instance_type, got.attempt.zone, got.attempt.market) == (P5EN, A, "spot")
    (new,) = got.instances
    assert new.tags[fleet.REPLACES] == "r1" and new.instance_type == P5EN and new.zone == A
    assert blocks.active() == [(P5, A, "spot"), (P5, B, "spot"), (P5, C, "spot")]
    assert [c for c in cap.calls if c.startswith("launch")] == [
        f"launch {P5}@{A}/spot", f"launch {P5}@{B}/spot", f"launch {P5}@{C}/spot",
        f"launch {P5EN}@{A}/spot",
    ]  # fmt: skip


def test_the_on_demand_floor_skips_spot():
    cap = FakeCapacity()
    cap.add("r1", zone=A)
    got = fallback(cap, Blocklist(), on_demand_only=True)
    assert (got.attempt.zone, got.attempt.market, got.tried) == (A, "on-demand", [])


# -- whole flows through the Daemon ---------------------------------------------------------


class Cluster:
    """The rest of the world, in the background: launched instances boot, join as nodes with a
    Ready serving pod; evicted pods are deleted once evicted (their drain is instant here)."""

    def __init__(self, cap: FakeCapacity, kube: FakeKube) -> None:
        self.cap, self.kube = cap, kube
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def add(self, replica: str, **kw: Any) -> list[Any]:
        group = self.cap.add(replica, **kw)
        for k, i in enumerate(group):
            self.kube.join(i, pod=f"vllm-{replica}-{k}")
        return group

    def _run(self) -> None:
        while not self.stop.wait(0.01):
            for i in list(self.cap.instances.values()):
                if i.state == "pending":
                    self.cap.set_state(i.id, "running")
                    self.kube.join(self.cap.instances[i.id], pod=f"vllm-{i.replica}-{i.id[-4:]}")
            self.kube.kubelet()


@pytest.fixture
def world() -> Iterator[tuple[FakeCapacity, FakeKube, FakeSqs, Cluster]]:
    cap, kube, sqs = FakeCapacity(), FakeKube(), FakeSqs()
    cluster = Cluster(cap, kube)
    cluster.thread.start()
    yield cap, kube, sqs, cluster
    cluster.stop.set()
    cluster.thread.join(5)


@pytest.fixture
def daemon(world) -> Iterator[Any]:
    made: list[Daemon] = []

    def make(**kw: Any) -> Daemon:
        cap, kube, sqs, _ = world
        cfg = DaemonConfig(**{**FAST, "queue_url": sqs.queue_url, **kw}).validate()
        d = Daemon(cfg, cap, kube, sqs=sqs).start()
        made.append(d)
        return d

    yield make
    for d in made:
        d.stop(timeout=5)


def notice(sqs: FakeSqs, instance_id: str, detail_type: str, seconds_left: float = 0) -> None:
    """An EventBridge event as the rule delivers it (whole-second time, like AWS)."""
    when = datetime.now(UTC) - timedelta(seconds=120 - seconds_left)
    detail: dict[str, str] = {"instance-id": instance_id}
    if detail_type == "EC2 Spot Instance Interruption Warning":
        detail["instance-action"] = "terminate"
    body = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.ec2",
        "account": "123456789012",
        "time": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}"],
        "detail": detail,
    }
    sqs.send_message(QueueUrl=sqs.queue_url, MessageBody=json.dumps(body))


def done(d: Daemon, n: int = 1) -> list[Any]:
    wait_until(lambda: len(d.outcomes) >= n, timeout=15, what=f"{n} notice(s) handled")
    return [out for _, out in d.outcomes]


SPOT = "EC2 Spot Instance Interruption Warning"


def test_spot_notice_replaces_first_drains_with_the_grace_left_and_acks_last(world, daemon):
    cap, kube, sqs, cluster = world
    (old,) = cluster.add("r1", zone=A)
    cluster.add("r2", zone=A)
    d = daemon()
    notice(sqs, old.id, SPOT, seconds_left=20)
    (out,) = done(d)
    assert out.action == "replaced-and-drained"
    (new,) = cap.find_replacement("pool-a", "r1")
    # the reclaimed pool (p5 in us-east-1a, spot) is blocked: the same type in the next zone
    assert (new.instance_type, new.zone, new.market) == (P5, B, "spot")
    assert kube.pods_on_node(new.private_dns) and kube.get_node(new.private_dns).ready
    # the old replica was evicted with its own 120 s grace cut to the time left (< 20 s)
    ((pod, answer, grace),) = kube.evictions
    assert (pod, answer) == ("serving/vllm-r1-0", "201") and 10 <= grace <= 20
    assert cap.describe([old.id])[old.id].state == "terminated"  # retired
    wait_until(lambda: sqs.depth() == 0, what="message deleted")
    calls = cap.calls
    assert f"launch {P5}@{A}/spot" not in calls
    assert calls.index(f"launch {P5}@{B}/spot") < calls.index("terminate")
    assert [e["reason"] for e in kube.events][:2] == [
        "ReplacementRequested",
        "CordonedForInterruption",
    ]
    assert cap.replica_members("pool-a", "r2")[0].state == "running"  # untouched


def test_rebalance_cordons_only_by_default(world, daemon):
    cap, kube, sqs, cluster = world
    (inst,) = cluster.add("r1")
    d = daemon()
    notice(sqs, inst.id, "EC2 Instance Rebalance Recommendation")
    (out,) = done(d)
    assert out.action == "cordoned"
    node = kube.get_node(inst.private_dns)
    assert node.unschedulable and node.tainted
    assert fleet.EXCLUDE_LB_LABEL not in node.labels  # a cordoned node still serves
    assert kube.evictions == [] and cap.find_replacement("pool-a", "r1") == []
    wait_until(lambda: sqs.depth() == 0, what="message deleted")


def test_a_launch_error_that_is_not_about_capacity_does_not_stop_the_drain(world, daemon):
    cap, kube, sqs, cluster = world
    (inst,) = cluster.add("r1")
    cap.launch_error = "UnauthorizedOperation"
    d = daemon(replacement_timeout_seconds=1.0)
    notice(sqs, inst.id, SPOT, seconds_left=3)
    wait_until(lambda: kube.evictions, what="the drain went on")
    assert kube.get_node(inst.private_dns) is None or kube.get_node(inst.private_dns).tainted
    assert cap.find_replacement("pool-a", "r1") == []
    assert (
        d.m.errors.labels("launch")._value.get()
        + d.m.actions.labels("replace", "error")._value.get()
        >= 1
    )


def test_dry_run_changes_nothing(world, daemon):
    cap, kube, sqs, cluster = world
    (inst,) = cluster.add("r1")
    d = daemon(dry_run=True)
    notice(sqs, inst.id, SPOT, seconds_left=20)
    (out,) = done(d)
    assert out.action == "dry-run"
    assert not kube.get_node(inst.private_dns).unschedulable
    assert kube.evictions == [] and cap.find_replacement("pool-a", "r1") == []
    assert sqs.depth() == 1  # not even the queue


def test_imds_mode_reads_the_nodes_metadata(world):
    cap, kube, _, cluster = world
    (inst,) = cluster.add("r1")
    md = FakeMetadata(inst.id)
    cfg = DaemonConfig(**{**FAST, "mode": "imds", "node_name": inst.private_dns}).validate()
    d = Daemon(cfg, cap, kube, metadata=md).start()
    try:
        when = (datetime.now(UTC) + timedelta(seconds=20)).strftime("%Y-%m-%dT%H:%M:%SZ")
        md.set("spot/instance-action", {"action": "terminate", "time": when})
        wait_until(lambda: cap.find_replacement("pool-a", "r1"), what="replacement requested")
        wait_until(lambda: kube.evictions, what="drained")
        assert "spot/instance-action" in md.gets
    finally:
        d.stop(timeout=5)


def test_the_fakes_import_neither_boto3_nor_the_kubernetes_client():
    code = (
        "import sys\n"
        "import provisioner.daemon.fakes.ec2, provisioner.daemon.fakes.kube\n"
        "import provisioner.daemon.fakes.sqs, provisioner.daemon.fakes.imds\n"
        "print(sorted(m for m in ('boto3', 'botocore', 'kubernetes') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
