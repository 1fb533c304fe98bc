"""Warm spare replicas (``--spare-replicas N``): headroom already loaded when a notice lands.

A 594 GB model loads in minutes, longer than a spot notice, so a cold replacement leaves the pool
one replica short from the drain until it is Ready. With N > 0 the daemon keeps, per pool, N
extra replica groups launched, booted and loaded but **out of traffic**, and an interruption
promotes one of them instead of waiting for a cold launch.

* **What a pool is.** The instances the daemon manages (``prov.dev/managed=true``) grouped by
  ``prov.dev/pool``; a replica group is the instances sharing ``prov.dev/replica``. The daemon
  never changes how many replicas *serve* (that is the deploy stack's replica count); it keeps N
  spares beside every pool that has at least one serving group, shaped like that pool's
  serving group with the lowest replica id (instance type, launch template, group size).
* **What a spare is.** A group tagged ``prov.dev/spare=true`` (EC2). Once its nodes join, the
  daemon labels them ``prov.dev/spare=true`` and
  ``node.kubernetes.io/exclude-from-external-load-balancers=true`` - the same label that takes a
  draining replica out of traffic - and leaves them schedulable, so the serving workload (a
  LeaderWorkerSet sized serving + N) places its pods there and loads the weights.
* **Promotion.** On an interruption the handler asks :meth:`Spares.claim` for a spare of the
  pool with the same group size (Ready first; a spare still loading is still ahead of a cold
  launch). When ``--on-demand-floor`` requires an on-demand replacement only an on-demand spare
  qualifies, otherwise the handler launches on-demand as before. The spare is re-tagged
  ``prov.dev/replaces=<old replica>`` and ``prov.dev/spare=promoted`` in one CreateTags call
  (so a restarted daemon finds it as the replacement, like a launched one) and its node labels
  are removed: it joins the load balancers *before* the old replica is cordoned.
* **Replenishing.** A promotion wakes the ``spare-reconcile`` job (registered in
  ``scheduler.py``), which launches a new spare through the same fallback as replacements
  (spot in the template's zone, then the other zones, then ``--alternative`` types, then
  on-demand; blocked pools - e.g. the one just reclaimed - are skipped). Extra spares (N
  lowered) are terminated, those not Ready first. A notice *for a spare* retires it and wakes
  the job; nothing is drained, nothing serves there.

Queue mode only (one fleet-wide daemon, the leader when leader election is on): per-node
daemons would each keep their own spares.

**Time to serve.** The daemon gets the plan's ``time_to_serve_s`` (``--time-to-serve``, which
the deploy stack passes) and applies provisioner/core/time_to_serve.py's rules to it, the same
ones the quote and the stack use: a group serves at ``launch + time to serve`` (Ready groups
now), so spares are ranked by when they will serve and a replacement is dated; a rebalance
recommendation starts the replacement by default when the time to serve exceeds the notice
(:func:`prewarm_on_rebalance`); and a warm spare saves ``downtime_per_reclaim_s`` of one
replica per reclaim (:func:`spare_saves_s`, logged when the spares start).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from provisioner import fleet
from provisioner.core.time_to_serve import downtime_per_reclaim_s, needs_prewarm
from provisioner.daemon.capacity import (
    LIVE_STATES,
    Blocklist,
    Capacity,
    InstanceInfo,
    NoCapacity,
    fallback_types,
    launch_replacement,
    plan_attempts,
)
from provisioner.daemon.config import DaemonConfig
from provisioner.daemon.kube import Kube
from provisioner.daemon.metrics import Metrics

log = logging.getLogger("prov.daemon.spares")

OUT_OF_TRAFFIC: dict[str, str | None] = {fleet.SPARE_LABEL: "true", fleet.EXCLUDE_LB_LABEL: "true"}
IN_TRAFFIC: dict[str, str | None] = {fleet.SPARE_LABEL: None, fleet.EXCLUDE_LB_LABEL: None}


def prewarm_on_rebalance(cfg: DaemonConfig) -> bool:
    """Does a rebalance recommendation start the replacement? ``--prewarm-on-rebalance``, or by
    default when the plan's time to serve exceeds the spot notice (a replacement asked at the
    notice cannot serve in time): core.time_to_serve.needs_prewarm, the stack's rule too."""
    tts = cfg.time_to_serve_seconds
    return cfg.prewarm_on_rebalance or (
        tts is not None and needs_prewarm(tts, cfg.spot_notice_seconds)
    )


def spare_saves_s(cfg: DaemonConfig) -> float | None:
    """Seconds of one replica's capacity a warm spare saves per reclaim (what a cold
    replacement asked at the notice leaves missing); None when the time to serve is unknown."""
    tts = cfg.time_to_serve_seconds
    return None if tts is None else downtime_per_reclaim_s(tts, cfg.spot_notice_seconds)


def serves_at(
    cfg: DaemonConfig, members: Sequence[InstanceInfo], ready: bool, now: datetime
) -> datetime | None:
    """When a replica group is expected to serve: now when Ready; else its last launch + the
    plan's time to serve (a group not launched yet: now + it); None when that is unknown."""
    if ready:
        return now
    tts = cfg.time_to_serve_seconds
    if tts is None:
        return None
    times = [i.launch_time for i in members if i.launch_time is not None]
    launched = max(times) if len(times) == len(members) and times else now
    return max(now, launched + timedelta(seconds=tts))


@dataclass
class Group:
    """One replica group of a pool, as EC2 describes it."""

    pool: str
    replica: str
    members: list[InstanceInfo]

    @property
    def lead(self) -> InstanceInfo:
        return min(self.members, key=lambda i: i.id)

    @property
    def size(self) -> int:
        return max(len(self.members), self.lead.replica_size)

    @property
    def spare(self) -> bool:
        return any(i.spare for i in self.members)

    @property
    def market(self) -> str:
        return self.lead.market

    @property
    def label(self) -> str:
        lead = self.lead
        return f"{self.replica} ({self.size} x {lead.instance_type}@{lead.zone}/{self.market})"


def group_ready(kube: Kube, cfg: DaemonConfig, members: Sequence[InstanceInfo], size: int) -> bool:
    """All ``size`` instances running, their nodes Ready and schedulable, and a Ready pod of the
    serving workload (``--workload-selector``) on each."""
    running = [i for i in members if i.state == "running"]
    if len(running) < size:
        return False
    label = cfg.workload_label
    for i in running:
        node = kube.find_node(i.private_dns, i.id)
        if node is None or not node.ready or node.unschedulable:
            return False
        if label is not None and not any(
            p.ready and not p.deleting and p.labels.get(label[0]) == label[1]
            for p in kube.pods_on_node(node.name)
        ):
            return False
    return True


class Spares:
    """Keeps ``cfg.spare_replicas`` warm spare groups per pool and hands them out."""

    def __init__(
        self,
        cfg: DaemonConfig,
        capacity: Capacity,
        kube: Kube,
        metrics: Metrics,
        blocks: Blocklist,
        is_leader: Callable[[], bool] = lambda: True,
        mono: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.cfg = cfg
        self.now = now
        self.cap = capacity
        self.kube = kube
        self.m = metrics
        self.blocks = blocks
        self.is_leader = is_leader
        self._mono = mono
        self._lock = threading.Lock()  # a claim and the labelling of spares never interleave
        self._claimed: dict[str, float] = {}  # spare replica -> when this daemon promoted it
        self._launched: dict[str, tuple[str, float]] = {}  # spare replica -> (pool, when)
        self._again = threading.Event()
        self.wake: Callable[[], None] | None = None  # run the reconcile job now (the scheduler)
        self.passes = 0
        saves = spare_saves_s(cfg)
        if cfg.spare_replicas and saves is not None:
            tts, notice = cfg.time_to_serve_seconds, cfg.spot_notice_seconds
            if saves > 0:
                log.info(
                    f"a warm spare saves {saves:.0f} s of one replica per reclaim (time to serve "
                    f"{tts:.0f} s > notice {notice:.0f} s)"
                )
            else:
                log.warning(
                    f"--spare-replicas {cfg.spare_replicas}: a spare saves nothing here: the "
                    f"time to serve ({tts:.0f} s) fits in the notice ({notice:.0f} s), so a "
                    "replacement asked at the notice serves in time"
                )

    # -- reading --------------------------------------------------------------------------

    def groups(self) -> dict[str, dict[str, Group]]:
        """pool -> replica -> group, from one describe of every live managed instance."""
        out: dict[str, dict[str, Group]] = {}
        for i in self.cap.managed_instances():
            if i.state not in LIVE_STATES:
                continue
            pool = out.setdefault(i.pool, {})
            pool.setdefault(i.replica, Group(i.pool, i.replica, [])).members.append(i)
        return out

    def ready(self, g: Group) -> bool:
        return group_ready(self.kube, self.cfg, g.members, g.size)

    def serves_at(self, g: Group) -> datetime | None:
        """When the spare is expected to serve (now when Ready; launch + time to serve)."""
        return serves_at(self.cfg, g.members, self.ready(g), self.now())

    def _candidates(self, pool: str, size: int, on_demand_only: bool) -> list[Group]:
        """Spares that could replace a group of ``size`` nodes: Ready ones first, then those
        outside a blocked (just reclaimed or exhausted) pool, then the one that will serve
        first (launch + the plan's time to serve), then by replica id."""
        cands = [
            g
            for g in self.groups().get(pool, {}).values()
            if g.spare
            and g.replica not in self._claimed
            and g.size == size
            and all(i.state in ("pending", "running") for i in g.members)
            and (not on_demand_only or g.market == "on-demand")
        ]
        now = self.now()
        ranked = []
        for g in cands:
            ready = self.ready(g)
            eta = serves_at(self.cfg, g.members, ready, now) or now
            blocked = self.blocks.blocked(g.lead.instance_type, g.lead.zone, g.market)
            ranked.append((not ready, blocked, eta, g.replica, g))
        return [g for *_, g in sorted(ranked, key=lambda r: r[:4])]

    def peek(self, pool: str, size: int, on_demand_only: bool) -> Group | None:
        """The spare a claim would promote now (dry run), without promoting it."""
        cands = self._candidates(pool, size, on_demand_only)
        return cands[0] if cands else None

    # -- promotion ------------------------------------------------------------------------

    def claim(
        self, pool: str, size: int, on_demand_only: bool, replaces: str, recheck: bool = False
    ) -> Group | None:
        """Promote a spare to be the replacement of ``replaces``; None when none qualifies.

        ``recheck``: a previous attempt may have tagged the spare before failing; look for the
        replacement by its tag first so a spare is never promoted twice for one replica."""
        if recheck:
            done = self.cap.find_replacement(pool, replaces)
            if done:
                self.admit(done)
                return Group(pool, done[0].replica, done)
        with self._lock:
            cands = self._candidates(pool, size, on_demand_only)
            if not cands:
                return None
            g = cands[0]
            self.cap.promote(g.members, replaces)
            self._claimed[g.replica] = self._mono()
        self.admit(g.members)
        self.kick()
        return g

    def admit(self, members: Sequence[InstanceInfo]) -> None:
        """Put a promoted spare's nodes into traffic (idempotent; nodes not joined yet will
        join without the labels)."""
        for i in members:
            node = self.kube.find_node(i.private_dns, i.id)
            if node is not None and any(k in node.labels for k in IN_TRAFFIC):
                self.kube.label(node.name, IN_TRAFFIC)

    def kick(self) -> None:
        """Replenish soon: wake the reconcile job (and make a running pass go round again)."""
        self._again.set()
        if self.wake is not None:
            try:
                self.wake()
            except Exception as e:  # the regular interval will do it
                log.debug("could not wake the spare job", extra={"error": str(e)})

    # -- the reconcile job ----------------------------------------------------------------

    def reconcile(self) -> int:
        """The ``spare-reconcile`` job: label, count, launch or retire. Returns groups launched."""
        if not self.is_leader():
            return 0
        launched = 0
        for _ in range(3):  # a promotion during a pass asks for another one
            if not self.is_leader():
                break
            self._again.clear()
            launched += self._pass()
            self.passes += 1
            if not self._again.is_set():
                break
        return launched

    def _pass(self) -> int:
        now = self._mono()
        memory = self.cfg.spare_memory_seconds
        self._claimed = {r: t for r, t in self._claimed.items() if now - t < memory}
        self._launched = {r: v for r, v in self._launched.items() if now - v[1] < memory}
        launched = 0
        for pool, groups in sorted(self.groups().items()):
            if not self.is_leader():  # stopping (or the lease lost) mid-pass: act no more
                break
            serving = sorted((g for g in groups.values() if not g.spare), key=lambda g: g.replica)
            spares = [g for g in groups.values() if g.spare and g.replica not in self._claimed]
            if not serving:
                continue  # a pool nobody serves (scaled to zero, or all spares): leave it
            ready = 0
            for g in spares:
                self._out_of_traffic(g)
                ready += self.ready(g)
            self.m.spares.labels(pool, "ready").set(ready)
            self.m.spares.labels(pool, "loading").set(len(spares) - ready)
            for r in [r for r in self._launched if r in groups or r in self._claimed]:
                del self._launched[r]  # visible in EC2 now (as a spare, or already promoted)
            in_flight = [r for r, (p, _) in self._launched.items() if p == pool]
            want = self.cfg.spare_replicas
            if len(spares) > want:
                self._retire_extra(spares, len(spares) - want)
                continue
            have = len(spares) + len(in_flight)
            running = [g for g in serving if g.lead.state == "running"]
            for _ in range(want - have):
                if not running or not self.is_leader() or not self._launch(pool, running[0]):
                    break
                launched += 1
        return launched

    def _out_of_traffic(self, g: Group) -> None:
        for i in g.members:
            node = self.kube.find_node(i.private_dns, i.id)
            if node is None or all(node.labels.get(k) == v for k, v in OUT_OF_TRAFFIC.items()):
                continue
            if self.cfg.dry_run:
                log.info(f"dry-run: would label spare node {node.name} out of traffic")
                continue
            with self._lock:  # not if a claim promoted it meanwhile
                if g.replica in self._claimed:
                    return
                self.kube.label(node.name, OUT_OF_TRAFFIC)
            log.info(
                "spare node kept out of traffic",
                extra={"node": node.name, "replica": g.replica, "pool": g.pool},
            )

    def _launch(self, pool: str, template: Group) -> bool:
        lead = template.lead
        new_id = "s-" + uuid.uuid4().hex[:10]
        if self.cfg.dry_run:
            zones = list(self.cap.subnets_by_zone(lead)) or [lead.zone]
            attempts = plan_attempts(
                lead.instance_type,
                lead.zone,
                zones,
                fallback_types(lead, self.cfg.alternatives),
                self.blocks,
                False,
            )
            log.info(
                f"dry-run: would launch spare {new_id} ({template.size} node(s)) for {pool} "
                "trying " + ", ".join(a.label for a in attempts[:6]),
            )
            self.m.actions.labels("spare-launch", "dry-run").inc()
            return False
        try:
            done = launch_replacement(
                self.cap, self.blocks, template.size, lead, new_id, self.cfg, False, spare=True
            )
        except NoCapacity as e:
            self.m.actions.labels("spare-launch", "no-capacity").inc()
            log.error("no capacity for a spare", extra={"pool": pool, "error": str(e)})
            return False
        except Exception as e:
            self.m.errors.labels("spare-launch").inc()
            log.warning("spare launch failed", extra={"pool": pool, "error": f"{e}"})
            return False
        self._launched[new_id] = (pool, self._mono())
        self.m.spare_launches.labels(done.attempt.market).inc()
        self.m.actions.labels("spare-launch", "ok").inc()
        self.m.blocked_pools.set(len(self.blocks.active()))
        log.info(
            "spare requested",
            extra={
                "pool": pool,
                "replica": new_id,
                "pool_used": done.attempt.label,
                "fallbacks": ",".join(f"{a.label}:{c}" for a, c in done.tried),
                "instances": ",".join(i.id for i in done.instances),
            },
        )
        return True

    def _retire_extra(self, spares: list[Group], extra: int) -> None:
        victims = sorted(spares, key=lambda g: (self.ready(g), g.replica))[:extra]
        for g in victims:
            if self.cfg.dry_run:
                log.info(f"dry-run: would terminate extra spare {g.label}")
                continue
            with self._lock:  # never one a claim is promoting
                if g.replica in self._claimed:
                    continue
                self.cap.terminate(g.members)
            self.m.actions.labels("spare-retire", "ok").inc()
            log.info("terminated an extra spare", extra={"pool": g.pool, "replica": g.replica})
