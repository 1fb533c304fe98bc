"""`prov daemon` from the command line: a dry run against moto SQS + kmock as a subprocess, bad
input as exit 2 with one line, and the lazy imports that keep `prov quote` light."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from daemon_harness import REGION, node_json
from typer.testing import CliRunner

from provisioner.cli.main import app


def test_dry_run_once_against_local_sqs_logs_its_decisions(aws, agent, core, k8s, moto_url):
    (inst,) = aws.launch_replica("r1")
    agent.settle()
    aws.spot_warning(inst["InstanceId"], seconds_left=100)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    cmd = [
        sys.executable,
        "-m",
        "provisioner.cli.main",
        "daemon",
        "--mode",
        "queue",
        "--queue-url",
        aws.queue_url,
        "--kube-api",
        k8s.url,
        "--dry-run",
        "--once",
        "--sqs-wait",
        "2",
        "--metrics-port",
        "-1",
        "--step-interval",
        "0.05",
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == "prov daemon: handled 1 event(s)"
    logs = [json.loads(line) for line in p.stderr.splitlines() if line.startswith("{")]
    msgs = [r["msg"] for r in logs]
    assert all(r["level"] in ("info", "warning") for r in logs), logs
    would = [m for m in msgs if m.startswith("dry-run: would ")]
    assert would[0].startswith("dry-run: would request replacement r-")
    assert "p5.48xlarge@us-east-1b/spot" in would[0]
    assert any(f"cordon {inst['PrivateDnsName']}" in m for m in would)
    assert any(
        m.startswith("dry-run: would evict 1 pod(s)") and "serving/vllm-r1-0" in m for m in would
    )
    handled = next(r for r in logs if r["msg"] == "notice handled")
    assert (handled["kind"], handled["action"]) == ("spot-interruption", "dry-run")
    # Nothing changed: no instance launched, node schedulable, pod untouched, message kept.
    assert aws.replacements_of("r1") == []
    assert not node_json(core, inst["PrivateDnsName"])["spec"].get("unschedulable")
    assert k8s.eviction_log == []
    assert aws.messages_left() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "banana"], "--mode 'banana': allowed: queue, imds"),
        (["--mode", "queue"], "--mode queue needs --queue-url"),
        (["--mode", "imds"], "--mode imds needs --node-name"),
        (["--queue-url", "q", "--alternative", "p5"], "--alternative 'p5': expected INSTANCE_TYPE"),
        (["--queue-url", "q", "--sqs-wait", "30"], "--sqs-wait 30: SQS allows 0..20 seconds"),
        (
            ["--queue-url", "q", "--on-demand-floor", "-1"],
            "--on-demand-floor -1: must be 0 or more",
        ),
        (["--queue-url", "q", "--metadata-url", "ftp://x"], "must be an http(s) URL"),
        (["--queue-url", "q", "--log-format", "xml"], "--log-format 'xml': allowed: json, text"),
        (["--queue-url", "q", "--spare-replicas", "-1"], "--spare-replicas -1: must be 0..10"),
        (["--queue-url", "q", "--spare-replicas", "11"], "--spare-replicas 11: must be 0..10"),
        (
            ["--mode", "imds", "--node-name", "n1", "--spare-replicas", "1"],
            "--spare-replicas needs --mode queue",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, monkeypatch):
    monkeypatch.delenv("PROV_QUEUE_URL", raising=False)
    monkeypatch.delenv("NODE_NAME", raising=False)
    r = CliRunner().invoke(app, ["daemon", *args])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prov: error: ") and message in lines[0]
    assert "Traceback" not in r.output


def test_cli_module_imports_no_sdk():
    code = (
        "import sys, provisioner.cli.main as c; c.app\n"
        "print(sorted(m for m in ('boto3', 'botocore', 'kubernetes', 'apscheduler',"
        " 'prometheus_client', 'provisioner.daemon.service') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_no_region_is_bad_input_naming_the_flag(monkeypatch, tmp_path):
    """Without --region, AWS_REGION or a profile region botocore raises NoRegionError: that is
    the user's input (exit 2 naming the flag), not an outage (exit 1) named by a class."""
    for var in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "NODE_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))  # no profile region either
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # no credentials is its own error
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\nusers: [{name: u, user: {}}]\n"
    )
    args = ["daemon", "--mode", "imds", "--node-name", "n1", "--once", "--dry-run"]
    args += ["--metadata-url", "http://127.0.0.1:9", "--kubeconfig", str(kubeconfig)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pass --region or set AWS_REGION" in lines[0]
