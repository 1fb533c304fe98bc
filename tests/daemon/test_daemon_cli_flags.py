"""`prov daemon`'s options are generated from DaemonConfig: every flag lands on its field with
the unit the help names, and the defaults the help shows are the config's production ones.

Expected values are derived by hand from the flag's meaning (15 minutes = 900 s, `-1` = no
metrics server...), not read back from the generator.
"""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from provisioner.cli.main import app
from provisioner.daemon.config import Alternative, DaemonConfig, cli_flags


class Built(Exception):
    """Raised by the stand-in build_daemon to stop the command once the config is built."""


@pytest.fixture
def built(monkeypatch):
    got: list[DaemonConfig] = []

    def fake_build(cfg, **kw):
        got.append(cfg)
        raise Built

    monkeypatch.setattr("provisioner.daemon.service.build_daemon", fake_build)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # credentials are checked first
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("PROV_QUEUE_URL", raising=False)
    monkeypatch.delenv("NODE_NAME", raising=False)
    monkeypatch.delenv("PROV_METRICS_PORT", raising=False)
    return got


def run(args):
    return CliRunner().invoke(app, ["daemon", *args])


def test_defaults_are_the_configs(built):
    r = run(["--queue-url", "https://sqs.us-east-1.amazonaws.com/1/q"])
    assert r.exit_code == 1 and "cannot set up the daemon: Built" in r.stderr
    (cfg,) = built
    assert cfg == DaemonConfig(queue_url="https://sqs.us-east-1.amazonaws.com/1/q")


def test_every_flag_sets_its_field(built):
    args = [
        "--mode", "imds", "--node-name", "n1", "--region", "eu-west-1",
        "--metadata-url", "http://127.0.0.1:1", "--dry-run", "--on-demand-floor", "2",
        "--alternative", "p5.48xlarge@us-east-1b,p4d.24xlarge", "--alternative", "p5e.48xlarge",
        "--block-minutes", "2.5", "--rebalance-drain", "--prewarm-on-rebalance",
        "--time-to-serve", "405", "--cordon-only",
        "--drain-at-once", "--shutdown-timeout", "45", "--maintenance-lead", "300",
        "--workload-selector", "app=x", "--poll-interval", "0.5", "--sqs-wait", "5",
        "--step-interval", "0.25", "--workers", "3", "--metrics-port", "-1",
        "--metrics-host", "127.0.0.1", "--leader-elect", "--lease-namespace", "prov-system",
        "--max-events", "7", "--once",
    ]  # fmt: skip
    r = run(args)
    assert r.exit_code == 1, r.output
    (cfg,) = built
    expected = DaemonConfig(
        mode="imds",
        node_name="n1",
        region="eu-west-1",
        metadata_url="http://127.0.0.1:1",
        dry_run=True,
        on_demand_floor=2,
        alternatives=(
            Alternative("p5.48xlarge", "us-east-1b"),
            Alternative("p4d.24xlarge"),
            Alternative("p5e.48xlarge"),
        ),
        block_seconds=150.0,  # 2.5 minutes
        rebalance_drain=True,
        prewarm_on_rebalance=True,
        time_to_serve_seconds=405.0,
        cordon_only=True,
        hold_for_replacement=False,  # --drain-at-once
        shutdown_timeout_seconds=45.0,
        maintenance_lead_seconds=300.0,
        workload_selector="app=x",
        poll_interval_seconds=0.5,
        sqs_wait_seconds=5,
        step_interval_seconds=0.25,
        workers=3,
        metrics_port=None,  # -1 = off
        metrics_host="127.0.0.1",
        leader_elect=True,
        lease_namespace="prov-system",
        max_events=7,
        once=True,
    )
    assert cfg == expected
    # The test covers every generated flag (a new field with a flag must be added here).
    set_here = {a for a in args if a.startswith("--")}
    not_in_imds_mode = {"--queue-url", "--spare-replicas"}  # covered by the tests below
    assert {fl.name for _, fl, _ in cli_flags()} == set_here | not_in_imds_mode


def test_env_vars_reach_the_config(built, monkeypatch):
    monkeypatch.setenv("PROV_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/1/q")
    monkeypatch.setenv("PROV_METRICS_PORT", "9100")
    assert run(["--spare-replicas", "2"]).exit_code == 1
    (cfg,) = built
    assert (cfg.queue_url, cfg.metrics_port, cfg.spare_replicas) == (
        "https://sqs.us-east-1.amazonaws.com/1/q",
        9100,
        2,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--block-minutes", "-1"], "--block-minutes -1.0: must be 0 or more"),
        (["--maintenance-lead", "-5"], "--maintenance-lead -5.0: must be 0 or more"),
        (["--metrics-port", "-2"], "--metrics-port -2: 0 (any), -1 (off) or a port"),
        (["--metrics-port", "70000"], "--metrics-port 70000: must be 0..65535"),
        (["--poll-interval", "0"], "--poll-interval 0.0: must be positive"),
        (["--workload-selector", "novalue"], "--workload-selector 'novalue': expected KEY=VALUE"),
        (["--time-to-serve", "0"], "--time-to-serve 0.0: must be positive"),
    ],
)
def test_refused_values_name_their_flag(built, args, message):
    r = run(["--queue-url", "https://sqs.us-east-1.amazonaws.com/1/q", *args])
    assert r.exit_code == 2 and built == []
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("prov: error: ") and message in line


def test_help_shows_each_flag_with_the_configs_default():
    r = CliRunner().invoke(app, ["daemon", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    text = r.output
    for name, fl, _ in cli_flags():
        assert fl.name in text, name
        if fl.help:
            assert " ".join(fl.help.split()[:4]) in text, name
    # Defaults in the flag's own unit: 900 s of blocking is shown as 15 minutes.
    # one entry per option: its "  --name" line and the indented lines under it, joined
    lines: dict[str, str] = {}
    for ln in text.splitlines():
        if ln.startswith("  --"):
            name = ln.split()[0]
            lines[name] = ln
        elif lines and ln.startswith("      "):
            lines[name] += " " + ln.strip()
    assert "[default: 15.0]" in lines["--block-minutes"]
    assert "[env var: PROV_METRICS_PORT; default: 9092]" in lines["--metrics-port"]
    assert "[default: 600.0]" in lines["--maintenance-lead"]
    assert "[default: prov.dev/workload=vllm]" in lines["--workload-selector"]


def test_config_fields_without_a_flag_are_not_options():
    flagged = {name for name, _, _ in cli_flags()}
    hidden = {f.name for f in dataclasses.fields(DaemonConfig)} - flagged
    # Test and embedder knobs: never on the command line.
    assert {"step_interval_seconds", "sqs_wait_seconds"} <= flagged
    assert {"launch_max_attempts", "lease_seconds", "dispatch_interval_seconds"} <= hidden
    r = run(["--launch-max-attempts", "3"])
    assert r.exit_code == 2 and "No such option" in r.output
