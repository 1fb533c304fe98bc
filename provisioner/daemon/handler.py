"""The handler: what to do for each kind of notice, replace-first.

Spot interruption (and scheduled maintenance at its drain time, and a rebalance with
``--rebalance-drain``), for the whole replica group the instance belongs to:

1. request the replacement group (fallback across zones, types, then on-demand; the reclaimed
   (type, zone) is blocked for a while; ``--on-demand-floor`` may force on-demand);
2. taint + cordon every node of the group and label it out of external load balancers;
3. keep serving until the replacement is Ready, or until the last moment the drain must start
   (deadline - shutdown timeout - margin);
4. evict the pods through the Eviction API (a PDB's 429 is retried until the deadline), with a
   grace period that never runs past the deadline, and wait for them to finish their in-flight
   requests and go;
5. wait for the replacement to be Ready; 6. retire what is left of the old group;
7. only then report success, so the monitor acknowledges (deletes) the SQS message.

Each step is idempotent and its progress is written on the nodes (``prov.dev/interruption-state``),
so a redelivered notice after a restart resumes: it finds the replacement it already requested
(by the EC2 tag ``prov.dev/replaces``) and never uncordons a node another flow is draining.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

from provisioner import fleet
from provisioner.daemon.capacity import (
    LIVE_STATES,
    Blocklist,
    Capacity,
    InstanceInfo,
    NoCapacity,
    launch_replacement,
    plan_attempts,
    replacement_id,
)
from provisioner.daemon.config import DaemonConfig
from provisioner.daemon.events import EventKind, InterruptionEvent
from provisioner.daemon.kube import EvictResult, Kube, NodeInfo
from provisioner.daemon.metrics import Metrics
from provisioner.daemon.spares import Spares, group_ready
from provisioner.daemon.store import Entry, utcnow

log = logging.getLogger("prov.daemon.handler")
T = TypeVar("T")

PHASES = ("cordoned", "draining", "drained", "retired")
CORDONED, DRAINING, DRAINED, RETIRED = range(4)
# When two flows meet on one replica, the stronger one owns the progress record.
PRIORITY = {
    EventKind.REBALANCE: 0,
    EventKind.STATE_CHANGE: 1,
    EventKind.ASG_LIFECYCLE: 2,
    EventKind.SCHEDULED_CHANGE: 3,
    EventKind.SCHEDULED_CANCELLED: 3,
    EventKind.SPOT_INTERRUPTION: 4,
}


class Aborted(Exception):
    """The daemon is being killed: stop at once, acknowledge nothing."""


@dataclass
class Outcome:
    status: Literal["done", "failed", "deferred"]
    action: str
    not_before: datetime | None = None
    stage: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Target:
    instance: InstanceInfo
    group: list[InstanceInfo]
    nodes: dict[str, NodeInfo]  # instance id -> node (instances without a node are absent)
    state: dict[str, Any]
    version: int = 0  # the replica's version when the nodes were read

    @property
    def key(self) -> str:
        return f"{self.instance.pool}/{self.instance.replica}"


@dataclass
class Timings:
    """Raw latencies (seconds from notice received), for benchmarks and tests."""

    cordon: list[float] = field(default_factory=list)
    replacement: list[float] = field(default_factory=list)
    drain: list[float] = field(default_factory=list)


def phase_index(state: dict[str, Any]) -> int:
    p = state.get("phase")
    return PHASES.index(p) if p in PHASES else -1


class Handler:
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

    # -- plumbing -------------------------------------------------------------------------

    def _lock(self, key: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(key, threading.Lock())

    def _version(self, key: str) -> int:
        with self._locks_guard:
            return self._versions.get(key, 0)

    def _bump(self, key: str) -> None:
        with self._locks_guard:
            self._versions[key] = self._versions.get(key, 0) + 1

    def _sleep(self, seconds: float) -> None:
        if self.halt.wait(max(0.0, seconds)):
            raise Aborted()

    def _since(self, ev: InterruptionEvent) -> float:
        return max(0.0, (self.now() - ev.received_at).total_seconds())

    def _retry(self, stage: str, until: datetime, fn: Callable[[], T]) -> T:
        """Call fn until it succeeds or ``until`` passes (then re-raise). The SDK clients already
        retry 5xx and throttling; this rides out longer outages within the event's deadline."""
        while True:
            if self.halt.is_set():
                raise Aborted()
            try:
                return fn()
            except (Aborted, NoCapacity):
                raise
            except Exception as e:
                self.m.errors.labels(stage).inc()
                if self.now() >= until:
                    raise
                log.warning(
                    f"{stage} failed, retrying", extra={"error": f"{type(e).__name__}: {e}"}
                )
                self._sleep(self.cfg.step_interval_seconds)

    def _wait(self, what: str, until: datetime, pred: Callable[[], bool]) -> bool:
        while True:
            try:
                if pred():
                    return True
            except Aborted:
                raise
            except Exception as e:
                self.m.errors.labels(what).inc()
                log.warning(f"{what}: check failed", extra={"error": f"{type(e).__name__}: {e}"})
            if self.now() >= until:
                return False
            self._sleep(
                min(self.cfg.step_interval_seconds, max(0.0, (until - self.now()).total_seconds()))
            )

    def _event(self, node: str, reason: str, message: str, type_: str = "Normal") -> None:
        if self.cfg.dry_run:
            return
        try:
            self.kube.event(node, reason, message, type_)
        except Exception as e:  # Kubernetes Events are best effort
            self.m.errors.labels("k8s-event").inc()
            log.debug("could not record a Kubernetes Event", extra={"error": str(e)})

    def _record(self, t: Target, until: datetime, **state: Any) -> None:
        t.state = {**t.state, **state, "updated": self.now().isoformat()}
        body = {fleet.STATE_ANNOTATION: json.dumps(t.state, sort_keys=True)}
        for iid, node in list(t.nodes.items()):
            if not self._retry("annotate", until, lambda n=node: self.kube.annotate(n.name, body)):  # type: ignore[misc]
                del t.nodes[iid]  # the node is gone

    # -- entry point ----------------------------------------------------------------------

    def handle(self, entry: Entry) -> Outcome:
        ev = entry.event
        log.info(
            "handling notice",
            extra={
                "event": ev.id,
                "kind": str(ev.kind),
                "instance": ev.instance_id,
                "stage": entry.stage,
            },
        )
        try:
            out = self._dispatch(entry)
        except Aborted:
            raise
        except Exception as e:
            self.m.errors.labels("handler").inc()
            log.error(
                "notice handling failed; it stays unacknowledged for a retry",
                extra={"event": ev.id, "error": f"{type(e).__name__}: {e}"},
            )
            return Outcome("failed", "error", detail={"error": str(e)})
        log.info(
            "notice handled",
            extra={
                "event": ev.id,
                "kind": str(ev.kind),
                "status": out.status,
                "action": out.action,
            },
        )
        return out

    def _dispatch(self, entry: Entry) -> Outcome:
        ev = entry.event
        resolved = self._resolve(ev, entry.deadline)
        if isinstance(resolved, Outcome):
            return resolved
        t = resolved
        lock = self._lock(t.key)
        lock.acquire()
        if self._version(t.key) != t.version:  # another notice moved this replica on meanwhile
            t = self._reload(t)
        try:
            if t.instance.spare and self.spares is not None:  # N = 0: spare tags are ignored
                return self._spare_notice(ev, t, entry.deadline)
            match ev.kind:
                case EventKind.SPOT_INTERRUPTION:
                    return self._replace_first(ev, t, entry.deadline, replace=True, drain=True)
                case EventKind.REBALANCE:
                    replace = self.cfg.prewarm_on_rebalance or self.cfg.rebalance_drain
                    return self._replace_first(
                        ev, t, entry.deadline, replace=replace, drain=self.cfg.rebalance_drain
                    )
                case EventKind.SCHEDULED_CHANGE:
                    return self._scheduled(entry, t)
                case EventKind.SCHEDULED_CANCELLED:
                    return self._cancelled(ev, t)
                case EventKind.STATE_CHANGE:
                    return self._state_change(ev, t, entry.deadline)
                case EventKind.ASG_LIFECYCLE:
                    return self._asg_lifecycle(ev, t, entry.deadline)
        finally:
            self._bump(t.key)
            lock.release()
        return Outcome("done", "ignored-kind")  # pragma: no cover

    def _resolve(self, ev: InterruptionEvent, deadline: datetime) -> Target | Outcome:
        until = max(deadline, self.now() + timedelta(seconds=10))
        found = self._retry("describe", until, lambda: self.cap.describe([ev.instance_id]))
        inst = found.get(ev.instance_id)
        if inst is None:
            self.m.skipped.labels("instance-not-found").inc()
            log.info("instance not found in EC2; nothing to do", extra={"event": ev.id})
            return Outcome("done", "instance-not-found")
        if not inst.managed:
            self.m.skipped.labels("unmanaged").inc()
            log.info(
                "instance is not managed by prov (no prov.dev/managed tag); ignored",
                extra={"event": ev.id, "instance": inst.id},
            )
            return Outcome("done", "ignored-unmanaged")
        version = self._version(f"{inst.pool}/{inst.replica}")
        members = [inst]
        if fleet.REPLICA in inst.tags and (
            fleet.REPLICA_SIZE not in inst.tags or inst.replica_size > 1
        ):
            more = self._retry(
                "describe", until, lambda: self.cap.replica_members(inst.pool, inst.replica)
            )
            members += [i for i in more if i.id != inst.id]
        nodes: dict[str, NodeInfo] = {}
        for i in members:
            node = self._retry(
                "find-node",
                until,
                lambda i=i: self.kube.find_node(i.private_dns, i.id),  # type: ignore[misc]
            )
            if node is not None:
                nodes[i.id] = node
        return Target(inst, members, nodes, self._state_from(nodes.values()), version)

    @staticmethod
    def _state_from(nodes: Iterable[NodeInfo]) -> dict[str, Any]:
        """The most advanced progress record found on the group's nodes."""
        state: dict[str, Any] = {}
        for node in nodes:
            raw = node.annotations.get(fleet.STATE_ANNOTATION)
            if not raw:
                continue
            try:
                cand = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(cand, dict) and phase_index(cand) >= phase_index(state):
                state = cand
        return state

    def _reload(self, t: Target) -> Target:
        for iid in list(t.nodes):
            node = self.kube.get_node(t.nodes[iid].name)
            if node is None:
                del t.nodes[iid]
            else:
                t.nodes[iid] = node
        t.state = self._state_from(t.nodes.values())
        return t

    # -- the replace-first drain ----------------------------------------------------------

    def _replacement_ready(self, pool: str, replica: str, size: int) -> bool:
        return group_ready(self.kube, self.cfg, self.cap.replica_members(pool, replica), size)

    def _plan_log(self, ev: InterruptionEvent, t: Target, replace: bool, drain: bool) -> Outcome:
        """--dry-run: say what would happen, change nothing (not even the queue)."""
        inst = t.instance
        blocks = Blocklist()  # what the real run would avoid, without changing ours
        for key in self.blocks.active():
            blocks.block(*key, seconds=self.cfg.block_seconds)
        if ev.kind is EventKind.SPOT_INTERRUPTION:
            blocks.block(inst.instance_type, inst.zone, "spot", self.cfg.block_seconds)
        zones = list(self.cap.subnets_by_zone(inst)) or [inst.zone]  # read-only calls
        on_demand_only = self.cfg.on_demand_floor > 0 and (
            self.cap.on_demand_replicas(inst.pool, exclude_replica=inst.replica)
            < self.cfg.on_demand_floor
        )
        attempts = plan_attempts(
            inst.instance_type, inst.zone, zones, self.cfg.alternatives, blocks, on_demand_only
        )
        decisions: list[str] = []
        spare = None
        if replace and not t.state.get("replacement") and self.spares is not None:
            size = max(len(t.group), inst.replica_size)
            spare = self.spares.peek(inst.pool, size, on_demand_only)
        if spare is not None:
            decisions.append(f"promote spare {spare.label} as the replacement of {inst.replica}")
        elif replace and not t.state.get("replacement"):
            decisions.append(
                f"request replacement {replacement_id(inst.pool, inst.replica)} "
                f"({len(t.group)} node(s)) trying "
                + ", ".join(a.label for a in attempts[:6])
                + (" ..." if len(attempts) > 6 else "")
            )
        for node in t.nodes.values():
            decisions.append(f"taint {fleet.TAINT_KEY}={ev.kind}:NoSchedule and cordon {node.name}")
            if drain and not self.cfg.cordon_only:
                pods = [p for p in self.kube.pods_on_node(node.name) if p.evictable]
                decisions.append(
                    f"evict {len(pods)} pod(s) on {node.name}: "
                    + ", ".join(f"{p.namespace}/{p.name}" for p in pods)
                )
        for d in decisions:
            log.info(f"dry-run: would {d}", extra={"event": ev.id, "kind": str(ev.kind)})
            self.m.actions.labels(d.split(" ", 1)[0], "dry-run").inc()
        return Outcome("done", "dry-run", detail={"decisions": decisions})

    def _replace_first(
        self,
        ev: InterruptionEvent,
        t: Target,
        deadline: datetime,
        *,
        replace: bool,
        drain: bool,
    ) -> Outcome:
        inst = t.instance
        if not t.nodes:
            self.m.skipped.labels("node-not-found").inc()
            log.info(
                "no Kubernetes node for the instance; nothing to drain", extra={"event": ev.id}
            )
            return Outcome("done", "node-not-found")
        if self.cfg.dry_run:
            return self._plan_log(ev, t, replace, drain)
        # Work against the deadline but never give up sooner than a few steps from now.
        until = max(deadline, self.now() + timedelta(seconds=3 * self.cfg.step_interval_seconds))
        size = max(len(t.group), inst.replica_size)
        if ev.kind is EventKind.SPOT_INTERRUPTION:
            self.blocks.block(inst.instance_type, inst.zone, "spot", self.cfg.block_seconds)
            self.m.blocked_pools.set(len(self.blocks.active()))

        # 1. replacement first
        replacement: str | None = t.state.get("replacement")
        if replace and not replacement:
            replacement = self._request_replacement(ev, t, until)
            if replacement is None and not drain:
                return Outcome("failed", "no-capacity")

        # 2. taint + cordon + out of the load balancers
        owner = self._owns(ev, t)
        state = dict(t.state)
        if owner:
            state.update(
                event=ev.id,
                kind=str(ev.kind),
                maintenance_id=ev.detail.get("event_id"),
                deadline=deadline.isoformat(),
            )
        state.update(
            replica=inst.replica,
            replacement=replacement,
            phase=PHASES[max(CORDONED, phase_index(t.state))],
            lb_excluded=drain or bool(t.state.get("lb_excluded")),
        )
        cordoned_now = False
        if phase_index(t.state) < 0 or not all(
            n.unschedulable and n.tainted for n in t.nodes.values()
        ):
            cordoned_now = True
            t.state = state
            body = {fleet.STATE_ANNOTATION: json.dumps(state, sort_keys=True)}
            for node in list(t.nodes.values()):
                self._retry(
                    "cordon",
                    until,
                    lambda n=node: self.kube.cordon(n.name, str(ev.kind), drain, body, n),  # type: ignore[misc]
                )
                self.m.actions.labels("cordon", "ok").inc()
                self._event(node.name, "CordonedForInterruption", f"{ev.kind} notice {ev.id}")
            self.timings.cordon.append(self._since(ev))
            self.m.to_cordon.observe(self._since(ev))
            log.info(
                "tainted and cordoned the replica",
                extra={"event": ev.id, "nodes": ",".join(n.name for n in t.nodes.values())},
            )
        elif {k: v for k, v in state.items() if k != "updated"} != {
            k: v for k, v in t.state.items() if k != "updated"
        }:
            if drain and not t.state.get("lb_excluded"):
                body = {fleet.STATE_ANNOTATION: json.dumps(state, sort_keys=True)}
                for node in list(t.nodes.values()):
                    self._retry(
                        "cordon",
                        until,
                        lambda n=node: self.kube.cordon(n.name, str(ev.kind), True, body),  # type: ignore[misc]
                    )
            self._record(t, until, **state)

        if not drain or self.cfg.cordon_only:
            action = "cordoned" if cordoned_now else "already-cordoned"
            return Outcome("done", action + ("+replacement" if replacement else ""))

        # 3. keep serving while the replacement loads, until the drain must start
        if replacement and self.cfg.hold_for_replacement and phase_index(t.state) < DRAINING:
            margin = self.cfg.shutdown_timeout_seconds + self.cfg.drain_margin_seconds
            start_by = deadline - timedelta(seconds=margin)
            ready = self._wait(
                "replacement-ready",
                start_by,
                lambda: self._replacement_ready(inst.pool, replacement, size),
            )
            log.info(
                "starting the drain",
                extra={"event": ev.id, "replacement_ready": ready, "replacement": replacement},
            )

        # 4. evict through the Eviction API, wait for in-flight requests to finish
        if phase_index(t.state) < DRAINING:
            self._record(t, until, phase="draining")
        self._evict_all(ev, t, deadline)

        # 5. the replacement must be Ready before we acknowledge
        if replacement:
            limit = ev.received_at + timedelta(seconds=self.cfg.replacement_timeout_seconds)
            if not self._wait(
                "replacement-ready",
                max(limit, deadline),
                lambda: self._replacement_ready(inst.pool, replacement, size),
            ):
                log.error("replacement not Ready in time", extra={"event": ev.id})
                self.m.actions.labels("replace", "timeout").inc()
                return Outcome("failed", "replacement-not-ready")
        elif replace:
            return Outcome("failed", "drained-without-replacement")
        if phase_index(t.state) < DRAINED:
            self._record(t, until, phase="drained")

        # 6. retire what is left of the old group (a partial TP x PP group serves nobody);
        # only when we replaced it: an ASG terminating its own instance replaces it itself
        if replacement and self.cfg.retire_old_group and phase_index(t.state) < RETIRED:
            self._retire(ev, t, until)
        self.timings.drain.append(self._since(ev))
        self.m.drain_seconds.observe(self._since(ev))
        self.m.actions.labels("drain", "ok").inc()
        return Outcome("done", "replaced-and-drained" if replacement else "drained")

    def _owns(self, ev: InterruptionEvent, t: Target) -> bool:
        """Does this notice take over the replica's progress record?"""
        if not t.state:
            return True
        try:
            theirs = PRIORITY[EventKind(t.state.get("kind", ""))]
        except ValueError:
            return True
        return PRIORITY[ev.kind] >= theirs and phase_index(t.state) < DRAINING

    def _request_replacement(self, ev: InterruptionEvent, t: Target, until: datetime) -> str | None:
        inst = t.instance
        existing = self._retry(
            "find-replacement", until, lambda: self.cap.find_replacement(inst.pool, inst.replica)
        )
        if existing:
            log.info(
                "replacement already requested (resumed)",
                extra={"event": ev.id, "replacement": existing[0].replica},
            )
            spares = self.spares
            if spares is not None and any(
                i.tags.get(fleet.SPARE) == fleet.SPARE_PROMOTED for i in existing
            ):  # a promoted spare whose labels may still keep it out of traffic
                self._retry("admit-spare", until, lambda: spares.admit(existing))
            return existing[0].replica
        on_demand_only = False
        if self.cfg.on_demand_floor > 0:
            have = self._retry(
                "on-demand-count",
                until,
                lambda: self.cap.on_demand_replicas(inst.pool, exclude_replica=inst.replica),
            )
            on_demand_only = have < self.cfg.on_demand_floor
        new_id = replacement_id(inst.pool, inst.replica)
        size = max(len(t.group), inst.replica_size)
        if self.spares is not None:
            promoted = self._promote_spare(ev, t, size, on_demand_only, until)
            if promoted is not None:
                return promoted
        try:
            launched = self._retry(
                "launch",
                until,
                lambda: launch_replacement(
                    self.cap, self.blocks, size, inst, new_id, self.cfg, on_demand_only
                ),
            )
        except NoCapacity as e:
            self.m.actions.labels("replace", "no-capacity").inc()
            self.m.blocked_pools.set(len(self.blocks.active()))
            log.error("no capacity for a replacement", extra={"event": ev.id, "error": str(e)})
            return None
        self.m.blocked_pools.set(len(self.blocks.active()))
        self.m.replacements.labels(launched.attempt.market).inc()
        self.m.actions.labels("replace", "ok").inc()
        self.timings.replacement.append(self._since(ev))
        self.m.to_replacement.observe(self._since(ev))
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
            self._event(node.name, "ReplacementRequested", f"{new_id} on {launched.attempt.label}")
        return new_id

    def _promote_spare(
        self, ev: InterruptionEvent, t: Target, size: int, on_demand_only: bool, until: datetime
    ) -> str | None:
        """Make a warm spare the replacement (tags + into traffic); None: launch cold."""
        spares, inst = self.spares, t.instance
        assert spares is not None
        tries = [0]

        def claim() -> Any:
            tries[0] += 1
            return spares.claim(inst.pool, size, on_demand_only, inst.replica, recheck=tries[0] > 1)

        g = self._retry("promote-spare", until, claim)
        if g is None:
            log.info(
                "no warm spare qualifies; launching a replacement",
                extra={"event": ev.id, "pool": inst.pool, "on_demand_floor": on_demand_only},
            )
            return None
        self.m.spare_promotions.labels(g.market).inc()
        self.m.actions.labels("promote-spare", "ok").inc()
        self.timings.replacement.append(self._since(ev))
        self.m.to_replacement.observe(self._since(ev))
        log.info(
            "promoted a warm spare as the replacement",
            extra={"event": ev.id, "replacement": g.replica, "spare": g.label},
        )
        for node in t.nodes.values():
            self._event(node.name, "ReplacementRequested", f"promoted spare {g.label}")
        return g.replica

    def _spare_notice(self, ev: InterruptionEvent, t: Target, deadline: datetime) -> Outcome:
        """A notice for a warm spare: it serves nobody, so there is nothing to drain. Retire it
        (the reconcile job launches another, away from a reclaimed pool); a rebalance or a
        cancellation changes nothing."""
        inst = t.instance
        if ev.kind in (EventKind.REBALANCE, EventKind.SCHEDULED_CANCELLED):
            log.info("notice for a warm spare; nothing to do", extra={"event": ev.id})
            return Outcome("done", "spare-ignored")
        if self.cfg.dry_run:
            log.info(f"dry-run: would terminate spare {inst.replica}", extra={"event": ev.id})
            self.m.actions.labels("spare-retire", "dry-run").inc()
            return Outcome("done", "dry-run")
        until = max(deadline, self.now() + timedelta(seconds=30))
        if ev.kind is EventKind.SPOT_INTERRUPTION:
            self.blocks.block(inst.instance_type, inst.zone, "spot", self.cfg.block_seconds)
            self.m.blocked_pools.set(len(self.blocks.active()))
        if ev.state == "terminated" and ev.instance_id in t.nodes:
            name = t.nodes[ev.instance_id].name
            self._retry("delete-node", until, lambda: self.kube.delete_node(name))
        ids = [i.id for i in t.group]
        live = [
            i
            for i in self._retry("describe", until, lambda: self.cap.describe(ids)).values()
            if i.state in LIVE_STATES
        ]
        if live:
            self._retry("terminate", until, lambda: self.cap.terminate(live))
        self.m.actions.labels("spare-retire", "ok").inc()
        log.info(
            "retired a warm spare after a notice",
            extra={"event": ev.id, "replica": inst.replica, "kind": str(ev.kind)},
        )
        assert self.spares is not None
        self.spares.kick()
        return Outcome("done", "spare-retired")

    def _evict_all(self, ev: InterruptionEvent, t: Target, deadline: datetime) -> None:
        """Evict until the pods are gone or the deadline passes. A notice handled late (the
        deadline already past, the node still there) still gets one round of evictions and a
        shutdown timeout to finish."""
        asked: set[tuple[str, str]] = set()
        blocked_logged = False
        late_end = self.now() + timedelta(seconds=self.cfg.shutdown_timeout_seconds)
        end = max(deadline, late_end)
        while True:
            pods = []
            for node in t.nodes.values():
                pods += [p for p in self.kube.pods_on_node(node.name) if p.evictable]
            if not pods:
                return
            left = (end - self.now()).total_seconds()
            if left <= 0:
                self.m.deadline_kills.inc(len(pods))
                log.warning(
                    "deadline reached with pods still terminating; their unfinished requests "
                    "are aborted",
                    extra={
                        "event": ev.id,
                        "pods": ",".join(f"{p.namespace}/{p.name}" for p in pods),
                    },
                )
                return
            # vLLM must abort what cannot finish *before* the instance is gone, not with it
            to_deadline = (deadline - self.now()).total_seconds()
            grace = max(1, int(min(self.cfg.shutdown_timeout_seconds, to_deadline)))
            for p in pods:
                if p.deleting or (p.namespace, p.name) in asked:
                    continue
                try:
                    r = self.kube.evict(p.namespace, p.name, grace)
                except Exception as e:
                    self.m.errors.labels("evict").inc()
                    self.m.actions.labels("evict", "error").inc()
                    log.warning("eviction failed", extra={"pod": p.name, "error": str(e)})
                    continue
                if r is EvictResult.BLOCKED:
                    self.m.actions.labels("evict", "blocked").inc()
                    if not blocked_logged:
                        log.info(
                            "eviction blocked by a PodDisruptionBudget; retrying until deadline",
                            extra={"event": ev.id, "pod": f"{p.namespace}/{p.name}"},
                        )
                        blocked_logged = True
                    continue
                asked.add((p.namespace, p.name))
                self.m.actions.labels("evict", "ok" if r is EvictResult.EVICTED else "gone").inc()
            self._sleep(min(self.cfg.step_interval_seconds, max(0.01, left)))

    def _retire(self, ev: InterruptionEvent, t: Target, until: datetime) -> None:
        live = [
            i
            for i in self.cap.describe([i.id for i in t.group]).values()
            if i.state in ("pending", "running", "stopping", "stopped")
        ]
        if live:
            self._retry("terminate", until, lambda: self.cap.terminate(live))
            self.m.actions.labels("terminate", "ok").inc()
            log.info(
                "retired the old replica's instances",
                extra={"event": ev.id, "instances": ",".join(i.id for i in live)},
            )
        self._record(t, until, phase="retired")

    # -- other kinds ----------------------------------------------------------------------

    def _scheduled(self, entry: Entry, t: Target) -> Outcome:
        ev = entry.event
        start = ev.start_time or entry.deadline
        drain_at = start - timedelta(seconds=self.cfg.maintenance_lead_seconds)
        if entry.stage == "start" and self.now() < drain_at:
            out = self._replace_first(ev, t, start, replace=False, drain=False)
            if out.status != "done" or out.action in ("node-not-found", "dry-run"):
                return out
            log.info(
                "scheduled maintenance: cordoned now, drain deferred",
                extra={"event": ev.id, "drain_at": drain_at.isoformat()},
            )
            return Outcome("deferred", "cordoned", not_before=drain_at, stage="drain")
        return self._replace_first(ev, t, start, replace=True, drain=True)

    def _cancelled(self, ev: InterruptionEvent, t: Target) -> Outcome:
        st = t.state
        if not t.nodes:
            return Outcome("done", "node-not-found")
        mine = (
            st.get("kind") == str(EventKind.SCHEDULED_CHANGE)
            and st.get("phase") == "cordoned"
            and st.get("maintenance_id") == ev.detail.get("event_id")
        )
        if not mine:
            log.info(
                "cancellation: node is not (only) cordoned for this maintenance; left as is",
                extra={"event": ev.id, "phase": st.get("phase"), "by": st.get("kind")},
            )
            return Outcome("done", "cancel-ignored")
        if self.cfg.dry_run:
            log.info("dry-run: would uncordon", extra={"event": ev.id})
            return Outcome("done", "dry-run")
        until = self.now() + timedelta(seconds=60)
        for node in t.nodes.values():
            self._retry(
                "uncordon",
                until,
                lambda n=node: self.kube.uncordon(n.name, {fleet.STATE_ANNOTATION: None}),  # type: ignore[misc]
            )
            self.m.actions.labels("uncordon", "ok").inc()
            self._event(node.name, "MaintenanceCancelled", f"uncordoned ({ev.id})")
        return Outcome("done", "uncordoned")

    def _state_change(self, ev: InterruptionEvent, t: Target, deadline: datetime) -> Outcome:
        until = max(deadline, self.now() + timedelta(seconds=30))
        if ev.state != "terminated":
            if phase_index(t.state) >= 0:
                return Outcome("done", "already-handled")
            return self._replace_first(ev, t, deadline, replace=False, drain=False)
        # terminated: clean up the node objects, restore the replica count if nobody did
        if self.cfg.dry_run:
            log.info(
                "dry-run: would delete node objects and restore capacity", extra={"event": ev.id}
            )
            return Outcome("done", "dry-run")
        node = t.nodes.get(ev.instance_id)
        if node is not None:
            self._retry("delete-node", until, lambda: self.kube.delete_node(node.name))
            self.m.actions.labels("delete-node", "ok").inc()
            del t.nodes[ev.instance_id]
        if t.state.get("replacement"):
            return Outcome("done", "cleaned-up")
        existing = self._retry(
            "find-replacement",
            until,
            lambda: self.cap.find_replacement(t.instance.pool, t.instance.replica),
        )
        if existing:
            return Outcome("done", "cleaned-up")
        log.warning(
            "instance terminated without a handled notice: restoring the replica",
            extra={"event": ev.id, "replica": t.instance.replica},
        )
        replacement = self._request_replacement(ev, t, until)
        if replacement is None:
            return Outcome("failed", "no-capacity")
        if t.nodes:  # survivors of a broken group: keep new work off them
            t.state = {}
            self._replace_first(ev, t, deadline, replace=False, drain=False)
            self._record(t, until, replacement=replacement)
        return Outcome("done", "replacement-requested")

    def _asg_lifecycle(self, ev: InterruptionEvent, t: Target, deadline: datetime) -> Outcome:
        """The ASG is terminating the instance and will replace it itself: drain, continue."""
        if self.cfg.dry_run:
            return self._plan_log(ev, t, replace=False, drain=True)
        if t.nodes:
            out = self._replace_first(ev, t, deadline, replace=False, drain=True)
            if out.status != "done":
                return out
        try:
            self.cap.complete_lifecycle(
                ev.detail["group"], ev.detail["hook"], ev.detail["token"], ev.instance_id
            )
            self.m.actions.labels("complete-lifecycle", "ok").inc()
        except Exception as e:  # the hook times out by itself; the drain is what mattered
            self.m.errors.labels("complete-lifecycle").inc()
            self.m.actions.labels("complete-lifecycle", "error").inc()
            log.warning(
                "could not complete the lifecycle action; the hook will time out instead",
                extra={"event": ev.id, "error": f"{type(e).__name__}: {e}"},
            )
        return Outcome("done", "drained-for-asg")
