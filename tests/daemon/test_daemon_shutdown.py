"""Stopping the daemon stops its periodic jobs: once stop() or kill() returns, no scheduler
thread is left and no job acts (a spare pass that was running when the stop came launches no
more spares). Found as a "--- Logging error ---" from a spare job writing after its test.

Expected values by hand: one serving group and ``--spare-replicas 2`` make a pass ask for two
spares one after the other; the stop comes while the first is being asked, so one and only one
spare is asked for.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from daemon_harness import FAST, wait_until
from typer.testing import CliRunner

from provisioner.daemon.config import DaemonConfig
from provisioner.daemon.fakes.ec2 import FakeCapacity
from provisioner.daemon.fakes.kube import FakeKube
from provisioner.daemon.fakes.sqs import FakeSqs
from provisioner.daemon.scheduler import JOB_THREAD, SCHEDULER_THREAD
from provisioner.daemon.service import Daemon


def scheduler_threads() -> list[str]:
    return [
        t.name
        for t in threading.enumerate()
        if t.is_alive() and (t.name == SCHEDULER_THREAD or t.name.startswith(JOB_THREAD))
    ]


class GatedCapacity(FakeCapacity):
    """Holds every spare launch until ``gate`` opens, so a stop can land mid-pass."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.spares_asked: list[str] = []

    def launch(self, template: Any, count: int, new_replica: str, *a: Any, **kw: Any) -> Any:
        if kw.get("spare") or (len(a) > 3 and a[3]):
            self.spares_asked.append(new_replica)
            self.entered.set()
            assert self.gate.wait(10), "the test never opened the gate"
        return super().launch(template, count, new_replica, *a, **kw)


def spare_daemon() -> tuple[Daemon, GatedCapacity]:
    cap, sqs = GatedCapacity(), FakeSqs()
    cap.add("r1")  # one serving group: the pool the spares are for
    cfg = DaemonConfig(**{**FAST, "queue_url": sqs.queue_url, "spare_replicas": 2}).validate()
    d = Daemon(cfg, cap, FakeKube(), sqs=sqs).start()
    assert cap.entered.wait(5), "the spare job never ran"
    return d, cap


def stop_mid_pass(d: Daemon, cap: GatedCapacity, how: str) -> None:
    stopper = threading.Thread(target=getattr(d, how), daemon=True)
    stopper.start()
    wait_until(d.stopping.is_set, timeout=5, what="stop requested")
    cap.gate.set()  # the first spare's launch returns now, after the stop was asked
    stopper.join(10)
    assert not stopper.is_alive(), f"{how}() did not return"


def test_stop_waits_for_the_running_spare_pass_which_launches_no_more():
    d, cap = spare_daemon()
    stop_mid_pass(d, cap, "stop")
    assert scheduler_threads() == []
    assert len(cap.spares_asked) == 1, cap.spares_asked  # not the second of --spare-replicas 2
    passes = d.spares.passes if d.spares else -1
    threading.Event().wait(5 * FAST["spare_interval_seconds"])  # several intervals: no job
    assert (len(cap.spares_asked), d.spares.passes if d.spares else -1) == (1, passes)


def test_kill_leaves_no_job_running():
    d, cap = spare_daemon()
    stop_mid_pass(d, cap, "kill")
    assert scheduler_threads() == []
    assert len(cap.spares_asked) == 1, cap.spares_asked


def test_prov_daemon_in_process_leaves_logging_as_it_found_it(monkeypatch):
    """`prov daemon` run in-process (tests, an embedding program) logs to the stderr of the
    moment and takes its handler away after: none is left on a stream closed since."""

    def fake_build(cfg: Any, **kw: Any) -> Any:
        logging.getLogger("prov.daemon").warning("built")
        raise RuntimeError("stop here")

    monkeypatch.setattr("provisioner.daemon.service.build_daemon", fake_build)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # credentials are checked first
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    prov = logging.getLogger("prov")
    before = (prov.handlers[:], prov.level, prov.propagate)
    from provisioner.cli.main import app

    r = CliRunner().invoke(app, ["daemon", "--queue-url", "https://sqs.example/1/q"])
    assert r.exit_code == 1 and "cannot set up the daemon: RuntimeError" in r.stderr
    assert '"msg": "built"' in r.stderr  # the JSON line went to the command's stderr
    assert (prov.handlers[:], prov.level, prov.propagate) == before
