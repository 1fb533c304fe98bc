"""Prometheus metrics and the small HTTP server for /metrics and /healthz.

Each Daemon owns its own CollectorRegistry (several daemons can run in one test process).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

NS = "prov_daemon"
_FAST = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
_DRAIN = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 90.0, 120.0, 300.0, 900.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.events = Counter(
            f"{NS}_events", "Notices received, by kind and source.", ["kind", "source"], registry=r
        )
        self.duplicates = Counter(
            f"{NS}_duplicate_events", "Notices already pending or handled.", ["source"], registry=r
        )
        self.skipped = Counter(
            f"{NS}_skipped", "Messages or events skipped, by reason.", ["reason"], registry=r
        )
        self.actions = Counter(
            f"{NS}_actions",
            "Actions taken, by action and result.",
            ["action", "result"],
            registry=r,
        )
        self.replacements = Counter(
            f"{NS}_replacements",
            "Replacement replicas requested, by market.",
            ["market"],
            registry=r,
        )
        self.spare_promotions = Counter(
            f"{NS}_spare_promotions",
            "Warm spares promoted to replace an interrupted replica, by market.",
            ["market"],
            registry=r,
        )
        self.spare_launches = Counter(
            f"{NS}_spare_launches",
            "Warm spare replica groups launched, by market.",
            ["market"],
            registry=r,
        )
        self.spares = Gauge(
            f"{NS}_spares",
            "Warm spare replica groups per pool: ready, or loading.",
            ["pool", "state"],
            registry=r,
        )
        self.errors = Counter(f"{NS}_errors", "Errors, by stage.", ["stage"], registry=r)
        self.deadline_kills = Counter(
            f"{NS}_pods_at_deadline",
            "Pods still terminating at the deadline: their unfinished requests were aborted.",
            registry=r,
        )
        self.drain_seconds = Histogram(
            f"{NS}_drain_seconds",
            "From notice received to replica drained and replacement Ready.",
            buckets=_DRAIN,
            registry=r,
        )
        self.to_cordon = Histogram(
            f"{NS}_notice_to_cordon_seconds",
            "From notice received to all nodes of the replica cordoned.",
            buckets=_FAST,
            registry=r,
        )
        self.to_replacement = Histogram(
            f"{NS}_notice_to_replacement_seconds",
            "From notice received to the replacement requested from EC2.",
            buckets=_FAST,
            registry=r,
        )
        self.in_flight = Gauge(f"{NS}_events_in_flight", "Events being handled.", registry=r)
        self.pending = Gauge(
            f"{NS}_events_pending", "Events waiting (deferred, queued).", registry=r
        )
        self.blocked_pools = Gauge(
            f"{NS}_blocked_pools", "(type, zone, market) pools avoided for now.", registry=r
        )
        self.leader = Gauge(f"{NS}_leader", "1 when this daemon holds the lease.", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """GET /metrics (Prometheus text) and GET /healthz (200 ok / 503 with the reason)."""

    def __init__(
        self, metrics: Metrics, health: Callable[[], str | None], host: str, port: int
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = outer.metrics.render(), CONTENT_TYPE_LATEST, 200
                elif path == "/healthz":
                    problem = outer.health()
                    body = (problem or "ok").encode() + b"\n"
                    ctype, code = "text/plain; charset=utf-8", 503 if problem else 200
                else:
                    body, ctype, code = b"not found\n", "text/plain; charset=utf-8", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # quiet
                return

        self.metrics = metrics
        self.health = health
        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.1,), name="prov-metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
