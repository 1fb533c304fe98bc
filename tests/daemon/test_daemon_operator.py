"""What an operator running the deployed daemon meets (review 8), on the real parts: a moto
server over HTTP (EC2, SQS, EventBridge, autoscaling), kmock, the node agent.

* a notice handled after the Auto Scaling group refilled the node launches nothing beside the
  ASG's refill (docs/daemon.md, "one actor per node");
* a rebalance recommendation's replacement avoids the at-risk pool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from daemon_harness import REGION, wait_until

from provisioner import fleet

SPOT = "EC2 Spot Instance Interruption Warning"
BATCHED = ("sqs:DeleteMessage", "sqs:ChangeMessageVisibility")


def handled(d: Any, n: int = 1, timeout: float = 15) -> list[Any]:
    def final() -> list[Any] | None:
        done = [(e, o) for e, o in list(d.outcomes) if o.status != "deferred"]
        return done[:n] if len(done) >= n else None

    return wait_until(final, timeout, what=f"{n} handled")


def in_asg(aws: Any, name: str, ids: list[str], pool: str = "pool-a") -> None:
    """Put instances in an Auto Scaling group the way the stack's are (AWS tags them
    aws:autoscaling:groupName); the group carries the stack's tags for its replica
    (fleet.replica_asg_tags, as stacks/gpu_node_pool.py writes them; "prov-r1" is r1's)."""
    groups = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    if not groups["AutoScalingGroups"]:
        tags = fleet.replica_asg_tags(pool, name.removeprefix("prov-"))
        aws.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateId": aws.template, "Version": "$Latest"},
            MinSize=0,
            MaxSize=4,
            DesiredCapacity=0,
            VPCZoneIdentifier=",".join(aws.subnets.values()),
            Tags=[
                {
                    "ResourceId": name,
                    "ResourceType": "auto-scaling-group",
                    "Key": k,
                    "Value": v,
                    "PropagateAtLaunch": True,
                }
                for k, v in tags.items()
            ],
        )
    aws.autoscaling.attach_instances(InstanceIds=ids, AutoScalingGroupName=name)


@pytest.mark.parametrize("reclaim", ["ec2", "asg"])
def test_late_spot_notice_after_the_asg_refilled_launches_nothing(aws, agent, make_daemon, reclaim):
    """Review 8 #1: the daemon was down while a spot instance was reclaimed; its ASG (which
    the daemon never detached it from) refilled the replica. The notice, handled late, must
    not launch a second instance for the same replica, and must not touch the refill.
    "asg": terminated through the group, as the e2e stand does; moto then drops the group's
    tag from the old instance, so only the refill shows the replica is in an ASG."""
    (old,) = aws.launch_replica("r1")
    in_asg(aws, "prov-r1", [old["InstanceId"]])
    agent.settle()  # it served
    if reclaim == "ec2":
        aws.ec2.terminate_instances(InstanceIds=[old["InstanceId"]])
    else:
        aws.autoscaling.terminate_instance_in_auto_scaling_group(
            InstanceId=old["InstanceId"], ShouldDecrementDesiredCapacity=True
        )
    agent.settle()  # its node and pod are gone
    if not aws.live(**{fleet.REPLICA: "r1"}):  # "ec2": moto's group refilled it itself
        (refill,) = aws.launch_replica("r1", zone="us-east-1b")  # the ASG's refill, same tags
        in_asg(aws, "prov-r1", [refill["InstanceId"]])
    agent.settle()
    refills = sorted(i["InstanceId"] for i in aws.live(**{fleet.REPLICA: "r1"}))
    assert len(refills) == 1 and old["InstanceId"] not in refills
    d = make_daemon()
    aws.spot_warning(old["InstanceId"], seconds_left=-60)  # the warning, read late
    [(ev, out)] = handled(d)
    assert (ev.kind, out.action) == ("spot-interruption", "asg-refills")
    assert aws.replacements_of("r1") == []
    assert sorted(i["InstanceId"] for i in aws.live(**{fleet.REPLICA: "r1"})) == refills
    wait_until(lambda: aws.messages_left() == 0, what="message deleted")


def test_dry_run_says_what_the_real_run_does_with_a_late_notice(aws, agent, make_daemon):
    """The review of session 8's diff: --dry-run said "would request replacement" where the
    real run (above) leaves the replica to its ASG and launches nothing."""
    (old,) = aws.launch_replica("r1")
    in_asg(aws, "prov-r1", [old["InstanceId"]])
    agent.settle()
    aws.ec2.terminate_instances(InstanceIds=[old["InstanceId"]])
    agent.settle()
    (refill,) = aws.launch_replica("r1", zone="us-east-1b")
    in_asg(aws, "prov-r1", [refill["InstanceId"]])
    agent.settle()
    d = make_daemon(dry_run=True)
    aws.spot_warning(old["InstanceId"], seconds_left=-60)
    [(_ev, out)] = handled(d)
    decisions = out.detail["decisions"]
    assert decisions[0] == "launch nothing: the instance is gone and prov-r1 refills it"
    assert not any(x.startswith("request replacement") for x in decisions)
    assert aws.replacements_of("r1") == []


# -- the deployed identity, bad configuration, health -----------------------------------------


def _env(moto_url: str, keys: tuple[str, str] | None = ("testing", "testing")) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": "/nonexistent",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    if keys is not None:
        env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = keys
    return env


def _daemon(env: dict[str, str], queue_url: str, kube_url: str, *extra: str) -> Any:
    cmd = [
        sys.executable,
        "-m",
        "provisioner.cli.main",
        "daemon",
        "--mode",
        "queue",
        "--queue-url",
        queue_url,
        "--kube-api",
        kube_url,
        "--once",
        "--sqs-wait",
        "1",
        "--metrics-port",
        "-1",
        *extra,
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)


def _iam_enforced(moto_url: str, on: bool) -> None:
    """moto checks every call against IAM from now on (0 calls left unchecked), or never."""
    body = b"0" if on else b"inf"
    req = urllib.request.Request(
        f"{moto_url}/moto-api/reset-auth",
        data=body,
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(req, timeout=10).read()


def daemon_policy_key(
    boto_session: Any, moto_url: str, aws: Any, leave_out: frozenset[str] = frozenset()
) -> dict[str, str]:
    """The access key of a new IAM user holding the stack's generated daemon policy
    (fleet.iam_policy, minus the actions in ``leave_out``), on the moto server."""
    iam = boto_session.client("iam", endpoint_url=moto_url)
    arn = aws.sqs.get_queue_attributes(QueueUrl=aws.queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    policy = fleet.iam_policy(arn, "arn:aws:iam::123456789012:role/prov-gpu-node", leave_out)
    for st in policy["Statement"]:  # moto checks the batch calls under their own names
        st["Action"] += [a + "Batch" for a in st["Action"] if a in BATCHED]
    user = f"prov-daemon-{uuid.uuid4().hex[:6]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="daemon", PolicyDocument=json.dumps(policy))
    return dict(iam.create_access_key(UserName=user)["AccessKey"])


def test_dry_run_once_works_with_the_generated_policy(aws, k8s, moto_url, boto_session):
    """Review 8 #3: the check an operator runs as the deployed identity must pass with the
    policy the stack renders (fleet.iam_policy), under moto's IAM enforcement."""
    key = daemon_policy_key(boto_session, moto_url, aws)
    env = _env(moto_url, (key["AccessKeyId"], key["SecretAccessKey"]))
    _iam_enforced(moto_url, True)
    try:
        p = _daemon(env, aws.queue_url, k8s.url, "--dry-run")
        denied = _daemon(
            _env(moto_url, ("AKIANOTAKEY000000000", "x" * 40)), aws.queue_url, k8s.url, "--dry-run"
        )
    finally:
        _iam_enforced(moto_url, False)
    assert p.returncode == 0, p.stderr[-1500:]
    assert p.stdout.strip() == "prov daemon: handled 0 event(s)"
    # an identity AWS does not know: one line, no XML, exit 2 (configuration, not an outage)
    assert denied.returncode == 2, denied.stderr[-1500:]
    [line] = denied.stderr.strip().splitlines()
    assert line.startswith(f"prov: error: --queue-url {aws.queue_url}: cannot read the queue")
    assert "<" not in line and "InvalidClientTokenId" in line


def test_once_exits_2_with_one_line_when_the_queue_cannot_be_read(aws, k8s, moto_url):
    """Review 8 #2: --once that read nothing is not "handled 0" with exit 0."""
    missing = aws.queue_url.rsplit("/", 1)[0] + "/no-such-queue"
    p = _daemon(_env(moto_url), missing, k8s.url)
    assert p.returncode == 2, (p.stdout, p.stderr[-1500:])
    assert p.stdout == ""
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("prov: error:")]
    assert len(err) == 1 and "QueueDoesNotExist" in err[0] and "<" not in err[0]
    nocreds = _daemon(_env(moto_url, keys=None), aws.queue_url, k8s.url)
    assert nocreds.returncode == 2, nocreds.stderr[-1500:]
    err = [ln for ln in nocreds.stderr.splitlines() if ln.startswith("prov: error:")]
    assert len(err) == 1 and err[0].startswith("prov: error: no AWS credentials found")


@pytest.mark.slow
def test_healthz_fails_when_no_poll_reads_the_queue_and_the_log_is_not_flooded(
    aws, make_daemon, caplog
):
    """Review 8 #2: a daemon whose every poll fails is unhealthy once no poll has read the
    queue for 3 x (long poll + interval) + 10 s (docs/daemon.md); failures are logged 1st,
    2nd, 4th, 8th... in a row, with a backoff, not several times a second."""
    caplog.set_level("WARNING", logger="prov")
    d = make_daemon(queue_url=aws.queue_url.rsplit("/", 1)[0] + "/gone", metrics_port=0)
    url = f"http://127.0.0.1:{d.server.port}/healthz"
    assert urllib.request.urlopen(url, timeout=5).read() == b"ok\n"  # just started
    stall = 3 * (0 + 0.05) + 10  # FAST: --sqs-wait 0, poll interval 0.05 s
    time.sleep(stall + 1.5)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=5)
    assert e.value.code == 503
    assert b"no successful monitor poll" in e.value.read()
    failed = [r for r in caplog.records if r.getMessage() == "SQS receive failed"]
    # backoff 0.5, 1, 2, 4, 8 s: at most 5 failed polls in ~11.7 s, of which the 1st, 2nd and
    # 4th are logged
    assert 1 <= len(failed) <= 4, len(failed)


# -- fallback across the pool's types and zones, in the plan's order ---------------------------


def _tag(aws: Any, ids: list[str], tags: dict[str, str]) -> None:
    aws.ec2.create_tags(Resources=ids, Tags=[{"Key": k, "Value": v} for k, v in tags.items()])


def _zone_ids(aws: Any) -> dict[str, str]:
    subnets = aws.ec2.describe_subnets(SubnetIds=list(aws.subnets.values()))["Subnets"]
    return {s["AvailabilityZone"]: s["AvailabilityZoneId"] for s in subnets}


def test_replacements_follow_the_pools_zone_and_type_order(aws, agent, make_daemon, ec2_proxy):
    """Review 8 #4: the stack tags each instance with the pool's types and zones in the
    plan's price order (fleet.INSTANCE_TYPES, fleet.ZONES); the daemon falls back in that
    order without any --alternative flag."""
    ids = _zone_ids(aws)
    # zones by the plan's prices: 1a (the plan's), then 1c, then 1b (not alphabetical)
    order = {fleet.ZONES: f"{ids['us-east-1a']} {ids['us-east-1c']} {ids['us-east-1b']}"}
    types = {fleet.INSTANCE_TYPES: "p5.48xlarge p5e.48xlarge"}
    (r1,) = aws.launch_replica("r1")
    (r2,) = aws.launch_replica("r2")
    _tag(aws, [r1["InstanceId"], r2["InstanceId"]], {**order, **types})
    agent.settle()
    d = make_daemon()
    aws.spot_warning(r1["InstanceId"], seconds_left=5)
    handled(d)
    # p5.48xlarge@1a/spot was reclaimed: the next zone by the tag is 1c, not 1b
    [new1] = aws.replacements_of("r1")
    assert (new1["InstanceType"], new1["Placement"]["AvailabilityZone"]) == (
        "p5.48xlarge",
        "us-east-1c",
    )

    def no_p5_spot(p: dict[str, str]) -> tuple[int, str] | None:
        spot = p.get("InstanceMarketOptions.MarketType") == "spot"
        if p.get("Action") == "RunInstances" and p.get("InstanceType") == "p5.48xlarge" and spot:
            return 500, "InsufficientInstanceCapacity"
        return None

    ec2_proxy.rules.append(no_p5_spot)
    aws.spot_warning(r2["InstanceId"], seconds_left=5)
    handled(d, 2)
    # no p5.48xlarge spot anywhere: the pool's next type, on spot, before any on-demand
    [new2] = aws.replacements_of("r2")
    assert (new2["InstanceType"], new2.get("InstanceLifecycle")) == ("p5e.48xlarge", "spot")
    assert new2["Placement"]["AvailabilityZone"] == "us-east-1a"


def test_rebalance_replacement_avoids_the_at_risk_pool(aws, agent, make_daemon):
    """Review 8 #5: AWS flags p5.48xlarge spot in us-east-1a as at elevated risk; its guidance
    is to move to capacity not at that risk (docs.aws.amazon.com/AWSEC2/latest/UserGuide/
    rebalance-recommendations.html). The prewarmed replacement must not land in that pool:
    the next zone (1b) first."""
    (inst,) = aws.launch_replica("r1", zone="us-east-1a")
    agent.settle()
    d = make_daemon(prewarm_on_rebalance=True)
    aws.put("EC2 Instance Rebalance Recommendation", {"instance-id": inst["InstanceId"]})
    [(_, out)] = handled(d)
    assert out.action == "cordoned+replacement"
    [new] = aws.replacements_of("r1")
    assert (new["InstanceType"], new["Placement"]["AvailabilityZone"]) == (
        "p5.48xlarge",
        "us-east-1b",
    )
    assert new["InstanceLifecycle"] == "spot"


# -- defaults that must agree with what the stack grants ---------------------------------------


def test_leader_lease_defaults_to_the_namespace_the_generated_rbac_allows(k8s, core, make_daemon):
    """Review 8 #8: `prov daemon --leader-elect` with the stack's service account can only
    write leases in prov-system (the generated Role, docs/daemon.md); without
    --lease-namespace the Lease must land there."""
    d = make_daemon(leader_elect=True, lease_seconds=1.0)
    wait_until(lambda: d.elector.is_leader, what="leader")
    coord = __import__("kubernetes").client.CoordinationV1Api(core.api_client)
    lease = coord.read_namespaced_lease("prov-daemon", "prov-system")
    assert lease.spec.holder_identity
    [role_rule] = fleet.rbac_rules(namespaced=True)
    assert role_rule["resources"] == ["leases"]  # the Role (in fleet.DAEMON_NAMESPACE) has it


def test_shutdown_timeout_help_says_what_it_does():
    """Review 8 #8: the drain's grace is each pod's terminationGracePeriodSeconds; the flag
    only sets the deadline of notices that carry none."""
    from typer.testing import CliRunner

    from provisioner.cli.main import app

    out = CliRunner().invoke(app, ["daemon", "--help"], env={"COLUMNS": "200"}).output
    text = " ".join(out.split())
    assert "vLLM's --shutdown-timeout: eviction grace" not in text
    assert "Not the eviction grace" in text and "terminationGracePeriodSeconds" in text


# -- what the log says (review 8, further findings) --------------------------------------------


def _records(caplog: Any, msg: str) -> list[Any]:
    return [r for r in caplog.records if r.getMessage() == msg]


def test_the_log_names_the_queue_region_deletion_and_late_notices(aws, agent, make_daemon, caplog):
    caplog.set_level("INFO", logger="prov")
    (inst,) = aws.launch_replica("r1")
    agent.settle()
    d = make_daemon()
    [start] = _records(caplog, "daemon started")
    assert (start.mode, start.queue, start.region) == ("queue", aws.queue_url, REGION)
    aws.spot_warning(inst["InstanceId"], seconds_left=5)
    handled(d)
    wait_until(lambda: aws.messages_left() == 0, what="message deleted")
    wait_until(lambda: _records(caplog, "SQS messages deleted"), what="deletion logged")
    assert sum(r.count for r in _records(caplog, "SQS messages deleted")) == 1
    assert (
        _records(caplog, "late notice: handled after its deadline or after the instance went") == []
    )
    # a notice read after its deadline, for an instance already gone, is called late
    (gone,) = aws.launch_replica("r2")
    aws.ec2.terminate_instances(InstanceIds=[gone["InstanceId"]])
    aws.spot_warning(gone["InstanceId"], seconds_left=-30)
    handled(d, 2)
    [late] = _records(caplog, "late notice: handled after its deadline or after the instance went")
    assert (late.instance, late.state) == (gone["InstanceId"], "terminated")


def test_stop_mid_flow_reports_the_notice_it_hands_over(aws, agent, make_daemon, caplog):
    """SIGTERM mid-drain printed "handled 0" although a replacement was launched and the
    flow handed over: the stop line now counts what it hands over."""
    caplog.set_level("INFO", logger="prov")
    (inst,) = aws.launch_replica("r1")
    agent.settle()
    agent.stop()  # the replacement's node never joins: the flow holds for it
    d = make_daemon()
    aws.spot_warning(inst["InstanceId"], seconds_left=100)
    wait_until(lambda: aws.replacements_of("r1"), what="replacement launched")
    d.stop()
    assert d.store.handled == 0 and d.handed_over == 1
    [stopped] = _records(caplog, "daemon stopped")
    assert (stopped.handled, stopped.handed_over) == (0, 1)


def test_a_failing_ec2_api_is_logged_without_a_flood(aws, agent, make_daemon, ec2_proxy, caplog):
    """Review 8 #2 (related): every EC2 call failing (AuthFailure) made one notice log a
    "describe failed, retrying" warning per retry (64 in a minute). Now the 1st, 2nd, 4th,
    8th... failure in a row: in 3 s of retries every 0.05 s (~60 failures) at most 6 lines."""
    caplog.set_level("INFO", logger="prov")
    (inst,) = aws.launch_replica("r1")
    agent.settle()
    ec2_proxy.rules.append(
        lambda p: (403, "AuthFailure") if p.get("Action") == "DescribeInstances" else None
    )
    make_daemon()
    aws.spot_warning(inst["InstanceId"], seconds_left=100)
    time.sleep(3.0)
    retried = _records(caplog, "describe failed, retrying")
    assert 2 <= len(retried) <= 6, len(retried)
    assert [r.failures for r in retried] == [1, 2, 4, 8, 16, 32][: len(retried)]
    assert all("<" not in r.error for r in retried)


def test_a_notice_dated_a_century_ahead_is_a_logged_skip(aws, agent, make_daemon, caplog):
    """Review 8 (further findings): a spot warning whose EventBridge time is 2126 was taken
    as a notice with a deadline 100 years out. EventBridge stamps the time it emitted the
    event, so a time more than the clock skew (1 h) ahead is a malformed payload."""
    (inst,) = aws.launch_replica("r1")
    agent.settle()
    d = make_daemon()
    body = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": SPOT,
        "source": "aws.ec2",
        "account": "123456789012",
        "time": "2126-11-30T13:42:00Z",
        "region": REGION,
        "resources": [],
        "detail": {"instance-id": inst["InstanceId"], "instance-action": "terminate"},
    }
    with caplog.at_level("WARNING", logger="prov"):
        aws.sqs.send_message(QueueUrl=aws.queue_url, MessageBody=json.dumps(body))
        wait_until(lambda: aws.messages_left() == 0, what="skipped and deleted")
    assert d.m.skipped.labels("malformed")._value.get() == 1
    [skip] = _records(caplog, "skipping message")
    assert "days ahead" in skip.why
    assert aws.replacements_of("r1") == [] and d.store.counts()["pending"] == 0
