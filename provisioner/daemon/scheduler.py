"""APScheduler wiring: every periodic job of the daemon is registered here, in one place.

Interval jobs run with jitter, ``max_instances=1`` (a slow SQS long poll is never run twice at
once) and ``coalesce`` (missed runs collapse into one). Event handling does not run on the
scheduler: it runs on the daemon's bounded worker pool (``DaemonConfig.workers`` threads, and
the store hands out no more events than there are free workers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from provisioner.daemon.config import DaemonConfig

log = logging.getLogger("prov.daemon.scheduler")

JOB_THREAD = "prov-job"  # the jobs' threads are prov-job_0, prov-job_1...
SCHEDULER_THREAD = "APScheduler"  # the name apscheduler gives its BackgroundScheduler thread


class _Ticks(Protocol):
    def tick(self) -> object: ...


class _Reconciles(Protocol):
    def reconcile(self) -> object: ...


class _Flushes(Protocol):
    def flush(self) -> None: ...


class JobHost(Protocol):
    """What the jobs run on (the daemon; named here so this module needs not import it)."""

    @property
    def cfg(self) -> DaemonConfig: ...
    @property
    def queue_poll_seconds(self) -> float: ...
    @property
    def monitor(self) -> _Flushes: ...
    @property
    def elector(self) -> _Ticks | None: ...
    @property
    def spares(self) -> _Reconciles | None: ...

    def poll_once(self) -> int: ...

    def dispatch(self) -> None: ...

    def housekeeping(self) -> None: ...


@dataclass(frozen=True)
class Job:
    name: str
    fn: Callable[[], object]
    seconds: float
    jitter: float = 0.0


def daemon_jobs(d: JobHost) -> list[Job]:
    """The daemon's periodic jobs."""
    cfg = d.cfg
    poll_every = cfg.poll_interval_seconds if cfg.mode == "imds" else d.queue_poll_seconds
    jobs = [
        Job("monitor-poll", d.poll_once, poll_every, min(cfg.jitter_seconds, poll_every / 2)),
        Job("dispatch", d.dispatch, cfg.dispatch_interval_seconds),
        Job("ack-flush", d.monitor.flush, cfg.ack_flush_seconds),
        Job(
            "housekeeping",
            d.housekeeping,
            cfg.housekeeping_interval_seconds,
            min(cfg.jitter_seconds, cfg.housekeeping_interval_seconds / 2),
        ),
    ]
    if d.elector is not None:
        jobs.append(Job("leader-lease", d.elector.tick, max(0.05, cfg.lease_seconds / 3)))
    if d.spares is not None:  # --spare-replicas N > 0 (queue mode; the leader's pass does it)
        every = cfg.spare_interval_seconds
        jobs.append(
            Job("spare-reconcile", d.spares.reconcile, every, min(cfg.jitter_seconds, every / 2))
        )
    return jobs


def run_now(sched: Any, job_id: str) -> None:
    """Run a registered job as soon as possible (its next interval run is moved up)."""
    sched.modify_job(job_id, next_run_time=datetime.now(UTC))


def build_scheduler(jobs: list[Job]) -> Any:
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    # A job skipped because its previous run is still going is normal here (SQS long polls).
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)
    sched = BackgroundScheduler(
        executors={  # named, so a test can tell that none outlived its daemon
            "default": ThreadPoolExecutor(
                max_workers=len(jobs) + 1, pool_kwargs={"thread_name_prefix": JOB_THREAD}
            )
        },
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone=UTC,
    )
    first = datetime.now(UTC)
    for j in jobs:
        sched.add_job(
            j.fn,
            "interval",
            seconds=j.seconds,
            jitter=j.jitter or None,
            id=j.name,
            name=j.name,
            next_run_time=first,
        )
    return sched
