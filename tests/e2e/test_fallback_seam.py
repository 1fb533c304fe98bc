"""The fallback seam: the stack tags the pool's instance types and zones in the plan's price
order (fleet.INSTANCE_TYPES, fleet.ZONES); the daemon, with no --alternative, falls back in
that order. Both sides run here: the Pulumi program under mocks, its resources created in a
moto server (tests/e2e/materialise.py), and the daemon's EC2 adapter reading the instance the
stack's Auto Scaling group launched.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import KmockThread, moto_server
from materialise import materialise
from stack_harness import quote, run_stack

from provisioner import fleet
from provisioner.daemon.capacity import Blocklist, fallback_types, plan_attempts
from provisioner.daemon.config import DaemonConfig
from stacks.options import DeployOptions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:aws.ec2/encryptioncontrol:DeprecationWarning"),
]


SMALL = ["quote", "-m", "llama-3.1-8b", "--ctx", "32k", "--gpu", "L40S", "--market", "spot"]
SMALL += ["--cloud", "aws", "--region", "us-east-2", "--weights", "hub", "--json"]


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


def _offers() -> list[Any]:
    from pricing.offers import load_offers  # the packaged snapshot the quote ranked

    return list(load_offers())


def test_the_daemon_falls_back_in_the_stacks_price_order(tmp_path: Path, moto_url: str) -> None:
    import boto3

    from provisioner.daemon.ec2 import Ec2Capacity

    # a spot plan whose GPU comes in several instance types (L40S x 1: g6e.xlarge ... 16xlarge)
    plan = quote(tmp_path, "small_aws", SMALL)
    run = run_stack(plan, DeployOptions())
    region = run.one("pulumi:providers:aws", "aws").inputs["region"]
    root = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
    )
    km = KmockThread()
    try:
        mat = materialise(
            run, lambda n: root.client(n, endpoint_url=moto_url), moto_url, 30, km.url
        )
    finally:
        km.stop()
    ec2 = root.client("ec2", endpoint_url=moto_url)
    found = ec2.describe_instances(
        Filters=[{"Name": f"tag:{fleet.MANAGED}", "Values": [fleet.MANAGED_VALUE]}]
    )
    [iid] = [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]
    cap = Ec2Capacity(
        DaemonConfig(region=region),
        session=root,
        endpoints={"ec2": moto_url, "autoscaling": moto_url},
    )
    inst = cap.describe([iid])[iid]
    # the late-notice seam: the daemon finds the replica's group by the tags the stack wrote on
    # it (fleet.replica_asg_tags), not by AWS's tag on the instance
    assert cap.refilling_group(inst.pool, inst.replica) == mat.groups[0]
    assert cap.refilling_group(inst.pool, inst.replica + "-other") is None

    # the stack's side: what it tagged, and that the tag follows the plan's prices
    types = fleet.split_tag_list(inst.tags[fleet.INSTANCE_TYPES])
    zone_ids = fleet.split_tag_list(inst.tags[fleet.ZONES])
    best = plan.doc.plans[0]
    assert types[0] == best.instance_type and len(types) >= 2, types
    assert zone_ids[0] == best.zone and len(zone_ids) >= 2, zone_ids
    market = best.market
    priced = [o for o in _offers() if o.cloud == "aws" and o.region == region and o.price(market)]
    cheapest_type = {t: min(o.price(market) for o in priced if o.instance_type == t) for t in types}
    assert [cheapest_type[t] for t in types[1:]] == sorted(cheapest_type[t] for t in types[1:])
    own_type = [o for o in priced if o.instance_type == types[0]]
    in_zone = [min(o.price(market) for o in own_type if o.zone == z) for z in zone_ids[1:]]
    assert in_zone == sorted(in_zone), (zone_ids, in_zone)  # the other zones, cheapest first

    # the daemon's side: no --alternative; the attempts follow the tags
    zones = cap.subnets_by_zone(inst)
    subnet_zone_id = {
        s["AvailabilityZone"]: s["AvailabilityZoneId"]
        for s in ec2.describe_subnets(SubnetIds=list(zones.values()))["Subnets"]
    }
    attempts = plan_attempts(
        inst.instance_type, inst.zone, list(zones), fallback_types(inst, ()), Blocklist(), False
    )
    on_spot = [a for a in attempts if a.market == "spot"]
    assert list(dict.fromkeys(a.instance_type for a in on_spot)) == [inst.instance_type] + [
        t for t in types if t != inst.instance_type
    ]
    own_type_zones = [subnet_zone_id[a.zone] for a in on_spot if a.instance_type == types[0]]
    tagged = [z for z in zone_ids if z in subnet_zone_id.values()]
    own = subnet_zone_id[inst.zone]
    assert own_type_zones == [own] + [z for z in tagged if z != own]
