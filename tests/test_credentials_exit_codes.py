"""No AWS credentials: every command that talks to AWS exits 2 with the same one line.

The rule (provisioner/aws_credentials.py, after errors.py): missing or rejected credentials
are configuration the user must fix, like a bad flag, so exit 2; an outage is exit 1. Review 8
found `prov prices refresh` exiting 1 and `prov daemon --once` 2 for the same cause.

Each command runs as its own process with an environment that has no AWS keys, no profile,
AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE pointing at empty files, and no instance
metadata; every AWS endpoint and proxy points at a closed port on 127.0.0.1, so a command that
went to the network anyway would fail differently (and hermetically).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from provisioner.cli.main import app

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens
RUN = "import sys; sys.argv[0] = 'prov'; from provisioner.cli.main import main; main()"
# The Pulumi CLI is not installed where the tests run: destroy's one Pulumi read before AWS
# (the stack's aws:region config) is answered as Pulumi would for an aws-eks stack.
WITH_A_STACK = "import stacks.automation as a; a.stack_region = lambda stack: 'us-east-1'; "


@pytest.fixture(scope="module")
def aws_plan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    args = ["quote", "-m", "llama-3.1-8b", "--ctx", "32k", "--gpu", "L40S", "--cloud", "aws"]
    result = CliRunner().invoke(app, [*args, "--weights", "hub", "--json"])
    assert result.exit_code == 0, result.output
    path = tmp_path_factory.mktemp("plans") / "plan.json"
    path.write_text(result.stdout, encoding="utf-8")
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    empty_config, empty_credentials = tmp_path / "config", tmp_path / "credentials"
    empty_config.write_text("")
    empty_credentials.write_text("")
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "AWS_CONFIG_FILE": str(empty_config),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty_credentials),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": CLOSED,
        "HTTP_PROXY": CLOSED,
        "HTTPS_PROXY": CLOSED,
        "NO_PROXY": "",
        "COLUMNS": "200",
    }


COMMANDS = {
    "prices refresh": ("", ["prices", "refresh", "--cloud", "aws", "--regions", "us-east-1"]),
    "daemon": (
        "",
        [
            "daemon",
            "--mode",
            "queue",
            "--queue-url",
            "https://sqs.us-east-1.amazonaws.com/123456789012/prov-interruptions",
            "--region",
            "us-east-1",
            "--kube-api",
            CLOSED,
            "--once",
            "--metrics-port",
            "-1",
        ],
    ),
    "deploy": ("", ["deploy", "--plan", "{plan}", "--target", "aws-eks", "--yes"]),
    "deploy --preview": ("", ["deploy", "--plan", "{plan}", "--target", "aws-eks", "--preview"]),
    "destroy": (WITH_A_STACK, ["destroy", "--stack", "llama-demo", "--yes"]),
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_credentials_is_exit_2_with_one_line_naming_them(
    command: str, aws_plan: Path, tmp_path: Path
) -> None:
    prefix, args = COMMANDS[command]
    argv = [a.replace("{plan}", str(aws_plan)) for a in args]
    p = subprocess.run(
        [sys.executable, "-c", prefix + RUN, *argv],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2, (p.returncode, p.stdout[-500:], p.stderr[-1500:])
    assert "Traceback" not in p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("prov: error:")]
    assert len(errors) == 1, p.stderr
    [line] = errors
    assert line.startswith("prov: error: no AWS credentials found ("), line
    for how in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "aws configure"):
        assert how in line
    assert p.stderr.strip().splitlines()[-1] == line  # nothing after it (no second message)
