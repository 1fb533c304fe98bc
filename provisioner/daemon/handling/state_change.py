"""Instance state change. Leaving (stopping, shutting-down): cordon. Terminated: delete the
node objects and, if no notice was handled for the replica, restore it; an instance still in
its Auto Scaling group is refilled by the ASG itself (the daemon never detached it), so the
daemon launches nothing for it: one replacement actor per node either way."""

from __future__ import annotations

import logging

from provisioner.daemon.handling.drain import asg_refills, replace_first
from provisioner.daemon.handling.state import FlowState, Outcome, Target
from provisioner.daemon.handling.steps import Steps
from provisioner.daemon.store import Entry

log = logging.getLogger("prov.daemon.handler")


def handle(h: Steps, entry: Entry, t: Target) -> Outcome:
    ev, deadline = entry.event, entry.deadline
    until = max(deadline, h.later(30))
    if ev.state != "terminated":
        if t.state.index >= 0:
            return Outcome("done", "already-handled")
        return replace_first(h, entry, t, deadline, replace=False, drain=False)
    if h.cfg.dry_run:
        log.info("dry-run: would delete node objects and restore capacity", extra={"event": ev.id})
        return Outcome("done", "dry-run")
    node = h.kube.find_node(t.instance.private_dns, t.instance.id)
    if node is not None:
        h.retry("delete-node", until, lambda: h.kube.delete_node(node.name))
        h.m.actions.labels("delete-node", "ok").inc()
        t.nodes.pop(ev.instance_id, None)
    if t.state.replacement or h.existing_replacement(t, until):
        return Outcome("done", "cleaned-up")
    if entry.stage == "start" and asg_refills(h, ev, t, until):
        return Outcome("done", "asg-refills")
    log.warning(
        "instance terminated without a handled notice: restoring the replica",
        extra={"event": ev.id, "replica": t.instance.replica},
    )
    replacement = h.request_replacement(ev, t, until)
    if replacement is None:
        return Outcome("failed", "no-capacity")
    if t.nodes:  # survivors of a broken group: keep new work off them
        t.state = FlowState()
        replace_first(h, entry, t, deadline, replace=False, drain=False)
        h.record(t, until, replacement=replacement)
    return Outcome("done", "replacement-requested")
