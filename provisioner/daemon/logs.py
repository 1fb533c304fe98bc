"""Structured logs: one JSON object per line, with the fields passed through ``extra=``."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else came in through extra= and is emitted.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STANDARD and not k.startswith("_"):
                out[k] = v if isinstance(v, str | int | float | bool | type(None)) else str(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD and not k.startswith("_")
        )
        base = f"{record.levelname.lower():7} {record.name}: {record.getMessage()}"
        return f"{base} {extras}".rstrip()


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is when a record is emitted, not as it was at setup: a
    command run in-process (tests, an embedding program) may swap and close that stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


@contextmanager
def daemon_logging(fmt: str = "json", level: str = "info") -> Iterator[None]:
    """Route the daemon's loggers to stderr and quiet the chatty libraries while the daemon
    runs; put every logger back as it was afterwards (an in-process run leaves no handler)."""
    root = logging.getLogger("prov")
    saved = (root.handlers[:], root.level, root.propagate)
    noisy = ("apscheduler", "botocore", "urllib3", "kubernetes")
    levels = {n: logging.getLogger(n).level for n in noisy}
    handler = _Stderr()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    for n in noisy:
        logging.getLogger(n).setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:], root.level, root.propagate = saved
        for n, lvl in levels.items():
            logging.getLogger(n).setLevel(lvl)
