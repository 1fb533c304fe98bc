"""`prov daemon`: the spot interruption handler (see docs/daemon.md).

Its options are generated from DaemonConfig's fields (name, type, default, help, env var: see
``provisioner.daemon.config.Flag``); only the Kubernetes connection and logging options, which
are not part of the config, are written here.

Module-level imports stay light (typer + stdlib): boto3, kubernetes, apscheduler and
prometheus_client are imported only when the command runs, so `prov quote` never pays for them.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

# Options that are not DaemonConfig fields: how to reach Kubernetes (after --node-name in the
# help) and how to log (at the end). Every other option is generated from DaemonConfig.
_CONNECT: tuple[tuple[str, Any, Any], ...] = (
    (
        "kube_api",
        str | None,
        typer.Option(
            None, "--kube-api", help="Kubernetes API URL without auth (kubectl proxy, tests)."
        ),
    ),
    (
        "kubeconfig",
        Path | None,
        typer.Option(
            None, "--kubeconfig", help="Kubeconfig file (default: in-cluster, else ~/.kube/config)."
        ),
    ),
    ("context", str | None, typer.Option(None, "--context", help="Kubeconfig context.")),
)
_LOGGING: tuple[tuple[str, Any, Any], ...] = (
    ("log_format", str, typer.Option("json", "--log-format", help="json or text.")),
    ("log_level", str, typer.Option("info", "--log-level", help="debug, info, warning.")),
)


def _param(flag_name: str) -> str:
    return flag_name.removeprefix("--").replace("-", "_")


def _signature() -> tuple[inspect.Signature, dict[str, Any], list[tuple[str, Any]]]:
    """The command's parameters: DaemonConfig's flagged fields in field order (their type, the
    flag's default, name, help and env var), with the options above in their places. Also the
    annotations typer reads, and (parameter, Flag) per config field, to build the config."""
    from typing import get_type_hints

    from provisioner.daemon.config import DaemonConfig, cli_flags

    hints = get_type_hints(DaemonConfig)
    params: list[inspect.Parameter] = []
    to_config: list[tuple[str, Any]] = []

    def add(name: str, kind: Any, option: Any) -> None:
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
        )

    for field_name, fl, default in cli_flags():
        kind = fl.cli_type if fl.cli_type is not None else hints[field_name]
        opt = typer.Option(fl.default(default), fl.name, envvar=fl.envvar, help=fl.help)
        add(_param(fl.name), kind, opt)
        to_config.append((field_name, fl))
        if field_name == "node_name":
            for extra in _CONNECT:
                add(*extra)
    for extra in _LOGGING:
        add(*extra)
    sig = inspect.Signature(params)
    annotations = {p.name: p.annotation for p in params} | {"return": None}
    return sig, annotations, to_config


def register(app: typer.Typer) -> None:
    """Add the `daemon` command to the prov CLI."""
    from provisioner.cli.boundary import boundary

    sig, annotations, to_config = _signature()

    def daemon(**kw: Any) -> None:
        """Handle spot interruptions: replace first, drain without failed requests, relaunch."""
        from provisioner.daemon.config import DaemonConfig
        from provisioner.errors import OperationalError, UsageError

        log_format, log_level = kw["log_format"], kw["log_level"]
        if log_format not in ("json", "text"):
            raise UsageError(f"--log-format {log_format!r}: allowed: json, text")
        if log_level.lower() not in ("debug", "info", "warning", "error"):
            raise UsageError(f"--log-level {log_level!r}: allowed: debug, info, warning, error")
        values = {name: fl.to_config(kw[_param(fl.name)]) for name, fl in to_config}
        cfg = DaemonConfig(**values).validate()
        mode, queue_url, dry_run, once = cfg.mode, cfg.queue_url, cfg.dry_run, cfg.once
        kube_api, kubeconfig, context = kw["kube_api"], kw["kubeconfig"], kw["context"]
        if kubeconfig is not None and not kubeconfig.is_file():
            raise UsageError(f"--kubeconfig {kubeconfig}: no such file")
        for flag, url in (
            ("--queue-url", queue_url if mode == "queue" else None),
            ("--kube-api", kube_api),
        ):
            if url is not None and not _http_url(url):
                raise UsageError(f"{flag} {url!r}: must be an http(s) URL with a host")

        from provisioner.aws_credentials import require_credentials
        from provisioner.daemon.logs import daemon_logging
        from provisioner.daemon.preflight import once_failure, preflight
        from provisioner.daemon.service import build_daemon

        # Every mode launches replacements through EC2 (queue mode also reads SQS): without
        # credentials it can do nothing, so say so now (exit 2), as every AWS command does
        # (provisioner/aws_credentials.py).
        require_credentials(
            "prov daemon reads its notices and launches replacements through EC2",
            region=cfg.region,
        )
        with daemon_logging(log_format, log_level):
            try:
                d = build_daemon(
                    cfg,
                    api_url=kube_api,
                    kubeconfig=str(kubeconfig) if kubeconfig else None,
                    context=context,
                )
            except Exception as e:  # no kubeconfig, no credentials...: say it in one line
                if type(e).__name__ == "NoRegionError":  # botocore: bad input, not an outage
                    raise UsageError(NO_REGION) from None
                raise OperationalError(f"cannot set up the daemon: {type(e).__name__}: {e}") from e
            if dry_run and once:
                preflight(d, cfg)  # a dry run that can reach nothing must not pass for a success
            handled = d.run()
            failed = once_failure(d, cfg)  # None unless it is --once and its poll failed
        if failed is not None:  # a --once that could read nothing is not "handled 0"
            raise failed
        over = d.handed_over  # in progress at a SIGTERM: the next daemon resumes them
        typer.echo(
            f"prov daemon: handled {handled} event(s)"
            + (f", handed over {over} in progress" if over else "")
        )

    daemon.__signature__ = sig  # type: ignore[attr-defined]
    daemon.__annotations__ = annotations
    app.command("daemon")(boundary(daemon))


NO_REGION = "no AWS region: pass --region or set AWS_REGION (or AWS_DEFAULT_REGION)"


def _http_url(url: str) -> bool:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and " " not in url
