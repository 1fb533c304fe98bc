"""How fast `prov daemon` reacts to a notice, and how fast it drains a storm of them.

    python benchmarks/bench_daemon.py                 # a table
    python benchmarks/bench_daemon.py --json          # the same figures as JSON
    python benchmarks/bench_daemon.py --check         # exit 1 when a p99 misses its target
    python benchmarks/bench_daemon.py --notices 50 --burst 1000

It runs the real daemon (SQS monitor, store, worker pool, handler, boto3 and kubernetes clients)
against the test stand of tests/daemon/daemon_harness.py, imported by path: a moto server (EC2,
SQS, EventBridge routed to SQS) and kmock (the Kubernetes API), all on 127.0.0.1 and all in this
one Python process.

(a) latency: ``--notices`` one-node spot replicas get a spot interruption warning each, one at a
    time (the next is put once the previous replica is cordoned), through EventBridge -> SQS.
    The handler's own clock gives notice received -> replacement requested (RunInstances
    answered) and notice received -> every node of the replica tainted and cordoned; the
    targets are <= 2 s and <= 1 s. ``--cordon-only`` keeps the drain out of it (the drain waits
    for the replacement, which nothing boots here); the two steps measured come first in the
    full flow and are the same code. EventBridge put -> received is shown too (SQS delivery,
    bounded here by the monitor's 0.05 s re-poll; no target).
(b) burst: the storm of tests/daemon/test_daemon_burst.py - per replica a rebalance
    recommendation and three state changes, shuffled, plus 10% redeliveries - fed a little ahead
    of the daemon (moto's SQS receive slows with queue depth); timed from the first send to the
    last acknowledgement. Notice -> cordoned under that load is shown beside it (one sample
    per replica: the first of its notices cordons it, the others find it done).

p50/p99 are nearest-rank (with 50 samples the p99 is the slowest). A benchmark, not a test: the
figures depend on the machine (moto and kmock share the daemon's process and cores).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "daemon" / "daemon_harness.py"

CORDON_TARGET_S = 1.0  # notice received -> replica cordoned
REPLACEMENT_TARGET_S = 2.0  # notice received -> replacement requested


def load_harness() -> ModuleType:
    """tests/daemon/daemon_harness.py, imported by path (tests/ is not a package)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("prov_daemon_harness", HARNESS)
    if spec is None or spec.loader is None:
        raise SystemExit(f"bench_daemon: cannot import {HARNESS}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve their module by name
    spec.loader.exec_module(mod)
    return mod


def pct(samples: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    xs = sorted(samples)
    return xs[max(0, math.ceil(q / 100 * len(xs)) - 1)]


def stats(samples: list[float]) -> dict[str, float]:
    return {
        "p50": pct(samples, 50),
        "p99": pct(samples, 99),
        "max": max(samples),
        "n": len(samples),
    }


def bench_latency(h: ModuleType, url: str, session: Any, notices: int) -> dict[str, Any]:
    aws = h.aws_stand(url, session)
    k8s = h.KmockThread()
    d = None
    try:
        insts = aws.launch_replica(None, size=notices)  # one-node replicas, one call
        k8s.put_nodes(insts)
        d = h.build_test_daemon(aws, k8s.url, url, session, cordon_only=True, workers=8)
        d.start()
        put_at: dict[str, datetime] = {}
        for k, inst in enumerate(insts):
            put_at[inst["InstanceId"]] = datetime.now(UTC)
            aws.spot_warning(inst["InstanceId"], seconds_left=100)
            h.wait_until(
                lambda k=k: len(d.handler.timings.cordon) > k, timeout=30, what=f"notice {k}"
            )
        h.wait_until(lambda: len(d.outcomes) >= notices, timeout=30, what="all handled")
        t = d.handler.timings
        delivery = [
            (ev.received_at - put_at[ev.instance_id]).total_seconds() for ev, _ in d.outcomes
        ]
        actions = sorted({o.action for _, o in d.outcomes})
        if actions != ["cordoned+replacement"]:
            raise SystemExit(f"bench_daemon: unexpected outcomes {actions}")
        return {
            "replacement": stats(t.replacement),
            "cordon": stats(t.cordon),
            "delivery": stats(delivery),
        }
    finally:
        if d is not None:
            d.stop(timeout=10)
        k8s.stop()


def bench_burst(h: ModuleType, url: str, session: Any, burst: int) -> dict[str, Any]:
    aws = h.aws_stand(url, session)
    k8s = h.KmockThread()
    d = None
    replicas = max(1, burst // len(h.BURST_KINDS))
    redelivered = replicas * len(h.BURST_KINDS) // 10
    try:
        insts = aws.launch_replica(None, size=replicas)
        k8s.put_nodes(insts)
        notices, stream = h.burst_stream([i["InstanceId"] for i in insts], redelivered)
        d = h.build_test_daemon(aws, k8s.url, url, session, workers=16, max_pending=400)
        d.start()
        t0 = time.monotonic()
        h.feed(aws, d, stream)
        acked = d.m.actions.labels("ack", "ok")
        h.wait_until(
            lambda: acked._value.get() >= len(stream), timeout=300, what="every message acked"
        )
        elapsed = time.monotonic() - t0
        handled = {ev.id for ev, _ in d.outcomes}
        if len(handled) != len(notices) or len(d.outcomes) != len(notices):
            raise SystemExit(f"bench_daemon: {len(d.outcomes)} outcomes for {len(notices)} notices")
        return {
            "notices": len(notices),
            "messages": len(stream),
            "seconds": elapsed,
            "messages_per_second": len(stream) / elapsed,
            "cordon": stats(d.handler.timings.cordon),
        }
    finally:
        if d is not None:
            d.stop(timeout=10)
        k8s.stop()


def run(notices: int, burst: int, moto_url: str | None = None) -> dict[str, Any]:
    import contextlib
    import logging

    logging.getLogger("prov").setLevel(logging.ERROR)  # the daemon logs every step at info
    h = load_harness()
    session = h.new_boto_session()
    with contextlib.ExitStack() as stack:
        url = moto_url or stack.enter_context(h.moto_server())
        latency = bench_latency(h, url, session, notices)
        storm = bench_burst(h, url, session, burst)
    return {
        "latency": latency,
        "burst": storm,
        "targets": {"cordon_s": CORDON_TARGET_S, "replacement_s": REPLACEMENT_TARGET_S},
        "ok": {
            "cordon": latency["cordon"]["p99"] <= CORDON_TARGET_S,
            "replacement": latency["replacement"]["p99"] <= REPLACEMENT_TARGET_S,
        },
    }


def table(r: dict[str, Any]) -> str:
    lat, storm = r["latency"], r["burst"]
    n = lat["cordon"]["n"]

    def row(name: str, s: dict[str, float], target: str, ok: str) -> str:
        return f"{name:<44} {s['p50']:>7.3f} {s['p99']:>7.3f} {s['max']:>7.3f}  {target:<8} {ok}"

    def yes(flag: bool) -> str:
        return "yes" if flag else "NO"

    lines = [
        f"prov daemon: {n} spot notices one at a time; a burst of {storm['notices']} notices "
        "(moto + kmock on 127.0.0.1, one process)",
        f"{'seconds':<44} {'p50':>7} {'p99':>7} {'max':>7}  {'target':<8} met",
        row(
            "notice -> replacement requested",
            lat["replacement"],
            f"<= {REPLACEMENT_TARGET_S:g} s",
            yes(r["ok"]["replacement"]),
        ),
        row(
            "notice -> replica cordoned",
            lat["cordon"],
            f"<= {CORDON_TARGET_S:g} s",
            yes(r["ok"]["cordon"]),
        ),
        row("EventBridge put -> notice received (SQS)", lat["delivery"], "-", "-"),
        row(
            f"burst: notice -> cordoned ({storm['cordon']['n']} replicas)",
            storm["cordon"],
            "-",
            "-",
        ),
        f"burst: {storm['notices']} notices ({storm['messages']} messages) drained in "
        f"{storm['seconds']:.1f} s ({storm['messages_per_second']:.0f} messages/s)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--notices", type=int, default=50, help="spot notices timed one by one")
    ap.add_argument("--burst", type=int, default=1000, help="notices in the burst")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--check", action="store_true", help="exit 1 when a p99 misses its target")
    ap.add_argument(
        "--moto-url",
        help="a moto server already running on 127.0.0.1 (it is reset); default: start one",
    )
    a = ap.parse_args(argv)
    if a.notices < 1 or a.burst < 4:  # the burst is 4 notices per replica
        ap.error("--notices must be >= 1 and --burst >= 4")
    r = run(a.notices, a.burst, a.moto_url)
    print(json.dumps(r, indent=2) if a.json else table(r))
    return 1 if a.check and not all(r["ok"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
