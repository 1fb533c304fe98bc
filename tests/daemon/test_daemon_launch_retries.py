"""Each exhausted pool is asked once (review 8: botocore's retries asked it twice).

The daemon runs with its production retry settings (DaemonConfig's ``launch_max_attempts``,
not the harness's); its EC2 calls go over HTTP through the fault proxy in front of the moto
server, whose request log counts every RunInstances that reached EC2. Expected counts by hand:
a pool that answers InsufficientInstanceCapacity (an EC2 *server* error, HTTP 500) is asked
once and the next pool is tried; a throttled or failed (5xx, not about capacity) RunInstances
is retried by botocore in the same pool, as before.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from test_daemon_scenarios import handled, one_replica

from provisioner.daemon.config import Alternative, DaemonConfig

ICE = "InsufficientInstanceCapacity"


def _pools(aws, ec2_proxy) -> list[tuple[str, str, str]]:
    """Every RunInstances the proxy saw, as (type, zone, market), in order."""
    by_subnet = {v: k for k, v in aws.subnets.items()}
    return [
        (
            p["InstanceType"],
            by_subnet.get(p.get("SubnetId", ""), p.get("Placement.AvailabilityZone", "?")),
            p.get("InstanceMarketOptions.MarketType", "on-demand"),
        )
        for p, _ in ec2_proxy.launches()
    ]


def test_the_production_setting_retries_at_all():
    """The tests below are about retries: they would prove nothing with one attempt."""
    assert DaemonConfig().launch_max_attempts >= 2


def test_each_exhausted_spot_pool_is_asked_once(aws, agent, ec2_proxy, make_daemon):
    (inst,) = one_replica(aws, agent)
    ec2_proxy.rules.append(
        lambda p: (
            (500, ICE)
            if p.get("Action") == "RunInstances"
            and p.get("InstanceMarketOptions.MarketType") == "spot"
            else None
        )
    )
    d = make_daemon(
        alternatives=(Alternative("p5en.48xlarge"),),
        launch_max_attempts=DaemonConfig().launch_max_attempts,  # production's, whatever FAST says
    )
    aws.spot_warning(inst["InstanceId"], seconds_left=8)
    [(_, out)] = handled(d)
    assert out.action == "replaced-and-drained"
    asked = Counter(_pools(aws, ec2_proxy))
    spot = {k: n for k, n in asked.items() if k[2] == "spot"}
    # 2 other zones of p5 + 3 zones of p5en on spot (p5 in its own zone was just reclaimed)
    assert len(spot) == 5
    assert spot == dict.fromkeys(spot, 1), spot  # once each: no retry of a capacity error
    assert asked[("p5.48xlarge", "us-east-1a", "on-demand")] == 1  # then on-demand, at once
    assert sum(asked.values()) == 6


def _fail_first(status: int, code: str):
    """A rule: the first RunInstances fails with ``code``, the rest reach moto."""
    lock, left = threading.Lock(), [1]

    def rule(p):
        if p.get("Action") != "RunInstances":
            return None
        with lock:
            if left[0]:
                left[0] -= 1
                return status, code
        return None

    return rule


@pytest.mark.parametrize(
    ("status", "code"),
    [(503, "RequestLimitExceeded"), (500, "InternalError")],  # throttling; a transient 5xx
)
def test_throttling_and_server_errors_still_get_botocores_retries(
    aws, agent, ec2_proxy, make_daemon, status, code
):
    """RequestLimitExceeded (503, botocore's throttling) and InternalError (500, a server error
    that is not about capacity): the same pool is asked again by botocore, and launches; no
    fallback."""
    (inst,) = one_replica(aws, agent)
    ec2_proxy.rules.append(_fail_first(status, code))
    d = make_daemon(launch_max_attempts=DaemonConfig().launch_max_attempts)
    aws.spot_warning(inst["InstanceId"], seconds_left=8)
    [(_, out)] = handled(d)
    assert out.action == "replaced-and-drained"
    pools = _pools(aws, ec2_proxy)
    assert len(pools) == 2 and pools[0] == pools[1], pools  # one pool, asked twice
    assert [c for _, c in ec2_proxy.launches()] == [code, None]
    assert len(aws.replacements_of("r1")) == 1
