"""Fixtures of tests/stacks: the plan files, made once per session by the real planner."""

from __future__ import annotations

import pytest
from stack_harness import ONE_NODE, TWO_NODE, PlanFile, quote


@pytest.fixture(scope="session")
def plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PlanFile]:
    """one/two: any cloud (rank 1 is not on AWS); one_aws/two_aws: quoted with --cloud aws."""
    tmp = tmp_path_factory.mktemp("plans")
    return {
        "one": quote(tmp, "one", ONE_NODE),
        "two": quote(tmp, "two", TWO_NODE),
        # pinned to one region so that a new price snapshot does not move the stack's zone
        "one_aws": quote(tmp, "one_aws", [*ONE_NODE, "--cloud", "aws", "--region", "us-east-2"]),
        "two_aws": quote(tmp, "two_aws", [*TWO_NODE, "--cloud", "aws", "--region", "us-east-2"]),
    }
