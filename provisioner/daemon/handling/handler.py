"""The handler: one notice kind per module, all behind one interface.

A kind module exports ``handle(steps, entry, target) -> Outcome``; ``KINDS`` maps each
EventKind to its module's function. ``Handler.handle`` resolves the notice's replica group,
takes the replica's lock for one step, and runs the kind. A kind returns ``deferred`` to be
called again later (a flow never blocks a worker), ``done`` (the notice is acknowledged) or
``failed`` (left unacknowledged, so SQS redelivers it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from provisioner.daemon.events import EventKind
from provisioner.daemon.handling import (
    asg_lifecycle,
    rebalance,
    scheduled,
    spare,
    spot,
    state_change,
)
from provisioner.daemon.handling.state import Aborted, Outcome, Target
from provisioner.daemon.handling.steps import Steps
from provisioner.daemon.store import Entry

log = logging.getLogger("prov.daemon.handler")

Kind = Callable[[Steps, Entry, Target], Outcome]
KINDS: dict[EventKind, Kind] = {
    EventKind.SPOT_INTERRUPTION: spot.handle,
    EventKind.REBALANCE: rebalance.handle,
    EventKind.SCHEDULED_CHANGE: scheduled.handle,
    EventKind.SCHEDULED_CANCELLED: scheduled.cancelled,
    EventKind.STATE_CHANGE: state_change.handle,
    EventKind.ASG_LIFECYCLE: asg_lifecycle.handle,
}


class Handler(Steps):
    def handle(self, entry: Entry) -> Outcome:
        ev = entry.event
        if entry.stage == "start":
            log.info(
                "handling notice",
                extra={"event": ev.id, "kind": str(ev.kind), "instance": ev.instance_id},
            )
        try:
            out = self._dispatch(entry)
        except Aborted:
            raise
        except Exception as e:
            self.m.errors.labels("handler").inc()
            error = f"{type(e).__name__}: {e}"
            give_up = ev.received_at + timedelta(seconds=self.cfg.replacement_timeout_seconds)
            if self.now() < max(give_up, entry.deadline):  # an outage: the next step retries
                log.warning("step failed; retrying", extra={"event": ev.id, "error": error})
                return Outcome("deferred", "retrying", not_before=self.later(), stage=entry.stage)
            log.error(
                "notice handling failed; it stays unacknowledged for a retry",
                extra={"event": ev.id, "error": error},
            )
            return Outcome("failed", "error", detail={"error": str(e)})
        if out.status != "deferred":
            log.info(
                "notice handled",
                extra={
                    "event": ev.id,
                    "kind": str(ev.kind),
                    "status": out.status,
                    "action": out.action,
                },
            )
        return out

    def _dispatch(self, entry: Entry) -> Outcome:
        resolved = self.resolve(entry.event, entry.deadline)
        if isinstance(resolved, Outcome):
            return resolved
        t = resolved
        lock = self.lock(t.key)
        lock.acquire()
        try:
            if self.version(t.key) != t.version:  # another notice moved this replica on
                t = self.reload(t)
            if t.instance.spare and self.spares is not None:  # N = 0: spare tags are ignored
                return spare.handle(self, entry, t)
            return KINDS[entry.event.kind](self, entry, t)
        finally:
            self.bump(t.key)
            lock.release()
