"""DaemonConfig: every knob of the daemon, with production defaults; tests shrink the intervals."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from provisioner import fleet
from provisioner.errors import UsageError

MAX_SPARES = 10  # per pool: a typo must not launch a rack of GPU nodes

_POOL_RE = re.compile(r"^(?P<type>[a-z0-9-]+\.[a-z0-9-]+)(@(?P<zone>[a-z]{2}-[a-z-]+-\d[a-z]))?$")


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
    mode: Literal["queue", "imds"] = "queue"
    queue_url: str | None = None
    region: str | None = None
    metadata_url: str = "http://169.254.169.254"
    node_name: str | None = None  # imds mode: this node (downward API NODE_NAME)
    dry_run: bool = False

    # Replacement capacity.
    on_demand_floor: int = 0  # replicas per pool that must run on-demand
    alternatives: tuple[Alternative, ...] = ()
    block_seconds: float = 900.0  # how long a reclaimed or exhausted (type, zone) is avoided
    launch_max_attempts: int = 2  # botocore attempts for RunInstances (capacity errors are 5xx)
    # Warm spares: replica groups per pool kept launched, loaded and out of traffic (queue mode).
    spare_replicas: int = 0
    spare_interval_seconds: float = 30.0  # how often the spares are reconciled
    spare_memory_seconds: float = 120.0  # count own launches this long even if EC2 lags

    # What to do per event kind.
    spot_notice_seconds: float = 120.0
    #: The plan's time to serve a replacement replica, launch to Ready (the plan's
    #: time_to_serve_s from provisioner/core/time_to_serve.py; the deploy stack passes it).
    #: Above the notice, a rebalance starts the replacement; it dates replacements and spares
    #: and decides whether the pool will be short. None: unknown (only the flags decide).
    time_to_serve_seconds: float | None = None
    rebalance_drain: bool = False  # rebalance: replace-first drain instead of cordon only
    prewarm_on_rebalance: bool = False  # rebalance: request the replacement right away
    rebalance_window_seconds: float = 600.0
    cordon_only: bool = False  # replace + cordon, never evict
    maintenance_lead_seconds: float = 600.0  # drain this long before a scheduled start
    lifecycle_timeout_seconds: float = 300.0
    hold_for_replacement: bool = True  # keep serving until the replacement is Ready...
    shutdown_timeout_seconds: float = 30.0  # ...or until deadline - this - margin
    drain_margin_seconds: float = 5.0
    replacement_timeout_seconds: float = 900.0
    retire_old_group: bool = True  # terminate the drained group's surviving instances
    workload_selector: str = f"{fleet.WORKLOAD_LABEL}={fleet.WORKLOAD_VALUE}"

    # Cadence.
    poll_interval_seconds: float = 2.0  # imds poll; queue mode re-polls this soon after a poll
    sqs_wait_seconds: int = 20
    sqs_batch: int = 10
    visibility_keepalive_seconds: float = 60.0
    step_interval_seconds: float = 1.0  # handler's wait/retry cadence
    dispatch_interval_seconds: float = 0.5
    ack_flush_seconds: float = 0.2  # acknowledged SQS messages are deleted in batches
    housekeeping_interval_seconds: float = 30.0
    jitter_seconds: float = 0.2
    workers: int = 8
    max_pending: int = 200
    done_ttl_seconds: float = 3600.0
    http_timeout_seconds: float = 5.0
    api_retries: int = 4  # kubernetes client retries (5xx, 429 with Retry-After)
    api_backoff_seconds: float = 0.2

    # Leader election (queue mode with several replicas).
    leader_elect: bool = False
    lease_name: str = "prov-daemon"
    lease_namespace: str = "kube-system"
    lease_seconds: float = 15.0
    identity: str = ""

    # Observability and lifetime.
    metrics_host: str = "0.0.0.0"
    metrics_port: int | None = 9092  # None = no metrics server; 0 = any free port
    max_events: int | None = None  # stop after this many events were handled
    once: bool = False  # one monitor poll, handle what it produced, exit
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
