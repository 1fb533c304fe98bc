"""Replacement capacity: the policy (fallback across zones, types and markets) and the Protocol.

``Capacity`` is the small Protocol the handler uses; ``ec2.Ec2Capacity`` implements it with
boto3. ``launch_replacement`` holds the policy: same instance type in the other zones, then
the configured alternatives, all on spot, then the same list on-demand; a (type, zone, market)
that was reclaimed or said "no capacity" is blocked for ``block_seconds``. A replica of N nodes
is launched as one request of N instances in one zone (all or nothing), so a TP x PP group
never straddles zones.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from provisioner import fleet
from provisioner.daemon.config import Alternative, DaemonConfig
from provisioner.errors import OperationalError

log = logging.getLogger("prov.daemon.capacity")

Market = Literal["spot", "on-demand"]

# EC2 error codes that mean "no capacity here right now": try the next pool.
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "UnfulfillableCapacity",
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
        "InstanceLimitExceeded",
        "VcpuLimitExceeded",
        "Unsupported",
    }
)
LIVE_STATES = ("pending", "running", "stopping", "stopped")


class CapacityError(OperationalError):
    """The EC2 API failed in a way that trying another pool will not fix."""


class CapacityUnavailable(OperationalError):
    """One pool refused for capacity (the EC2 error code); the policy tries the next pool."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code


class NoCapacity(OperationalError):
    """Every pool, spot and on-demand, refused the replacement."""

    def __init__(self, tried: list[tuple[Attempt, str]]) -> None:
        super().__init__(
            "no capacity for the replacement; tried "
            + ", ".join(f"{a.label} ({code})" for a, code in tried)
        )
        self.tried = tried


@dataclass(frozen=True)
class InstanceInfo:
    id: str
    state: str
    instance_type: str
    zone: str
    subnet_id: str | None = None
    vpc_id: str | None = None
    private_dns: str | None = None
    market: Market = "on-demand"
    tags: dict[str, str] = field(default_factory=dict)
    image_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    key_name: str | None = None
    iam_profile_arn: str | None = None
    launch_time: datetime | None = None  # EC2's LaunchTime (timezone-aware)

    @property
    def managed(self) -> bool:
        return self.tags.get(fleet.MANAGED, "").lower() == fleet.MANAGED_VALUE

    @property
    def pool(self) -> str:
        return self.tags.get(fleet.POOL, "default")

    @property
    def replica(self) -> str:
        return self.tags.get(fleet.REPLICA) or self.id

    @property
    def spare(self) -> bool:
        """A warm spare waiting out of traffic (not a promoted one)."""
        return self.tags.get(fleet.SPARE) == fleet.SPARE_VALUE

    @property
    def replica_size(self) -> int:
        try:
            return max(1, int(self.tags.get(fleet.REPLICA_SIZE, "1")))
        except ValueError:
            return 1

    @property
    def asg(self) -> str | None:
        return self.tags.get(fleet.AWS_ASG_NAME)

    @property
    def launch_template(self) -> tuple[str, str] | None:
        lt = self.tags.get(fleet.AWS_LAUNCH_TEMPLATE_ID)
        return (lt, self.tags.get(fleet.AWS_LAUNCH_TEMPLATE_VERSION, "$Default")) if lt else None

    @classmethod
    def from_api(cls, i: dict[str, Any]) -> InstanceInfo:
        profile = i.get("IamInstanceProfile") or {}
        return cls(
            id=i["InstanceId"],
            state=i.get("State", {}).get("Name", "unknown"),
            instance_type=i.get("InstanceType", ""),
            zone=i.get("Placement", {}).get("AvailabilityZone", ""),
            subnet_id=i.get("SubnetId"),
            vpc_id=i.get("VpcId"),
            private_dns=i.get("PrivateDnsName") or None,
            market="spot" if i.get("InstanceLifecycle") == "spot" else "on-demand",
            tags={t["Key"]: t["Value"] for t in i.get("Tags", [])},
            image_id=i.get("ImageId"),
            security_group_ids=tuple(g["GroupId"] for g in i.get("SecurityGroups", [])),
            key_name=i.get("KeyName"),
            iam_profile_arn=profile.get("Arn"),
            launch_time=launched if isinstance(launched := i.get("LaunchTime"), datetime) else None,
        )


@dataclass(frozen=True)
class Attempt:
    instance_type: str
    zone: str
    market: Market

    @property
    def label(self) -> str:
        return f"{self.instance_type}@{self.zone}/{self.market}"


@dataclass
class Launched:
    instances: list[InstanceInfo]
    attempt: Attempt
    tried: list[tuple[Attempt, str]]


_Pool = tuple[str, str, str]  # (instance type, zone, market)


class Blocklist:
    """(type, zone, market) pools to avoid until a time (reclaimed or out of capacity), and
    pools at risk (a rebalance recommendation), tried last of their market."""

    def __init__(self, mono: Callable[[], float] = time.monotonic) -> None:
        self._mono = mono
        self._until: dict[_Pool, float] = {}
        self._risky: dict[_Pool, float] = {}
        self._lock = threading.Lock()

    def block(self, instance_type: str, zone: str, market: str, seconds: float) -> None:
        self._extend(self._until, (instance_type, zone, market), seconds)

    def blocked(self, instance_type: str, zone: str, market: str) -> bool:
        return self._live(self._until, (instance_type, zone, market))

    def flag(self, instance_type: str, zone: str, market: str, seconds: float) -> None:
        """At risk, not out: tried after every other pool of its market (a rebalance
        recommendation is advice; a single-zone pool may have no other)."""
        self._extend(self._risky, (instance_type, zone, market), seconds)

    def at_risk(self, instance_type: str, zone: str, market: str) -> bool:
        return self._live(self._risky, (instance_type, zone, market))

    def _extend(self, table: dict[_Pool, float], key: _Pool, seconds: float) -> None:
        """Mark `key` in `table` until now + seconds (a later mark never shortens one)."""
        with self._lock:
            table[key] = max(table.get(key, 0.0), self._mono() + seconds)

    def _live(self, table: dict[_Pool, float], key: _Pool) -> bool:
        with self._lock:
            return table.get(key, 0.0) > self._mono()

    def snapshot(self) -> Blocklist:
        """A copy (for --dry-run: what the real run would avoid, without changing this one)."""
        out = Blocklist(self._mono)
        with self._lock:
            out._until, out._risky = dict(self._until), dict(self._risky)
        return out

    def active(self) -> list[tuple[str, str, str]]:
        now = self._mono()
        with self._lock:
            return sorted(k for k, t in self._until.items() if t > now)


def replacement_id(pool: str, replica: str) -> str:
    """Deterministic: a replica is replaced once, so a resumed daemon finds the same id."""
    return "r-" + hashlib.sha256(f"{pool}/{replica}".encode()).hexdigest()[:10]


def plan_attempts(
    instance_type: str,
    zone: str,
    zones: Sequence[str],
    alternatives: Iterable[Alternative],
    blocks: Blocklist,
    on_demand_only: bool,
) -> list[Attempt]:
    """Ordered launch attempts: the same type in its zone then the other zones (in the order
    given: ``pick_subnets_by_zone``'s), then each alternative (pinned zone, or every zone with
    its own first), on spot unless blocked (at-risk pools last of their market); then the same
    pools on-demand."""
    order = [zone, *(z for z in zones if z != zone)]
    pools: list[tuple[str, str]] = [(instance_type, z) for z in order]
    for alt in alternatives:
        for z in [alt.zone] if alt.zone else order:
            if z in order:
                pools.append((alt.instance_type, z))
    pools = list(dict.fromkeys(pools))
    out: list[Attempt] = []
    markets: tuple[Market, ...] = ("on-demand",) if on_demand_only else ("spot", "on-demand")
    for market in markets:
        open_ = [(t, z) for t, z in pools if not blocks.blocked(t, z, market)]
        open_.sort(key=lambda p: blocks.at_risk(p[0], p[1], market))  # stable: at-risk last
        out += [Attempt(t, z, market) for t, z in open_]
    return out


def group_tags(
    template: InstanceInfo, count: int, new_replica: str, replaces: str, market: str, spare: bool
) -> dict[str, str]:
    """The tags of a launched group: the template's own (not AWS's, not what the template's
    group was), then what the new group is (its replica, size, market; the replacement of
    ``replaces``, or a warm spare)."""
    own = (fleet.REPLACES, fleet.SPARE)
    tags = {k: v for k, v in template.tags.items() if not k.startswith("aws:") and k not in own}
    tags.update(
        {
            fleet.MANAGED: fleet.MANAGED_VALUE,
            fleet.POOL: template.pool,
            fleet.REPLICA: new_replica,
            fleet.REPLICA_SIZE: str(count),
            fleet.MARKET: market,
        }
    )
    if spare:
        tags[fleet.SPARE] = fleet.SPARE_VALUE
    else:
        tags[fleet.REPLACES] = replaces
    return tags


def count_on_demand(live: Iterable[InstanceInfo], exclude_replica: str) -> int:
    """Serving on-demand replicas among a pool's live instances, but ``exclude_replica``."""
    return len(
        {
            i.replica
            for i in live
            if i.market == "on-demand"
            and not i.spare  # a spare serves nobody until it is promoted
            and i.replica != exclude_replica
            and i.state in ("pending", "running")
        }
    )


def fallback_types(
    lead: InstanceInfo, configured: tuple[Alternative, ...]
) -> tuple[Alternative, ...]:
    """The other instance types a replacement may use, in order: ``--alternative`` when given,
    else the pool's own list (the stack's ``prov.dev/instance-types`` tag, the plan's prices'
    order) without the lead's type."""
    if configured:
        return configured
    types = fleet.split_tag_list(lead.tags.get(fleet.INSTANCE_TYPES))
    return tuple(Alternative(t) for t in types if t != lead.instance_type)


@dataclass(frozen=True)
class Subnet:
    id: str
    zone: str
    vpc_id: str
    zone_id: str | None = None  # EC2's AvailabilityZoneId (the same zone in every account)


def pick_subnets_by_zone(template: InstanceInfo, managed: Iterable[Subnet]) -> dict[str, str]:
    """Where a group like ``template`` may launch, one subnet per zone: of the managed subnets
    (tagged prov.dev/managed=true), those in the template's VPC, the lowest id in each zone (a
    stable choice), except in the template's own zone, where its own subnet. A template with no
    VPC gets none. ``ec2.Ec2Capacity`` and ``fakes.ec2.FakeCapacity`` both answer with this.

    In preference order: the zones of the pool's ``prov.dev/zones`` tag (ids or names) in the
    tag's order (the plan's prices'), then the others by name."""
    if not template.vpc_id:
        return {}
    out: dict[str, str] = {}
    ids: dict[str, str] = {}
    for s in sorted((s for s in managed if s.vpc_id == template.vpc_id), key=lambda s: s.id):
        out.setdefault(s.zone, s.id)
        if s.zone_id:
            ids.setdefault(s.zone, s.zone_id)
    if template.subnet_id and template.zone:
        out[template.zone] = template.subnet_id
    rank = {z: k for k, z in enumerate(fleet.split_tag_list(template.tags.get(fleet.ZONES)))}
    last = len(rank)

    def preference(zone: str) -> tuple[int, str]:
        return (min(rank.get(ids.get(zone, ""), last), rank.get(zone, last)), zone)

    return {z: out[z] for z in sorted(out, key=preference)}


class Capacity(Protocol):
    """What the policy asks of EC2 (ec2.Ec2Capacity; fakes.ec2.FakeCapacity in fast tests)."""

    def describe(self, ids: Sequence[str]) -> dict[str, InstanceInfo]: ...

    def prefetch(self, ids: Sequence[str]) -> None: ...

    def replica_members(self, pool: str, replica: str) -> list[InstanceInfo]: ...

    def find_replacement(self, pool: str, replaces: str) -> list[InstanceInfo]: ...

    def on_demand_replicas(self, pool: str, exclude_replica: str) -> int: ...

    def managed_instances(self) -> list[InstanceInfo]: ...

    def promote(self, instances: Sequence[InstanceInfo], replaces: str) -> None: ...

    def subnets_by_zone(self, template: InstanceInfo) -> dict[str, str]: ...

    def launch(
        self,
        template: InstanceInfo,
        count: int,
        new_replica: str,
        replaces: str,
        attempt: Attempt,
        subnet_id: str | None,
        spare: bool = False,
    ) -> list[InstanceInfo]: ...

    def terminate(self, instances: Sequence[InstanceInfo]) -> None: ...

    def detach(self, instances: Sequence[InstanceInfo]) -> None: ...

    def complete_lifecycle(self, group: str, hook: str, token: str, instance_id: str) -> None: ...

    def refilling_group(self, pool: str, replica: str) -> str | None: ...


def launch_replacement(
    cap: Capacity,
    blocks: Blocklist,
    count: int,
    lead: InstanceInfo,
    new_replica: str,
    cfg: DaemonConfig,
    on_demand_only: bool,
    spare: bool = False,
) -> Launched:
    """Launch a whole replacement (or spare) group, falling back across pools; raises
    NoCapacity."""
    subnets = cap.subnets_by_zone(lead)
    if lead.zone not in subnets:
        subnets[lead.zone] = lead.subnet_id or ""
    alternatives = fallback_types(lead, cfg.alternatives)
    attempts = plan_attempts(
        lead.instance_type, lead.zone, list(subnets), alternatives, blocks, on_demand_only
    )
    tried: list[tuple[Attempt, str]] = []
    for a in attempts:
        try:
            insts = cap.launch(
                lead, count, new_replica, lead.replica, a, subnets[a.zone] or None, spare=spare
            )
        except CapacityUnavailable as e:
            log.warning(
                "no capacity in pool, trying the next",
                extra={"pool_tried": a.label, "code": e.code, "replica": lead.replica},
            )
            blocks.block(a.instance_type, a.zone, a.market, cfg.block_seconds)
            tried.append((a, e.code))
            continue
        return Launched(insts, a, tried)
    raise NoCapacity(tried)
