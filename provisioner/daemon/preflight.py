"""Can the daemon reach what it reads? The checks of ``--dry-run --once`` and the verdict on a
failed ``--once`` poll, as one-line errors: bad configuration (no credentials, no such queue,
a wrong region, a permission the identity lacks) is a ``UsageError`` (exit 2), the rest (an
endpoint that does not answer, throttling) an ``OperationalError`` (exit 1).

botocore puts the raw body of an error it cannot parse in the message (moto and some proxies
answer SQS's JSON protocol with XML): only the code and the message's text are kept.
"""

from __future__ import annotations

import re
from typing import Any

from provisioner.errors import OperationalError, ProvError, UsageError

# botocore exception class names and AWS error codes that a retry will not fix: the daemon is
# pointed at the wrong thing, or has no (or the wrong) identity.
CONFIG_EXCEPTIONS = frozenset(
    {"NoCredentialsError", "PartialCredentialsError", "NoRegionError", "QueueDoesNotExist"}
)
CONFIG_CODES = frozenset(
    {
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
        "InvalidAddress",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "AuthFailure",
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
    }
)
_MAX = 200


def error_code(e: BaseException) -> str | None:
    resp = getattr(e, "response", None)
    if isinstance(resp, dict):
        code = (resp.get("Error") or {}).get("Code")
        if code and not str(code).isdigit():
            return str(code)
    found = re.search(r"<Code>([^<]+)</Code>", str(e))
    return found.group(1) if found else None


def worth_logging(failures: int) -> bool:
    """The 1st, 2nd, 4th, 8th... failure in a row: enough to follow an outage, not a flood."""
    return failures & (failures - 1) == 0


def error_line(e: BaseException) -> str:
    """``Type: code: message`` on one line, the XML of an unparsed body reduced to its text."""
    text = str(e)
    message = re.search(r"<Message>([^<]*)</Message>", text)
    code = error_code(e)
    if message:
        text = f"{code}: {message.group(1)}" if code else message.group(1)
    elif "<" in text:
        text = re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())
    if len(text) > _MAX:
        text = text[: _MAX - 3] + "..."
    return f"{type(e).__name__}: {text}"


def is_config_error(e: BaseException) -> bool:
    return type(e).__name__ in CONFIG_EXCEPTIONS or error_code(e) in CONFIG_CODES


def as_prov_error(what: str, e: BaseException) -> ProvError:
    """The one-line error for a failed call on ``what``: exit 2 when the configuration is
    wrong, else exit 1."""
    kind = UsageError if is_config_error(e) else OperationalError
    return kind(f"{what}: {error_line(e)}")


def preflight(d: Any, cfg: Any) -> None:
    """Reach what the daemon reads: its queue (or the instance metadata) and the Kubernetes
    API; raise the one-line error naming the first that does not answer, and why. The queue is
    checked with sqs:GetQueueAttributes, which fleet.AWS_CALLS grants the deployed daemon."""
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
            raise as_prov_error(f"--queue-url {cfg.queue_url}: cannot read the queue", e) from None
    try:
        d.kube.core.list_node(limit=1, _request_timeout=cfg.http_timeout_seconds)
    except Exception as e:  # urllib3/kubernetes errors: refused, TLS, 401/403
        cause = " ".join(str(e).split())[:300]
        raise OperationalError(
            f"the Kubernetes API does not answer ({type(e).__name__}: {cause})"
        ) from None


def once_failure(d: Any, cfg: Any) -> ProvError | None:
    """``--once``: the error of its one monitor poll, if it failed (a run that could read
    nothing must not pass for "handled 0")."""
    e = getattr(d.monitor, "last_error", None)
    if not cfg.once or e is None:
        return None
    where = (
        f"--queue-url {cfg.queue_url}"
        if cfg.mode == "queue"
        else f"--metadata-url {cfg.metadata_url}"
    )
    return as_prov_error(f"{where}: the poll failed", e)
