"""ASG termination lifecycle hook: the ASG terminates the instance and replaces it itself, so
the daemon only drains, then lets the termination continue."""

from __future__ import annotations

import logging

from provisioner.daemon.handling.drain import plan_log, replace_first
from provisioner.daemon.handling.state import Outcome, Target
from provisioner.daemon.handling.steps import Steps
from provisioner.daemon.store import Entry

log = logging.getLogger("prov.daemon.handler")


def handle(h: Steps, entry: Entry, t: Target) -> Outcome:
    ev = entry.event
    if h.cfg.dry_run:
        return plan_log(h, ev, t, replace=False, drain=True)
    if t.nodes:
        out = replace_first(h, entry, t, entry.deadline, replace=False, drain=True)
        if out.status != "done":
            return out
    try:
        h.cap.complete_lifecycle(
            ev.detail["group"], ev.detail["hook"], ev.detail["token"], ev.instance_id
        )
        h.m.actions.labels("complete-lifecycle", "ok").inc()
    except Exception as e:  # the hook times out by itself; the drain is what mattered
        h.m.errors.labels("complete-lifecycle").inc()
        h.m.actions.labels("complete-lifecycle", "error").inc()
        log.warning(
            "could not complete the lifecycle action; the hook will time out instead",
            extra={"event": ev.id, "error": f"{type(e).__name__}: {e}"},
        )
    return Outcome("done", "drained-for-asg")
