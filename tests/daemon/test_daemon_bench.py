"""benchmarks/bench_daemon.py runs and prints its table (tiny sizes). Its figures are speed
targets, checked by the benchmark itself (--check), not by the test suite."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_daemon.py"


def test_bench_daemon_runs_with_a_tiny_n_and_prints_its_table(capsys, moto_url):
    # the session's moto server, already warm (a fresh one spends seconds on its first calls)
    spec = importlib.util.spec_from_file_location("bench_daemon", BENCH)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--notices", "2", "--burst", "8", "--moto-url", moto_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("prov daemon: 2 spot notices one at a time; a burst of 8 notices")
    rows = {line[:44].strip(): line[44:].split() for line in out[2:6]}
    assert set(rows) == {
        "notice -> replacement requested",
        "notice -> replica cordoned",
        "EventBridge put -> notice received (SQS)",
        "burst: notice -> cordoned (2 replicas)",
    }
    rep = rows["notice -> replacement requested"]
    p50, p99, worst = (float(x) for x in rep[:3])
    assert 0 < p50 <= p99 <= worst and rep[3:5] == ["<=", "2"]
    assert rows["notice -> replica cordoned"][3:5] == ["<=", "1"]
    assert re.fullmatch(
        r"burst: 8 notices \(8 messages\) drained in [\d.]+ s \(\d+ messages/s\)", out[6]
    )
