"""Burst: 1,000 distinct notices (plus redeliveries) through the real SQS queue, store, worker
pool and handler, against moto and kmock. Every notice is handled exactly once, every message is
deleted exactly once, and every node is cordoned exactly once.

The storm (daemon_harness.burst_stream) is what an availability zone losing capacity looks like
to one fleet: for each of 250 replicas a rebalance recommendation, then the instance going
through stopping, stopped and shutting-down, all as distinct EventBridge events; and
at-least-once delivery repeats 100 of them. benchmarks/bench_daemon.py times the same storm.
"""

from __future__ import annotations

import json
import time

from daemon_harness import burst_stream, feed, wait_until

REPLICAS = 250
REDELIVERED = 100


def test_burst_of_1000_notices_each_handled_once(aws, core, k8s, make_daemon):
    insts = aws.launch_replica(None, size=REPLICAS)  # one-node replicas, one RunInstances call
    k8s.put_nodes(insts)
    assert len(json.loads(core.list_node(_preload_content=False).data)["items"]) == REPLICAS

    notices, stream = burst_stream([i["InstanceId"] for i in insts], REDELIVERED)
    assert len(notices) == 1000 and len(stream) == 1100
    assert len({json.loads(b)["id"] for b in notices}) == 1000

    d = make_daemon(workers=16, max_pending=400, sqs_batch=10)
    t0 = time.monotonic()
    feed(aws, d, stream)
    wait_until(
        lambda: d.m.actions.labels("ack", "ok")._value.get() >= len(stream),
        timeout=60,
        what="every message acknowledged",
    )
    elapsed = time.monotonic() - t0
    outcomes = list(d.outcomes)
    ids = [ev.id for ev, _ in outcomes]
    assert len(ids) == 1000 and len(set(ids)) == 1000  # each notice handled, and only once
    assert d.m.duplicates.labels("sqs")._value.get() == REDELIVERED
    wait_until(lambda: aws.messages_left() == 0, what="every message deleted")
    actions = [o.action for _, o in outcomes]
    assert actions.count("cordoned") == REPLICAS  # one per replica...
    assert (
        actions.count("cordoned")
        + actions.count("already-handled")
        + actions.count("already-cordoned")
        == 1000
    )  # ...the other notices found it done
    patches = [
        r for r in k8s.all_requests() if r.method == "PATCH" and r.resource.plural == "nodes"
    ]
    per_node: dict[str, int] = {}
    for r in patches:
        per_node[r.name] = per_node.get(r.name, 0) + 1
    assert len(per_node) == REPLICAS and set(per_node.values()) == {1}
    cordon = sorted(d.handler.timings.cordon)
    print(
        f"\nburst: {len(stream)} messages, 1000 notices drained in {elapsed:.1f}s "
        f"({len(stream) / elapsed:.0f} msg/s); notice->cordon p50 "
        f"{cordon[len(cordon) // 2]:.2f}s p99 {cordon[int(len(cordon) * 0.99)]:.2f}s"
    )
