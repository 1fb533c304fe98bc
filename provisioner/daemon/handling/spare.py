"""A notice for a warm spare: it serves nobody, so there is nothing to drain. Retire it (the
reconcile job launches another, away from a reclaimed pool); a rebalance or a cancellation
changes nothing."""

from __future__ import annotations

import logging
from datetime import timedelta

from provisioner.daemon.capacity import LIVE_STATES
from provisioner.daemon.events import EventKind
from provisioner.daemon.handling.state import Outcome, Target
from provisioner.daemon.handling.steps import Steps
from provisioner.daemon.store import Entry

log = logging.getLogger("prov.daemon.handler")


def handle(h: Steps, entry: Entry, t: Target) -> Outcome:
    ev, inst = entry.event, t.instance
    if ev.kind in (EventKind.REBALANCE, EventKind.SCHEDULED_CANCELLED):
        log.info("notice for a warm spare; nothing to do", extra={"event": ev.id})
        return Outcome("done", "spare-ignored")
    if h.cfg.dry_run:
        log.info(f"dry-run: would terminate spare {inst.replica}", extra={"event": ev.id})
        h.m.actions.labels("spare-retire", "dry-run").inc()
        return Outcome("done", "dry-run")
    until = max(entry.deadline, h.now() + timedelta(seconds=30))
    if ev.kind is EventKind.SPOT_INTERRUPTION:
        h.blocks.block(inst.instance_type, inst.zone, "spot", h.cfg.block_seconds)
        h.m.blocked_pools.set(len(h.blocks.active()))
    if ev.state == "terminated":
        node = h.kube.find_node(inst.private_dns, inst.id)
        if node is not None:
            h.retry("delete-node", until, lambda: h.kube.delete_node(node.name))
    ids = [i.id for i in t.group]
    live = [
        i
        for i in h.retry("describe", until, lambda: h.cap.describe(ids)).values()
        if i.state in LIVE_STATES
    ]
    if live:
        h.retry("terminate", until, lambda: h.cap.terminate(live))
    h.m.actions.labels("spare-retire", "ok").inc()
    log.info(
        "retired a warm spare after a notice",
        extra={"event": ev.id, "replica": inst.replica, "kind": str(ev.kind)},
    )
    assert h.spares is not None
    h.spares.kick()
    return Outcome("done", "spare-retired")
