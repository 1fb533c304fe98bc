"""The SQS and IMDS contracts: the same assertions against ``fakes.sqs.FakeSqs`` and a boto3 SQS
client on a moto server, and against ``fakes.imds.FakeMetadata`` and ``monitors.imds.ImdsClient``
over HTTP against the IMDSv2 stand-in (token required, 404 for absent paths), so the fakes the
fast policy tests use cannot drift from what they stand for."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from provisioner.daemon.events import parse_imds_spot
from provisioner.daemon.fakes.imds import FakeMetadata
from provisioner.daemon.fakes.sqs import FakeSqs
from provisioner.daemon.monitors.imds import ImdsClient, ImdsError, Metadata
from provisioner.daemon.monitors.sqs import SqsQueue


@pytest.fixture(params=["fake", "moto"])
def queue(request: pytest.FixtureRequest) -> tuple[Any, str]:
    """(client, queue URL); the stand's queue hides a received message 30 s."""
    if request.param == "fake":
        fake = FakeSqs(visibility_timeout=30)
        return fake, fake.queue_url
    aws = request.getfixturevalue("aws")
    return aws.sqs, aws.queue_url


def receive(sqs: SqsQueue, url: str) -> list[dict[str, Any]]:
    resp = sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        WaitTimeSeconds=0,
        AttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
    )
    return sorted(resp.get("Messages", []), key=lambda m: m["Body"])


def code_of(e: BaseException) -> str:
    return str(e.response["Error"]["Code"])  # type: ignore[attr-defined]


def test_a_received_message_hides_until_released(queue):
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody="a")
    sqs.send_message(QueueUrl=url, MessageBody="b")
    before_ms = int(time.time() * 1000) + 1
    first = receive(sqs, url)
    assert [m["Body"] for m in first] == ["a", "b"]
    assert all(m["Attributes"]["ApproximateReceiveCount"] == "1" for m in first)
    assert all(int(m["Attributes"]["SentTimestamp"]) <= before_ms for m in first)
    assert receive(sqs, url) == []  # invisible for the visibility timeout
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=first[0]["ReceiptHandle"], VisibilityTimeout=0
    )
    (again,) = receive(sqs, url)
    assert again["Body"] == "a" and again["Attributes"]["ApproximateReceiveCount"] == "2"
    assert again["ReceiptHandle"] != first[0]["ReceiptHandle"]


def test_a_hidden_message_comes_back_after_its_timeout(queue):
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody="a")
    (m,) = receive(sqs, url)
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=1
    )
    assert receive(sqs, url) == []
    time.sleep(1.3)
    (back,) = receive(sqs, url)
    assert back["Attributes"]["ApproximateReceiveCount"] == "2"


def test_deletes_take_any_handle_the_message_had_once(queue):
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody="a")
    (m,) = receive(sqs, url)
    sqs.change_message_visibility(
        QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
    )
    (m2,) = receive(sqs, url)
    resp = sqs.delete_message_batch(
        QueueUrl=url, Entries=[{"Id": "0", "ReceiptHandle": m["ReceiptHandle"]}]
    )
    assert [e["Id"] for e in resp.get("Successful", [])] == ["0"] and not resp.get("Failed")
    again = sqs.delete_message_batch(
        QueueUrl=url,
        Entries=[
            {"Id": "0", "ReceiptHandle": m2["ReceiptHandle"]},  # deleted already: fine
            {"Id": "1", "ReceiptHandle": "not-a-receipt-handle"},
        ],
    )
    assert [e["Id"] for e in again.get("Successful", [])] == ["0"]
    assert [(f["Id"], f["Code"]) for f in again["Failed"]] == [("1", "ReceiptHandleIsInvalid")]
    with pytest.raises(Exception) as e:
        sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle="not-a-receipt-handle", VisibilityTimeout=0
        )
    assert code_of(e.value) == "ReceiptHandleIsInvalid"
    assert receive(sqs, url) == []


# -- IMDS -----------------------------------------------------------------------------------


@pytest.fixture(params=["fake", "http"])
def metadata(request: pytest.FixtureRequest) -> tuple[Metadata, Any]:
    """(the Metadata, something with ``set(path, body)``)."""
    if request.param == "fake":
        fake = FakeMetadata("i-0123456789abcdef0")
        return fake, fake
    server = request.getfixturevalue("imds_server")("i-0123456789abcdef0")
    return ImdsClient(server.url, timeout=2), server


def test_metadata_answers_paths_and_none_for_absent_ones(metadata):
    md, service = metadata
    assert md.get("instance-id") == "i-0123456789abcdef0"
    assert md.get("spot/instance-action") is None
    when = "2026-11-30T01:02:03Z"
    service.set("spot/instance-action", {"action": "terminate", "time": when})
    text = md.get("spot/instance-action")
    assert json.loads(text) == {"action": "terminate", "time": when}
    ev = parse_imds_spot("i-0123456789abcdef0", text, datetime.now(UTC))
    assert ev.instance_id == "i-0123456789abcdef0"
    service.set("spot/instance-action", None)
    assert md.get("spot/instance-action") is None
    assert md.token() and md.token(refresh=True)


def test_unreachable_metadata_raises_imds_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    fake = FakeMetadata("i-0123456789abcdef0")
    fake.reachable = False
    for md in (ImdsClient(dead, timeout=1), fake):
        with pytest.raises(ImdsError):
            md.get("instance-id")
        with pytest.raises(ImdsError):
            md.token()
