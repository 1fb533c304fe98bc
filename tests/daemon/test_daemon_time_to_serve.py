"""The daemon decides from the plan's time to serve (issue 16, item 2's "the same number").

* The seam, whole: `prov quote --json` (Kimi-K2-Thinking int4, one 8 x H200 node on AWS) -> the
  deploy stack under Pulumi's mocks -> the daemon Deployment's rendered args -> the real
  `prov daemon` CLI parsing them into a DaemonConfig -> the daemon's own decisions (prewarm on a
  rebalance, what a spare saves, when a replacement serves). Expected values are docs/recovery.md's
  hand sums (s3: 180 + 0 + 98 + 60 + 23 + 44 = 405 s; hub: 1,658 s) and AWS's 120 s notice.
* Behaviour, against moto and kmock: a rebalance recommendation starts the replacement by
  default when the time to serve exceeds the notice, and only cordons when it does not; a
  loading spare that will serve first (launched earlier) is promoted before one that sorts first.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import node_json, wait_until
from typer.testing import CliRunner

from provisioner import fleet
from provisioner.cli.main import app
from provisioner.daemon.config import DaemonConfig
from provisioner.daemon.spares import prewarm_on_rebalance, serves_at, spare_saves_s
from provisioner.errors import UsageError

sys.path.insert(0, str(Path(__file__).parents[1] / "stacks"))
from stack_harness import ONE_NODE, quote, run_stack

from stacks.options import DeployOptions
from stacks.spec import build_spec

BUCKET = "s3://prov-weights-use2/kimi/int4"
NOTICE_S = 120  # AWS's spot notice (docs/recovery.md)


class _Parsed(BaseException):  # not an Exception: the CLI's error boundary lets it through
    def __init__(self, cfg: DaemonConfig) -> None:
        self.cfg = cfg


def daemon_config_from_args(args: list[str], monkeypatch: pytest.MonkeyPatch) -> DaemonConfig:
    """Run the real `prov` CLI on the container's ``args`` (`daemon ...`); stop where it
    would build the daemon."""
    import provisioner.daemon.service as service

    def capture(cfg: DaemonConfig, **_: Any) -> Any:
        raise _Parsed(cfg)

    monkeypatch.setattr(service, "build_daemon", capture)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")  # credentials are checked first
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert args[0] == "daemon"
    try:
        result = CliRunner().invoke(app, [*args, "--metrics-port", "-1"])
    except _Parsed as parsed:
        return parsed.cfg
    raise AssertionError(f"the CLI did not get to the daemon: {result.output}")


@pytest.fixture(scope="module")
def stack_args(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, list[str]]]:
    """path -> (the plan's time_to_serve_s on it, the daemon's rendered args)."""
    tmp = tmp_path_factory.mktemp("tts_seam")
    aws = [a for a in ONE_NODE if a not in ("--weights", "hub")]
    plans = {
        "s3": quote(tmp, "s3", [*aws, "--cloud", "aws", "--region", "us-east-2"]),
        "hub": quote(tmp, "hub", [*ONE_NODE, "--cloud", "aws", "--region", "us-east-2"]),
    }
    out = {}
    for path, plan in plans.items():
        options = DeployOptions(weights_bucket=BUCKET) if path == "s3" else DeployOptions()
        run = run_stack(plan, options)
        chosen = build_spec(plan.doc, options).plan  # the plan the stack deploys
        assert chosen.market == "spot" and chosen.time_to_serve_s is not None
        dep = run.one("kubernetes:apps/v1:Deployment", "prov-daemon").inputs
        args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
        out[path] = (chosen.time_to_serve_s, list(args))
    return out


@pytest.mark.parametrize(("path", "expected_s"), [("s3", 405), ("hub", 1658)])
def test_the_daemon_decides_from_the_plans_time_to_serve(
    stack_args: dict[str, tuple[int, list[str]]],
    path: str,
    expected_s: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan_s, args = stack_args[path]
    assert plan_s == expected_s  # docs/recovery.md's table, summed by hand
    assert args[args.index("--time-to-serve") + 1] == str(plan_s)
    queue = args[args.index("--queue-url") + 1] if "--queue-url" in args else None
    extra = [] if queue and queue.startswith("https://") else ["--queue-url", "https://q.test/1"]
    cfg = daemon_config_from_args([*args, *extra], monkeypatch)
    assert cfg.time_to_serve_seconds == plan_s
    assert cfg.spot_notice_seconds == NOTICE_S
    # the daemon's own rule, without the stack's flag: 405 s (or 1,658 s) > 120 s -> prewarm
    assert prewarm_on_rebalance(dataclasses.replace(cfg, prewarm_on_rebalance=False))
    # what a warm spare saves per reclaim: time to serve - notice (405 - 120 = 285 s)
    assert spare_saves_s(cfg) == plan_s  # it exceeds the notice: all of it
    # a replacement launched now serves at launch + time to serve
    t0 = datetime(2026, 11, 30, 1, 0, tzinfo=UTC)
    assert serves_at(cfg, [], False, t0) == t0 + timedelta(seconds=plan_s)


def test_time_to_serve_flag_refuses_nonsense() -> None:
    for bad in (0.0, -5.0, float("nan"), float("inf")):
        with pytest.raises(UsageError, match="--time-to-serve"):
            DaemonConfig(mode="imds", node_name="n", time_to_serve_seconds=bad).validate()
    cfg = DaemonConfig(mode="imds", node_name="n").validate()
    assert cfg.time_to_serve_seconds is None
    assert not prewarm_on_rebalance(cfg) and spare_saves_s(cfg) is None  # unknown: flags only
    fits = dataclasses.replace(cfg, time_to_serve_seconds=90.0)  # a small model: 90 s < 120 s
    assert not prewarm_on_rebalance(fits) and spare_saves_s(fits) == 0.0


# -- behaviour on the stand (moto + kmock) ----------------------------------------------------


def one_replica(aws: Any, agent: Any, replica: str = "r1") -> dict[str, Any]:
    (inst,) = aws.launch_replica(replica)
    agent.settle()
    return inst


def handled(d: Any) -> Any:
    def final() -> Any:
        done = [(e, o) for e, o in list(d.outcomes) if o.status != "deferred"]
        return done[0] if done else None

    return wait_until(final, 15, what="handled")


def test_rebalance_starts_the_replacement_when_time_to_serve_exceeds_the_notice(
    aws: Any, agent: Any, core: Any, k8s: Any, make_daemon: Any
) -> None:
    inst = one_replica(aws, agent)
    d = make_daemon(time_to_serve_seconds=405.0)  # no --prewarm-on-rebalance
    aws.put("EC2 Instance Rebalance Recommendation", {"instance-id": inst["InstanceId"]})
    _, out = handled(d)
    assert out.action == "cordoned+replacement"
    assert len(aws.replacements_of("r1")) == 1
    assert k8s.eviction_log == []  # a recommendation, not a notice: still serving
    node = node_json(core, inst["PrivateDnsName"])
    assert node["spec"]["unschedulable"] is True
    assert fleet.EXCLUDE_LB_LABEL not in node["metadata"]["labels"]


def test_rebalance_only_cordons_when_a_replacement_fits_in_the_notice(
    aws: Any, agent: Any, core: Any, k8s: Any, make_daemon: Any
) -> None:
    inst = one_replica(aws, agent)
    d = make_daemon(time_to_serve_seconds=90.0)  # a replacement asked at the notice is in time
    aws.put("EC2 Instance Rebalance Recommendation", {"instance-id": inst["InstanceId"]})
    _, out = handled(d)
    assert out.action == "cordoned"
    assert aws.replacements_of("r1") == [] and k8s.eviction_log == []


def test_the_spare_that_serves_first_is_promoted(aws: Any, make_daemon: Any) -> None:
    """Two spares still loading (no node agent: no node joins): by replica id "s-a" sorts
    first, but "s-b" was launched earlier, so by launch + time to serve it serves first and is
    the one promoted."""
    d = make_daemon(start=False, spare_replicas=2, time_to_serve_seconds=405.0)
    spares = d.spares
    for replica in ("s-b", "s-a"):
        (s,) = aws.launch_replica(replica)
        aws.ec2.create_tags(
            Resources=[s["InstanceId"]], Tags=[{"Key": fleet.SPARE, "Value": fleet.SPARE_VALUE}]
        )
        time.sleep(1.1)  # EC2's LaunchTime has one-second resolution
    got = spares.claim("pool-a", 1, on_demand_only=False, replaces="r1")
    assert got is not None and got.replica == "s-b"
    eta = spares.serves_at(got)
    launched = got.lead.launch_time
    assert launched is not None and eta == max(spares.now(), launched + timedelta(seconds=405))


@pytest.mark.parametrize(("tts", "sheds"), [(405.0, True), (10.0, False)])
def test_dry_run_says_when_the_replica_leaves_the_load_balancers_early(
    aws: Any, agent: Any, k8s: Any, make_daemon: Any, tts: float, sheds: bool
) -> None:
    """30 s left, the pod's grace 1 s, margin 0.5 s: the drain must start in 28.5 s. A
    replacement serving in 405 s cannot make it (out of the load balancers now); in 10 s it can
    (the flow holds in the load balancers until it is Ready)."""
    inst = one_replica(aws, agent)
    d = make_daemon(dry_run=True, time_to_serve_seconds=tts)
    aws.spot_warning(inst["InstanceId"], seconds_left=30)
    _, out = handled(d)
    early = [x for x in out.detail["decisions"] if x.startswith("take ")]
    assert bool(early) is sheds, out.detail["decisions"]
    if sheds:
        assert early[0].startswith(f"take {inst['PrivateDnsName']} out of load balancers now")
        assert "serves in 405 s" in early[0]
    assert k8s.eviction_log == [] and aws.replacements_of("r1") == []  # a dry run
