"""The replace-first drain, as a resumable flow: spot interruptions, scheduled maintenance at
its drain time, and rebalance recommendations with ``--rebalance-drain`` all run it.

1. request the replacement group (a warm spare, else a launch with fallbacks across zones,
   types, then on-demand); a failure does not stop the rest, the next step asks again;
2. taint + cordon every node of the group (no new pods; still serving);
3. hold: keep serving while the replacement loads, until the last moment the drain must start
   (deadline - the pods' own grace period - margin);
4. drain: take the nodes out of external load balancers, evict the pods through the Eviction
   API with their own grace period (bounded by the deadline), wait for them to go;
5. wait for the replacement to be Ready (in IMDS mode, first retire the rest of the group: this
   daemon dies with its node); 6. retire what is left of the old group; only then is the
   notice done and its SQS message deleted.

Every call runs the steps that can run now and returns; waiting is a ``deferred`` outcome, so a
worker is never held while a replacement loads. Progress is on the nodes (FlowState), so a
restarted daemon resumes; when the nodes are gone too, the replacement is found by its EC2 tag.
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime, timedelta

from provisioner import fleet
from provisioner.daemon.capacity import (
    LIVE_STATES,
    fallback_types,
    plan_attempts,
    replacement_id,
)
from provisioner.daemon.events import EventKind, InterruptionEvent
from provisioner.daemon.handling.state import (
    CORDONED,
    DRAINED,
    DRAINING,
    PHASES,
    PRIORITY,
    RETIRED,
    Aborted,
    Outcome,
    Target,
)
from provisioner.daemon.handling.steps import Steps
from provisioner.daemon.preflight import error_line, is_config_error
from provisioner.daemon.store import Entry

log = logging.getLogger("prov.daemon.handler")

#: A reclaimed instance's spot pool (type, zone) is avoided for --block-minutes. After a
#: rebalance recommendation it is at risk, not out: AWS's guidance is to move to capacity "not at
#: an elevated risk of interruption" (docs.aws.amazon.com/AWSEC2/latest/UserGuide/rebalance-
#: recommendations.html), so its spot pool is tried after every other; blocking it would push a
#: single-zone (multi-node) pool straight to on-demand on advice alone.


def owns(ev: InterruptionEvent, t: Target) -> bool:
    """Does this notice take over the replica's progress record?"""
    if t.state.empty:
        return True
    try:
        theirs = PRIORITY[EventKind(t.state.kind)]
    except ValueError:
        return True
    return PRIORITY[ev.kind] >= theirs and t.state.index < DRAINING


def asg_refills(h: Steps, ev: InterruptionEvent, t: Target, until: datetime) -> bool:
    """A late notice: the instance is already gone while still in its Auto Scaling group, so
    the ASG refills it, or already did; the daemon launches nothing: one actor per node. In
    its group: it still carries AWS's group-name tag (the daemon's detach drops it), or a live
    instance of its replica does (the refill, or the rest of a multi-node group: the stack
    launches each replica group through its own ASG; a group the daemon launched has no ASG).
    A replacement the daemon already launched (a resumed flow) is awaited as before."""
    inst = t.instance
    group = refilling_group(h, t, until)
    if group is None or h.existing_replacement(t, until):
        return False
    h.m.skipped.labels("asg-refills").inc()
    log.info(
        "late notice: the instance is gone and its Auto Scaling group refills it; "
        "launching nothing",
        extra={"event": ev.id, "instance": inst.id, "group": group},
    )
    return True


def refilling_group(h: Steps, t: Target, until: datetime) -> str | None:
    """The Auto Scaling group that refills a gone instance (asg_refills' rule; read-only, so
    --dry-run asks it too), or None. When neither the instance nor a live member of its
    replica names a group (AWS's group tag gone before the refill exists), Auto Scaling is
    asked for the group the stack made for the replica, by its tags. If it cannot be asked (a
    role without autoscaling:DescribeAutoScalingGroups), one error line, and the instance is
    replaced as one in no group: a second instance beats a missing replica."""
    inst = t.instance
    if inst.state in LIVE_STATES:
        return None
    if inst.asg:
        return inst.asg
    members = h.retry("describe", until, lambda: h.cap.replica_members(inst.pool, inst.replica))
    live_in_asg = [m for m in members if m.id != inst.id and m.asg and m.state in LIVE_STATES]
    if live_in_asg:
        return live_in_asg[0].asg

    def ask() -> str | None:
        return h.cap.refilling_group(inst.pool, inst.replica)

    try:
        try:
            return ask()
        except Exception as e:
            if is_config_error(e):  # denied, unknown identity: asking again will not help
                raise
            return h.retry("asg-lookup", until, ask)  # an outage: ride it out a while
    except Aborted:
        raise
    except Exception as e:
        h.m.errors.labels("asg-lookup").inc()
        log.error(
            "cannot ask Auto Scaling (autoscaling:DescribeAutoScalingGroups) whether a group "
            "refills the gone instance; replacing it as an instance in no group",
            extra={"instance": inst.id, "replica": inst.replica, "error": error_line(e)},
        )
        return None


def _time(text: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def replace_first(
    h: Steps, entry: Entry, t: Target, deadline: datetime, *, replace: bool, drain: bool
) -> Outcome:
    ev, inst = entry.event, t.instance
    if h.cfg.dry_run:
        return plan_log(h, ev, t, replace, drain, deadline)
    until = max(deadline, h.now() + timedelta(seconds=3 * h.cfg.step_interval_seconds))
    if entry.stage == "start" and (deadline < h.now() or inst.state not in LIVE_STATES):
        log.warning(
            "late notice: handled after its deadline or after the instance went",
            extra={
                "event": ev.id,
                "instance": inst.id,
                "state": inst.state,
                "deadline": deadline.isoformat(),
            },
        )
    if entry.stage == "start" and ev.kind == EventKind.SPOT_INTERRUPTION:
        h.blocks.block(inst.instance_type, inst.zone, "spot", h.cfg.block_seconds)
        h.m.blocked_pools.set(len(h.blocks.active()))
    elif entry.stage == "start" and ev.kind == EventKind.REBALANCE:
        h.blocks.flag(inst.instance_type, inst.zone, "spot", h.cfg.block_seconds)
    first = entry.stage == "start"  # later steps: this daemon may have detached the group
    if replace and first and not t.state.replacement and asg_refills(h, ev, t, until):
        return Outcome("done", "asg-refills")
    if not t.nodes:
        return _nodes_gone(h, ev, t, deadline, replace)

    # 1. replacement first (asked again on every step until there is one)
    replacement = t.state.replacement
    if replace and not replacement:
        replacement = h.request_replacement(ev, t, until)
        if replacement is None and not drain:
            return Outcome("failed", "no-capacity")

    # 2. taint + cordon: no new pods, but the node keeps serving
    state = copy.copy(t.state)
    if owns(ev, t):
        state.event, state.kind = ev.id, str(ev.kind)
        state.maintenance_id = ev.detail.get("event_id")
        state.deadline = deadline.isoformat()
    state.replica, state.replacement = inst.replica, replacement
    state.phase = PHASES[max(CORDONED, t.state.index)]
    cordoned_now = False
    if t.state.index < 0 or not all(n.unschedulable and n.tainted for n in t.nodes.values()):
        cordoned_now = True
        t.state = state
        body = {fleet.STATE_ANNOTATION: state.to_json()}
        for node in list(t.nodes.values()):
            h.retry(
                "cordon",
                until,
                lambda n=node: h.kube.cordon(n.name, str(ev.kind), False, body, n),  # type: ignore[misc]
            )
            h.m.actions.labels("cordon", "ok").inc()
            h.event(node.name, "CordonedForInterruption", f"{ev.kind} notice {ev.id}")
        h.timings.cordon.append(h.since(ev))
        h.m.to_cordon.observe(h.since(ev))
        log.info(
            "tainted and cordoned the replica", extra={"event": ev.id, "nodes": h.node_names(t)}
        )
    elif not state.same_as(t.state):
        t.state = state
        h.record(t, until)
    if not drain or h.cfg.cordon_only:
        action = "cordoned" if cordoned_now else "already-cordoned"
        return Outcome("done", action + ("+replacement" if replacement else ""))

    # 3. hold: keep serving while the replacement loads, until the drain must start
    if t.state.index < DRAINING:
        pods = h.pods_to_drain(t)
        grace = max((h.grace_of(p) for p in pods), default=0)
        start_by = deadline - timedelta(seconds=grace + h.cfg.drain_margin_seconds)
        ready, eta = h.replacement_status(t, replacement)
        spot = ev.kind is EventKind.SPOT_INTERRUPTION  # two minutes: no time to lose
        if spot and not t.state.short and _short(h, replacement, ready, eta, start_by):
            _shed_early(h, ev, t, until, eta)
        if replacement and h.cfg.hold_for_replacement and h.now() < start_by and not ready:
            return Outcome("deferred", "holding", not_before=min(h.later(), start_by), stage="hold")
        # 4. the drain starts: out of the load balancers first, then evictions
        for node in list(t.nodes.values()):
            h.retry(
                "exclude-lb",
                until,
                lambda n=node: h.kube.label(n.name, {fleet.EXCLUDE_LB_LABEL: "true"}),  # type: ignore[misc]
            )
        h.record(t, until, phase="draining", drain_started=h.now().isoformat(), lb_excluded=True)
        log.info(
            "starting the drain",
            extra={"event": ev.id, "replacement": replacement, "grace": grace},
        )
    if t.state.index < DRAINED:
        started = _time(t.state.drain_started) or h.now()
        grace = max((h.grace_of(p) for p in h.pods_to_drain(t)), default=0)
        # a late notice (deadline past, node still there) still gets the pods' own grace
        end = max(deadline, started + timedelta(seconds=grace + h.cfg.drain_margin_seconds))
        left = h.evict_round(ev, t, deadline)
        if left and h.now() < end:
            return Outcome("deferred", "draining", not_before=h.later(), stage="drain")
        if left:
            h.m.deadline_kills.inc(left)
            log.warning(
                "deadline reached with pods still terminating; their unfinished requests are "
                "aborted",
                extra={"event": ev.id, "pods": left},
            )
        h.record(t, until, phase="drained")
        if h.cfg.mode == "imds" and h.cfg.retire_old_group and replacement:
            # this daemon runs on the reclaimed node and dies with it: retire the whole group
            # now, or its surviving nodes would stay cordoned with nothing on them
            h.retire(ev, t, until)

    # 5. the replacement must be Ready before the notice is done
    if replace and not replacement:
        waiting = _await_replacement(h, ev, t, deadline, None)
        if waiting is not None:
            return waiting
        replacement = t.state.replacement
    elif replacement:
        waiting = _await_replacement(h, ev, t, deadline, replacement)
        if waiting is not None:
            return waiting

    # 6. retire what is left of the old group (only when we replaced it: an ASG terminating its
    # own instance replaces it itself)
    if replacement and h.cfg.retire_old_group and t.state.index < RETIRED:
        h.retire(ev, t, until)
    h.timings.drain.append(h.since(ev))
    h.m.drain_seconds.observe(h.since(ev))
    h.m.actions.labels("drain", "ok").inc()
    return Outcome("done", "replaced-and-drained" if replacement else "drained")


def _short(
    h: Steps, replacement: str | None, ready: bool, eta: datetime | None, start_by: datetime
) -> bool:
    """Will the pool be a replica short? No replacement at all, or one that (by the plan's
    time to serve) cannot serve before the drain must start. Unknown time to serve: not
    known short, so the flow holds in the load balancers as before. Asked on a spot notice
    only: a maintenance drain or a rebalance window has minutes, and holding in the load
    balancers until the drain is worth that capacity."""
    if ready:
        return False
    if replacement is None:
        return True
    return eta is not None and eta > max(start_by, h.now())


def _shed_early(
    h: Steps, ev: InterruptionEvent, t: Target, until: datetime, eta: datetime | None
) -> None:
    """The pool will be short whatever we do: take the nodes out of external load balancers
    now, not at the drain, so new requests go to the surviving replicas while the cloud load
    balancer deregisters the targets; the pods keep serving what they have (and in-cluster
    traffic until their eviction), and keep their grace for in-flight streams."""
    for node in list(t.nodes.values()):
        h.retry(
            "exclude-lb",
            until,
            lambda n=node: h.kube.label(n.name, {fleet.EXCLUDE_LB_LABEL: "true"}),  # type: ignore[misc]
        )
    when = eta.isoformat() if eta else None
    h.record(t, until, lb_excluded=True, short=True, replacement_eta=when)
    h.m.actions.labels("shed-early", "ok").inc()
    left = f"in {(eta - h.now()).total_seconds():.0f} s" if eta else "not requested yet"
    for node in t.nodes.values():
        h.event(node.name, "CapacityShort", f"out of load balancers now; replacement {left}")
    log.info(
        "no replacement can serve before the drain: out of load balancers now",
        extra={"event": ev.id, "replacement_eta": when, "nodes": h.node_names(t)},
    )


def _await_replacement(
    h: Steps, ev: InterruptionEvent, t: Target, deadline: datetime, replacement: str | None
) -> Outcome | None:
    """None when the replacement is Ready; else deferred, or failed once it is too late."""
    limit = max(ev.received_at + timedelta(seconds=h.cfg.replacement_timeout_seconds), deadline)
    if replacement is None:
        replacement = h.request_replacement(ev, t, h.later(10))
        if replacement is not None:
            h.record(t, h.later(10), replacement=replacement)
    if replacement is not None and h.replacement_ready(t, replacement):
        return None
    if h.now() >= limit:
        h.m.actions.labels("replace", "timeout").inc()
        log.error("replacement not Ready in time", extra={"event": ev.id})
        return Outcome("failed", "replacement-not-ready" if replacement else "no-replacement")
    return Outcome("deferred", "awaiting-replacement", not_before=h.later(), stage="await")


def _nodes_gone(
    h: Steps, ev: InterruptionEvent, t: Target, deadline: datetime, replace: bool
) -> Outcome:
    """No node of the group is left in Kubernetes: a late notice, or a flow resumed after the
    instance was reclaimed. The replica still needs its replacement, and the notice is done
    only once that is Ready (found again by its EC2 tag after a restart)."""
    if not replace:
        h.m.skipped.labels("node-not-found").inc()
        log.info("no Kubernetes node for the instance; nothing to drain", extra={"event": ev.id})
        return Outcome("done", "node-not-found")
    waiting = _await_replacement(h, ev, t, deadline, h.existing_replacement(t, h.later(10)))
    if waiting is not None:
        return waiting
    survivors = [i for i in t.group if i.state in LIVE_STATES and i.id != ev.instance_id]
    if survivors and h.cfg.retire_old_group:
        h.retire(ev, t, h.later(30))
    h.m.actions.labels("drain", "ok").inc()
    return Outcome("done", "replaced")


def plan_log(
    h: Steps,
    ev: InterruptionEvent,
    t: Target,
    replace: bool,
    drain: bool,
    deadline: datetime | None = None,
) -> Outcome:
    """--dry-run: say what would happen, change nothing (not even the queue)."""
    inst = t.instance
    blocks = h.blocks.snapshot()  # what the real run would avoid, without changing ours
    if ev.kind == EventKind.SPOT_INTERRUPTION:
        blocks.block(inst.instance_type, inst.zone, "spot", h.cfg.block_seconds)
    elif ev.kind == EventKind.REBALANCE:
        blocks.flag(inst.instance_type, inst.zone, "spot", h.cfg.block_seconds)
    zones = list(h.cap.subnets_by_zone(inst)) or [inst.zone]  # read-only calls
    on_demand_only = h.cfg.on_demand_floor > 0 and (
        h.cap.on_demand_replicas(inst.pool, exclude_replica=inst.replica) < h.cfg.on_demand_floor
    )
    attempts = plan_attempts(
        inst.instance_type,
        inst.zone,
        zones,
        fallback_types(inst, h.cfg.alternatives),
        blocks,
        on_demand_only,
    )
    decisions: list[str] = []
    spare = None
    if replace and not t.state.replacement and h.spares is not None:
        size = max(len(t.group), inst.replica_size)
        spare = h.spares.peek(inst.pool, size, on_demand_only)
    until = h.now() + timedelta(seconds=3 * h.cfg.step_interval_seconds)
    refills = replace and not t.state.replacement and refilling_group(h, t, until)
    if refills and h.cap.find_replacement(inst.pool, inst.replica):  # a resumed flow's: awaited
        refills = None
    if refills:  # as the real run: a late notice left to the ASG launches nothing
        decisions.append(f"launch nothing: the instance is gone and {refills} refills it")
    elif spare is not None:
        decisions.append(f"promote spare {spare.label} as the replacement of {inst.replica}")
    elif replace and not t.state.replacement:
        decisions.append(
            f"request replacement {replacement_id(inst.pool, inst.replica)} "
            f"({len(t.group)} node(s)) trying "
            + ", ".join(a.label for a in attempts[:6])
            + (" ..." if len(attempts) > 6 else "")
        )
    tts = h.cfg.time_to_serve_seconds
    spot = ev.kind is EventKind.SPOT_INTERRUPTION
    if drain and not h.cfg.cordon_only and spare is None and tts is not None and deadline and spot:
        pods = h.pods_to_drain(t)
        grace = max((h.grace_of(p) for p in pods), default=0)
        hold = (deadline - h.now()).total_seconds() - grace - h.cfg.drain_margin_seconds
        if tts > hold:
            decisions.append(
                f"take {h.node_names(t)} out of load balancers now: a replacement serves in "
                f"{tts:.0f} s, after the drain must start (in {max(0.0, hold):.0f} s)"
            )
    for node in t.nodes.values():
        decisions.append(f"taint {fleet.TAINT_KEY}={ev.kind}:NoSchedule and cordon {node.name}")
        if drain and not h.cfg.cordon_only:
            pods = [p for p in h.kube.pods_on_node(node.name) if p.evictable]
            decisions.append(
                f"evict {len(pods)} pod(s) on {node.name}: "
                + ", ".join(f"{p.namespace}/{p.name}" for p in pods)
            )
    for d in decisions:
        log.info(f"dry-run: would {d}", extra={"event": ev.id, "kind": str(ev.kind)})
        h.m.actions.labels(d.split(" ", 1)[0], "dry-run").inc()
    return Outcome("done", "dry-run", detail={"decisions": decisions})
