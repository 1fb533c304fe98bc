"""FakeSqs: one standard SQS queue in memory, behind ``monitors.sqs.SqsQueue``.

Like SQS (and moto's server): a received message is invisible for the queue's visibility
timeout, then received again with a new receipt handle and a higher ApproximateReceiveCount;
``change_message_visibility`` restarts that timer (0: visible now); any receipt handle a message
ever had deletes it, deleting it again succeeds, and an unknown handle is a ``Failed`` entry
with ReceiptHandleIsInvalid (an exception carrying that code for a visibility change); a long
poll (WaitTimeSeconds) waits for a message up to its wait. Errors carry botocore's
``response["Error"]["Code"]`` shape, so code that reads EC2/SQS error codes reads these too.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provisioner.daemon.monitors.sqs import SqsQueue


class FakeSqsError(Exception):
    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.response = {"Error": {"Code": code, "Message": message}}


@dataclass
class _Message:
    id: str
    body: str
    sent_ms: int
    receipts: set[str] = field(default_factory=set)
    receive_count: int = 0
    visible_at: float = 0.0


class FakeSqs:
    def __init__(
        self,
        queue_url: str = "https://sqs.us-east-1.amazonaws.com/123456789012/prov-interruptions",
        visibility_timeout: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue_url = queue_url
        self.visibility_timeout = visibility_timeout
        self.clock = clock
        self.messages: dict[str, _Message] = {}
        self.deleted: set[str] = set()  # receipt handles of deleted messages
        self._seq = itertools.count()
        self._cond = threading.Condition()

    def _check(self, url: str) -> None:
        if url != self.queue_url:
            raise FakeSqsError("AWS.SimpleQueueService.NonExistentQueue", url)

    def send_message(self, *, QueueUrl: str, MessageBody: str) -> dict[str, Any]:
        self._check(QueueUrl)
        msg = _Message(str(uuid.uuid4()), MessageBody, int(time.time() * 1000))
        with self._cond:
            self.messages[msg.id] = msg
            self._cond.notify_all()
        return {"MessageId": msg.id}

    def _take(self, limit: int) -> list[dict[str, Any]]:
        now = self.clock()
        out: list[dict[str, Any]] = []
        for m in list(self.messages.values()):
            if len(out) >= limit:
                break
            if m.visible_at > now:
                continue
            receipt = f"{m.id}#{next(self._seq)}"
            m.receipts.add(receipt)
            m.receive_count += 1
            m.visible_at = now + self.visibility_timeout
            out.append(
                {
                    "MessageId": m.id,
                    "ReceiptHandle": receipt,
                    "Body": m.body,
                    "Attributes": {
                        "SentTimestamp": str(m.sent_ms),
                        "ApproximateReceiveCount": str(m.receive_count),
                    },
                }
            )
        return out

    def receive_message(
        self,
        *,
        QueueUrl: str,
        MaxNumberOfMessages: int = 1,
        WaitTimeSeconds: int = 0,
        AttributeNames: list[str] | None = None,
    ) -> dict[str, Any]:
        self._check(QueueUrl)
        if not 1 <= MaxNumberOfMessages <= 10:
            raise FakeSqsError("InvalidParameterValue", "MaxNumberOfMessages must be 1..10")
        end = time.monotonic() + WaitTimeSeconds
        with self._cond:
            while True:
                got = self._take(MaxNumberOfMessages)
                left = end - time.monotonic()
                if got or left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
        return {"Messages": got} if got else {}

    def _owner(self, receipt: str) -> _Message | None:
        return next((m for m in self.messages.values() if receipt in m.receipts), None)

    def delete_message_batch(
        self, *, QueueUrl: str, Entries: list[dict[str, str]]
    ) -> dict[str, Any]:
        self._check(QueueUrl)
        if not Entries:
            raise FakeSqsError("AWS.SimpleQueueService.EmptyBatchRequest")
        ok, failed = [], []
        with self._cond:
            for e in Entries:
                receipt = e["ReceiptHandle"]
                m = self._owner(receipt)
                if m is not None:
                    del self.messages[m.id]
                    self.deleted |= m.receipts
                elif receipt not in self.deleted:
                    failed.append(
                        {
                            "Id": e["Id"],
                            "SenderFault": True,
                            "Code": "ReceiptHandleIsInvalid",
                            "Message": f"The input receipt handle {receipt!r} is not valid.",
                        }
                    )
                    continue
                ok.append({"Id": e["Id"]})
        return {"Successful": ok, "Failed": failed}

    def change_message_visibility(
        self, *, QueueUrl: str, ReceiptHandle: str, VisibilityTimeout: int
    ) -> dict[str, Any]:
        self._check(QueueUrl)
        with self._cond:
            m = self._owner(ReceiptHandle)
            if m is None:
                raise FakeSqsError("ReceiptHandleIsInvalid", ReceiptHandle)
            m.visible_at = self.clock() + VisibilityTimeout
            self._cond.notify_all()
        return {}

    def depth(self) -> int:
        """Messages in the queue, visible or not (ApproximateNumberOfMessages + NotVisible)."""
        with self._cond:
            return len(self.messages)


if TYPE_CHECKING:  # mypy holds the fake to the Protocol the monitor uses
    _is_queue: SqsQueue = FakeSqs()
