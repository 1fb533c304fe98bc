"""AWS Health scheduled change: cordon at once, drain ``--maintenance-lead`` before the start;
a cancellation uncordons what this maintenance (and nothing else) cordoned."""

from __future__ import annotations

import logging
from datetime import timedelta

from provisioner import fleet
from provisioner.daemon.events import EventKind
from provisioner.daemon.handling.drain import replace_first
from provisioner.daemon.handling.state import Outcome, Target
from provisioner.daemon.handling.steps import Steps
from provisioner.daemon.store import Entry

log = logging.getLogger("prov.daemon.handler")


def handle(h: Steps, entry: Entry, t: Target) -> Outcome:
    ev = entry.event
    start = ev.start_time or entry.deadline
    drain_at = start - timedelta(seconds=h.cfg.maintenance_lead_seconds)
    if entry.stage == "start" and h.now() < drain_at:
        out = replace_first(h, entry, t, start, replace=False, drain=False)
        if out.status != "done" or out.action in ("node-not-found", "dry-run"):
            return out
        log.info(
            "scheduled maintenance: cordoned now, drain deferred",
            extra={"event": ev.id, "drain_at": drain_at.isoformat()},
        )
        return Outcome("deferred", "cordoned", not_before=drain_at, stage="drain")
    return replace_first(h, entry, t, start, replace=True, drain=True)


def cancelled(h: Steps, entry: Entry, t: Target) -> Outcome:
    ev, st = entry.event, t.state
    if not t.nodes:
        return Outcome("done", "node-not-found")
    mine = (
        st.kind == str(EventKind.SCHEDULED_CHANGE)
        and st.phase == "cordoned"
        and st.maintenance_id == ev.detail.get("event_id")
    )
    if not mine:
        log.info(
            "cancellation: node is not (only) cordoned for this maintenance; left as is",
            extra={"event": ev.id, "phase": st.phase, "by": st.kind},
        )
        return Outcome("done", "cancel-ignored")
    if h.cfg.dry_run:
        log.info("dry-run: would uncordon", extra={"event": ev.id})
        return Outcome("done", "dry-run")
    until = h.now() + timedelta(seconds=60)
    for node in t.nodes.values():
        h.retry(
            "uncordon",
            until,
            lambda n=node: h.kube.uncordon(n.name, {fleet.STATE_ANNOTATION: None}),  # type: ignore[misc]
        )
        h.m.actions.labels("uncordon", "ok").inc()
        h.event(node.name, "MaintenanceCancelled", f"uncordoned ({ev.id})")
    return Outcome("done", "uncordoned")
