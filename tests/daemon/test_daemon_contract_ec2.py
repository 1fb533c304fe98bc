"""The EC2 contract: the same assertions against ``fakes.ec2.FakeCapacity`` and
``ec2.Ec2Capacity`` over boto3 against a moto server (through the EC2 fault proxy, which
answers chosen calls with real EC2 error codes), so the fake the fast policy tests use cannot
drift from the adapter it stands for.

What moto cannot show is said where it matters: it ignores RunInstances' ClientToken, which EC2
honours (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html), so that
assertion runs on the fake only; and it decrements an Auto Scaling group again when an instance
that already left it is detached, where AWS answers ValidationError ("not part of the group",
which ``Ec2Capacity.detach`` takes as "already detached"), so the size after a second detach is
checked on the fake only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from provisioner import fleet
from provisioner.daemon.capacity import (
    Attempt,
    Capacity,
    CapacityError,
    CapacityUnavailable,
    InstanceInfo,
    Subnet,
)
from provisioner.daemon.config import DaemonConfig
from provisioner.daemon.ec2 import Ec2Capacity
from provisioner.daemon.fakes.ec2 import FakeCapacity

ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")


class FakeWorld:
    real = False

    def __init__(self) -> None:
        self.cap = FakeCapacity(ZONES)

    def add(self, replica: str, size: int = 1, **kw: Any) -> list[InstanceInfo]:
        asg = kw.pop("asg", None)
        return self.cap.add(replica, size, asg=asg, **kw)

    def refuse(self, instance_type: str, zone: str, market: str) -> None:
        self.cap.no_capacity.add((instance_type, zone, market))

    def fail_launches(self, code: str) -> None:
        self.cap.launch_error = code

    def group_size(self, asg: str) -> int:
        return self.cap.groups[asg]

    def subnet_of(self, zone: str) -> str:
        return self.cap.subnets[zone]

    def add_subnet(self, zone: str, other_vpc: bool = False) -> str:
        """One more subnet tagged managed, in the world's VPC or another one; its id sorts
        before the first ones' (subnet-00000001...), so it is the one a wrong rule would pick."""
        sid = f"subnet-00000000{len(self.cap.managed_subnets)}"
        vpc = "vpc-other" if other_vpc else self.cap.vpc_id
        self.cap.managed_subnets.append(Subnet(sid, zone, vpc))
        return sid


class RealWorld:
    real = True

    def __init__(self, aws: Any, proxy: Any, session: Any, moto_url: str) -> None:
        self.aws, self.proxy = aws, proxy
        endpoints = {"ec2": proxy.url, "autoscaling": moto_url}
        cfg = DaemonConfig()  # production retries: a capacity error is final at once
        self.cap = Ec2Capacity(cfg, session=session, endpoints=endpoints, cache_seconds=0)
        self.zone_of = {s: z for z, s in aws.subnets.items()}
        self.extra: list[str] = []

    def add(self, replica: str, size: int = 1, **kw: Any) -> list[InstanceInfo]:
        asg, tags = kw.pop("asg", None), kw.pop("tags", None)
        made = self.aws.launch_replica(replica, size=size, **kw)
        ids = [i["InstanceId"] for i in made]
        if tags:
            self.aws.ec2.create_tags(
                Resources=ids, Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
            )
        if asg:
            pool = kw.get("pool", "pool-a")
            self.aws.autoscaling.create_auto_scaling_group(
                AutoScalingGroupName=asg,
                LaunchTemplate={"LaunchTemplateId": self.aws.template, "Version": "$Latest"},
                MinSize=0,
                MaxSize=10,
                DesiredCapacity=0,
                VPCZoneIdentifier=",".join(self.aws.subnets.values()),
                Tags=[  # as the stack tags each replica's group
                    {
                        "ResourceId": asg,
                        "ResourceType": "auto-scaling-group",
                        "Key": k,
                        "Value": v,
                        "PropagateAtLaunch": True,
                    }
                    for k, v in fleet.replica_asg_tags(pool, replica).items()
                ],
            )
            self.aws.autoscaling.attach_instances(InstanceIds=ids, AutoScalingGroupName=asg)
        found = self.cap.describe(ids)
        return [found[i] for i in sorted(ids)]

    def refuse(self, instance_type: str, zone: str, market: str) -> None:
        def rule(p: dict[str, str]) -> tuple[int, str] | None:
            if p.get("Action") != "RunInstances" or p.get("InstanceType") != instance_type:
                return None
            where = self.zone_of.get(p.get("SubnetId", "")) or p.get("Placement.AvailabilityZone")
            spot = p.get("InstanceMarketOptions.MarketType") == "spot"
            if where == zone and spot == (market == "spot"):
                return 500, "InsufficientInstanceCapacity"
            return None

        self.proxy.rules.append(rule)

    def fail_launches(self, code: str) -> None:
        self.proxy.rules.append(
            lambda p: (403, code) if p.get("Action") == "RunInstances" else None
        )

    def group_size(self, asg: str) -> int:
        groups = self.aws.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[asg])
        return int(groups["AutoScalingGroups"][0]["DesiredCapacity"])

    def subnet_of(self, zone: str) -> str:
        return str(self.aws.subnets[zone])

    def add_subnet(self, zone: str, other_vpc: bool = False) -> str:
        ec2, vpc, cidr = self.aws.ec2, self.aws.vpc, f"10.0.{100 + len(self.extra)}.0/24"
        if other_vpc:
            vpc, cidr = ec2.create_vpc(CidrBlock="10.1.0.0/16")["Vpc"]["VpcId"], "10.1.1.0/24"
        sid = ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]
        ec2.create_tags(Resources=[sid["SubnetId"]], Tags=[{"Key": fleet.MANAGED, "Value": "true"}])
        self.extra.append(sid["SubnetId"])
        return str(sid["SubnetId"])


@pytest.fixture(params=["fake", "moto"])
def world(request: pytest.FixtureRequest) -> Any:
    if request.param == "fake":
        return FakeWorld()
    names = ("aws", "ec2_proxy", "boto_session", "moto_url")
    return RealWorld(*(request.getfixturevalue(n) for n in names))


def ids(insts: list[InstanceInfo]) -> list[str]:
    return sorted(i.id for i in insts)


def test_both_are_the_protocol(world):
    cap: Capacity = world.cap  # mypy checks the assignment in the adapters' modules
    assert callable(cap.launch)


def test_a_launched_replacement_is_tagged_and_found(world):
    (lead,) = world.add("r1", zone="us-east-1a", market="spot")
    subnets = world.cap.subnets_by_zone(lead)
    assert sorted(subnets) == list(ZONES) and subnets["us-east-1a"] == lead.subnet_id
    attempt = Attempt(lead.instance_type, "us-east-1b", "on-demand")
    group = world.cap.launch(lead, 2, "r-new", "r1", attempt, subnets["us-east-1b"])
    assert len(group) == 2
    for i in group:
        assert (i.zone, i.market, i.instance_type) == ("us-east-1b", "on-demand", "p5.48xlarge")
        assert i.tags[fleet.REPLACES] == "r1" and i.replica == "r-new"
        assert (i.replica_size, i.pool, i.managed) == (2, "pool-a", True)
        assert i.tags[fleet.MARKET] == "on-demand" and not i.spare
        assert i.launch_template is not None and lead.launch_template is not None
        assert i.launch_template[0] == lead.launch_template[0]  # the pool's template
    assert ids(world.cap.find_replacement("pool-a", "r1")) == ids(group)
    assert ids(world.cap.replica_members("pool-a", "r-new")) == ids(group)
    assert world.cap.find_replacement("pool-b", "r1") == []  # another pool's
    if not world.real:  # EC2 honours the client token; moto does not (module docstring)
        again = world.cap.launch(lead, 2, "r-new", "r1", attempt, subnets["us-east-1b"])
        assert ids(again) == ids(group)
        assert len(world.cap.find_replacement("pool-a", "r1")) == 2


def test_subnets_one_managed_per_zone_in_the_vpc_and_the_templates_own(world):
    """Both sides answer with capacity.pick_subnets_by_zone; expected by hand: the lowest id
    of a zone's managed subnets, none from another VPC, the template's own in its zone."""
    (lead,) = world.add("r1", zone="us-east-1a")
    b2 = world.add_subnet("us-east-1b")
    world.add_subnet("us-east-1c", other_vpc=True)
    a2 = world.add_subnet("us-east-1a")
    got = world.cap.subnets_by_zone(lead)
    assert got == {
        "us-east-1a": lead.subnet_id,  # its own, whatever the id of the other one
        "us-east-1b": min(world.subnet_of("us-east-1b"), b2),
        "us-east-1c": world.subnet_of("us-east-1c"),  # not the other VPC's
    }
    assert a2 != lead.subnet_id
    # a template in a subnet that is not tagged managed keeps it in its own zone
    own = replace(lead, zone="us-east-1c", subnet_id="subnet-0000unmanaged")
    assert world.cap.subnets_by_zone(own)["us-east-1c"] == "subnet-0000unmanaged"
    assert world.cap.subnets_by_zone(replace(lead, vpc_id=None)) == {}  # no VPC: none


def test_a_spare_is_launched_then_promoted(world):
    (lead,) = world.add("r1")
    attempt = Attempt(lead.instance_type, lead.zone, "spot")
    (spare,) = world.cap.launch(lead, 1, "s-1", "r1", attempt, lead.subnet_id, spare=True)
    assert spare.spare and fleet.REPLACES not in spare.tags
    assert world.cap.find_replacement("pool-a", "r1") == []
    world.cap.promote([spare], "r1")
    (found,) = world.cap.find_replacement("pool-a", "r1")
    assert found.id == spare.id and found.tags[fleet.SPARE] == fleet.SPARE_PROMOTED
    assert not found.spare


def test_capacity_errors_name_the_pool_other_errors_do_not(world):
    (lead,) = world.add("r1")
    world.refuse(lead.instance_type, "us-east-1a", "spot")
    spot = Attempt(lead.instance_type, "us-east-1a", "spot")
    with pytest.raises(CapacityUnavailable) as e:
        world.cap.launch(lead, 1, "r-x", "r1", spot, lead.subnet_id)
    assert e.value.code == "InsufficientInstanceCapacity"
    assert world.cap.find_replacement("pool-a", "r1") == []  # nothing half-launched
    od = Attempt(lead.instance_type, "us-east-1a", "on-demand")
    (got,) = world.cap.launch(lead, 1, "r-x", "r1", od, lead.subnet_id)
    assert got.market == "on-demand"
    world.fail_launches("UnauthorizedOperation")
    with pytest.raises(CapacityError):
        world.cap.launch(lead, 1, "r-y", "r1", od, lead.subnet_id)


def test_describe_skips_unknown_ids_and_terminated_leave_tag_queries(world):
    (a,) = world.add("r1")
    (b,) = world.add("r2")
    unknown = "i-0123456789abcdef0"
    assert world.cap.describe([unknown]) == {}
    assert sorted(world.cap.describe([a.id, unknown, b.id])) == sorted([a.id, b.id])
    world.cap.terminate([a])
    assert world.cap.describe([a.id])[a.id].state in ("shutting-down", "terminated")
    assert world.cap.replica_members("pool-a", "r1") == []
    assert [i.id for i in world.cap.managed_instances()] == [b.id]


def test_on_demand_replicas_count_serving_groups_only(world):
    world.add("r1", market="on-demand")
    world.add("r2", size=2, market="on-demand")  # one replica of two nodes
    world.add("r3", market="spot")
    world.add("s1", market="on-demand", tags={fleet.SPARE: fleet.SPARE_VALUE})
    world.add("r9", market="on-demand", pool="pool-b")
    assert world.cap.on_demand_replicas("pool-a", exclude_replica="r3") == 2
    assert world.cap.on_demand_replicas("pool-a", exclude_replica="r1") == 1


def test_detach_leaves_the_group_and_decrements_it_once(world):
    group = world.add("r1", size=2, asg="prov-r1")
    assert {i.asg for i in group} == {"prov-r1"}
    assert world.group_size("prov-r1") == 2
    world.cap.detach(group[:1])
    assert world.group_size("prov-r1") == 1
    assert world.cap.describe([group[0].id])[group[0].id].asg is None
    world.cap.terminate(world.cap.replica_members("pool-a", "r1"))  # members are detached first
    assert world.group_size("prov-r1") == 0
    world.cap.detach(group[:1])  # already detached (a resumed flow): not an error
    if not world.real:  # moto decrements again; AWS refuses (module docstring)
        assert world.group_size("prov-r1") == 0


def test_the_refilling_group_is_found_by_the_stacks_tags_while_it_wants_instances(world):
    """A late notice's question (docs/daemon.md): which group refills replica r1? The one
    tagged for r1 (fleet.replica_asg_tags) while its desired size is above 0; none once the
    daemon detached the group (desired 0), none for another replica or pool."""
    group = world.add("r1", size=2, asg="prov-r1")
    world.add("r2", asg="prov-r2")
    assert world.cap.refilling_group("pool-a", "r1") == "prov-r1"
    assert world.cap.refilling_group("pool-a", "r3") is None
    assert world.cap.refilling_group("pool-b", "r1") is None
    world.cap.detach(group)
    assert world.cap.refilling_group("pool-a", "r1") is None
    assert world.cap.refilling_group("pool-a", "r2") == "prov-r2"
