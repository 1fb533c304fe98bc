"""An admission router in front of vLLM stand-ins (daemon_harness.VllmStandIn).

``AdmissionRouter`` is an HTTP reverse proxy on 127.0.0.1: endpoints are the workload's pods
that are Ready, not terminating, with a URL, on nodes not labelled
``node.kubernetes.io/exclude-from-external-load-balancers`` (Kubernetes endpoint semantics plus
the node label cloud load balancers honour), refreshed every ``refresh`` seconds. Each endpoint
takes at most ``slots`` requests at once (the pod's max_num_seqs); a request that finds no free
slot is refused at once with HTTP 503 and ``Retry-After`` instead of waiting in a queue that
outlasts the client. Responses are streamed through; an upstream cut is passed on as a cut.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from daemon_harness import _Quiet, _serve, ready_endpoints


@dataclass
class Outcome:
    outcome: str  # ok | aborted | refused | cut
    seconds: float  # from sending to the end of the response
    upstream: str | None
    sent_at: float
    retry_after: str | None = None


class AdmissionRouter:
    def __init__(self, core: Any, slots: int, retry_after: int = 1, refresh: float = 0.03):
        self.core, self.slots, self.retry_after, self.refresh = core, slots, retry_after, refresh
        self.endpoints: list[str] = []
        self.busy: dict[str, int] = {}
        self.left_view: dict[str, float] = {}  # endpoint -> when it left the router's view
        self._lock = threading.Lock()
        self._stop = threading.Event()
        outer = self

        class H(_Quiet):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = outer._take()
                if target is None:
                    self.send_response(503)
                    self.send_header("Retry-After", str(outer.retry_after))
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                try:
                    outer._proxy(self, target, body)
                finally:
                    with outer._lock:
                        outer.busy[target] -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        _serve(self.httpd, "router")
        self.endpoints = self._view()
        threading.Thread(target=self._watch, daemon=True).start()

    def _view(self) -> list[str]:
        return sorted(ready_endpoints(self.core, workload_only=True))

    def _watch(self) -> None:
        while not self._stop.wait(self.refresh):
            with contextlib.suppress(Exception):
                view = self._view()
                now = time.monotonic()
                with self._lock:
                    for gone in set(self.endpoints) - set(view):
                        self.left_view.setdefault(gone, now)
                    self.endpoints = view

    def _take(self) -> str | None:
        """The least busy endpoint with a free slot, or None (refuse)."""
        with self._lock:
            free = [e for e in self.endpoints if self.busy.get(e, 0) < self.slots]
            if not free:
                return None
            pick = min(free, key=lambda e: self.busy.get(e, 0))
            self.busy[pick] = self.busy.get(pick, 0) + 1
            return pick

    @staticmethod
    def _proxy(h: BaseHTTPRequestHandler, target: str, body: bytes) -> None:
        u = urllib.parse.urlsplit(target)
        try:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
            conn.request("POST", "/v1/completions", body=body)
            resp = conn.getresponse()
        except OSError:
            h.send_response(502)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(resp.status)
        for k in ("Content-Type", "Retry-After"):
            if resp.getheader(k):
                h.send_header(k, resp.getheader(k) or "")
        h.send_header("Connection", "close")
        h.end_headers()
        try:
            while chunk := resp.read1(65536):
                h.wfile.write(chunk)
                h.wfile.flush()
        except (OSError, http.client.HTTPException):
            # upstream cut: pass it on as a cut (no clean end of the stream)
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
        h.close_connection = True

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def send(router_url: str, tokens: int, delay: float) -> Outcome:
    """One streamed request through the router, classified as a client sees it."""
    u = urllib.parse.urlsplit(router_url)
    start = time.monotonic()
    status, retry_after, text = 0, None, ""
    try:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=tokens * delay + 10)
        conn.request(
            "POST", "/v1/completions", body=json.dumps({"tokens": tokens, "token_delay": delay})
        )
        resp = conn.getresponse()
        status, retry_after = resp.status, resp.getheader("Retry-After")
        text = resp.read().decode()
        conn.close()
    except (OSError, http.client.HTTPException):
        return Outcome("cut", time.monotonic() - start, None, start)
    took = time.monotonic() - start
    if status == 503:
        return Outcome("refused", took, None, start, retry_after)
    if status == 200 and text.endswith("data: [DONE]\n\n"):
        return Outcome("ok", took, None, start)
    if status == 200 and '"error": "aborted' in text:
        return Outcome("aborted", took, None, start)
    return Outcome("cut", took, None, start)
