"""Monitors turn notices into InterruptionEvents and hand them to a sink (the daemon's store).

``poll()`` does one round (one SQS long poll, or one pass over the IMDS paths) and never raises
for a bad payload or an unreachable endpoint: it logs, counts, keeps the error in
``last_error`` (the daemon's /healthz and ``--once`` read it) and returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from provisioner.daemon.events import InterruptionEvent
from provisioner.daemon.store import Ack

Sink = Callable[[InterruptionEvent, Ack | None], object]


class Monitor(Protocol):
    name: str
    last_error: Exception | None  # the last poll's failure; None when it read its source

    def poll(self) -> int: ...

    def flush(self) -> None: ...
