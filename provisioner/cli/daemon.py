"""`prov daemon`: the spot interruption handler (see docs/daemon.md).

Module-level imports stay light (typer + stdlib): boto3, kubernetes, apscheduler and
prometheus_client are imported only when the command runs, so `prov quote` never pays for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    """Add the `daemon` command to the prov CLI."""
    from provisioner.cli.boundary import boundary

    @app.command("daemon")
    @boundary
    def daemon(
        mode: str = typer.Option(
            "queue",
            "--mode",
            help="queue: fleet-wide, long-polls an SQS queue of EventBridge events (a Deployment); "
            "imds: per node, polls instance metadata (a DaemonSet).",
        ),
        queue_url: str | None = typer.Option(
            None, "--queue-url", envvar="PROV_QUEUE_URL", help="SQS queue URL (queue mode)."
        ),
        region: str | None = typer.Option(None, "--region", help="AWS region (default: env)."),
        metadata_url: str = typer.Option(
            "http://169.254.169.254", "--metadata-url", help="Instance metadata base URL (imds)."
        ),
        node_name: str | None = typer.Option(
            None, "--node-name", envvar="NODE_NAME", help="This node's name (imds mode)."
        ),
        kube_api: str | None = typer.Option(
            None, "--kube-api", help="Kubernetes API URL without auth (kubectl proxy, tests)."
        ),
        kubeconfig: Path | None = typer.Option(
            None, "--kubeconfig", help="Kubeconfig file (default: in-cluster, else ~/.kube/config)."
        ),
        context: str | None = typer.Option(None, "--context", help="Kubeconfig context."),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Log every decision; change nothing (not even the queue)."
        ),
        on_demand_floor: int = typer.Option(
            0, "--on-demand-floor", help="Replicas per pool that must run on-demand."
        ),
        spare_replicas: int = typer.Option(
            0,
            "--spare-replicas",
            help="Warm spare replica groups per pool, loaded and out of traffic; an interruption "
            "promotes one instead of waiting for a cold launch (queue mode). Each costs one "
            "replica's $/h all the time: see docs/daemon.md.",
        ),
        alternative: list[str] | None = typer.Option(
            None,
            "--alternative",
            help="Fallback TYPE or TYPE@ZONE for replacements, in order (repeatable).",
        ),
        block_minutes: float = typer.Option(
            15.0, "--block-minutes", help="Avoid a reclaimed or exhausted (type, zone) this long."
        ),
        rebalance_drain: bool = typer.Option(
            False, "--rebalance-drain", help="On a rebalance recommendation, replace and drain."
        ),
        prewarm_on_rebalance: bool = typer.Option(
            False,
            "--prewarm-on-rebalance",
            help="On a rebalance recommendation, start the replacement (and cordon) right away.",
        ),
        time_to_serve: float | None = typer.Option(
            None,
            "--time-to-serve",
            help="The plan's time to serve a replacement, seconds (time_to_serve_s; the deploy "
            "stack passes it). Above the notice, a rebalance starts the replacement and a "
            "replica that cannot be replaced in time leaves the load balancers at the notice.",
        ),
        cordon_only: bool = typer.Option(
            False, "--cordon-only", help="Replace and cordon, never evict."
        ),
        drain_at_once: bool = typer.Option(
            False,
            "--drain-at-once",
            help="Evict at once instead of serving until the replacement is Ready.",
        ),
        shutdown_timeout: float = typer.Option(
            30.0, "--shutdown-timeout", help="vLLM's --shutdown-timeout: eviction grace, seconds."
        ),
        maintenance_lead: float = typer.Option(
            600.0,
            "--maintenance-lead",
            help="Drain this many seconds before scheduled maintenance.",
        ),
        workload_selector: str = typer.Option(
            "prov.dev/workload=vllm",
            "--workload-selector",
            help="KEY=VALUE of the pods that make a replica Ready ('' = node Ready is enough).",
        ),
        poll_interval: float = typer.Option(
            2.0, "--poll-interval", help="IMDS poll interval, seconds."
        ),
        sqs_wait: int = typer.Option(20, "--sqs-wait", help="SQS long-poll wait, 0..20 seconds."),
        step_interval: float = typer.Option(
            1.0, "--step-interval", help="Handler wait/retry cadence, seconds."
        ),
        workers: int = typer.Option(8, "--workers", help="Events handled at once."),
        metrics_port: int = typer.Option(
            9092,
            "--metrics-port",
            envvar="PROV_METRICS_PORT",
            help="Port for /metrics and /healthz (0 = any, -1 = off).",
        ),
        metrics_host: str = typer.Option("0.0.0.0", "--metrics-host", help="Bind address."),
        leader_elect: bool = typer.Option(
            False, "--leader-elect", help="Queue mode with several replicas: hold a Lease."
        ),
        lease_namespace: str = typer.Option("kube-system", "--lease-namespace"),
        max_events: int | None = typer.Option(
            None, "--max-events", help="Exit after handling this many events."
        ),
        once: bool = typer.Option(
            False, "--once", help="Poll once, handle what arrived, exit (scripts and tests)."
        ),
        log_format: str = typer.Option("json", "--log-format", help="json or text."),
        log_level: str = typer.Option("info", "--log-level", help="debug, info, warning."),
    ) -> None:
        """Handle spot interruptions: replace first, drain without failed requests, relaunch."""
        from provisioner.daemon.config import Alternative, DaemonConfig
        from provisioner.errors import OperationalError, UsageError

        if log_format not in ("json", "text"):
            raise UsageError(f"--log-format {log_format!r}: allowed: json, text")
        if log_level.lower() not in ("debug", "info", "warning", "error"):
            raise UsageError(f"--log-level {log_level!r}: allowed: debug, info, warning, error")
        if metrics_port < -1:
            raise UsageError(f"--metrics-port {metrics_port}: 0 (any), -1 (off) or a port")
        if block_minutes < 0:
            raise UsageError(f"--block-minutes {block_minutes}: must be 0 or more")
        if maintenance_lead < 0:
            raise UsageError(f"--maintenance-lead {maintenance_lead}: must be 0 or more")
        alts = tuple(Alternative.parse(a) for v in alternative or [] for a in v.split(",") if a)
        cfg = DaemonConfig(
            mode=mode,  # type: ignore[arg-type]  # validated below
            queue_url=queue_url,
            region=region,
            metadata_url=metadata_url,
            node_name=node_name,
            dry_run=dry_run,
            on_demand_floor=on_demand_floor,
            spare_replicas=spare_replicas,
            alternatives=alts,
            block_seconds=block_minutes * 60,
            rebalance_drain=rebalance_drain,
            prewarm_on_rebalance=prewarm_on_rebalance,
            time_to_serve_seconds=time_to_serve,
            cordon_only=cordon_only,
            hold_for_replacement=not drain_at_once,
            shutdown_timeout_seconds=shutdown_timeout,
            maintenance_lead_seconds=maintenance_lead,
            workload_selector=workload_selector,
            poll_interval_seconds=poll_interval,
            sqs_wait_seconds=sqs_wait,
            step_interval_seconds=step_interval,
            workers=workers,
            metrics_port=None if metrics_port == -1 else metrics_port,
            metrics_host=metrics_host,
            leader_elect=leader_elect,
            lease_namespace=lease_namespace,
            max_events=max_events,
            once=once,
        ).validate()
        if kubeconfig is not None and not kubeconfig.is_file():
            raise UsageError(f"--kubeconfig {kubeconfig}: no such file")
        for flag, url in (
            ("--queue-url", queue_url if mode == "queue" else None),
            ("--kube-api", kube_api),
        ):
            if url is not None and not _http_url(url):
                raise UsageError(f"{flag} {url!r}: must be an http(s) URL with a host")

        from provisioner.daemon.logs import setup_logging
        from provisioner.daemon.service import build_daemon

        setup_logging(log_format, log_level)
        try:
            d = build_daemon(
                cfg,
                api_url=kube_api,
                kubeconfig=str(kubeconfig) if kubeconfig else None,
                context=context,
            )
        except Exception as e:  # no kubeconfig, no credentials...: say it in one line
            raise OperationalError(f"cannot set up the daemon: {type(e).__name__}: {e}") from e
        if dry_run and once:
            preflight(d, cfg)  # a dry run that can reach nothing must not pass for a success
        handled = d.run()
        typer.echo(f"prov daemon: handled {handled} event(s)")


def _http_url(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in url


def preflight(d: Any, cfg: Any) -> None:
    """Reach what the daemon reads: its queue (or the instance metadata) and the Kubernetes
    API; OperationalError (exit 1) naming the first that does not answer, and why."""
    from provisioner.errors import OperationalError

    if cfg.mode == "imds":
        from provisioner.daemon.metrics import Metrics
        from provisioner.daemon.monitors.imds import ImdsError, ImdsMonitor

        try:
            ImdsMonitor(cfg, lambda ev, ack: None, Metrics()).token()
        except ImdsError as e:
            raise OperationalError(f"--metadata-url {cfg.metadata_url}: {e}") from None
    else:
        try:
            d.monitor.sqs.get_queue_attributes(QueueUrl=cfg.queue_url, AttributeNames=["QueueArn"])
        except Exception as e:  # botocore's errors: no credentials, unreachable, no such queue
            raise OperationalError(
                f"--queue-url {cfg.queue_url}: cannot read the queue ({type(e).__name__}: {e})"
            ) from None
    try:
        d.kube.core.list_node(limit=1, _request_timeout=cfg.http_timeout_seconds)
    except Exception as e:  # urllib3/kubernetes errors: refused, TLS, 401/403
        cause = " ".join(str(e).split())[:300]
        raise OperationalError(
            f"the Kubernetes API does not answer ({type(e).__name__}: {cause})"
        ) from None
