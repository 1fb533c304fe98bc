"""DaemonConfig: every knob of the daemon, with production defaults; tests shrink the intervals.

The knobs ``prov daemon`` exposes carry their flag in the field's metadata (:func:`flag`: name,
help, env var, unit); provisioner/cli/daemon.py generates the command's options from them, so a
flag cannot drift from the field it sets. Fields without a flag are for tests and embedders.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

from provisioner import fleet
from provisioner.errors import UsageError

MAX_SPARES = 10  # per pool: a typo must not launch a rack of GPU nodes

_POOL_RE = re.compile(r"^(?P<type>[a-z0-9-]+\.[a-z0-9-]+)(@(?P<zone>[a-z]{2}-[a-z-]+-\d[a-z]))?$")


@dataclass(frozen=True)
class Flag:
    """How a DaemonConfig field appears on ``prov daemon``.

    ``name`` defaults to the field's name without ``_seconds``, dashed (``--poll-interval``),
    the rule ``DaemonConfig.validate`` names flags by. The flag counts in ``unit`` of the
    field's seconds (``--block-minutes``: 60); ``invert`` turns a True default off with a flag
    (``--drain-at-once``); ``none_at`` is the flag value meaning None (``--metrics-port -1``);
    ``parse`` turns the flag's values into the field's; ``check`` returns why a flag value is
    refused (before the config is built), e.g. a negative duration.
    """

    name: str = ""
    help: str | None = None
    envvar: str | None = None
    cli_type: Any = None  # the flag's type when it is not the field's
    unit: float = 1.0
    invert: bool = False
    none_at: Any = None
    parse: Callable[[Any], Any] | None = None
    check: Callable[[Any], str | None] | None = None

    def default(self, field_default: Any) -> Any:
        """The flag's default, from the field's."""
        if self.parse is not None:  # a repeatable flag starts empty
            return None
        if self.invert:
            return not field_default
        if field_default is None:
            return self.none_at
        if self.unit != 1.0:
            return field_default / self.unit
        return field_default

    def to_config(self, value: Any) -> Any:
        """The field's value for the flag's ``value``; UsageError when ``check`` refuses it."""
        if self.check is not None and value is not None:
            why = self.check(value)
            if why:
                raise UsageError(f"{self.name} {value}: {why}")
        if self.parse is not None:
            return self.parse(value)
        if self.invert:
            return not value
        if self.none_at is not None and value == self.none_at:
            return None
        if self.unit != 1.0 and value is not None:
            return value * self.unit
        return value


def flag(default: Any, help: str | None = None, **kw: Any) -> Any:
    """A DaemonConfig field that ``prov daemon`` exposes (see :class:`Flag`)."""
    return field(default=default, metadata={"flag": Flag(help=help, **kw)})


def cli_flags() -> list[tuple[str, Flag, Any]]:
    """(field name, its Flag with the name filled in, the field's default), in field order."""
    out = []
    for f in fields(DaemonConfig):
        fl: Flag | None = f.metadata.get("flag")
        if fl is None:
            continue
        if not fl.name:
            fl = Flag(**{**fl.__dict__, "name": _flag_name(f.name)})
        assert f.default is not MISSING
        out.append((f.name, fl, f.default))
    return out


def _flag_name(field_name: str) -> str:
    return "--" + field_name.removesuffix("_seconds").replace("_", "-")


def _not_negative(v: float) -> str | None:
    return "must be 0 or more" if v < 0 else None


def _port_or_off(v: int) -> str | None:
    return "0 (any), -1 (off) or a port" if v < -1 else None


def _alternatives(values: list[str] | None) -> tuple[Alternative, ...]:
    return tuple(Alternative.parse(a) for v in values or [] for a in v.split(",") if a)


@dataclass(frozen=True)
class Alternative:
    """An instance type, optionally pinned to one zone, that may replace a reclaimed one."""

    instance_type: str
    zone: str | None = None

    @classmethod
    def parse(cls, text: str) -> Alternative:
        m = _POOL_RE.match(text.strip())
        if not m:
            raise UsageError(
                f"--alternative {text!r}: expected INSTANCE_TYPE or INSTANCE_TYPE@ZONE "
                "(e.g. p5.48xlarge@us-east-1b)"
            )
        return cls(m["type"], m["zone"])


@dataclass(frozen=True)
class DaemonConfig:
    mode: Literal["queue", "imds"] = flag(
        "queue",
        "queue: fleet-wide, long-polls an SQS queue of EventBridge events (a Deployment); "
        "imds: per node, polls instance metadata (a DaemonSet).",
        cli_type=str,  # validate() names the allowed values
    )
    queue_url: str | None = flag(None, "SQS queue URL (queue mode).", envvar="PROV_QUEUE_URL")
    region: str | None = flag(None, "AWS region (default: env).")
    metadata_url: str = flag("http://169.254.169.254", "Instance metadata base URL (imds).")
    node_name: str | None = flag(  # imds mode: this node (downward API NODE_NAME)
        None, "This node's name (imds mode).", envvar="NODE_NAME"
    )
    dry_run: bool = flag(False, "Log every decision; change nothing (not even the queue).")

    # Replacement capacity.
    on_demand_floor: int = flag(0, "Replicas per pool that must run on-demand.")
    # Warm spares: replica groups per pool kept launched, loaded and out of traffic (queue mode).
    spare_replicas: int = flag(
        0,
        "Warm spare replica groups per pool, loaded and out of traffic; an interruption "
        "promotes one instead of waiting for a cold launch (queue mode). Each costs one "
        "replica's $/h all the time: see docs/daemon.md.",
    )
    alternatives: tuple[Alternative, ...] = flag(
        (),
        "Fallback TYPE or TYPE@ZONE for replacements, in order (repeatable).",
        name="--alternative",
        cli_type=list[str] | None,
        parse=_alternatives,
    )
    block_seconds: float = flag(  # how long a reclaimed or exhausted (type, zone) is avoided
        900.0,
        "Avoid a reclaimed or exhausted (type, zone) this long.",
        name="--block-minutes",
        unit=60.0,
        check=_not_negative,
    )
    launch_max_attempts: int = 3  # RunInstances: botocore's default; capacity errors: 1 (ec2.py)
    spare_interval_seconds: float = 30.0  # how often the spares are reconciled
    spare_memory_seconds: float = 120.0  # count own launches this long even if EC2 lags

    # What to do per event kind.
    spot_notice_seconds: float = 120.0
    rebalance_drain: bool = flag(  # rebalance: replace-first drain instead of cordon only
        False, "On a rebalance recommendation, replace and drain."
    )
    prewarm_on_rebalance: bool = flag(  # rebalance: request the replacement right away
        False, "On a rebalance recommendation, start the replacement (and cordon) right away."
    )
    time_to_serve_seconds: float | None = flag(
        #: The plan's time to serve a replacement replica, launch to Ready (the plan's
        #: time_to_serve_s from provisioner/core/time_to_serve.py; the deploy stack passes it).
        #: Above the notice, a rebalance starts the replacement; it dates replacements and
        #: spares and decides whether the pool will be short. None: unknown (flags decide).
        None,
        "The plan's time to serve a replacement, seconds (time_to_serve_s; the deploy "
        "stack passes it). Above the notice, a rebalance starts the replacement and a "
        "replica that cannot be replaced in time leaves the load balancers at the notice.",
    )
    rebalance_window_seconds: float = 600.0
    cordon_only: bool = flag(False, "Replace and cordon, never evict.")
    hold_for_replacement: bool = flag(  # keep serving until the replacement is Ready...
        True,
        "Evict at once instead of serving until the replacement is Ready.",
        name="--drain-at-once",
        invert=True,
    )
    # The deadline of a notice that carries none (an instance stopping or shutting down, a
    # cancellation); evictions always get each pod's own terminationGracePeriodSeconds.
    shutdown_timeout_seconds: float = flag(
        30.0,
        "Deadline, seconds (at least 60), for a notice that carries none (an instance "
        "stopping or shutting down). Not the eviction grace: that is each pod's own "
        "terminationGracePeriodSeconds.",
    )
    maintenance_lead_seconds: float = flag(  # drain this long before a scheduled start
        600.0, "Drain this many seconds before scheduled maintenance.", check=_not_negative
    )
    workload_selector: str = flag(
        f"{fleet.WORKLOAD_LABEL}={fleet.WORKLOAD_VALUE}",
        "KEY=VALUE of the pods that make a replica Ready ('' = node Ready is enough).",
    )
    lifecycle_timeout_seconds: float = 300.0
    drain_margin_seconds: float = 5.0
    replacement_timeout_seconds: float = 900.0
    retire_old_group: bool = True  # terminate the drained group's surviving instances

    # Cadence.
    poll_interval_seconds: float = flag(  # imds poll; queue mode re-polls this soon after a poll
        2.0, "IMDS poll interval, seconds."
    )
    sqs_wait_seconds: int = flag(20, "SQS long-poll wait, 0..20 seconds.")
    step_interval_seconds: float = flag(  # handler's wait/retry cadence
        1.0, "Handler wait/retry cadence, seconds."
    )
    workers: int = flag(8, "Events handled at once.")
    sqs_batch: int = 10
    visibility_keepalive_seconds: float = 60.0
    dispatch_interval_seconds: float = 0.5
    ack_flush_seconds: float = 0.2  # acknowledged SQS messages are deleted in batches
    housekeeping_interval_seconds: float = 30.0
    jitter_seconds: float = 0.2
    max_pending: int = 200
    done_ttl_seconds: float = 3600.0
    http_timeout_seconds: float = 5.0
    api_retries: int = 4  # kubernetes client retries (5xx, 429 with Retry-After)
    api_backoff_seconds: float = 0.2

    # Observability and lifetime (the metrics flags first: --help lists them in this order).
    metrics_port: int | None = flag(  # None = no metrics server; 0 = any free port
        9092,
        "Port for /metrics and /healthz (0 = any, -1 = off).",
        envvar="PROV_METRICS_PORT",
        none_at=-1,
        check=_port_or_off,
    )
    metrics_host: str = flag("0.0.0.0", "Bind address.")

    # Leader election (queue mode with several replicas).
    leader_elect: bool = flag(False, "Queue mode with several replicas: hold a Lease.")
    lease_namespace: str = flag(  # where the stack's generated Role grants leases
        fleet.DAEMON_NAMESPACE, "Namespace of the leader-election Lease."
    )
    lease_name: str = fleet.DAEMON_NAME
    lease_seconds: float = 15.0
    identity: str = ""

    max_events: int | None = flag(  # stop after this many events were handled
        None, "Exit after handling this many events."
    )
    once: bool = flag(  # one monitor poll, handle what it produced, exit
        False, "Poll once, handle what arrived, exit (scripts and tests)."
    )
    stop_timeout_seconds: float = 150.0  # SIGTERM: finish in-flight events within this
    namespace_events: str = "default"  # where Kubernetes Events about nodes are written

    def validate(self) -> DaemonConfig:
        if self.mode not in ("queue", "imds"):
            raise UsageError(f"--mode {self.mode!r}: allowed: queue, imds")
        if self.mode == "queue" and not self.queue_url:
            raise UsageError("--mode queue needs --queue-url (the SQS queue EventBridge feeds)")
        if self.mode == "imds" and not self.node_name:
            raise UsageError("--mode imds needs --node-name (or NODE_NAME from the downward API)")
        if not self.metadata_url.startswith(("http://", "https://")):
            raise UsageError(f"--metadata-url {self.metadata_url!r}: must be an http(s) URL")
        if self.on_demand_floor < 0:
            raise UsageError(f"--on-demand-floor {self.on_demand_floor}: must be 0 or more")
        if not 0 <= self.spare_replicas <= MAX_SPARES:
            raise UsageError(
                f"--spare-replicas {self.spare_replicas}: must be 0..{MAX_SPARES} "
                "(each spare is a whole replica group of GPU nodes, paid for all the time)"
            )
        if self.spare_replicas and self.mode != "queue":
            raise UsageError(
                "--spare-replicas needs --mode queue: one fleet-wide daemon keeps the spares "
                "(a per-node daemon would launch its own)"
            )
        if not 0 <= self.sqs_wait_seconds <= 20:
            raise UsageError(f"--sqs-wait {self.sqs_wait_seconds}: SQS allows 0..20 seconds")
        if not 1 <= self.sqs_batch <= 10:
            raise UsageError(f"--sqs-batch {self.sqs_batch}: SQS allows 1..10 messages")
        if self.workers < 1:
            raise UsageError(f"--workers {self.workers}: must be at least 1")
        if self.max_events is not None and self.max_events < 1:
            raise UsageError(f"--max-events {self.max_events}: must be at least 1")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            raise UsageError(f"--metrics-port {self.metrics_port}: must be 0..65535")
        for name in (
            "poll_interval_seconds",
            "step_interval_seconds",
            "spot_notice_seconds",
            "shutdown_timeout_seconds",
            "spare_interval_seconds",
        ):
            if getattr(self, name) <= 0:
                flag = "--" + name.removesuffix("_seconds").replace("_", "-")
                raise UsageError(f"{flag} {getattr(self, name)}: must be positive")
        if self.time_to_serve_seconds is not None and not 0 < self.time_to_serve_seconds < 1e9:
            raise UsageError(
                f"--time-to-serve {self.time_to_serve_seconds}: must be positive (seconds from "
                "launch to serving; the plan's time_to_serve_s)"
            )
        if "=" not in self.workload_selector and self.workload_selector:
            raise UsageError(
                f"--workload-selector {self.workload_selector!r}: expected KEY=VALUE or ''"
            )
        return self

    @property
    def workload_label(self) -> tuple[str, str] | None:
        if not self.workload_selector:
            return None
        k, _, v = self.workload_selector.partition("=")
        return k.strip(), v.strip()
