"""docker/daemon.Dockerfile, checked for structure: there is no Docker engine on the build
machine or in CI, so the image is not built here. What is checked instead: a pinned base image,
a non-root USER (the manifests' uid) set after the install, `prov daemon` as the entrypoint, an
extra that pyproject.toml defines and that carries the daemon's dependencies, COPY sources that
exist, and a HEALTHCHECK whose exact command is run against a real /healthz server.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from provisioner.cli.main import app
from provisioner.daemon.metrics import Metrics, MetricsServer
from stacks import daemon as manifests

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "daemon.Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "dangling line continuation"
    return out


def only(ins: list[tuple[str, str]], word: str) -> list[str]:
    return [rest for w, rest in ins if w == word]


def test_base_image_is_pinned_and_the_user_is_not_root():
    ins = instructions()
    [base] = only(ins, "FROM")  # one stage
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    users = only(ins, "USER")
    assert users, "no USER: the daemon would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid not in ("root", "0") and gid not in ("root", "0")
    # the same uid the manifests run the container as (runAsNonRoot needs a numeric uid)
    sc = manifests.deployment("https://sqs.example/q")["spec"]["template"]["spec"]
    assert int(uid) == sc["containers"][0]["securityContext"]["runAsUser"]
    words = [w for w, _ in ins]
    last_run = max(i for i, w in enumerate(words) if w == "RUN")
    assert words.index("USER") > last_run  # installed as root, run as the user


def test_installs_an_extra_that_exists_and_carries_the_daemon():
    ins = instructions()
    runs = " && ".join(only(ins, "RUN"))
    m = re.search(r"pip install \"?\.\[([a-z0-9_,-]+)\]\"?", runs)
    assert m, runs
    extras = m.group(1).split(",")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = meta["optional-dependencies"]
    assert extras == ["daemon"] and all(e in declared for e in extras)
    names = {re.split(r"[<>=\[ ;]", d, maxsplit=1)[0].lower() for d in declared["daemon"]}
    assert {"apscheduler", "boto3", "kubernetes", "prometheus-client"} <= names
    # what setuptools needs is copied: the metadata, the readme it names, every package
    copied = {src for rest in only(ins, "COPY") for src in rest.split()[:-1]}
    assert {"pyproject.toml", meta["readme"], "provisioner", "pricing", "stacks"} <= copied
    assert all((ROOT / src).exists() for src in copied)


def test_entrypoint_runs_prov_daemon():
    ins = instructions()
    [entry] = only(ins, "ENTRYPOINT")
    assert json.loads(entry) == ["prov", "daemon"]  # exec form: SIGTERM reaches the daemon
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["scripts"]["prov"] == "provisioner.cli.main:main"
    [cmd] = only(ins, "CMD")
    assert json.loads(cmd) == ["--mode", "queue"]


def test_healthcheck_command_probes_healthz(monkeypatch):
    ins = instructions()
    [hc] = only(ins, "HEALTHCHECK")
    argv = json.loads(hc[hc.index("CMD") + 3 :].strip())
    assert argv[0] == "python" and "/healthz" in argv[-1]
    problem: list[str | None] = [None]
    server = MetricsServer(Metrics(), lambda: problem[0], "127.0.0.1", 0).start()
    try:
        env = {"PROV_METRICS_PORT": str(server.port), "PATH": ""}

        def probe() -> int:
            return subprocess.run([sys.executable, *argv[1:]], env=env, timeout=30).returncode

        assert probe() == 0
        problem[0] = "no monitor poll for 90s"  # /healthz answers 503
        assert probe() != 0
    finally:
        server.stop()
    # the port the HEALTHCHECK reads is the one `prov daemon` listens on
    [env_line] = only(ins, "ENV")
    assert "PROV_METRICS_PORT=9092" in env_line
    monkeypatch.setenv("PROV_METRICS_PORT", "-5")
    r = CliRunner().invoke(app, ["daemon", "--queue-url", "q"])
    assert r.exit_code == 2 and "--metrics-port -5" in r.stderr


def test_docs_point_at_the_dockerfile():
    doc = (ROOT / "docs" / "daemon.md").read_text()
    assert "docker/daemon.Dockerfile" in doc
    assert "docker build -f docker/daemon.Dockerfile" in doc
