"""Replacement capacity: the EC2 adapter and the fallback across zones, types and markets.

``Capacity`` is the small Protocol the handler uses; ``Ec2Capacity`` implements it with boto3
(imported lazily, botocore's standard retry mode handles throttling). ``launch_replacement``
holds the policy: same instance type in the other zones, then the configured alternatives, all
on spot, then the same list on-demand; a (type, zone, market) that was reclaimed or said
"no capacity" is blocked for ``block_seconds``. A replica of N nodes is launched as one request
of N instances in one zone (all or nothing), so a TP x PP group never straddles zones.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
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


class CapacityUnavailable(Exception):
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


class Blocklist:
    """(type, zone, market) pools to avoid until a time: reclaimed or out of capacity."""

    def __init__(self, mono: Callable[[], float] = time.monotonic) -> None:
        self._mono = mono
        self._until: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    def block(self, instance_type: str, zone: str, market: str, seconds: float) -> None:
        with self._lock:
            key = (instance_type, zone, market)
            self._until[key] = max(self._until.get(key, 0.0), self._mono() + seconds)

    def blocked(self, instance_type: str, zone: str, market: str) -> bool:
        with self._lock:
            return self._until.get((instance_type, zone, market), 0.0) > self._mono()

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
    """Ordered launch attempts: the same type in its zone then the other zones, then each
    alternative (pinned zone, or every zone with its own first), on spot unless blocked;
    then the same pools on-demand."""
    order = [zone, *sorted(z for z in zones if z != zone)]
    pools: list[tuple[str, str]] = [(instance_type, z) for z in order]
    for alt in alternatives:
        for z in [alt.zone] if alt.zone else order:
            if z in order:
                pools.append((alt.instance_type, z))
    pools = list(dict.fromkeys(pools))
    out: list[Attempt] = []
    markets: tuple[Market, ...] = ("on-demand",) if on_demand_only else ("spot", "on-demand")
    for market in markets:
        out += [Attempt(t, z, market) for t, z in pools if not blocks.blocked(t, z, market)]
    return out


class Capacity(Protocol):
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
    attempts = plan_attempts(
        lead.instance_type, lead.zone, list(subnets), cfg.alternatives, blocks, on_demand_only
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


# ---------------------------------------------------------------------------------------------
# The boto3 adapter
# ---------------------------------------------------------------------------------------------


def _client_error_code(e: Exception) -> str | None:
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):
        return str(resp.get("Error", {}).get("Code", "")) or None
    return None


class Ec2Capacity:
    """Capacity over boto3 EC2 (+ autoscaling for ASG members). Caches describes briefly."""

    def __init__(
        self,
        cfg: DaemonConfig,
        ec2: Any = None,
        launch_ec2: Any = None,
        autoscaling: Any = None,
        cache_seconds: float = 2.0,
        session: Any = None,
        endpoints: dict[str, str] | None = None,
    ) -> None:
        import boto3
        from botocore.config import Config

        session = session or boto3.session.Session(region_name=cfg.region)
        base = {"connect_timeout": cfg.http_timeout_seconds, "read_timeout": 30}
        std = Config(retries={"mode": "standard", "total_max_attempts": 5}, **base)
        quick = Config(
            retries={"mode": "standard", "total_max_attempts": cfg.launch_max_attempts}, **base
        )
        ep = endpoints or {}
        self.ec2 = ec2 or session.client("ec2", endpoint_url=ep.get("ec2"), config=std)
        # Capacity errors are 5xx that botocore would retry with backoff while the notice runs
        # out: the launch client gives up fast and the fallback tries the next pool instead.
        self.launch_ec2 = launch_ec2 or session.client(
            "ec2", endpoint_url=ep.get("ec2"), config=quick
        )
        self.autoscaling = autoscaling or session.client(
            "autoscaling", endpoint_url=ep.get("autoscaling"), config=std
        )
        self._cache: dict[str, tuple[float, InstanceInfo]] = {}
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()

    def _query(self, **kw: Any) -> list[InstanceInfo]:
        out: list[InstanceInfo] = []
        paginator = self.ec2.get_paginator("describe_instances")
        for page in paginator.paginate(**kw):
            for res in page.get("Reservations", []):
                out += [InstanceInfo.from_api(i) for i in res.get("Instances", [])]
        now = time.monotonic()
        with self._lock:
            for i in out:
                self._cache[i.id] = (now, i)
        return out

    def prefetch(self, ids: Sequence[str]) -> None:
        ids = [i for i in dict.fromkeys(ids)]
        if ids:
            self._describe_uncached(ids)

    def _describe_uncached(self, ids: Sequence[str]) -> dict[str, InstanceInfo]:
        try:
            found = self._query(InstanceIds=list(ids))
        except Exception as e:
            if _client_error_code(e) != "InvalidInstanceID.NotFound":
                raise
            if len(ids) == 1:
                return {}
            # one unknown id fails the whole call: ask one by one
            found = [i for one in ids for i in self._describe_uncached([one]).values()]
        return {i.id: i for i in found}

    def describe(self, ids: Sequence[str]) -> dict[str, InstanceInfo]:
        now = time.monotonic()
        out: dict[str, InstanceInfo] = {}
        missing = []
        with self._lock:
            for i in ids:
                hit = self._cache.get(i)
                if hit and now - hit[0] < self._cache_seconds:
                    out[i] = hit[1]
                else:
                    missing.append(i)
        if missing:
            out.update(self._describe_uncached(missing))
        return out

    def _by_tags(self, pool: str, **tag_values: str) -> list[InstanceInfo]:
        filters = [
            {"Name": f"tag:{fleet.POOL}", "Values": [pool]},
            {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
        ] + [{"Name": f"tag:{k}", "Values": [v]} for k, v in tag_values.items()]
        found = self._query(Filters=filters)
        return [i for i in found if i.pool == pool]

    def replica_members(self, pool: str, replica: str) -> list[InstanceInfo]:
        return self._by_tags(pool, **{fleet.REPLICA: replica})

    def find_replacement(self, pool: str, replaces: str) -> list[InstanceInfo]:
        return self._by_tags(pool, **{fleet.REPLACES: replaces})

    def on_demand_replicas(self, pool: str, exclude_replica: str) -> int:
        live = self._by_tags(pool, **{fleet.MANAGED: fleet.MANAGED_VALUE})
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

    def managed_instances(self) -> list[InstanceInfo]:
        """Every live instance tagged prov.dev/managed=true, all pools (one paginated call)."""
        return self._query(
            Filters=[
                {"Name": f"tag:{fleet.MANAGED}", "Values": [fleet.MANAGED_VALUE]},
                {"Name": "instance-state-name", "Values": list(LIVE_STATES)},
            ]
        )

    def promote(self, instances: Sequence[InstanceInfo], replaces: str) -> None:
        """Turn a spare group into the replacement of ``replaces``: one CreateTags call."""
        ids = [i.id for i in instances]
        self.ec2.create_tags(
            Resources=ids,
            Tags=[
                {"Key": fleet.REPLACES, "Value": replaces},
                {"Key": fleet.SPARE, "Value": fleet.SPARE_PROMOTED},
            ],
        )
        with self._lock:
            for i in ids:
                self._cache.pop(i, None)

    def subnets_by_zone(self, template: InstanceInfo) -> dict[str, str]:
        """Subnets tagged prov.dev/managed=true in the instance's VPC, one per zone."""
        if not template.vpc_id:
            return {}
        resp = self.ec2.describe_subnets(
            Filters=[
                {"Name": "vpc-id", "Values": [template.vpc_id]},
                {"Name": f"tag:{fleet.MANAGED}", "Values": [fleet.MANAGED_VALUE]},
            ]
        )
        out: dict[str, str] = {}
        for s in sorted(resp.get("Subnets", []), key=lambda s: s["SubnetId"]):
            out.setdefault(s["AvailabilityZone"], s["SubnetId"])
        if template.subnet_id and template.zone:
            out[template.zone] = template.subnet_id
        return out

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
        """Launch ``count`` instances like ``template``: the replacement of ``replaces``, or
        (``spare``) a warm spare of the template's pool."""
        own = (fleet.REPLACES, fleet.SPARE)  # what the new group is, not what the template was
        keep = {k: v for k, v in template.tags.items() if not k.startswith("aws:") and k not in own}
        keep.update(
            {
                fleet.MANAGED: fleet.MANAGED_VALUE,
                fleet.POOL: template.pool,
                fleet.REPLICA: new_replica,
                fleet.REPLICA_SIZE: str(count),
                fleet.MARKET: attempt.market,
            }
        )
        if spare:
            keep[fleet.SPARE] = fleet.SPARE_VALUE
        else:
            keep[fleet.REPLACES] = replaces
        kw: dict[str, Any] = {
            "MinCount": count,
            "MaxCount": count,
            "InstanceType": attempt.instance_type,
            "ClientToken": f"{new_replica}-{attempt.label}"[:64],
            "TagSpecifications": [
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in keep.items()],
                }
            ],
        }
        if subnet_id:
            kw["SubnetId"] = subnet_id
        else:
            kw["Placement"] = {"AvailabilityZone": attempt.zone}
        lt = template.launch_template
        if lt:
            kw["LaunchTemplate"] = {"LaunchTemplateId": lt[0], "Version": lt[1]}
        else:
            kw["ImageId"] = template.image_id
            if template.security_group_ids:
                kw["SecurityGroupIds"] = list(template.security_group_ids)
            if template.key_name:
                kw["KeyName"] = template.key_name
            if template.iam_profile_arn:
                kw["IamInstanceProfile"] = {"Arn": template.iam_profile_arn}
        if attempt.market == "spot":
            kw["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {
                    "SpotInstanceType": "one-time",
                    "InstanceInterruptionBehavior": "terminate",
                },
            }
        try:
            resp = self.launch_ec2.run_instances(**kw)
        except Exception as e:
            code = _client_error_code(e)
            if code in CAPACITY_CODES:
                raise CapacityUnavailable(code or "", str(e)) from e
            raise CapacityError(f"RunInstances failed for {attempt.label}: {e}") from e
        return [InstanceInfo.from_api(i) for i in resp.get("Instances", [])]

    def terminate(self, instances: Sequence[InstanceInfo]) -> None:
        """Terminate; members of an ASG are detached first (decrementing its desired size),
        so the group does not launch another in their place."""
        self.detach([i for i in instances if i.asg])
        ids = [i.id for i in instances]
        if ids:
            self.ec2.terminate_instances(InstanceIds=ids)

    def detach(self, instances: Sequence[InstanceInfo]) -> None:
        """Take instances out of their Auto Scaling groups, decrementing the desired size: the
        ASG then launches nothing in their place, and they keep running (and serving) until
        the daemon retires them. An instance already detached is not an error."""
        by_group: dict[str, list[str]] = {}
        for i in instances:
            if i.asg:
                by_group.setdefault(i.asg, []).append(i.id)
        for group, ids in by_group.items():
            try:
                self.autoscaling.detach_instances(
                    InstanceIds=ids, AutoScalingGroupName=group, ShouldDecrementDesiredCapacity=True
                )
            except Exception as e:
                if _client_error_code(e) != "ValidationError":  # "not part of the group"
                    raise
                log.info("already detached", extra={"group": group, "instances": ",".join(ids)})

    def complete_lifecycle(self, group: str, hook: str, token: str, instance_id: str) -> None:
        self.autoscaling.complete_lifecycle_action(
            LifecycleHookName=hook,
            AutoScalingGroupName=group,
            LifecycleActionToken=token,
            LifecycleActionResult="CONTINUE",
            InstanceId=instance_id,
        )
