"""The EC2 adapter behind ``capacity.Capacity``: boto3 (imported lazily; botocore's standard
retry mode handles throttling), describes cached briefly, launches from the pool's launch
template, detaches from Auto Scaling groups before retiring. Its fake, for fast tests of the
policy: ``fakes.ec2.FakeCapacity`` (tests/daemon/test_daemon_contract_ec2.py holds them equal)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from provisioner import fleet
from provisioner.daemon.capacity import (
    CAPACITY_CODES,
    LIVE_STATES,
    Attempt,
    CapacityError,
    CapacityUnavailable,
    InstanceInfo,
    Subnet,
    count_on_demand,
    group_tags,
    pick_subnets_by_zone,
)
from provisioner.daemon.config import DaemonConfig

log = logging.getLogger("prov.daemon.capacity")


def _client_error_code(e: Exception) -> str | None:
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):
        return str(resp.get("Error", {}).get("Code", "")) or None
    return None


def final_on_capacity(client: Any) -> None:
    """Ask each pool once: a RunInstances that failed with a capacity code is not retried, so
    the fallback tries the next pool at once; every other error keeps botocore's retries.

    EC2 answers "no capacity" (``InsufficientInstanceCapacity``...) as a *server* error with
    an HTTP 500 (EC2 API reference, "Error codes for the Amazon EC2 API": server errors carry
    a 500-series status, InsufficientInstanceCapacity among them). botocore's ``standard``
    mode retries any 500 whatever its code (botocore/retries/standard.py:
    ``TransientRetryableChecker._TRANSIENT_STATUS_CODES`` = 500, 502, 503, 504, OR-ed in
    ``StandardRetryConditions`` with the throttling codes, a 429 and the model's retryable
    errors); so does ``legacy`` (botocore/data/_retry.json: ``general_server_error`` applies
    to ``http_status_code: 500`` for every service; ec2's own entries only add
    ``RequestLimitExceeded`` and ``EC2ThrottledException``). An exhausted pool was asked twice.

    botocore emits ``needs-retry.ec2.RunInstances`` to the operation's handlers before the
    service-wide retry handler, and takes the first answer that is not None: ``False`` means
    "do not retry" (standard.py's ``RetryHandler`` answers False itself for that reason), None
    leaves the decision to botocore's handler, with its conditions, quota and backoff."""
    service = client.meta.service_model.service_id.hyphenize()

    def capacity_is_final(response: Any = None, **_: Any) -> bool | None:
        parsed = response[1] if isinstance(response, tuple) and len(response) > 1 else None
        code = (parsed or {}).get("Error", {}).get("Code") if isinstance(parsed, dict) else None
        return False if code in CAPACITY_CODES else None

    client.meta.events.register_first(f"needs-retry.{service}.RunInstances", capacity_is_final)


def client_token(new_replica: str, attempt: Attempt) -> str:
    """RunInstances' idempotency token: a retried launch of one group in one pool is one."""
    return f"{new_replica}-{attempt.label}"[:64]


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
        # RunInstances: botocore's retries for throttling and 5xx (fewer attempts: a notice is
        # 2 minutes), but a capacity error is final at once (``final_on_capacity``).
        self.launch_ec2 = launch_ec2 or session.client(
            "ec2", endpoint_url=ep.get("ec2"), config=quick
        )
        final_on_capacity(self.launch_ec2)
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
        return count_on_demand(live, exclude_replica)

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
        """Subnets tagged prov.dev/managed=true in the instance's VPC, one per zone
        (``capacity.pick_subnets_by_zone``)."""
        if not template.vpc_id:
            return {}
        resp = self.ec2.describe_subnets(
            Filters=[
                {"Name": "vpc-id", "Values": [template.vpc_id]},
                {"Name": f"tag:{fleet.MANAGED}", "Values": [fleet.MANAGED_VALUE]},
            ]
        )
        listed = resp.get("Subnets", [])
        rows = [
            Subnet(s["SubnetId"], s["AvailabilityZone"], s["VpcId"], s.get("AvailabilityZoneId"))
            for s in listed
        ]
        return pick_subnets_by_zone(template, rows)

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
        keep = group_tags(template, count, new_replica, replaces, attempt.market, spare)
        kw: dict[str, Any] = {
            "MinCount": count,
            "MaxCount": count,
            "InstanceType": attempt.instance_type,
            "ClientToken": client_token(new_replica, attempt),
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

    def refilling_group(self, pool: str, replica: str) -> str | None:
        """The Auto Scaling group the stack made for ``replica`` (``fleet.replica_asg_tags``)
        while it still wants instances (a desired capacity above 0: the daemon's detach
        lowers it), i.e. the group that refills a gone member; else None."""
        tags = fleet.replica_asg_tags(pool, replica)
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()]
        paginator = self.autoscaling.get_paginator("describe_auto_scaling_groups")
        for page in paginator.paginate(Filters=filters):
            for g in page.get("AutoScalingGroups", []):
                if int(g.get("DesiredCapacity") or 0) > 0:
                    return str(g["AutoScalingGroupName"])
        return None

    def complete_lifecycle(self, group: str, hook: str, token: str, instance_id: str) -> None:
        self.autoscaling.complete_lifecycle_action(
            LifecycleHookName=hook,
            AutoScalingGroupName=group,
            LifecycleActionToken=token,
            LifecycleActionResult="CONTINUE",
            InstanceId=instance_id,
        )
