"""Faults with real timing and a real process: a `prov daemon` process SIGKILLed mid-flow (SQS
redelivers after its real visibility timeout), notices outnumbering workers, and a
PodDisruptionBudget that holds all the way to the deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from daemon_harness import NodeAgent, node_json, wait_until
from test_daemon_scenarios import handled, one_replica, state_of

pytestmark = pytest.mark.slow


def test_sigkilled_daemon_process_is_resumed_after_the_real_visibility_timeout(
    aws, core, k8s, make_daemon, moto_url
):
    agent = NodeAgent(aws.ec2, core, k8s, load_delay=30.0).start()  # a slow replacement load
    try:
        (inst,) = one_replica(aws, agent)
        visibility = 2
        aws.sqs.set_queue_attributes(
            QueueUrl=aws.queue_url, Attributes={"VisibilityTimeout": str(visibility)}
        )
        env = {
            **os.environ,
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        args = [
            sys.executable, "-m", "provisioner.cli.main", "daemon", "--mode", "queue",
            "--queue-url", aws.queue_url, "--region", "us-east-1", "--kube-api", k8s.url,
            "--poll-interval", "0.05", "--sqs-wait", "0", "--step-interval", "0.05",
            "--metrics-port", "-1", "--log-level", "warning",
        ]  # fmt: skip
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            aws.spot_warning(inst["InstanceId"], seconds_left=4)
            name = inst["PrivateDnsName"]
            wait_until(
                lambda: (
                    state_of(node_json(core, name) or {"metadata": {}}).get("phase") == "draining"
                ),
                timeout=30,
                what="the process replaced first and started the drain",
            )
            [first] = aws.replacements_of("r1")
        finally:
            os.kill(proc.pid, signal.SIGKILL)  # a real SIGKILL: no handler runs
            proc.wait(10)
        killed_at = time.monotonic()
        assert proc.returncode == -signal.SIGKILL
        assert aws.messages_left() == 1  # nothing acknowledged
        agent.load_delay = 0.2  # the replacement finishes loading meanwhile
        d2 = make_daemon()
        got = wait_until(
            lambda: d2.store.counts()["active"] + d2.store.counts()["pending"] + d2.store.handled,
            timeout=10,
            what="redelivered",
        )
        assert got
        # SQS hid the message for the whole visibility timeout the killed process left running
        assert time.monotonic() - killed_at > visibility - 1.5
        [(_, out)] = handled(d2, timeout=30)
        assert out.action == "replaced-and-drained"
        assert [i["InstanceId"] for i in aws.replacements_of("r1")] == [first["InstanceId"]]
        wait_until(lambda: aws.messages_left() == 0, what="message deleted")
    finally:
        agent.stop()


def test_notices_outnumbering_workers_all_progress_at_once(aws, core, k8s, make_daemon):
    agent = NodeAgent(aws.ec2, core, k8s, load_delay=0.1).start()
    try:
        groups = [one_replica(aws, agent, f"r{k}")[0] for k in range(4)]
        agent.load_delay = 6.0
        # one worker, four flows that each wait ~6 s for a load; the four notices are queued
        # before the daemon starts, so slow puts on a loaded machine do not count
        for inst in groups:
            aws.spot_warning(inst["InstanceId"], seconds_left=20)
        d = make_daemon(workers=1, start=False).start()
        t0 = time.monotonic()
        wait_until(
            lambda: all(aws.replacements_of(f"r{k}") for k in range(4)),
            timeout=agent.load_delay,
            what="every replacement requested",
        )
        requested = time.monotonic() - t0
        # a worker held per flow would start the second only after the first's 6 s load
        assert requested < agent.load_delay, requested
        outs = handled(d, 4, timeout=30)
        assert sorted(o.action for _, o in outs) == ["replaced-and-drained"] * 4
        wait_until(lambda: aws.messages_left() == 0, what="messages deleted")
    finally:
        agent.stop()


def test_pdb_holding_to_the_deadline_does_not_stop_the_flow(aws, agent, k8s, make_daemon):
    (inst,) = one_replica(aws, agent)
    k8s.evict_policy = lambda ns, pod: False  # the budget never allows it
    agent.load_delay = 0.2
    d = make_daemon(hold_for_replacement=False)
    aws.spot_warning(inst["InstanceId"], seconds_left=3)
    t0 = time.monotonic()
    [(_, out)] = handled(d, timeout=20)
    blocked = [
        t
        for (p, a, _), t in zip(k8s.eviction_log, k8s.eviction_at, strict=True)
        if p == "vllm-r1-0" and a == "429"
    ]
    assert blocked and blocked[-1] - t0 > 1.5  # asked again and again, up to the deadline
    assert all(a == "429" for p, a, _ in k8s.eviction_log if p == "vllm-r1-0")
    assert d.m.deadline_kills._value.get() >= 1  # the pod was still there at the deadline
    assert out.action == "replaced-and-drained"  # and the replica was restored anyway
    assert aws.replacements_of("r1")
    wait_until(lambda: aws.messages_left() == 0, what="message deleted")
