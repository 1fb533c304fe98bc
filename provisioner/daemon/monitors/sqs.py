"""Queue mode: long-poll an SQS queue fed by EventBridge rules (fleet-wide, one Deployment).

``SqsQueue`` names the three SQS calls the monitor makes (boto3's names and keywords): a boto3
SQS client is one; ``fakes.sqs.FakeSqs`` is the in-memory one (visibility timeouts, receipt
handles, receive counts), held equal to moto's by tests/daemon/test_daemon_contract_queues.py.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Protocol

from provisioner.daemon.config import DaemonConfig
from provisioner.daemon.events import PayloadError, parse_sqs_body
from provisioner.daemon.metrics import Metrics
from provisioner.daemon.monitors import Sink
from provisioner.daemon.store import Ack, utcnow

log = logging.getLogger("prov.daemon.sqs")


class SqsQueue(Protocol):
    def receive_message(
        self,
        *,
        QueueUrl: str,
        MaxNumberOfMessages: int,
        WaitTimeSeconds: int,
        AttributeNames: list[str],
    ) -> dict[str, Any]: ...

    def delete_message_batch(
        self, *, QueueUrl: str, Entries: list[dict[str, str]]
    ) -> dict[str, Any]: ...

    def change_message_visibility(
        self, *, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int
    ) -> object: ...


class AckBatcher:
    """Deletes acknowledged messages ten at a time (DeleteMessageBatch); flushed when ten are
    waiting and by the scheduler's ack-flush job, so a deletion lags success by < 1 interval."""

    def __init__(self, sqs: SqsQueue, queue_url: str, metrics: Metrics) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.m = metrics
        self._pending: list[str] = []
        self._lock = threading.Lock()

    def add(self, receipt: str) -> None:
        with self._lock:
            self._pending.append(receipt)
            full = len(self._pending) >= 10
        if full:
            self.flush()

    def flush(self) -> None:
        while True:
            with self._lock:
                batch, self._pending = self._pending[:10], self._pending[10:]
            if not batch:
                return
            try:
                resp = self.sqs.delete_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(k), "ReceiptHandle": r} for k, r in enumerate(batch)],
                )
            except Exception as e:
                self.m.errors.labels("ack").inc()
                log.warning("SQS delete failed", extra={"error": f"{type(e).__name__}: {e}"})
                with self._lock:  # keep them for the next flush
                    self._pending[:0] = batch
                return
            failed = resp.get("Failed", [])
            for f in failed:
                self.m.errors.labels("ack").inc()
                log.warning(
                    "SQS delete refused", extra={"code": f.get("Code"), "why": f.get("Message")}
                )
            if len(batch) > len(failed):
                log.info("SQS messages deleted", extra={"count": len(batch) - len(failed)})


class SqsAck:
    """Acknowledge = delete the message; never in --dry-run, which changes nothing at all."""

    def __init__(
        self,
        sqs: SqsQueue,
        queue_url: str,
        message: dict[str, Any],
        cfg: DaemonConfig,
        batcher: AckBatcher,
    ) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.receipt = message["ReceiptHandle"]
        self.message_id = message.get("MessageId", "")
        self.cfg = cfg
        self.batcher = batcher
        self.acked = False

    def ack(self) -> None:
        if self.cfg.dry_run or self.acked:
            return
        self.batcher.add(self.receipt)
        self.acked = True

    def release(self) -> None:
        """Make the message visible again now (we are shutting down and will not handle it)."""
        self.sqs.change_message_visibility(
            QueueUrl=self.queue_url, ReceiptHandle=self.receipt, VisibilityTimeout=0
        )

    def keepalive(self) -> None:
        if self.cfg.dry_run or self.acked:
            return
        self.sqs.change_message_visibility(
            QueueUrl=self.queue_url,
            ReceiptHandle=self.receipt,
            VisibilityTimeout=int(2 * self.cfg.visibility_keepalive_seconds + 1),
        )


class SharedAck:
    """One SQS message that carried several events (AWS Health, many instances): delete it when
    every one of them is handled."""

    def __init__(self, inner: Ack, parts: int) -> None:
        self.inner = inner
        self.left = parts
        self._lock = threading.Lock()

    def ack(self) -> None:
        with self._lock:
            self.left -= 1
            last = self.left == 0
        if last:
            self.inner.ack()

    def release(self) -> None:
        self.inner.release()

    def keepalive(self) -> None:
        self.inner.keepalive()


class SqsMonitor:
    name = "sqs"

    def __init__(
        self,
        cfg: DaemonConfig,
        sqs: SqsQueue,
        sink: Sink,
        metrics: Metrics,
        stopping: threading.Event,
        prefetch: Any = None,
    ) -> None:
        assert cfg.queue_url
        self.cfg = cfg
        self.sqs = sqs
        self.queue_url: str = cfg.queue_url
        self.sink = sink
        self.m = metrics
        self.stopping = stopping
        self.prefetch = prefetch
        self.batcher = AckBatcher(sqs, self.queue_url, metrics)
        self.last_error: Exception | None = None  # of the last poll; None: it read the queue
        self.failures = 0  # polls failed in a row

    def flush(self) -> None:
        self.batcher.flush()

    def _skip(self, ack: SqsAck, reason: str, why: str) -> None:
        self.m.skipped.labels(reason).inc()
        log.warning(
            "skipping message", extra={"reason": reason, "why": why, "message_id": ack.message_id}
        )
        ack.ack()

    def _failed(self, e: Exception) -> None:
        """Count, log the 1st, 2nd, 4th, 8th... failure in a row (not every poll), and back
        off (0.5 s doubling to 30 s) so a queue that cannot be read is not hammered."""
        from provisioner.daemon.preflight import error_line, worth_logging

        self.m.errors.labels("sqs-receive").inc()
        self.last_error, self.failures = e, self.failures + 1
        if worth_logging(self.failures):
            log.warning(
                "SQS receive failed",
                extra={"error": error_line(e), "failures": self.failures, "queue": self.queue_url},
            )
        if not self.cfg.once:
            self.stopping.wait(min(30.0, 0.5 * 2 ** min(self.failures - 1, 6)))

    def poll(self) -> int:
        try:
            resp = self.sqs.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=self.cfg.sqs_batch,
                WaitTimeSeconds=self.cfg.sqs_wait_seconds,
                AttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
            )
        except Exception as e:
            self._failed(e)
            return 0
        if self.failures:
            log.info("SQS receive works again", extra={"failures": self.failures})
        self.last_error, self.failures = None, 0
        messages = resp.get("Messages", [])
        now = utcnow()
        batch = []
        for msg in messages:
            ack = SqsAck(self.sqs, self.queue_url, msg, self.cfg, self.batcher)
            if self.stopping.is_set():
                with contextlib.suppress(Exception):
                    ack.release()
                continue
            try:
                events = parse_sqs_body(msg.get("Body", ""), now)
            except PayloadError as e:
                self._skip(ack, e.reason, str(e))
                continue
            except Exception as e:  # pydantic validation and friends: still a bad payload
                self._skip(ack, "malformed", f"{type(e).__name__}: {e}")
                continue
            if not events:
                self._skip(ack, "irrelevant", "an event prov does not act on")
                continue
            batch.append((events, ack))
        if self.prefetch and batch:
            try:  # one DescribeInstances per batch instead of one per event
                self.prefetch([ev.instance_id for evs, _ in batch for ev in evs])
            except Exception as e:
                log.debug("prefetch failed", extra={"error": str(e)})
        for events, ack in batch:
            shared: Ack = SharedAck(ack, len(events)) if len(events) > 1 else ack
            for ev in events:
                self.sink(ev, shared)
        return len(messages)
