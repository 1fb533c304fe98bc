"""The Automation API for real: needs the pulumi CLI, which CI here does not have (skipped).

Hermetic where it runs: the state backend goes to a temp XDG_STATE_HOME, the passphrase comes
from the environment, and the preview targets a kubeconfig whose API server is a closed port
on 127.0.0.1 (pulumi-kubernetes previews against an unreachable cluster with a warning). The
preview also needs the kubernetes provider plugin already installed, since fetching it would
need the internet.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from stack_harness import PlanFile
from typer.testing import CliRunner, Result

from provisioner.cli.main import app

pytestmark = pytest.mark.skipif(
    shutil.which("pulumi") is None,
    reason="no pulumi CLI on PATH (not installable here); the mocked stack tests cover the program",
)


def _has_kubernetes_plugin() -> bool:
    version = metadata.version("pulumi_kubernetes")
    listed = subprocess.run(
        ["pulumi", "plugin", "ls", "--json"], capture_output=True, text=True, timeout=60
    )
    if listed.returncode != 0:
        return False
    return any(
        p.get("name") == "kubernetes" and p.get("version") == version
        for p in json.loads(listed.stdout or "[]")
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return {
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PULUMI_CONFIG_PASSPHRASE": "test-passphrase",
        "KUBECONFIG": str(kubeconfig),
        "PULUMI_SKIP_UPDATE_CHECK": "true",
    }


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def test_status_of_an_empty_backend(env: dict[str, str]) -> None:
    result = run(env, "status")
    assert result.exit_code == 0, result.output
    assert "No stacks yet" in result.stdout


def test_destroy_unknown_stack_is_bad_input(env: dict[str, str]) -> None:
    result = run(env, "destroy", "--stack", "no-such-stack", "--yes")
    assert result.exit_code == 2, result.output
    assert "no such stack" in result.stderr


def test_preview_runs_the_program(env: dict[str, str], plans: dict[str, PlanFile]) -> None:
    if not _has_kubernetes_plugin():
        pytest.skip("the kubernetes provider plugin is not installed (fetching it needs internet)")
    result = run(
        env,
        "deploy",
        "--plan",
        str(plans["one"].path),
        "--target",
        "kubeconfig",
        "--stack",
        "preview-test",
        "--preview",
    )
    assert result.exit_code == 0, result.output
    assert "kubernetes:apps/v1:Deployment" in result.stdout
    assert "Preview only" in result.stdout
    listed = run(env, "status")
    assert "preview-test" in listed.stdout
