"""The daemon process: monitor -> store -> bounded worker pool -> handler -> acknowledge.

``Daemon`` takes its adapters (Capacity, Kube, an SQS queue, instance metadata) ready-made,
each behind its Protocol: tests hand it boto3 clients pointed at a moto server and a kubernetes
client pointed at kmock, or the in-memory fakes of ``provisioner.daemon.fakes``;
``build_daemon`` makes the real ones from the environment.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from provisioner.daemon.capacity import Blocklist, Capacity
from provisioner.daemon.config import DaemonConfig
from provisioner.daemon.events import EventKind, InterruptionEvent
from provisioner.daemon.handling.handler import Handler
from provisioner.daemon.handling.state import Aborted, Outcome
from provisioner.daemon.kube import Kube
from provisioner.daemon.leader import LeaseElector
from provisioner.daemon.metrics import Metrics, MetricsServer
from provisioner.daemon.monitors import Monitor
from provisioner.daemon.monitors.imds import ImdsMonitor, Metadata
from provisioner.daemon.monitors.sqs import SqsMonitor, SqsQueue
from provisioner.daemon.preflight import error_line
from provisioner.daemon.scheduler import build_scheduler, daemon_jobs, run_now
from provisioner.daemon.spares import Spares
from provisioner.daemon.store import Ack, AddResult, Entry, EventStore

log = logging.getLogger("prov.daemon")


class Daemon:
    def __init__(
        self,
        cfg: DaemonConfig,
        capacity: Capacity,
        kube: Kube,
        sqs: SqsQueue | None = None,
        metrics: Metrics | None = None,
        metadata: Metadata | None = None,
        region: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.region = region or cfg.region  # for the start-up line
        self.m = metrics or Metrics()
        self.stopping = threading.Event()  # SIGTERM: take no new events, finish the others
        self.halt = threading.Event()  # killed: abandon everything, acknowledge nothing
        self.finished = threading.Event()  # --max-events reached / --once done
        self.store = EventStore(cfg)
        self.blocks = Blocklist()
        self.capacity = capacity
        self.kube = kube
        self.spares: Spares | None = None
        if cfg.spare_replicas > 0:
            self.spares = Spares(cfg, capacity, kube, self.m, self.blocks, is_leader=self._leading)
        self.handler = Handler(
            cfg, capacity, kube, self.m, self.blocks, halt=self.halt, spares=self.spares
        )
        self.queue_poll_seconds = min(0.2, cfg.poll_interval_seconds)
        self.monitor: Monitor
        if cfg.mode == "queue":
            assert sqs is not None, "queue mode needs an SQS queue"
            self.monitor = SqsMonitor(
                cfg, sqs, self.submit, self.m, self.stopping, prefetch=capacity.prefetch
            )
        else:
            self.monitor = ImdsMonitor(cfg, self.submit, self.m, metadata)
        self.elector: LeaseElector | None = None
        if cfg.leader_elect:
            ident = cfg.identity or f"{socket.gethostname()}-{os.getpid()}"
            self.elector = LeaseElector(kube, cfg, ident, self.m)
        self.pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="prov-worker")
        self._active = 0
        self._lock = threading.Lock()
        self.outcomes: deque[tuple[InterruptionEvent, Outcome]] = deque(maxlen=10_000)
        self.last_poll = time.monotonic()
        self.polls = 0
        self.scheduler: Any = None
        self.server: MetricsServer | None = None
        self.handed_over = 0  # notices still in progress at stop(), left for the next daemon

    def _leading(self) -> bool:
        """Fleet-wide work (spares) is done by the leader only, and not while stopping."""
        if self.stopping.is_set():
            return False
        return self.elector is None or self.elector.is_leader

    # -- pipeline -------------------------------------------------------------------------

    def submit(self, ev: InterruptionEvent, ack: Ack | None) -> AddResult:
        """The monitors' sink: store the event (deduped) and hand due events to workers."""
        if ev.kind is EventKind.SCHEDULED_CANCELLED:
            key = ev.key.replace(
                str(EventKind.SCHEDULED_CANCELLED), str(EventKind.SCHEDULED_CHANGE)
            )
            cancelled = self.store.cancel(key)
            if cancelled is not None:
                log.info("scheduled change cancelled before its drain", extra={"event": ev.id})
                for a in cancelled.acks:
                    self._ack(a)
        result = self.store.add(ev, ack)
        if result is AddResult.NEW:
            self.m.events.labels(str(ev.kind), ev.source).inc()
            log.info(
                "notice received",
                extra={"event": ev.id, "kind": str(ev.kind), "instance": ev.instance_id},
            )
        elif ev.source == "sqs":
            self.m.duplicates.labels(ev.source).inc()
            log.info("duplicate notice", extra={"event": ev.id, "result": str(result)})
            if result is AddResult.DONE and ack is not None:
                self._ack(ack)
        self.dispatch()
        return result

    def _ack(self, ack: Ack) -> None:
        try:
            ack.ack()
            self.m.actions.labels("ack", "ok").inc()
        except Exception as e:
            self.m.errors.labels("ack").inc()
            log.warning("acknowledge failed", extra={"error": f"{type(e).__name__}: {e}"})

    def dispatch(self) -> None:
        if self.halt.is_set():
            return
        with self._lock:
            entries = self.store.due(self.cfg.workers - self._active)
            self._active += len(entries)
            active = self._active
        for e in entries:
            try:
                self.pool.submit(self._work, e)
            except RuntimeError:  # pool shut down (killed)
                return
        self.m.in_flight.set(active)

    def _work(self, entry: Entry) -> None:
        try:
            try:
                out = self.handler.handle(entry)
            except Aborted:
                log.warning("abandoned mid-way (daemon killed)", extra={"event": entry.event.id})
                return
            acks = self.store.finish(entry, out.status, out.not_before, out.stage)
            for a in acks:
                self._ack(a)
            if out.status != "deferred":
                self.outcomes.append((entry.event, out))
            if self.cfg.max_events and self.store.handled >= self.cfg.max_events:
                self.finished.set()
        finally:
            with self._lock:
                self._active -= 1
            if not self.halt.is_set():
                self.dispatch()

    def poll_once(self) -> int:
        if self.stopping.is_set() or self.finished.is_set():
            return 0
        if self.elector is not None and not self.elector.is_leader:
            self.last_poll = time.monotonic()
            return 0
        if not self.store.has_room():
            log.info("store full; not taking more notices this round")
            return 0
        n = self.monitor.poll()
        self.polls += 1
        if self.monitor.last_error is None:  # a poll that failed is no sign of life
            self.last_poll = time.monotonic()
        return n

    def housekeeping(self) -> None:
        self.store.forget_done()
        if self.cfg.mode == "queue":
            for a in self.store.open_acks():  # long drains outlive the visibility timeout
                try:
                    a.keepalive()
                except Exception as e:
                    log.debug("keepalive failed", extra={"error": str(e)})
        c = self.store.counts()
        self.m.pending.set(c["pending"])
        self.m.blocked_pools.set(len(self.blocks.active()))

    def health(self) -> str | None:
        if self.scheduler is None or not self.scheduler.running:
            return "scheduler not running"
        since = time.monotonic() - self.last_poll
        if since > self.stall_seconds():
            error = self.monitor.last_error
            why = f": {error_line(error)}" if error is not None else ""
            return f"no successful monitor poll for {since:.0f}s{why}"
        return None

    def stall_seconds(self) -> float:
        """/healthz fails once no poll has read the monitor's source for this long: three
        long polls (or IMDS intervals) plus 10 s (docs/daemon.md, Observability)."""
        return 3 * (self.cfg.sqs_wait_seconds + self.cfg.poll_interval_seconds) + 10

    def idle(self) -> bool:
        """Nothing in flight and nothing due now (deferred entries do not count)."""
        with self._lock:
            return self._active == 0 and not self.store.due_count()

    # -- lifetime -------------------------------------------------------------------------

    def start(self) -> Daemon:
        if self.cfg.metrics_port is not None:
            self.server = MetricsServer(
                self.m, self.health, self.cfg.metrics_host, self.cfg.metrics_port
            ).start()
            log.info("serving /metrics and /healthz", extra={"port": self.server.port})
        if self.elector is not None:
            self.elector.tick()
        if not self.cfg.once:
            self.scheduler = build_scheduler(daemon_jobs(self))
            self.scheduler.start()
            if self.spares is not None:
                sched = self.scheduler
                self.spares.wake = lambda: run_now(sched, "spare-reconcile")
        source = (
            {"queue": self.cfg.queue_url}
            if self.cfg.mode == "queue"
            else {"metadata_url": self.cfg.metadata_url, "node": self.cfg.node_name}
        )
        log.info(
            "daemon started",
            extra={
                "mode": self.cfg.mode,
                **source,
                "region": self.region,
                "dry_run": self.cfg.dry_run,
                "once": self.cfg.once,
                "leader_elect": self.cfg.leader_elect,
                "workers": self.cfg.workers,
            },
        )
        return self

    def run_once(self, timeout: float | None = None) -> None:
        """--once: one monitor poll, then handle what it produced (deferred work is left)."""
        self.poll_once()
        self.dispatch()
        end = None if timeout is None else time.monotonic() + timeout
        while not self.idle() and (end is None or time.monotonic() < end):
            time.sleep(0.02)
        self.monitor.flush()
        if self.spares is not None:  # one reconcile pass too (no scheduler runs it here)
            self.spares.reconcile()

    def stop(self, timeout: float | None = None) -> None:
        """Graceful: stop polling, let the steps running now finish (bounded), hand the flows
        still open over (their messages visible again at once: the next leader resumes them
        from the node annotations), release the lease."""
        self.stopping.set()
        limit = self.cfg.stop_timeout_seconds if timeout is None else timeout
        end = time.monotonic() + limit
        self._stop_scheduler(limit)
        waiter = threading.Thread(target=self.pool.shutdown, kwargs={"wait": True}, daemon=True)
        waiter.start()
        waiter.join(max(0.0, end - time.monotonic()))
        if waiter.is_alive():
            log.warning("in-flight events did not finish in time; abandoning them")
            self.halt.set()
            waiter.join(5)
        self.monitor.flush()  # delete what was acknowledged
        opened = self.store.open_acks()
        c = self.store.counts()
        self.handed_over = c["pending"] + c["active"]
        if not self.halt.is_set() and not self.cfg.dry_run:
            for a in opened:
                try:
                    a.release()
                except Exception as e:  # it becomes visible by itself after its timeout
                    log.debug("release failed", extra={"error": str(e)})
        if self.elector is not None:
            self.elector.release()
        if self.server is not None:
            self.server.stop()
        # "handled" counts notices finished; those still in progress (a replacement launched,
        # a drain started) are handed over: the next daemon resumes them from the nodes
        log.info(
            "daemon stopped", extra={"handled": self.store.handled, "handed_over": self.handed_over}
        )

    def _stop_scheduler(self, limit: float) -> None:
        """No periodic job starts any more; wait (at most ``limit`` s) for those running now,
        so none of them acts after stop() returns (a spare pass stops at ``stopping``)."""
        sched = self.scheduler
        if sched is None or not sched.running:
            return

        def shutdown() -> None:
            try:
                sched.shutdown(wait=True)
            except Exception as e:  # already stopped by a concurrent stop()/kill()
                log.debug("scheduler shutdown", extra={"error": str(e)})

        waiter = threading.Thread(target=shutdown, name="prov-scheduler-stop", daemon=True)
        waiter.start()
        waiter.join(limit)
        if waiter.is_alive():
            log.warning("a periodic job did not finish in time; leaving it behind")

    def kill(self) -> None:
        """Die mid-way (tests: a crash or SIGKILL): nothing more is done or acknowledged."""
        self.halt.set()
        self.stopping.set()
        self._stop_scheduler(5.0)  # its running jobs see ``stopping`` and end
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.server is not None:
            self.server.stop()

    def run(self) -> int:
        """Run until SIGTERM/SIGINT, --max-events or --once; returns events handled."""
        got_signal = threading.Event()

        def on_signal(signum: int, frame: object) -> None:
            log.info("signal received; finishing in-flight events", extra={"signal": signum})
            got_signal.set()

        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, on_signal)
        self.start()
        try:
            if self.cfg.once:
                self.run_once()
            else:
                while not got_signal.is_set() and not self.finished.is_set():
                    got_signal.wait(0.1)
        finally:
            self.stop()
            for sig, old in previous.items():
                signal.signal(sig, old)
        return self.store.handled


def build_daemon(
    cfg: DaemonConfig,
    api_url: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    session: Any = None,
    endpoints: dict[str, str] | None = None,
) -> Daemon:
    """The real thing: boto3 clients from the environment (or ``session``; ``endpoints`` maps a
    service to a URL, e.g. a VPC endpoint), a kubernetes client from the URL, kubeconfig or the
    in-cluster service account."""
    import boto3
    from botocore.config import Config

    from provisioner.daemon.ec2 import Ec2Capacity
    from provisioner.daemon.kube import KubeClient, make_api_client

    session = session or boto3.session.Session(region_name=cfg.region)
    if session.region_name is None and cfg.mode == "imds":  # on the node: ask its metadata
        from provisioner.daemon.monitors.imds import ImdsError, ImdsMonitor

        try:
            region = ImdsMonitor(cfg, lambda ev, ack: None, Metrics()).get("placement/region")
        except ImdsError:
            region = None
        if region:
            session = boto3.session.Session(region_name=region.strip())
    sqs = None
    if cfg.mode == "queue":
        sqs = session.client(
            "sqs",
            endpoint_url=(endpoints or {}).get("sqs"),
            config=Config(
                retries={"mode": "standard", "total_max_attempts": 5},
                read_timeout=cfg.sqs_wait_seconds + 10,
            ),
        )
    kube = KubeClient(make_api_client(cfg, api_url, kubeconfig, context), cfg)
    cap = Ec2Capacity(cfg, session=session, endpoints=endpoints)
    return Daemon(cfg, cap, kube, sqs=sqs, region=session.region_name)
