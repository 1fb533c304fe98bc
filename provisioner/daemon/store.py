"""The event store: dedupe, deadlines, and which events are due for a worker.

Thread-safe and in-memory. Durable progress lives on the node (an annotation the handler writes),
so a restarted daemon that sees a redelivered message resumes instead of starting over.

Dedupe is on the event id and on the event's semantic key (``InterruptionEvent.key``): a second
delivery of a notice that is still pending or in progress is attached to the first (its SQS
message is acknowledged together with the first's), and a notice already handled is reported
as ``DONE`` so the monitor acknowledges it at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal, Protocol

from provisioner.daemon.config import DaemonConfig
from provisioner.daemon.events import EventKind, InterruptionEvent


def utcnow() -> datetime:
    return datetime.now(UTC)


class Ack(Protocol):
    """How a monitor acknowledges one delivery (an SQS message); IMDS has none."""

    def ack(self) -> None: ...

    def release(self) -> None: ...

    def keepalive(self) -> None: ...


class AddResult(StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"  # same notice still pending or in progress: attached
    DONE = "done"  # same notice already handled: acknowledge it now


@dataclass
class Entry:
    event: InterruptionEvent
    deadline: datetime
    not_before: datetime
    state: Literal["pending", "active", "done"] = "pending"
    stage: str = "start"
    acks: list[Ack] = field(default_factory=list)
    duplicates: int = 0
    done_at: float | None = None


def deadline_for(ev: InterruptionEvent, cfg: DaemonConfig) -> tuple[datetime, datetime]:
    """(deadline, not_before) of an event: when the instance goes away, when to start acting."""
    now = ev.received_at
    match ev.kind:
        case EventKind.SPOT_INTERRUPTION:
            deadline = ev.start_time or ev.notice_time + timedelta(seconds=cfg.spot_notice_seconds)
        case EventKind.REBALANCE:
            deadline = now + timedelta(seconds=cfg.rebalance_window_seconds)
        case EventKind.SCHEDULED_CHANGE:
            deadline = ev.start_time or now + timedelta(seconds=2 * cfg.maintenance_lead_seconds)
        case EventKind.ASG_LIFECYCLE:
            deadline = now + timedelta(seconds=cfg.lifecycle_timeout_seconds)
        case _:
            deadline = now + timedelta(seconds=max(60.0, cfg.shutdown_timeout_seconds))
    return deadline, now


class EventStore:
    def __init__(
        self,
        cfg: DaemonConfig,
        now: Callable[[], datetime] = utcnow,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self._now = now
        self._mono = mono
        self._lock = threading.Lock()
        self._by_id: dict[str, Entry] = {}
        self._by_key: dict[str, Entry] = {}
        self.handled = 0  # events finished as done (for --max-events)

    def add(self, ev: InterruptionEvent, ack: Ack | None = None) -> AddResult:
        with self._lock:
            entry = self._by_id.get(ev.id) or self._by_key.get(ev.key)
            if entry is not None:
                if entry.state == "done":
                    return AddResult.DONE
                entry.duplicates += 1
                if ack is not None:
                    entry.acks.append(ack)
                deadline, _ = deadline_for(ev, self.cfg)
                entry.deadline = min(entry.deadline, deadline)
                self._by_id.setdefault(ev.id, entry)
                return AddResult.DUPLICATE
            deadline, not_before = deadline_for(ev, self.cfg)
            entry = Entry(ev, deadline, not_before, acks=[ack] if ack is not None else [])
            self._by_id[ev.id] = entry
            self._by_key[ev.key] = entry
            return AddResult.NEW

    def due(self, limit: int) -> list[Entry]:
        """Pending entries whose time has come, new notices first, then by deadline; marked
        active."""
        if limit <= 0:
            return []
        now = self._now()
        with self._lock:
            ready = sorted(
                {
                    id(e): e
                    for e in self._by_key.values()
                    if e.state == "pending" and e.not_before <= now
                }.values(),
                # a notice's first step (replacement requested, replica cordoned) before the
                # re-checks of flows already under way, then the earliest deadline
                key=lambda e: (e.stage != "start", e.deadline),
            )[:limit]
            for e in ready:
                e.state = "active"
            return ready

    def due_count(self) -> int:
        now = self._now()
        with self._lock:
            return len(
                {
                    id(e)
                    for e in self._by_key.values()
                    if e.state == "pending" and e.not_before <= now
                }
            )

    def finish(
        self,
        entry: Entry,
        outcome: Literal["done", "failed", "deferred"],
        not_before: datetime | None = None,
        stage: str | None = None,
    ) -> list[Ack]:
        """Record an outcome. Returns the acks to acknowledge (only when done)."""
        with self._lock:
            if outcome == "done":
                entry.state = "done"
                entry.done_at = self._mono()
                self.handled += 1
                acks, entry.acks = entry.acks, []
                return acks
            if outcome == "deferred":
                entry.state = "pending"
                entry.not_before = not_before or self._now()
                if stage is not None:
                    entry.stage = stage
                return []
            # failed: forget it so a redelivery (or the next IMDS poll) tries again
            self._drop(entry)
            return []

    def cancel(self, key: str) -> Entry | None:
        """Remove a pending (not active) entry by key, e.g. a cancelled scheduled change."""
        with self._lock:
            entry = self._by_key.get(key)
            if entry is None or entry.state != "pending":
                return None
            entry.state = "done"
            entry.done_at = self._mono()
            return entry

    def _drop(self, entry: Entry) -> None:
        for index in (self._by_id, self._by_key):
            for k in [k for k, v in index.items() if v is entry]:
                del index[k]

    def forget_done(self) -> int:
        horizon = self._mono() - self.cfg.done_ttl_seconds
        with self._lock:
            old = {
                id(e): e
                for e in self._by_key.values()
                if e.state == "done" and e.done_at is not None and e.done_at < horizon
            }
            for e in old.values():
                self._drop(e)
            return len(old)

    def open_acks(self) -> list[Ack]:
        """Acks of entries not yet done: their messages must stay invisible (keepalive)."""
        with self._lock:
            seen: set[int] = set()
            out: list[Ack] = []
            for e in self._by_key.values():
                if e.state != "done" and id(e) not in seen:
                    seen.add(id(e))
                    out.extend(e.acks)
            return out

    def counts(self) -> dict[str, int]:
        with self._lock:
            entries = {id(e): e for e in self._by_key.values()}.values()
            out = {"pending": 0, "active": 0, "done": 0}
            for e in entries:
                out[e.state] += 1
            return out

    def has_room(self) -> bool:
        c = self.counts()
        return c["pending"] + c["active"] < self.cfg.max_pending
