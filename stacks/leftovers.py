"""Instances a stack does not own but must not outlive it: what `prov destroy` terminates first.

`prov daemon` launches replacements and warm spares with RunInstances; they carry the stack's
``prov.dev/stack`` tag (provisioner/fleet.py) but are not Pulumi resources, so a plain Pulumi
destroy leaves them running and billing (and their network interfaces would block the VPC's
deletion). Before the stack goes, every instance tagged with *its* name, in its region, in any
state but terminated, is detached from its Auto Scaling group (decrementing the desired size,
so the group launches nothing in its place) and terminated.

Pure: the selection and the IAM policy the destroying user needs. The boto3 adapter is
stacks/leftovers_aws.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from provisioner import fleet

#: States an instance may be in and still cost money (or come back): everything but terminated.
LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
#: States that count as done once TerminateInstances was accepted.
GONE_STATES = frozenset({"shutting-down", "terminated"})


@dataclass(frozen=True)
class DestroyCall:
    """One IAM action the leftover cleanup makes (all on "*": instances launched at run time)."""

    action: str
    why: str


DESTROY_CALLS: tuple[DestroyCall, ...] = (
    DestroyCall("ec2:DescribeInstances", "find the instances tagged with the stack; wait"),
    DestroyCall("autoscaling:DescribeAutoScalingInstances", "which of them an ASG holds"),
    DestroyCall("autoscaling:DetachInstances", "take them out of the ASG (no relaunch)"),
    DestroyCall("ec2:TerminateInstances", "terminate them"),
)


def destroy_policy(leave_out: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The IAM statement the destroying user needs for the cleanup, from DESTROY_CALLS (on top of
    what Pulumi needs to delete the stack's own resources)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TerminateStackInstances",
                "Effect": "Allow",
                "Action": sorted(c.action for c in DESTROY_CALLS if c.action not in leave_out),
                "Resource": "*",
            }
        ],
    }


@dataclass(frozen=True)
class Leftover:
    """One instance to terminate; ``asg``: the Auto Scaling group holding it, if any."""

    id: str
    state: str
    instance_type: str
    role: str  # "replacement", "spare", "asg" (the stack's own group) or "instance"
    asg: str | None = None


def _tags(instance: dict[str, Any]) -> dict[str, str]:
    return {t.get("Key", ""): t.get("Value", "") for t in instance.get("Tags") or []}


def _role(tags: dict[str, str]) -> str:
    if tags.get(fleet.SPARE) in (fleet.SPARE_VALUE, fleet.SPARE_PROMOTED):
        return "spare"
    if fleet.REPLACES in tags:
        return "replacement"
    if fleet.AWS_ASG_NAME in tags:
        return "asg"
    return "instance"


def select(reservations: list[dict[str, Any]], stack: str) -> list[Leftover]:
    """The instances of DescribeInstances' reservations that belong to ``stack`` and are not
    terminated, sorted by id. Only an exact ``prov.dev/stack`` match counts: another stack's
    instances and untagged ones are never selected, whatever the server-side filter returned."""
    found: dict[str, Leftover] = {}
    for reservation in reservations:
        for inst in reservation.get("Instances") or []:
            tags = _tags(inst)
            state = (inst.get("State") or {}).get("Name", "")
            iid = inst.get("InstanceId")
            if not iid or tags.get(fleet.STACK) != stack or state not in LIVE_STATES:
                continue
            found[iid] = Leftover(iid, state, inst.get("InstanceType", "?"), _role(tags))
    return [found[k] for k in sorted(found)]


def with_groups(leftovers: list[Leftover], groups: dict[str, str]) -> list[Leftover]:
    """``leftovers`` with the ASG each belongs to (``groups``: instance id -> group name, from
    DescribeAutoScalingInstances: the membership the ASG itself reports)."""
    return [Leftover(x.id, x.state, x.instance_type, x.role, groups.get(x.id)) for x in leftovers]


def by_group(leftovers: list[Leftover]) -> dict[str, list[str]]:
    """Instance ids per Auto Scaling group, for DetachInstances."""
    out: dict[str, list[str]] = {}
    for x in leftovers:
        if x.asg:
            out.setdefault(x.asg, []).append(x.id)
    return out


def not_gone(reservations: list[dict[str, Any]], ids: list[str]) -> list[str]:
    """Which of ``ids`` are not yet shutting-down or terminated (an id AWS no longer lists is
    gone)."""
    states = {
        i.get("InstanceId"): (i.get("State") or {}).get("Name", "")
        for r in reservations
        for i in r.get("Instances") or []
    }
    return [i for i in ids if i in states and states[i] not in GONE_STATES]


def lines(leftovers: list[Leftover]) -> list[str]:
    """One line per instance, for the preview and the confirmation (fits 80 columns)."""
    out = []
    for x in leftovers:
        what = (
            x.role if not x.asg else f"ASG {x.asg}" if x.role == "asg" else f"{x.role}, ASG {x.asg}"
        )
        if len(what) > 26:
            what = what[:23] + "..."
        out.append(f"  {x.id:<20} {x.instance_type[:16]:<16} {x.state:<13} {what}")
    return out
