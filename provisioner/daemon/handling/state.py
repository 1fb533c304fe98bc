"""The typed state of a flow: what a notice's handling has done so far, and what it returns.

``FlowState`` is written on every node of the replica group as one JSON annotation
(``fleet.STATE_ANNOTATION``), so a restarted daemon (or the other leader-elected replica)
resumes a flow where it stopped. A flow never waits inside a worker: each call runs the steps
that can run now and returns ``Outcome("deferred", not_before=...)``; the store hands it to a
worker again at that time, with the SQS message kept invisible meanwhile.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from provisioner.daemon.capacity import InstanceInfo
from provisioner.daemon.events import EventKind
from provisioner.daemon.kube import NodeInfo

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
class FlowState:
    """Progress of the flow that owns a replica group (all fields JSON-safe)."""

    event: str = ""  # the owning notice's id
    kind: str = ""  # its EventKind
    maintenance_id: str | None = None  # AWS Health event id (scheduled changes)
    deadline: str | None = None  # ISO time the instance goes away
    replica: str = ""
    replacement: str | None = None  # replica id of the replacement group
    phase: str | None = None  # one of PHASES
    drain_started: str | None = None  # ISO time the first eviction was asked
    lb_excluded: bool = False
    #: when the replacement is expected to serve (launch + the plan's time to serve); with
    #: ``short`` the pool is a replica short from the drain to then (out of LBs at once)
    replacement_eta: str | None = None
    short: bool = False
    updated: str = ""

    @property
    def index(self) -> int:
        return PHASES.index(self.phase) if self.phase in PHASES else -1

    @property
    def empty(self) -> bool:
        return self.index < 0 and not self.event

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def same_as(self, other: FlowState) -> bool:
        a, b = asdict(self), asdict(other)
        a.pop("updated"), b.pop("updated")
        return a == b

    @classmethod
    def parse(cls, raw: str | None) -> FlowState | None:
        """The record, or None when absent or not ours (unknown keys are ignored)."""
        if not raw:
            return None
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            return None
        if not isinstance(data, dict):
            return None
        names = {f.name for f in fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError:
            return None


@dataclass
class Outcome:
    status: Literal["done", "failed", "deferred"]
    action: str
    not_before: Any = None  # datetime for "deferred"
    stage: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Target:
    instance: InstanceInfo
    group: list[InstanceInfo]
    nodes: dict[str, NodeInfo]  # instance id -> node (instances without a node are absent)
    state: FlowState
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
