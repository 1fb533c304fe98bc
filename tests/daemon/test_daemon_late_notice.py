"""The late-notice gap (review 8's diff review): a gone instance that lost AWS's group tag
before its Auto Scaling group launched the refill. Nothing on the instance or on a live member
names the group, so the daemon asks Auto Scaling for the replica's group by the stack's tags
(fleet.replica_asg_tags, what stacks/gpu_node_pool.py writes on each group) and launches
nothing: the group refills it. Under moto's IAM enforcement the stack's generated policy
(fleet.iam_policy) allows that call; a policy without it gets one error line, no traceback, and
the old behaviour (a replacement).

The state is made directly, as moto allows and AWS would not: moto refills a group at the
instant EC2 terminates its member (AWS: after its health check finds it gone), so the instance
is reclaimed first and then put in its group (desired 1, nothing live in it), and AWS's
``aws:autoscaling:groupName`` tag is then deleted from it.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from daemon_harness import REGION, build_test_daemon, wait_until
from test_daemon_operator import _iam_enforced, daemon_policy_key, handled, in_asg

from provisioner import fleet

GONE_NO_TAG = "late notice"


def _gone_without_group_tag(aws: Any) -> str:
    """r1's one instance, in its ASG prov-r1, reclaimed; AWS's group tag gone; no refill yet."""
    (old,) = aws.launch_replica("r1")
    iid = old["InstanceId"]
    aws.ec2.terminate_instances(InstanceIds=[iid])
    in_asg(aws, "prov-r1", [iid])  # desired 1; moto tags it with the group's name
    aws.ec2.delete_tags(Resources=[iid], Tags=[{"Key": fleet.AWS_ASG_NAME}])
    [group] = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["prov-r1"])[
        "AutoScalingGroups"
    ]
    assert group["DesiredCapacity"] == 1
    [desc] = aws.instances(**{fleet.REPLICA: "r1"})
    tags = {t["Key"] for t in desc.get("Tags", [])}
    assert fleet.AWS_ASG_NAME not in tags and desc["State"]["Name"] != "running"
    assert aws.live(**{fleet.REPLICA: "r1"}) == []  # no refill: only the ASG can tell
    return str(iid)


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_gone_instance_without_its_group_tag_is_left_to_its_asg(aws, make_daemon, dry_run):
    iid = _gone_without_group_tag(aws)
    d = make_daemon(dry_run=dry_run)
    aws.spot_warning(iid, seconds_left=-60)  # the warning, read late
    [(ev, out)] = handled(d)
    if dry_run:
        decisions = out.detail["decisions"]
        assert decisions[0] == "launch nothing: the instance is gone and prov-r1 refills it"
        assert not any(x.startswith("request replacement") for x in decisions)
    else:
        assert (ev.kind, out.action) == ("spot-interruption", "asg-refills")
    assert aws.replacements_of("r1") == []


def test_a_group_the_daemon_detached_refills_nothing(aws, make_daemon):
    """The ASG's desired size is the test: a group the daemon detached (desired 0) refills
    nothing, so a gone member of it is replaced (the rule must not answer "refills" for every
    replica the stack made)."""
    iid = _gone_without_group_tag(aws)
    aws.autoscaling.update_auto_scaling_group(
        AutoScalingGroupName="prov-r1", MinSize=0, DesiredCapacity=0
    )
    d = make_daemon()
    aws.spot_warning(iid, seconds_left=-60)
    wait_until(lambda: aws.replacements_of("r1"), what="a replacement requested")
    assert not [o for _, o in list(d.outcomes) if o.action == "asg-refills"]


def _daemon_identity(boto_session: Any, moto_url: str, aws: Any, leave_out: set[str]) -> Any:
    """A boto3 session with the keys of an IAM user holding the stack's generated daemon policy
    (minus ``leave_out``)."""
    import boto3

    key = daemon_policy_key(boto_session, moto_url, aws, frozenset(leave_out))
    return boto3.session.Session(
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        region_name=REGION,
    )


ASK = "autoscaling:DescribeAutoScalingGroups"


def test_the_generated_policy_allows_asking_auto_scaling(aws, k8s, moto_url, boto_session):
    assert ASK in {c.action for c in fleet.AWS_CALLS}
    iid = _gone_without_group_tag(aws)
    session = _daemon_identity(boto_session, moto_url, aws, set())
    aws.spot_warning(iid, seconds_left=-60)
    _iam_enforced(moto_url, True)
    try:
        d = build_test_daemon(aws, k8s.url, moto_url, session)
        d.start()
        try:
            [(ev, out)] = handled(d)
        finally:
            d.stop(timeout=5)
    finally:
        _iam_enforced(moto_url, False)
    assert (ev.kind, out.action) == ("spot-interruption", "asg-refills")
    assert aws.replacements_of("r1") == []


def test_a_role_without_it_logs_one_error_line_and_replaces(
    aws, k8s, moto_url, boto_session, caplog
):
    iid = _gone_without_group_tag(aws)
    session = _daemon_identity(boto_session, moto_url, aws, {ASK})
    aws.spot_warning(iid, seconds_left=-60)
    caplog.set_level(logging.INFO, logger="prov.daemon")
    _iam_enforced(moto_url, True)
    try:
        d = build_test_daemon(aws, k8s.url, moto_url, session)
        d.start()
        try:

            def asked() -> list[logging.LogRecord]:
                return [r for r in caplog.records if "cannot ask Auto Scaling" in r.getMessage()]

            [rec] = wait_until(asked, what="the error line")
            wait_until(
                lambda: any("replacement requested" in r.getMessage() for r in caplog.records),
                what="the replacement (the old behaviour)",
            )
        finally:
            d.stop(timeout=5)
    finally:
        _iam_enforced(moto_url, False)
    assert rec.levelno == logging.ERROR and rec.exc_info is None  # no traceback
    error = rec.__dict__["error"]
    assert "\n" not in error and "<" not in error
    assert "AccessDenied" in error and ASK in rec.getMessage()
    assert len(aws.replacements_of("r1")) == 1
