"""The daemon the stack deploys falls back across the pool's instance types in price order
(review8 #4: its args carried no --alternative, so it only tried other zones, then on-demand).

The seam whole: `prov quote --json` -> the stack under Pulumi's mocks -> the daemon
Deployment's args -> the real `prov daemon` CLI parsing them into a DaemonConfig. Expected by
hand from `prov prices show --cloud aws --region us-east-1 --gpu L40S`: 4 x L40S is sold as
g6e.24xlarge (cheapest spot $0.887/GPU-h, use1-az6) and g6e.12xlarge ($1.605, use1-az2); rank 1
of the quote below is the g6e.24xlarge, so the one alternative is g6e.12xlarge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from stack_harness import quote, run_stack
from typer.testing import CliRunner

from provisioner.cli.main import app
from provisioner.daemon.config import Alternative, DaemonConfig
from stacks.options import DeployOptions
from stacks.spec import build_spec

pytestmark = pytest.mark.filterwarnings("ignore:aws.ec2/encryptioncontrol:DeprecationWarning")


class _Parsed(BaseException):  # not an Exception: the CLI's error boundary lets it through
    def __init__(self, cfg: DaemonConfig) -> None:
        self.cfg = cfg


def parsed(args: list[str], monkeypatch: pytest.MonkeyPatch) -> DaemonConfig:
    import provisioner.daemon.service as service

    def capture(cfg: DaemonConfig, **_: Any) -> Any:
        raise _Parsed(cfg)

    monkeypatch.setattr(service, "build_daemon", capture)
    try:
        result = CliRunner().invoke(app, [*args, "--metrics-port", "-1"])
    except _Parsed as p:
        return p.cfg
    raise AssertionError(f"the CLI did not get to the daemon: {result.output}")


def daemon_args(tmp: Path, market: str) -> tuple[list[str], tuple[str, ...]]:
    args = ["quote", "-m", "meta-llama/Llama-3.1-8B", "--ctx", "8k", "--json", "--weights", "hub"]
    args += ["--gpu", "L40S", "--cloud", "aws", "--region", "us-east-1", "--market", market]
    plan = quote(tmp, market, args)
    spec = build_spec(plan.doc, DeployOptions())
    assert spec.plan.market == market
    run = run_stack(plan, DeployOptions())
    dep = run.one("kubernetes:apps/v1:Deployment", "prov-daemon").inputs
    rendered = list(dep["spec"]["template"]["spec"]["containers"][0]["args"])
    queue = rendered.index("--queue-url") + 1
    rendered[queue] = "https://sqs.us-east-2.amazonaws.com/1/q"  # a mock Output's placeholder
    return rendered, spec.instance_types


def test_a_spot_pool_hands_its_other_types_to_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, types = daemon_args(tmp_path, "spot")
    assert types == ("g6e.24xlarge", "g6e.12xlarge")
    cfg = parsed(args, monkeypatch)
    assert cfg.alternatives == (Alternative("g6e.12xlarge"),)


def test_an_on_demand_pool_keeps_its_one_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, types = daemon_args(tmp_path, "on-demand")
    assert len(types) == 1 and "--alternative" not in args
    assert parsed(args, monkeypatch).alternatives == ()
