"""The spot story end to end: `prov quote --json` -> the Pulumi program (under Pulumi's mocks)
-> its AWS resources in moto and its Kubernetes objects in kmock -> vLLM stand-ins behind a
Service router -> a spot interruption through EventBridge -> the daemon, running with exactly
the stack's IAM policy under moto's IAM enforcement -> the replica restored without a request
cut. Time is scaled (chain.py says by how much and from which real numbers).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from chain import NOTICE, Report, run_chain
from daemon_harness import moto_server
from stack_harness import ONE_NODE, StackRun, quote, run_stack

from provisioner import fleet
from stacks.options import DeployOptions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:aws.ec2/encryptioncontrol:DeprecationWarning"),
]
SCALE = 1 / 50  # 120 s notice -> 2.4 s; a 10 min replacement load -> 12 s
LP_SCALE = 1 / 100  # the least-privilege runs: shorter, the load only twice the notice


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> StackRun:
    tmp: Path = tmp_path_factory.mktemp("e2e")
    # us-east-2: the region Pulumi's mocks write into every ARN (stack_harness.RecordingMocks)
    plan = quote(tmp, "one_aws", [*ONE_NODE, "--cloud", "aws", "--region", "us-east-2"])
    return run_stack(plan, DeployOptions())


@pytest.fixture(scope="module")
def chain(stack: StackRun, moto_url: str) -> Report:
    return run_chain(stack, moto_url, SCALE)


def test_spot_interruption_keeps_every_request_and_restores_the_replica(chain: Report) -> None:
    r = chain
    on_old = [x for x in r.results if x.pod == r.old_pod]
    gap = [x.at for x in r.results if x.outcome == "no-endpoint"]
    window = (max(gap) - min(gap)) if gap else 0.0
    print(
        f"\ne2e (time x{SCALE}): {len(r.results)} requests, {len(on_old)} on the interrupted "
        f"replica; replacement Ready {(r.replacement_ready_at or 0) - r.notice_at:.2f}s after "
        f"the notice (reclaimed at {r.reclaimed_at - r.notice_at:.2f}s); message deleted at "
        f"{(r.message_gone_at or 0) - r.notice_at:.2f}s; no endpoint for {window:.2f}s "
        "(one replica: none between its drain and the replacement's Ready)"
    )
    assert r.failures() == []
    assert all(x.outcome == "ok" for x in on_old) and len(on_old) >= 3
    # the replacement loaded for longer than the notice: it was Ready only after the reclaim
    assert r.replacement_ready_at is not None and r.replacement_ready_at > r.reclaimed_at
    assert any(x.pod in r.new_pods and x.outcome == "ok" for x in r.results)
    assert r.live_instances[0]["InstanceId"] != r.old_instance
    tags = {t["Key"]: t["Value"] for t in r.live_instances[0]["Tags"]}
    assert tags[fleet.REPLACES] == "kimi-k2-thinking-r0"  # the stack's replica id
    assert tags[fleet.STACK] == "test" and tags[fleet.POOL] == "kimi-k2-thinking"


def test_the_daemon_used_only_kubernetes_calls_its_rbac_grants(chain: Report) -> None:
    assert chain.daemon_requests, "no Kubernetes call of the daemon was seen"
    denied = [c for c in chain.daemon_requests if not fleet.allowed(*c)]
    assert denied == []
    used = {(v, res) for v, _, res in chain.daemon_requests}
    # the chain exercised the drain's calls
    assert {("patch", "nodes"), ("create", "pods/eviction"), ("list", "pods")} <= used


#: The actions the one-node spot chain calls itself (fleet.AWS_CALLS says which other features
#: need the rest; the implied ones are checked by AWS inside another call, not by moto).
CHAIN_ACTIONS = sorted(c.action for c in fleet.AWS_CALLS if "spot" in c.features and not c.implied)


@pytest.mark.parametrize("action", CHAIN_ACTIONS)
def test_least_privilege_each_action_is_needed(stack: StackRun, moto_url: str, action: str) -> None:
    report = run_chain(
        stack, moto_url, LP_SCALE, load_ratio=2.0, leave_out=frozenset({action}), slack=2.0
    )
    assert report.failures(), f"the chain held without {action}: it is not needed"


def test_least_privilege_covers_the_declared_spot_calls() -> None:
    assert set(CHAIN_ACTIONS) == {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "ec2:DescribeInstances",
        "ec2:DescribeSubnets",
        "ec2:RunInstances",
        "autoscaling:DetachInstances",
    }
    assert NOTICE == 120.0  # AWS's two-minute warning, the number everything is scaled from
