"""`prov destroy` terminates the instances the daemon launched (not Pulumi resources) first.

The selection is checked on hand-written DescribeInstances answers; the whole path runs through
the CLI against a moto server over HTTP with IAM enforcement, the destroying user holding
exactly ``leftovers.destroy_policy()``. Pulumi is not installable here, so its two calls
(``stack_region``, ``destroy``) are replaced by stand-ins that record when they ran.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from provisioner import fleet
from provisioner.cli.main import app
from stacks import automation, leftovers

sys.path.insert(0, str(Path(__file__).parents[1] / "daemon"))
from daemon_harness import AMI, moto_server

REGION = "us-east-1"


# ---- the selection, on DescribeInstances answers written by hand ----------------------------


def _inst(iid: str, state: str, **tags: str) -> dict[str, Any]:
    return {
        "InstanceId": iid,
        "InstanceType": "p5.48xlarge",
        "State": {"Name": state},
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }


def test_select_takes_only_the_stacks_live_instances() -> None:
    a = {fleet.STACK: "kimi"}
    reservations = [
        {"Instances": [_inst("i-3", "running", **a, **{fleet.REPLACES: "kimi-r0"})]},
        {"Instances": [_inst("i-1", "stopped", **a, **{fleet.SPARE: "true"}),
                       _inst("i-2", "shutting-down", **a, **{fleet.AWS_ASG_NAME: "g"})]},
        {"Instances": [_inst("i-4", "terminated", **a)]},  # already gone
        {"Instances": [_inst("i-5", "running", **{fleet.STACK: "kimi-prod"})]},  # another stack
        {"Instances": [_inst("i-6", "running", **{fleet.STACK: "KIMI"})]},  # tags are exact
        {"Instances": [_inst("i-7", "running"), _inst("i-8", "pending", **{fleet.POOL: "kimi"})]},
    ]  # fmt: skip
    got = leftovers.select(reservations, "kimi")
    assert [(x.id, x.state, x.role) for x in got] == [
        ("i-1", "stopped", "spare"),
        ("i-2", "shutting-down", "asg"),
        ("i-3", "running", "replacement"),
    ]


def test_not_gone_and_groups() -> None:
    res = [{"Instances": [_inst("i-1", "shutting-down"), _inst("i-2", "running"),
                          _inst("i-3", "terminated"), _inst("i-4", "stopping")]}]  # fmt: skip
    assert leftovers.not_gone(res, ["i-1", "i-2", "i-3", "i-4", "i-9"]) == ["i-2", "i-4"]
    found = leftovers.with_groups(leftovers.select(res, "x"), {})
    assert found == []  # untagged: never selected
    xs = [leftovers.Leftover("i-1", "running", "t", "asg"), leftovers.Leftover("i-2", "x", "t", "")]
    grouped = leftovers.with_groups(xs, {"i-1": "g1"})
    assert leftovers.by_group(grouped) == {"g1": ["i-1"]}
    long = leftovers.Leftover("i-0123456789abcdef0", "shutting-down", "p5en.48xlarge", "asg",
                              "kimi-k2-thinking-r0-0a1b2c3d4e5f")  # fmt: skip
    assert all(len(line) <= 80 for line in leftovers.lines([*grouped, long]))


def test_the_policy_lists_exactly_the_calls() -> None:
    (st,) = leftovers.destroy_policy()["Statement"]
    assert st["Action"] == [
        "autoscaling:DescribeAutoScalingInstances",
        "autoscaling:DetachInstances",
        "ec2:DescribeInstances",
        "ec2:TerminateInstances",
    ]
    assert st["Resource"] == "*"


# ---- the whole path against moto ------------------------------------------------------------


def _post(url: str, path: str, body: bytes = b"") -> None:
    req = urllib.request.Request(
        url + path, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(req, timeout=10).read()


class Stand:
    """Stack A: an ASG of 2 (the stack's own group), a replacement the daemon launched with
    RunInstances and a stopped warm spare; stack B: one instance; one untagged instance."""

    def __init__(self, url: str) -> None:
        import boto3

        _post(url, "/moto-api/reset")
        _post(url, "/moto-api/reset-auth", b"inf")
        self.url = url
        admin = boto3.session.Session("testing", "testing", region_name=REGION)
        self.ec2 = admin.client("ec2", endpoint_url=url)
        self.asg = admin.client("autoscaling", endpoint_url=url)
        self.iam = admin.client("iam", endpoint_url=url)
        vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        self.subnet = self.ec2.create_subnet(
            VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a"
        )["Subnet"]["SubnetId"]
        self.ec2.create_launch_template(
            LaunchTemplateName="a-gpu",
            LaunchTemplateData={"ImageId": AMI, "InstanceType": "p5.48xlarge"},
        )
        a_tags = {fleet.MANAGED: "true", fleet.STACK: "a", fleet.POOL: "kimi"}
        self.asg.create_auto_scaling_group(
            AutoScalingGroupName="a-kimi-r0",
            LaunchTemplate={"LaunchTemplateName": "a-gpu", "Version": "$Latest"},
            MinSize=0, MaxSize=2, DesiredCapacity=2, VPCZoneIdentifier=self.subnet,
            Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": True} for k, v in a_tags.items()],
        )  # fmt: skip
        self.in_asg = [i["InstanceId"] for i in self._group()["Instances"]]
        assert len(self.in_asg) == 2
        self.replacement = self._run({**a_tags, fleet.REPLACES: "kimi-r0", fleet.REPLICA: "r1"})
        self.spare = self._run({**a_tags, fleet.SPARE: fleet.SPARE_VALUE})
        self.ec2.stop_instances(InstanceIds=[self.spare])
        self.other = self._run({fleet.MANAGED: "true", fleet.STACK: "b", fleet.POOL: "kimi"})
        self.untagged = self._run({})
        self.stack_a = sorted([*self.in_asg, self.replacement, self.spare])

    def _group(self) -> dict[str, Any]:
        groups = self.asg.describe_auto_scaling_groups(AutoScalingGroupNames=["a-kimi-r0"])
        return dict(groups["AutoScalingGroups"][0])

    def _run(self, tags: dict[str, str]) -> str:
        kw: dict[str, Any] = {}
        if tags:
            tag_list = [{"Key": k, "Value": v} for k, v in tags.items()]
            kw["TagSpecifications"] = [{"ResourceType": "instance", "Tags": tag_list}]
        launched = self.ec2.run_instances(
            ImageId=AMI, InstanceType="p5.48xlarge", MinCount=1, MaxCount=1,
            SubnetId=self.subnet, **kw,
        )  # fmt: skip
        return str(launched["Instances"][0]["InstanceId"])

    def states(self) -> dict[str, str]:
        res = self.ec2.describe_instances()["Reservations"]
        return {i["InstanceId"]: i["State"]["Name"] for r in res for i in r["Instances"]}

    def user(self, policy: dict[str, Any]) -> dict[str, str | None]:
        """Credentials of a user holding ``policy`` only, as the CLI's environment."""
        self.iam.create_user(UserName="destroyer")
        self.iam.put_user_policy(
            UserName="destroyer", PolicyName="d", PolicyDocument=json.dumps(policy)
        )
        key = self.iam.create_access_key(UserName="destroyer")["AccessKey"]
        _post(self.url, "/moto-api/reset-auth", b"0")
        return {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_ENDPOINT_URL": self.url,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_PROFILE": None,  # unset
        }


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


class Pulumi:
    """Stand-ins for the two Pulumi calls; each records (what, the instance states then)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.stand: Stand | None = None

    def stack_region(self, stack: str) -> str:
        self.calls.append(("region", stack))
        return REGION

    def destroy(self, stack: str, *, echo: Any) -> None:
        assert self.stand is not None
        _post(self.stand.url, "/moto-api/reset-auth", b"inf")  # the admin reads the states
        self.calls.append(("destroy", self.stand.states()))

    def what(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
def pulumi(monkeypatch: pytest.MonkeyPatch, moto_url: str) -> Pulumi:
    p = Pulumi()
    monkeypatch.setattr(automation, "stack_region", p.stack_region)
    monkeypatch.setattr(automation, "destroy", p.destroy)
    p.stand = Stand(moto_url)
    return p


def _cli(env: dict[str, str | None], *args: str) -> Result:
    return CliRunner().invoke(app, ["destroy", "--stack", "a", *args], env=env)


def test_destroy_terminates_only_stack_a_then_destroys(moto_url: str, pulumi: Pulumi) -> None:
    stand = pulumi.stand
    assert stand is not None
    before = stand.states()
    result = _cli(stand.user(leftovers.destroy_policy()), "--yes")
    _post(moto_url, "/moto-api/reset-auth", b"inf")
    assert result.exit_code == 0, result.output
    assert "Terminated 4 instance(s) of stack a in us-east-1." in result.stdout
    for iid in stand.stack_a:
        assert iid in result.stdout  # listed before
    assert "Detaching 2 instance(s) from ASG a-kimi-r0" in result.stderr
    # Pulumi's destroy ran once, after the leftovers were already terminated
    assert pulumi.what() == ["region", "destroy"]
    at_destroy = pulumi.calls[1][1]
    assert {at_destroy[i] for i in stand.stack_a} <= {"shutting-down", "terminated"}
    after = stand.states()
    assert {after[i] for i in stand.stack_a} <= {"shutting-down", "terminated"}
    assert after[stand.other] == "running" and after[stand.untagged] == "running"
    # the ASG was emptied with its desired size, so it launches nothing in their place
    group = stand._group()
    assert group["DesiredCapacity"] == 0 and group["Instances"] == []
    assert set(after) == set(before)  # no new instance anywhere


def test_preview_lists_and_ends_nothing(moto_url: str, pulumi: Pulumi) -> None:
    stand = pulumi.stand
    assert stand is not None
    before = stand.states()
    result = _cli(stand.user(leftovers.destroy_policy()), "--preview")
    _post(moto_url, "/moto-api/reset-auth", b"inf")
    assert result.exit_code == 0, result.output
    listed = [ln.split()[0] for ln in result.stdout.splitlines() if ln.startswith("  i-")]
    assert sorted(listed) == stand.stack_a
    assert "Preview only: nothing destroyed." in result.stdout
    assert stand.states() == before
    assert pulumi.what() == ["region"]


@pytest.mark.parametrize("missing", [c.action for c in leftovers.DESTROY_CALLS])
def test_each_permission_is_needed_and_failure_is_one_line(
    moto_url: str, pulumi: Pulumi, missing: str
) -> None:
    stand = pulumi.stand
    assert stand is not None
    env = stand.user(leftovers.destroy_policy(leave_out=frozenset({missing})))
    result = _cli(env, "--yes")
    _post(moto_url, "/moto-api/reset-auth", b"inf")
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("prov: error")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert "destroy" not in pulumi.what()  # the stack is left for a rerun
    states = stand.states()
    assert states[stand.other] == "running" and states[stand.untagged] == "running"
    if missing == "ec2:TerminateInstances":  # detached, said so, nothing terminated
        assert "terminated so far: none" in lines[0]
        assert {states[i] for i in stand.stack_a} & {"shutting-down", "terminated"} == set()


def test_the_docs_show_the_generated_policy() -> None:
    text = (Path(__file__).parents[2] / "docs" / "deploy.md").read_text()
    section = text.split("## `prov destroy`", 1)[1]
    block = section.split("```json\n", 1)[1].split("```", 1)[0]
    assert json.loads(block) == leftovers.destroy_policy()
