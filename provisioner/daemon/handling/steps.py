"""The steps every kind of notice is built from, and the plumbing they share.

``Steps`` holds the adapters (Capacity, Kube), the policy objects (Blocklist, Spares) and the
per-replica locks; the kind modules (spot.py, scheduled.py, ...) compose its steps. Each step is
idempotent: it reads what is already done (node annotations, EC2 tags) before acting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from provisioner import fleet
from provisioner.daemon.capacity import (
    LIVE_STATES,
    Blocklist,
    Capacity,
    CapacityError,
    NoCapacity,
    launch_replacement,
    replacement_id,
)
from provisioner.daemon.config import DaemonConfig
from provisioner.daemon.events import InterruptionEvent
from provisioner.daemon.handling.state import Aborted, FlowState, Outcome, Target, Timings
from provisioner.daemon.kube import EvictResult, Kube, NodeInfo
from provisioner.daemon.metrics import Metrics
from provisioner.daemon.preflight import error_line, worth_logging
from provisioner.daemon.spares import Group, Spares, group_ready, serves_at
from provisioner.daemon.store import utcnow

log = logging.getLogger("prov.daemon.handler")
T = TypeVar("T")
DEFAULT_GRACE_SECONDS = 30  # Kubernetes' default terminationGracePeriodSeconds


class Steps:
    def __init__(
        self,
        cfg: DaemonConfig,
        capacity: Capacity,
        kube: Kube,
        metrics: Metrics,
        blocks: Blocklist | None = None,
        now: Callable[[], datetime] = utcnow,
        halt: threading.Event | None = None,
        spares: Spares | None = None,
    ) -> None:
        self.cfg = cfg
        self.cap = capacity
        self.kube = kube
        self.m = metrics
        self.blocks = blocks or Blocklist()
        self.now = now
        self.halt = halt or threading.Event()  # set = killed: abort without acknowledging
        self.spares = spares  # --spare-replicas: promote a warm spare before launching cold
        self.timings = Timings()
        self._locks: dict[str, threading.Lock] = {}
        self._versions: dict[str, int] = {}  # bumped each time a replica's lock is released
        self._locks_guard = threading.Lock()
        self._failures: dict[str, int] = {}  # failed calls in a row, by stage (log throttle)

    # -- plumbing -------------------------------------------------------------------------

    def lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def version(self, key: str) -> int:
        with self._locks_guard:
            return self._versions.get(key, 0)

    def bump(self, key: str) -> None:
        with self._locks_guard:
            self._versions[key] = self._versions.get(key, 0) + 1

    def sleep(self, seconds: float) -> None:
        if self.halt.wait(max(0.0, seconds)):
            raise Aborted()

    def since(self, ev: InterruptionEvent) -> float:
        return max(0.0, (self.now() - ev.received_at).total_seconds())

    def later(self, seconds: float | None = None) -> datetime:
        return self.now() + timedelta(seconds=seconds or self.cfg.step_interval_seconds)

    def retry(self, stage: str, until: datetime, fn: Callable[[], T]) -> T:
        """Call fn until it succeeds or ``until`` passes (then re-raise). The SDK clients already
        retry 5xx and throttling; this rides out longer outages within the event's deadline."""
        while True:
            if self.halt.is_set():
                raise Aborted()
            try:
                result = fn()
            except (Aborted, NoCapacity, CapacityError):
                raise
            except Exception as e:
                self.m.errors.labels(stage).inc()
                with self._locks_guard:
                    n = self._failures[stage] = self._failures.get(stage, 0) + 1
                if self.now() >= until:
                    with self._locks_guard:  # given up: the next flow's failures count anew
                        self._failures.pop(stage, None)
                    raise
                if worth_logging(n):
                    log.warning(
                        f"{stage} failed, retrying",
                        extra={"error": error_line(e), "failures": n},
                    )
                self.sleep(self.cfg.step_interval_seconds)
                continue
            with self._locks_guard:
                self._failures.pop(stage, None)
            return result

    def event(self, node: str, reason: str, message: str, type_: str = "Normal") -> None:
        if self.cfg.dry_run:
            return
        try:
            self.kube.event(node, reason, message, type_)
        except Exception as e:  # Kubernetes Events are best effort
            self.m.errors.labels("k8s-event").inc()
            log.debug("could not record a Kubernetes Event", extra={"error": str(e)})

    def record(self, t: Target, until: datetime, **changes: Any) -> None:
        for k, v in changes.items():
            setattr(t.state, k, v)
        t.state.updated = self.now().isoformat()
        body = {fleet.STATE_ANNOTATION: t.state.to_json()}
        for iid, node in list(t.nodes.items()):
            if not self.retry("annotate", until, lambda n=node: self.kube.annotate(n.name, body)):  # type: ignore[misc]
                del t.nodes[iid]  # the node is gone

    # -- finding the replica group --------------------------------------------------------

    def resolve(self, ev: InterruptionEvent, deadline: datetime) -> Target | Outcome:
        until = max(deadline, self.now() + timedelta(seconds=10))
        found = self.retry("describe", until, lambda: self.cap.describe([ev.instance_id]))
        inst = found.get(ev.instance_id)
        if inst is None:
            self.m.skipped.labels("instance-not-found").inc()
            log.info("instance not found in EC2; nothing to do", extra={"event": ev.id})
            return Outcome("done", "instance-not-found")
        if not inst.managed:
            self.m.skipped.labels("unmanaged").inc()
            log.info(
                f"instance is not managed by prov (no {fleet.MANAGED} tag); ignored",
                extra={"event": ev.id, "instance": inst.id},
            )
            return Outcome("done", "ignored-unmanaged")
        version = self.version(f"{inst.pool}/{inst.replica}")
        members = [inst]
        if fleet.REPLICA in inst.tags and (
            fleet.REPLICA_SIZE not in inst.tags or inst.replica_size > 1
        ):
            more = self.retry(
                "describe", until, lambda: self.cap.replica_members(inst.pool, inst.replica)
            )
            members += [i for i in more if i.id != inst.id]
        nodes: dict[str, NodeInfo] = {}
        for i in members:
            if i.state not in LIVE_STATES:
                continue  # its node object may linger; nothing runs there
            node = self.retry(
                "find-node",
                until,
                lambda i=i: self.kube.find_node(i.private_dns, i.id),  # type: ignore[misc]
            )
            if node is not None:
                nodes[i.id] = node
        return Target(inst, members, nodes, self.state_from(nodes.values()), version)

    @staticmethod
    def state_from(nodes: Iterable[NodeInfo]) -> FlowState:
        """The most advanced progress record found on the group's nodes."""
        state = FlowState()
        for node in nodes:
            cand = FlowState.parse(node.annotations.get(fleet.STATE_ANNOTATION))
            if cand is not None and cand.index >= state.index:
                state = cand
        return state

    def reload(self, t: Target) -> Target:
        for iid in list(t.nodes):
            node = self.kube.get_node(t.nodes[iid].name)
            if node is None:
                del t.nodes[iid]
            else:
                t.nodes[iid] = node
        t.state = self.state_from(t.nodes.values())
        return t

    # -- replacement capacity -------------------------------------------------------------

    def replacement_ready(self, t: Target, replacement: str) -> bool:
        return self.replacement_status(t, replacement)[0]

    def replacement_status(
        self, t: Target, replacement: str | None
    ) -> tuple[bool, datetime | None]:
        """(Ready now, when it is expected to serve): launch + the plan's time to serve; None
        when the time to serve is unknown, or there is no replacement (then: never)."""
        if replacement is None:
            return False, None
        size = max(len(t.group), t.instance.replica_size)
        members = self.cap.replica_members(t.instance.pool, replacement)
        ready = group_ready(self.kube, self.cfg, members, size)
        return ready, serves_at(self.cfg, members, ready, self.now())

    def existing_replacement(self, t: Target, until: datetime) -> str | None:
        inst = t.instance
        found = self.retry(
            "find-replacement", until, lambda: self.cap.find_replacement(inst.pool, inst.replica)
        )
        if not found:
            return None
        spares = self.spares
        if spares is not None and any(
            i.tags.get(fleet.SPARE) == fleet.SPARE_PROMOTED for i in found
        ):  # a promoted spare whose labels may still keep it out of traffic
            self.retry("admit-spare", until, lambda: spares.admit(found))
        return found[0].replica

    def request_replacement(self, ev: InterruptionEvent, t: Target, until: datetime) -> str | None:
        """The replacement's replica id: found (resumed), promoted from a spare or launched.
        None when it cannot be had now (no capacity anywhere, or a launch error that is not
        about capacity, e.g. UnauthorizedOperation): the caller cordons and drains anyway and
        asks again on its next step."""
        inst = t.instance
        existing = self.existing_replacement(t, until)
        if existing:
            log.info(
                "replacement already requested (resumed)",
                extra={"event": ev.id, "replacement": existing},
            )
            return existing
        self.detach(ev, t, until)
        on_demand_only = False
        if self.cfg.on_demand_floor > 0:
            have = self.retry(
                "on-demand-count",
                until,
                lambda: self.cap.on_demand_replicas(inst.pool, exclude_replica=inst.replica),
            )
            on_demand_only = have < self.cfg.on_demand_floor
        new_id = replacement_id(inst.pool, inst.replica)
        size = max(len(t.group), inst.replica_size)
        if self.spares is not None:
            promoted = self.promote_spare(ev, t, size, on_demand_only, until)
            if promoted is not None:
                return promoted
        try:
            launched = launch_replacement(
                self.cap, self.blocks, size, inst, new_id, self.cfg, on_demand_only
            )
        except NoCapacity as e:
            self.m.actions.labels("replace", "no-capacity").inc()
            self.m.blocked_pools.set(len(self.blocks.active()))
            log.error("no capacity for a replacement", extra={"event": ev.id, "error": str(e)})
            return None
        except Exception as e:  # not about capacity: cordon and drain must still happen
            self.m.errors.labels("launch").inc()
            self.m.actions.labels("replace", "error").inc()
            log.error(
                "launching the replacement failed; draining anyway, will retry",
                extra={"event": ev.id, "error": f"{type(e).__name__}: {e}"},
            )
            return None
        self.m.blocked_pools.set(len(self.blocks.active()))
        self.m.replacements.labels(launched.attempt.market).inc()
        self.m.actions.labels("replace", "ok").inc()
        self.timings.replacement.append(self.since(ev))
        self.m.to_replacement.observe(self.since(ev))
        log.info(
            "replacement requested",
            extra={
                "event": ev.id,
                "replacement": new_id,
                "pool_used": launched.attempt.label,
                "fallbacks": ",".join(f"{a.label}:{c}" for a, c in launched.tried),
                "instances": ",".join(i.id for i in launched.instances),
                "on_demand_floor": on_demand_only,
            },
        )
        for node in t.nodes.values():
            self.event(node.name, "ReplacementRequested", f"{new_id} on {launched.attempt.label}")
        return new_id

    def detach(self, ev: InterruptionEvent, t: Target, until: datetime) -> None:
        """Take the group out of its Auto Scaling group, which would otherwise launch its own
        replacement once the instance is gone: the daemon is the one replacement actor."""
        in_asg = [i for i in t.group if i.asg and i.state in LIVE_STATES]
        if not in_asg:
            return
        try:
            self.retry("detach", until, lambda: self.cap.detach(in_asg))
            self.m.actions.labels("detach", "ok").inc()
        except Exception as e:
            self.m.actions.labels("detach", "error").inc()
            log.error(
                "could not detach the group from its Auto Scaling group",
                extra={"event": ev.id, "error": f"{type(e).__name__}: {e}"},
            )

    def promote_spare(
        self, ev: InterruptionEvent, t: Target, size: int, on_demand_only: bool, until: datetime
    ) -> str | None:
        """Make a warm spare the replacement (tags + into traffic); None: launch cold."""
        spares, inst = self.spares, t.instance
        assert spares is not None
        tries = [0]

        def claim() -> Group | None:
            tries[0] += 1
            return spares.claim(inst.pool, size, on_demand_only, inst.replica, recheck=tries[0] > 1)

        g = self.retry("promote-spare", until, claim)
        if g is None:
            log.info(
                "no warm spare qualifies; launching a replacement",
                extra={"event": ev.id, "pool": inst.pool, "on_demand_floor": on_demand_only},
            )
            return None
        self.m.spare_promotions.labels(g.market).inc()
        self.m.actions.labels("promote-spare", "ok").inc()
        self.timings.replacement.append(self.since(ev))
        self.m.to_replacement.observe(self.since(ev))
        log.info(
            "promoted a warm spare as the replacement",
            extra={"event": ev.id, "replacement": g.replica, "spare": g.label},
        )
        for node in t.nodes.values():
            self.event(node.name, "ReplacementRequested", f"promoted spare {g.label}")
        return g.replica

    # -- draining and retiring ------------------------------------------------------------

    def pods_to_drain(self, t: Target) -> list[Any]:
        pods = []
        for node in t.nodes.values():
            pods += [p for p in self.kube.pods_on_node(node.name) if p.evictable]
        return pods

    @staticmethod
    def grace_of(pod: Any) -> int:
        g = getattr(pod, "grace_seconds", None)
        return DEFAULT_GRACE_SECONDS if g is None else int(g)

    def evict_round(self, ev: InterruptionEvent, t: Target, deadline: datetime) -> int:
        """Ask every pod still on the group's nodes to go; returns how many are left. Each pod
        gets its own terminationGracePeriodSeconds (vLLM's drain budget), cut to what is left
        before the deadline: in-flight requests finish, and what cannot finish is aborted
        cleanly before the instance is gone, not with it."""
        pods = self.pods_to_drain(t)
        to_deadline = (deadline - self.now()).total_seconds()
        for p in pods:
            if p.deleting:
                continue
            own = self.grace_of(p)
            grace = own if to_deadline <= 0 else max(1, min(own, int(to_deadline)))
            try:
                r = self.kube.evict(p.namespace, p.name, grace)
            except Exception as e:
                self.m.errors.labels("evict").inc()
                self.m.actions.labels("evict", "error").inc()
                log.warning("eviction failed", extra={"pod": p.name, "error": str(e)})
                continue
            if r is EvictResult.BLOCKED:
                self.m.actions.labels("evict", "blocked").inc()
                log.info(
                    "eviction blocked by a PodDisruptionBudget; retrying until the deadline",
                    extra={"event": ev.id, "pod": f"{p.namespace}/{p.name}"},
                )
                continue
            self.m.actions.labels("evict", "ok" if r is EvictResult.EVICTED else "gone").inc()
        return len(pods)

    def retire(self, ev: InterruptionEvent, t: Target, until: datetime) -> None:
        """Terminate what is left of the old group (a partial TP x PP group serves nobody)."""
        live = [
            i for i in self.cap.describe([i.id for i in t.group]).values() if i.state in LIVE_STATES
        ]
        if live:
            self.retry("terminate", until, lambda: self.cap.terminate(live))
            self.m.actions.labels("terminate", "ok").inc()
            log.info(
                "retired the old replica's instances",
                extra={"event": ev.id, "instances": ",".join(i.id for i in live)},
            )
        self.record(t, until, phase="retired")

    def node_names(self, t: Target) -> str:
        return ",".join(n.name for n in t.nodes.values())
