"""What an operator running the deployed daemon meets (review 8), on the real parts: a moto
server over HTTP (EC2, SQS, EventBridge, autoscaling), kmock, the node agent.

* a notice handled after the Auto Scaling group refilled the node launches nothing beside the
  ASG's refill (docs/daemon.md, "one actor per node");
* a rebalance recommendation's replacement avoids the at-risk pool.
"""

from __future__ import annotations

from typing import Any

from daemon_harness import wait_until

from provisioner import fleet

SPOT = "EC2 Spot Instance Interruption Warning"


def handled(d: Any, n: int = 1, timeout: float = 15) -> list[Any]:
    def final() -> list[Any] | None:
        done = [(e, o) for e, o in list(d.outcomes) if o.status != "deferred"]
        return done[:n] if len(done) >= n else None

    return wait_until(final, timeout, what=f"{n} handled")


def in_asg(aws: Any, name: str, ids: list[str]) -> None:
    """Put instances in an Auto Scaling group the way the stack's are (AWS tags them
    aws:autoscaling:groupName)."""
    groups = aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[name])
    if not groups["AutoScalingGroups"]:
        aws.autoscaling.create_auto_scaling_group(
            AutoScalingGroupName=name,
            LaunchTemplate={"LaunchTemplateId": aws.template, "Version": "$Latest"},
            MinSize=0,
            MaxSize=4,
            DesiredCapacity=0,
            VPCZoneIdentifier=",".join(aws.subnets.values()),
        )
    aws.autoscaling.attach_instances(InstanceIds=ids, AutoScalingGroupName=name)


def test_late_spot_notice_after_the_asg_refilled_launches_nothing(aws, agent, make_daemon):
    """Review 8 #1: the daemon was down while a spot instance was reclaimed; its ASG (which
    the daemon never detached it from) refilled the replica. The notice, handled late, must
    not launch a second instance for the same replica, and must not touch the refill."""
    (old,) = aws.launch_replica("r1")
    in_asg(aws, "prov-r1", [old["InstanceId"]])
    aws.ec2.terminate_instances(InstanceIds=[old["InstanceId"]])  # reclaimed
    (refill,) = aws.launch_replica("r1", zone="us-east-1b")  # the ASG's refill, same tags
    in_asg(aws, "prov-r1", [refill["InstanceId"]])
    agent.settle()
    d = make_daemon()
    aws.spot_warning(old["InstanceId"], seconds_left=-60)  # the warning, read late
    [(ev, out)] = handled(d)
    assert (ev.kind, out.action) == ("spot-interruption", "asg-refills")
    assert aws.replacements_of("r1") == []
    assert [i["InstanceId"] for i in aws.live(**{fleet.REPLICA: "r1"})] == [refill["InstanceId"]]
    wait_until(lambda: aws.messages_left() == 0, what="message deleted")
