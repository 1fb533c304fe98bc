"""FakeCapacity: EC2 and Auto Scaling in memory, behind ``capacity.Capacity``.

Like EC2 (and ``ec2.Ec2Capacity`` over it): instances keep their tags; a terminated instance is
still described but matches no tag query (those ask for live states); ``launch`` is idempotent
on RunInstances' client token (the same group in the same pool answers the same instances) and
tags the group like EC2 does (``capacity.group_tags`` plus the launch template's ``aws:`` tags);
a pool in ``no_capacity`` answers InsufficientInstanceCapacity (CapacityUnavailable, the next
pool is tried) and ``launch_error`` any other EC2 code (CapacityError); detaching removes the
instance from its group (and its ``aws:autoscaling:groupName`` tag) and decrements the group's
desired size; detaching twice is not an error; a group ``add`` made carries the stack's
tags (``fleet.replica_asg_tags``) and refills while its desired size is above 0. ``calls``
names every call, in order.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from provisioner import fleet
from provisioner.daemon.capacity import (
    LIVE_STATES,
    Attempt,
    Capacity,
    CapacityError,
    CapacityUnavailable,
    InstanceInfo,
    Subnet,
    count_on_demand,
    group_tags,
    pick_subnets_by_zone,
)
from provisioner.daemon.ec2 import client_token

ZONES = ("us-east-1a", "us-east-1b", "us-east-1c")


class FakeCapacity:
    def __init__(self, zones: Sequence[str] = ZONES, vpc_id: str = "vpc-fake") -> None:
        self.vpc_id = vpc_id
        # zone -> the subnet ``add`` places instances in
        self.subnets = {z: f"subnet-{k:08x}" for k, z in enumerate(zones, 1)}
        # the subnets tagged managed, as describe_subnets lists them (a test may add more)
        self.managed_subnets = [Subnet(sid, z, vpc_id) for z, sid in self.subnets.items()]
        self.instances: dict[str, InstanceInfo] = {}
        self.groups: dict[str, int] = {}  # Auto Scaling group -> desired size
        self.group_tags: dict[str, dict[str, str]] = {}  # Auto Scaling group -> its tags
        self.no_capacity: set[tuple[str, str, str]] = set()  # (type, zone, market)
        self.launch_error: str | None = None  # e.g. "UnauthorizedOperation"
        self.completed: list[tuple[str, str, str, str]] = []  # lifecycle actions CONTINUEd
        self.calls: list[str] = []
        self._tokens: dict[str, list[str]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # -- the world, as a test sets it up -----------------------------------------------------

    def add(
        self,
        replica: str,
        size: int = 1,
        pool: str = "pool-a",
        instance_type: str = "p5.48xlarge",
        zone: str = "us-east-1a",
        market: str = "spot",
        asg: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> list[InstanceInfo]:
        """A running replica group launched from the pool's template (and in ``asg``)."""
        base = {
            fleet.MANAGED: fleet.MANAGED_VALUE,
            fleet.POOL: pool,
            fleet.REPLICA: replica,
            fleet.REPLICA_SIZE: str(size),
            fleet.AWS_LAUNCH_TEMPLATE_ID: "lt-fake",
            fleet.AWS_LAUNCH_TEMPLATE_VERSION: "1",
            **(tags or {}),
        }
        if asg:
            base[fleet.AWS_ASG_NAME] = asg
            self.groups[asg] = self.groups.get(asg, 0) + size
            self.group_tags[asg] = fleet.replica_asg_tags(pool, replica)
        return self._run(instance_type, zone, market, size, base)

    def set_state(self, instance_id: str, state: str) -> None:
        with self._lock:
            self.instances[instance_id] = replace(self.instances[instance_id], state=state)

    def _run(
        self, instance_type: str, zone: str, market: str, count: int, tags: dict[str, str]
    ) -> list[InstanceInfo]:
        out = []
        with self._lock:
            for _ in range(count):
                n = next(self._ids)
                inst = InstanceInfo(
                    id=f"i-{n:017x}",
                    state="running",
                    instance_type=instance_type,
                    zone=zone,
                    subnet_id=self.subnets.get(zone),
                    vpc_id=self.vpc_id,
                    private_dns=f"ip-10-0-{n // 250}-{n % 250}.ec2.internal",
                    market="spot" if market == "spot" else "on-demand",
                    tags=dict(tags),
                    image_id="ami-fake",
                )
                self.instances[inst.id] = inst
                out.append(inst)
        return out

    # -- capacity.Capacity --------------------------------------------------------------------

    def _live(self, pool: str, **tag_values: str) -> list[InstanceInfo]:
        with self._lock:
            return [
                i
                for i in self.instances.values()
                if i.state in LIVE_STATES
                and i.tags.get(fleet.POOL) == pool
                and all(i.tags.get(k) == v for k, v in tag_values.items())
            ]

    def describe(self, ids: Sequence[str]) -> dict[str, InstanceInfo]:
        self.calls.append("describe")
        with self._lock:
            return {i: self.instances[i] for i in ids if i in self.instances}

    def prefetch(self, ids: Sequence[str]) -> None:
        self.calls.append("prefetch")

    def replica_members(self, pool: str, replica: str) -> list[InstanceInfo]:
        self.calls.append("replica_members")
        return self._live(pool, **{fleet.REPLICA: replica})

    def find_replacement(self, pool: str, replaces: str) -> list[InstanceInfo]:
        self.calls.append("find_replacement")
        return self._live(pool, **{fleet.REPLACES: replaces})

    def on_demand_replicas(self, pool: str, exclude_replica: str) -> int:
        self.calls.append("on_demand_replicas")
        return count_on_demand(self._live(pool, **{fleet.MANAGED: "true"}), exclude_replica)

    def managed_instances(self) -> list[InstanceInfo]:
        self.calls.append("managed_instances")
        with self._lock:
            return [i for i in self.instances.values() if i.state in LIVE_STATES and i.managed]

    def promote(self, instances: Sequence[InstanceInfo], replaces: str) -> None:
        self.calls.append("promote")
        with self._lock:
            for i in instances:
                cur = self.instances[i.id]
                tags = {**cur.tags, fleet.REPLACES: replaces, fleet.SPARE: fleet.SPARE_PROMOTED}
                self.instances[i.id] = replace(cur, tags=tags)

    def subnets_by_zone(self, template: InstanceInfo) -> dict[str, str]:
        self.calls.append("subnets_by_zone")
        return pick_subnets_by_zone(template, self.managed_subnets)

    def launch(
        self,
        template: InstanceInfo,
        count: int,
        new_replica: str,
        replaces: str,
        attempt: Attempt,
        subnet_id: str | None,
        spare: bool = False,
    ) -> list[InstanceInfo]:
        self.calls.append(f"launch {attempt.label}")
        if (attempt.instance_type, attempt.zone, attempt.market) in self.no_capacity:
            raise CapacityUnavailable(
                "InsufficientInstanceCapacity", f"no {attempt.instance_type} in {attempt.zone}"
            )
        if self.launch_error:
            raise CapacityError(f"RunInstances failed for {attempt.label}: {self.launch_error}")
        token = client_token(new_replica, attempt)
        with self._lock:
            if token in self._tokens:  # EC2: the same client token, the same instances
                return [self.instances[i] for i in self._tokens[token]]
            tags = group_tags(template, count, new_replica, replaces, attempt.market, spare)
            lt = template.launch_template
            if lt:
                tags[fleet.AWS_LAUNCH_TEMPLATE_ID] = lt[0]
                tags[fleet.AWS_LAUNCH_TEMPLATE_VERSION] = "1"
            zone = next((s.zone for s in self.managed_subnets if s.id == subnet_id), attempt.zone)
            out = self._run(attempt.instance_type, zone, attempt.market, count, tags)
            out = [replace(i, state="pending") for i in out]
            for i in out:
                self.instances[i.id] = i
            self._tokens[token] = [i.id for i in out]
        return out

    def terminate(self, instances: Sequence[InstanceInfo]) -> None:
        self.calls.append("terminate")
        self.detach([i for i in instances if i.asg])
        with self._lock:
            for i in instances:
                if i.id in self.instances:
                    self.instances[i.id] = replace(self.instances[i.id], state="terminated")

    def detach(self, instances: Sequence[InstanceInfo]) -> None:
        self.calls.append("detach")
        with self._lock:
            for i in instances:
                cur = self.instances.get(i.id)
                group = cur.asg if cur else None
                if cur is None or group is None:  # already detached: not an error
                    continue
                tags = {k: v for k, v in cur.tags.items() if k != fleet.AWS_ASG_NAME}
                self.instances[i.id] = replace(cur, tags=tags)
                self.groups[group] = max(0, self.groups.get(group, 0) - 1)

    def refilling_group(self, pool: str, replica: str) -> str | None:
        self.calls.append("refilling_group")
        want = fleet.replica_asg_tags(pool, replica)
        with self._lock:
            for group, tags in sorted(self.group_tags.items()):
                if self.groups.get(group, 0) > 0 and all(tags.get(k) == v for k, v in want.items()):
                    return group
        return None

    def complete_lifecycle(self, group: str, hook: str, token: str, instance_id: str) -> None:
        self.calls.append("complete_lifecycle")
        self.completed.append((group, hook, token, instance_id))


if TYPE_CHECKING:  # mypy holds the fake to the Protocol the policy uses
    _is_capacity: Capacity = FakeCapacity()
