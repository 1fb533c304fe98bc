"""InterruptionQueue: the events the daemon acts on, routed to SQS, and its least-privilege role.

EventBridge rules for spot interruption warnings, rebalance recommendations, instance state
changes and scheduled maintenance (AWS Health) send to one SQS queue; only those rules may
write to it. The daemon's IAM role (bound to its service account by EKS Pod Identity) may
do exactly what provisioner/fleet.py declares the daemon calls (fleet.iam_policy): consume the
queue, describe and launch instances from the pool's launch template, detach a reclaimed group
from its Auto Scaling group, terminate what is left of it.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pulumi_aws as aws

from provisioner import fleet

#: name -> EventBridge pattern. What `prov daemon --mode queue` consumes.
EVENT_PATTERNS: dict[str, dict[str, Any]] = {
    "spot-interruption": {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Spot Instance Interruption Warning"],
    },
    "rebalance": {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Instance Rebalance Recommendation"],
    },
    "state-change": {
        "source": ["aws.ec2"],
        "detail-type": ["EC2 Instance State-change Notification"],
        "detail": {"state": ["stopping", "stopped", "shutting-down", "terminated"]},
    },
    "scheduled-change": {
        "source": ["aws.health"],
        "detail-type": ["AWS Health Event"],
        "detail": {"service": ["EC2"], "eventTypeCategory": ["scheduledChange"]},
    },
}

#: How long a notice may wait in the queue. A message stays in it, hidden, for as long as its
#: flow runs (the daemon deletes it only once the replacement is Ready, up to its
#: --replacement-timeout of 15 min after the notice), and an AWS Health scheduled change can be
#: announced days ahead: keep the SQS maximum, 14 days.
RETENTION_SECONDS = 14 * 24 * 3600
#: The daemon extends a message's visibility while its flow runs (ChangeMessageVisibility);
#: this is only how long a message stays hidden after a daemon died holding it.
VISIBILITY_SECONDS = 120


def daemon_policy(queue_arn: str, node_role_arn: str) -> dict[str, Any]:
    """The daemon's permissions, generated from provisioner/fleet.py's AWS_CALLS."""
    return fleet.iam_policy(queue_arn, node_role_arn)


def queue_policy(queue_arn: str, rule_arns: list[str]) -> dict[str, Any]:
    """Only this stack's rules may send to the queue."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "FromEventBridgeRules",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": rule_arns}},
            }
        ],
    }


POD_IDENTITY_TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
        }
    ],
}


class InterruptionQueue(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        *,
        cluster_name: pulumi.Input[str],
        node_role_arn: pulumi.Input[str],
        tags: dict[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("prov:aws:InterruptionQueue", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.queue = aws.sqs.Queue(
            f"{name}-events",
            message_retention_seconds=RETENTION_SECONDS,
            visibility_timeout_seconds=VISIBILITY_SECONDS,
            sqs_managed_sse_enabled=True,
            tags=tags,
            opts=child,
        )
        self.rules = []
        for kind, pattern in EVENT_PATTERNS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-{kind}", event_pattern=json.dumps(pattern), tags=tags, opts=child
            )
            aws.cloudwatch.EventTarget(
                f"{name}-{kind}", rule=rule.name, arn=self.queue.arn, opts=child
            )
            self.rules.append(rule)
        self.queue_policy = aws.sqs.QueuePolicy(
            f"{name}-events",
            queue_url=self.queue.url,
            policy=pulumi.Output.all(self.queue.arn, *[r.arn for r in self.rules]).apply(
                lambda arns: json.dumps(queue_policy(arns[0], list(arns[1:])))
            ),
            opts=child,
        )
        self.daemon_role = aws.iam.Role(
            f"{name}-daemon",
            assume_role_policy=json.dumps(POD_IDENTITY_TRUST),
            tags=tags,
            opts=child,
        )
        self.daemon_policy = aws.iam.RolePolicy(
            f"{name}-daemon",
            role=self.daemon_role.id,
            policy=pulumi.Output.all(self.queue.arn, node_role_arn).apply(
                lambda a: json.dumps(daemon_policy(a[0], a[1]))
            ),
            opts=child,
        )
        aws.eks.PodIdentityAssociation(
            f"{name}-daemon",
            cluster_name=cluster_name,
            namespace=fleet.DAEMON_NAMESPACE,
            service_account=fleet.DAEMON_SERVICE_ACCOUNT,
            role_arn=self.daemon_role.arn,
            opts=child,
        )
        self.register_outputs(
            {"queue_url": self.queue.url, "daemon_role_arn": self.daemon_role.arn}
        )
