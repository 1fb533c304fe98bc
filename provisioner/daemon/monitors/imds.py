"""IMDS mode: poll this node's instance metadata with an IMDSv2 token (per node, a DaemonSet).

Paths: ``spot/instance-action``, ``events/recommendations/rebalance`` and
``events/maintenance/scheduled`` under ``{metadata_url}/latest/meta-data/``; 404 means "nothing".
The base URL is configurable (tests run a small HTTP server on 127.0.0.1).

``Metadata`` is what the monitor asks of the service; ``ImdsClient`` answers it over HTTP with an
IMDSv2 token, ``fakes.imds.FakeMetadata`` from a dict (tests/daemon/test_daemon_contract_queues.py
holds them equal).
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from provisioner.daemon.config import DaemonConfig
from provisioner.daemon.events import (
    InterruptionEvent,
    PayloadError,
    parse_imds_rebalance,
    parse_imds_scheduled,
    parse_imds_spot,
)
from provisioner.daemon.metrics import Metrics
from provisioner.daemon.monitors import Sink
from provisioner.daemon.store import utcnow
from provisioner.errors import OperationalError

log = logging.getLogger("prov.daemon.imds")

TOKEN_TTL = 21600


class ImdsError(OperationalError):
    """The instance metadata service is unreachable or refused a request."""


def _one(
    parse: Callable[[str, str, datetime], InterruptionEvent],
) -> Callable[[str, str, datetime], list[InterruptionEvent]]:
    return lambda inst, text, now: [parse(inst, text, now)]


PATHS: tuple[tuple[str, Callable[[str, str, datetime], list[InterruptionEvent]]], ...] = (
    ("spot/instance-action", _one(parse_imds_spot)),
    ("events/recommendations/rebalance", _one(parse_imds_rebalance)),
    ("events/maintenance/scheduled", parse_imds_scheduled),
)


class Metadata(Protocol):
    def token(self, refresh: bool = False) -> str:
        """A session token (IMDSv2); ImdsError when the service does not give one."""
        ...

    def get(self, path: str) -> str | None:
        """The text at meta-data/PATH, None when absent; ImdsError when unreachable."""
        ...


class ImdsClient:
    """The instance metadata service over HTTP, with an IMDSv2 token renewed before its TTL."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self._token: str | None = None
        self._token_until = 0.0

    def _request(self, req: urllib.request.Request) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.status, resp.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, ""
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise ImdsError(f"metadata service unreachable: {e}") from e

    def token(self, refresh: bool = False) -> str:
        if refresh or self._token is None or time.monotonic() >= self._token_until:
            req = urllib.request.Request(
                f"{self.base}/latest/api/token",
                method="PUT",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL)},
            )
            status, body = self._request(req)
            if status != 200 or not body:
                raise ImdsError(f"IMDSv2 token request answered {status}")
            self._token = body.strip()
            self._token_until = time.monotonic() + TOKEN_TTL - 60
        return self._token

    def get(self, path: str) -> str | None:
        """The text at meta-data/PATH, None on 404."""
        for attempt in (0, 1):
            req = urllib.request.Request(
                f"{self.base}/latest/meta-data/{path}",
                headers={"X-aws-ec2-metadata-token": self.token(refresh=attempt == 1)},
            )
            status, body = self._request(req)
            if status == 200:
                return body
            if status == 404:
                return None
            if status != 401:
                raise ImdsError(f"GET {path} answered {status}")
        raise ImdsError(f"GET {path}: token refused")


class ImdsMonitor:
    name = "imds"

    def __init__(
        self, cfg: DaemonConfig, sink: Sink, metrics: Metrics, metadata: Metadata | None = None
    ) -> None:
        self.cfg = cfg
        self.metadata: Metadata = metadata or ImdsClient(cfg.metadata_url, cfg.http_timeout_seconds)
        self.sink = sink
        self.m = metrics
        self.instance_id: str | None = None
        self.last_error: Exception | None = None  # of the last poll; None: metadata answered

    def flush(self) -> None:
        """Nothing to acknowledge in IMDS mode."""

    def token(self, refresh: bool = False) -> str:
        return self.metadata.token(refresh)

    def get(self, path: str) -> str | None:
        return self.metadata.get(path)

    def poll(self) -> int:
        now = utcnow()
        try:
            if self.instance_id is None:
                iid = self.get("instance-id")
                if not iid:
                    raise ImdsError("no instance-id in metadata")
                self.instance_id = iid.strip()
            count = 0
            for path, parse in PATHS:
                text = self.get(path)
                if text is None or not text.strip():
                    continue
                try:
                    events = parse(self.instance_id, text, now)
                except (PayloadError, ValueError) as e:
                    reason = e.reason if isinstance(e, PayloadError) else "malformed"
                    self.m.skipped.labels(reason).inc()
                    log.warning(
                        "skipping metadata answer",
                        extra={"path": path, "reason": reason, "why": str(e)},
                    )
                    continue
                for ev in events:
                    self.sink(ev, None)
                    count += 1
            self.last_error = None
            return count
        except ImdsError as e:
            self.last_error = e
            self.m.errors.labels("imds").inc()
            log.warning("IMDS poll failed", extra={"error": str(e)})
            return 0
