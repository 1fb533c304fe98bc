"""Chaos: serving replicas (vLLM stand-ins that stream tokens and follow vLLM's shutdown rules)
under continuous load, while spot interruptions hit three of them, one on the worker node of a
two-node (TP x PP) replica.

The client only uses Ready endpoints on nodes not excluded from load balancers, refreshing its
view every 30 ms like an endpoints controller. The pods have a 0.25 s preStop (they keep
accepting while the endpoint removal propagates), then stop accepting, finish in-flight requests
within the eviction's grace period (their terminationGracePeriodSeconds, GRACE) and abort the rest
cleanly with an error event.

Timing, made robust for a loaded 2-core machine (it flaked there with a 3 s notice, a 1 s grace
and a 1 s margin). Two races, each now with a second or more to spare:
* EventBridge times have whole seconds (moto, like AWS, drops the fraction), so a warning put
  "3 s before its deadline" had a deadline 2.0-3.0 s away, and three warnings 0.2 s apart could
  get deadlines a second apart. A long request cut on one victim was then retried on another
  whose drain had not started yet, and cut again. Now the three warnings carry one whole-second
  time (one deadline), and the grace (3 s) is longer than the window in which drains may start
  (from the notice to deadline - grace - margin: 1 s), so every victim is out of the load
  balancers at least 2 s before the first long request is cut.
* The stand-in kubelet deletes a pod up to 0.5 s after its grace, later on a loaded machine; the
  2 s margin leaves 1.5 s of lag before a pod would still be terminating at the deadline.
"""

from __future__ import annotations

import gc
import math
import threading
import time
from datetime import UTC, datetime, timedelta

from daemon_harness import LoadClient, NodeAgent, VllmStandIn, wait_until

from provisioner import fleet

NOTICE = 6  # seconds from the warning to the instance's deadline (whole: EventBridge's unit)
GRACE, MARGIN = 3, 2.0  # the pods' terminationGracePeriodSeconds and the drain margin
# Drains start between the notice and deadline - GRACE - MARGIN (1 s later).
SHORT_TOKENS, TOKEN_DELAY = 8, 0.02  # 0.16 s: fits the drain window (3 s grace - 0.25 s preStop)
# 7 s: longer than notice-to-deadline (6 s), so it is in flight when the pod's grace ends.
LONG_TOKENS = 350


def tag_map(inst):
    return {t["Key"]: t["Value"] for t in inst["Tags"]}


def test_chaos_no_failed_requests_and_replicas_restored(aws, core, k8s, make_daemon):
    # The timings here are tight (3 s notices): start without the garbage of earlier tests (the
    # burst leaves ~90,000 cyclic objects; one full collection of them pauses every thread for
    # ~0.35 s on the 2-core machine), and keep what survives out of later collections.
    gc.collect()
    gc.freeze()
    try:
        _chaos(aws, core, k8s, make_daemon)
    finally:
        gc.unfreeze()


def _chaos(aws, core, k8s, make_daemon):
    servers: dict[str, VllmStandIn] = {}

    def on_pod(spec):
        servers[spec.name] = VllmStandIn(prestop=0.25)
        return servers[spec.name].url

    def terminate(spec, grace):
        s = servers.get(spec.name)
        if s is not None:
            s.shutdown(grace)

    agent = NodeAgent(
        aws.ec2, core, k8s, on_pod=on_pod, terminate=terminate, load_delay=0.3, pod_grace=GRACE
    )
    agent.start()
    client = LoadClient(core)
    try:
        groups = {r: aws.launch_replica(r, zone="us-east-1a") for r in ("r1", "r2", "r3")}
        groups["r4"] = aws.launch_replica("r4", size=2, zone="us-east-1b")  # TP8 x PP2
        wait_until(
            lambda: len(agent.ready_at) == 5 and len(servers) == 4,
            what="5 pods Ready, 4 leaders serving",
        )
        # the stand-in kubelet deletes the pods some 100 ms after their grace: MARGIN covers it
        d = make_daemon(workers=4, drain_margin_seconds=MARGIN)
        client.start(workers=4, tokens=SHORT_TOKENS, delay=TOKEN_DELAY)
        wait_until(lambda: len(client.results) >= 20, what="traffic flowing")

        # Long requests in flight on each victim's serving pod when the notice lands.
        victims = {"r1": groups["r1"][0], "r2": groups["r2"][0], "r4": groups["r4"][1]}
        longs = []
        for r in victims:
            url = servers[f"vllm-{r}-0"].url
            t = threading.Thread(
                target=client.request, args=("long", LONG_TOKENS, TOKEN_DELAY, url)
            )
            t.start()
            longs.append(t)
        wait_until(
            lambda: all(servers[f"vllm-{r}-0"].in_flight >= 1 for r in victims),
            what="longs in flight",
        )
        # One deadline for the three, NOTICE s after a whole second: start on that second.
        second = math.ceil(time.time())
        time.sleep(max(0.0, second - time.time()))
        sent = datetime.fromtimestamp(second, UTC) - timedelta(seconds=120 - NOTICE)
        for inst in victims.values():  # r4: the notice is for its *worker* node
            aws.put(
                "EC2 Spot Instance Interruption Warning",
                {"instance-id": inst["InstanceId"], "instance-action": "terminate"},
                time_=sent,
            )
            time.sleep(0.2)
        wait_until(
            lambda: sum(o.status == "done" for _, o in d.outcomes) == 3,
            timeout=40,
            what="3 handled",
        )
        # the premise: one notice time for the three (so one deadline), as sent
        assert {ev.notice_time for ev, _ in d.outcomes} == {sent}
        for t in longs:
            t.join(30)
        served_after = len(client.results)
        wait_until(
            lambda: len(client.results) >= served_after + 20, what="traffic on the new replicas"
        )
    finally:
        client.stop()
        agent.stop()
        for s in servers.values():
            if s.accepting:
                s.httpd.shutdown()

    t = d.handler.timings

    def r2(xs):
        return [round(x, 2) for x in xs]

    print(
        f"\nchaos: {len(client.results)} requests; notice->replacement requested "
        f"{r2(t.replacement)}s, notice->cordon {r2(t.cordon)}s, notice->drained {r2(t.drain)}s"
    )
    shorts = [r for r in client.results if r.kind == "short"]
    long_results = [r for r in client.results if r.kind == "long"]
    assert [r for r in client.results if r.outcome == "failed"] == []
    assert len(shorts) > 100 and all(r.outcome == "ok" and not r.retried for r in shorts)
    # Each long request was cut at the grace deadline with a clean abort, and its one retry
    # (on a Ready replica that was not being drained) succeeded.
    assert len(long_results) == 3
    assert all(r.outcome == "ok" and r.retried for r in long_results), long_results
    assert sum(s.aborted for s in servers.values()) == 3
    assert sum(s.refused for s in servers.values()) == 0  # nobody was sent to a closed door

    assert sorted(o.action for _, o in d.outcomes) == ["replaced-and-drained"] * 3
    # The replica count is restored: 4 replicas, the two-node one replaced as a whole group.
    live = aws.live(**{fleet.POOL: "pool-a"})
    replicas: dict[str, list[dict]] = {}
    for i in live:
        replicas.setdefault(tag_map(i)[fleet.REPLICA], []).append(i)
    assert len(replicas) == 4 and "r3" in replicas
    group = aws.replacements_of("r4")
    assert len(group) == 2  # a whole two-node group, in one zone, one replica id
    assert len({i["Placement"]["AvailabilityZone"] for i in group}) == 1
    assert len({tag_map(i)[fleet.REPLICA] for i in group}) == 1
    assert len(replicas[tag_map(group[0])[fleet.REPLICA]]) == 2
    old = [i["InstanceId"] for r in victims for i in groups[r]]
    states = aws.ec2.describe_instances(InstanceIds=old)["Reservations"]
    assert {i["State"]["Name"] for res in states for i in res["Instances"]} == {"terminated"}
    assert {e[0] for e in k8s.eviction_log if e[1] == "201"} == {
        "vllm-r1-0",
        "vllm-r2-0",
        "vllm-r4-0",
        "vllm-r4-1",  # both pods of the two-node group
    }
    assert d.m.deadline_kills._value.get() == 0
