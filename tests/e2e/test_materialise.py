"""The e2e harness picks the daemon's own IAM policy from a stack with several role policies
(review8: it unpacked exactly one, so only --weights hub plans could run the chain)."""

from __future__ import annotations

from pathlib import Path

import pytest
from materialise import daemon_policy
from stack_harness import ONE_NODE, quote, run_stack

from provisioner import fleet
from stacks.options import DeployOptions

pytestmark = pytest.mark.filterwarnings("ignore:aws.ec2/encryptioncontrol:DeprecationWarning")


def test_the_daemon_policy_is_found_among_the_weights_and_cache_policies(tmp_path: Path) -> None:
    plan = quote(tmp_path, "s3", [*ONE_NODE, "--cloud", "aws", "--region", "us-east-2"])
    run = run_stack(plan, DeployOptions(weights="s3", weights_bucket="s3://bkt/kimi"))
    names = [r.name for r in run.of("aws:iam/rolePolicy:RolePolicy")]
    assert len(names) == 3, names  # weights-read, compile-cache, the daemon's
    policy = daemon_policy(run)
    want = fleet.iam_policy("arn:aws:sqs:us-east-2:1:q", "arn:aws:iam::1:role/r")
    assert [s.get("Sid") for s in policy["Statement"]] == [s.get("Sid") for s in want["Statement"]]
    assert [s["Action"] for s in policy["Statement"]] == [s["Action"] for s in want["Statement"]]
    assert not any("s3:" in str(s["Action"]) for s in policy["Statement"])
