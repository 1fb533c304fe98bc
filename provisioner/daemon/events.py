"""InterruptionEvent and the parsers that make one from an EventBridge message or IMDS answer.

Every event gets a stable id: the EventBridge event id (per affected instance for AWS Health),
or for IMDS, one built from the instance and the notice's own time, so that polling the same
notice every 2 s yields the same id. ``key`` is a second, semantic identity (one spot
interruption per instance, one rebalance per instance...) that the store also dedupes on.

Parsers raise :class:`PayloadError` for anything malformed or unknown; the monitors log it and
skip the message. They return an empty list for well-formed events prov does not act on
(a state change to ``running``, a test notification).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from provisioner.errors import DataError

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8,17}$")


class EventKind(StrEnum):
    SPOT_INTERRUPTION = "spot-interruption"
    REBALANCE = "rebalance-recommendation"
    STATE_CHANGE = "state-change"
    SCHEDULED_CHANGE = "scheduled-change"
    SCHEDULED_CANCELLED = "scheduled-cancelled"
    ASG_LIFECYCLE = "asg-lifecycle"


# State-change states the daemon acts on (others, e.g. pending/running, are ignored).
LEAVING_STATES = frozenset({"stopping", "stopped", "shutting-down", "terminated"})


class PayloadError(DataError):
    """A message or metadata answer that is malformed or of an unknown kind."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # "malformed" | "unknown"


class InterruptionEvent(BaseModel):
    """One notice about one instance, as the store and handler see it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=512)
    kind: EventKind
    instance_id: str = Field(pattern=INSTANCE_ID.pattern)
    source: Literal["sqs", "imds"]
    notice_time: datetime  # when AWS issued the notice
    received_at: datetime  # when the monitor saw it
    start_time: datetime | None = None  # termination time or maintenance start, when known
    state: str | None = None  # EC2 state for state changes
    detail: dict[str, str] = Field(default_factory=dict)  # kind-specific extras (ASG hook...)

    @property
    def key(self) -> str:
        """The semantic identity: a second notice with the same key is the same interruption."""
        if self.kind is EventKind.STATE_CHANGE:
            return f"{self.kind}/{self.instance_id}/{self.state}"
        if self.kind in (EventKind.SCHEDULED_CHANGE, EventKind.SCHEDULED_CANCELLED):
            return f"{self.kind}/{self.instance_id}/{self.detail.get('event_id', self.id)}"
        if self.kind is EventKind.ASG_LIFECYCLE:
            return f"{self.kind}/{self.instance_id}/{self.detail.get('token', self.id)}"
        return f"{self.kind}/{self.instance_id}"


#: How far an event's own time may be ahead of this host's clock (skew), not more.
MAX_CLOCK_SKEW_SECONDS = 3600.0


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def parse_iso(value: Any, what: str) -> datetime:
    if not isinstance(value, str):
        raise PayloadError("malformed", f"{what}: expected an ISO 8601 time, got {value!r}")
    try:
        return _utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        raise PayloadError("malformed", f"{what}: not an ISO 8601 time: {value!r}") from None


def _parse_http_date(value: Any, what: str) -> datetime:
    """AWS Health's 'Sat, 05 Jun 2021 15:10:09 GMT' (also accepts ISO 8601)."""
    if not isinstance(value, str):
        raise PayloadError("malformed", f"{what}: expected a time, got {value!r}")
    try:
        return _utc(parsedate_to_datetime(value))
    except (TypeError, ValueError):
        return parse_iso(value, what)


def _parse_imds_date(value: Any, what: str) -> datetime:
    """IMDS scheduled events use '21 Jan 2019 09:00:43 GMT'."""
    if not isinstance(value, str):
        raise PayloadError("malformed", f"{what}: expected a time, got {value!r}")
    try:
        return datetime.strptime(value, "%d %b %Y %H:%M:%S %Z").replace(tzinfo=UTC)
    except ValueError:
        return _parse_http_date(value, what)


def _instance(value: Any, what: str) -> str:
    if not isinstance(value, str) or not INSTANCE_ID.match(value):
        raise PayloadError("malformed", f"{what}: not an instance id: {value!r}")
    return value


def _json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PayloadError("malformed", f"{what}: not JSON ({e})") from None


# ---------------------------------------------------------------------------------------------
# SQS: EventBridge events (optionally inside an SNS envelope)
# ---------------------------------------------------------------------------------------------

SPOT_WARNING = "EC2 Spot Instance Interruption Warning"
REBALANCE = "EC2 Instance Rebalance Recommendation"
STATE_CHANGE = "EC2 Instance State-change Notification"
HEALTH = "AWS Health Event"
ASG_TERMINATE = "EC2 Instance-terminate Lifecycle Action"


def parse_sqs_body(body: str, received_at: datetime) -> list[InterruptionEvent]:
    """Parse one SQS message body. Raises PayloadError; [] for events prov does not act on."""
    data = _json(body, "message body")
    if not isinstance(data, dict):
        raise PayloadError("malformed", "message body: not a JSON object")
    if data.get("Type") == "Notification" and isinstance(data.get("Message"), str):
        data = _json(data["Message"], "SNS message")  # EventBridge -> SNS -> SQS
        if not isinstance(data, dict):
            raise PayloadError("malformed", "SNS message: not a JSON object")
    if data.get("Event") == "autoscaling:TEST_NOTIFICATION":
        return []
    return parse_eventbridge(data, received_at)


def parse_eventbridge(data: dict[str, Any], received_at: datetime) -> list[InterruptionEvent]:
    source, dtype, detail = data.get("source"), data.get("detail-type"), data.get("detail")
    if not isinstance(source, str) or not isinstance(dtype, str) or not isinstance(detail, dict):
        raise PayloadError("malformed", "not an EventBridge event (source/detail-type/detail)")
    event_id = data.get("id")
    if not isinstance(event_id, str) or not event_id:
        raise PayloadError("malformed", f"{dtype}: event without an id")
    notice = parse_iso(data.get("time"), f"{dtype} time") if "time" in data else received_at
    ahead = (notice - received_at).total_seconds()
    if ahead > MAX_CLOCK_SKEW_SECONDS:  # EventBridge stamps when it was emitted: not later
        raise PayloadError(
            "malformed", f"{dtype} time {data.get('time')!r} is {ahead / 86400:.1f} days ahead"
        )

    def make(kind: EventKind, instance: str, **kw: Any) -> InterruptionEvent:
        return InterruptionEvent(
            id=kw.pop("id", event_id),
            kind=kind,
            instance_id=instance,
            source="sqs",
            notice_time=notice,
            received_at=received_at,
            **kw,
        )

    if source == "aws.ec2" and dtype == SPOT_WARNING:
        inst = _instance(detail.get("instance-id"), dtype)
        action = str(detail.get("instance-action", "terminate"))
        return [make(EventKind.SPOT_INTERRUPTION, inst, detail={"action": action})]
    if source == "aws.ec2" and dtype == REBALANCE:
        return [make(EventKind.REBALANCE, _instance(detail.get("instance-id"), dtype))]
    if source == "aws.ec2" and dtype == STATE_CHANGE:
        inst = _instance(detail.get("instance-id"), dtype)
        state = detail.get("state")
        if not isinstance(state, str):
            raise PayloadError("malformed", f"{dtype}: no state")
        if state not in LEAVING_STATES:
            return []
        return [make(EventKind.STATE_CHANGE, inst, state=state)]
    if source == "aws.health" and dtype == HEALTH:
        return _parse_health(detail, make)
    if source == "aws.autoscaling" and dtype == ASG_TERMINATE:
        inst = _instance(detail.get("EC2InstanceId"), dtype)
        if detail.get("LifecycleTransition") != "autoscaling:EC2_INSTANCE_TERMINATING":
            return []
        fields = {
            "group": detail.get("AutoScalingGroupName"),
            "hook": detail.get("LifecycleHookName"),
            "token": detail.get("LifecycleActionToken"),
        }
        if not all(isinstance(v, str) and v for v in fields.values()):
            raise PayloadError("malformed", f"{dtype}: missing group, hook or token")
        return [make(EventKind.ASG_LIFECYCLE, inst, detail={k: str(v) for k, v in fields.items()})]
    raise PayloadError("unknown", f"unknown event: source={source!r} detail-type={dtype!r}")


def _parse_health(detail: dict[str, Any], make: Any) -> list[InterruptionEvent]:
    """AWS Health scheduledChange for EC2: one event per affected instance.

    statusCode 'upcoming'/'open' is a scheduled change; 'closed' before the start, or an event
    type code that names a cancellation, cancels it (prov's reading of Health events).
    """
    if detail.get("service") != "EC2" or detail.get("eventTypeCategory") != "scheduledChange":
        return []
    arn = detail.get("eventArn")
    code = str(detail.get("eventTypeCode", ""))
    status = str(detail.get("statusCode", "upcoming"))
    start = _parse_http_date(detail.get("startTime"), "AWS Health startTime")
    entities = detail.get("affectedEntities")
    if not isinstance(arn, str) or not isinstance(entities, list) or not entities:
        raise PayloadError("malformed", "AWS Health event without eventArn or affectedEntities")
    cancelled = status == "closed" or "CANCEL" in code.upper()
    kind = EventKind.SCHEDULED_CANCELLED if cancelled else EventKind.SCHEDULED_CHANGE
    out = []
    for ent in entities:
        inst = _instance(ent.get("entityValue") if isinstance(ent, dict) else None, "AWS Health")
        out.append(
            make(
                kind,
                inst,
                id=f"{arn}/{inst}/{kind}",
                start_time=start,
                detail={"event_id": arn, "code": code},
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# IMDS: spot/instance-action, events/recommendations/rebalance, events/maintenance/scheduled
# ---------------------------------------------------------------------------------------------


def parse_imds_spot(instance: str, text: str, received_at: datetime) -> InterruptionEvent:
    data = _json(text, "spot/instance-action")
    if not isinstance(data, dict) or "time" not in data:
        raise PayloadError("malformed", "spot/instance-action: expected {action, time}")
    when = parse_iso(data["time"], "spot/instance-action time")
    action = str(data.get("action", "terminate"))
    return InterruptionEvent(
        id=f"imds:spot:{instance}:{when.isoformat()}",
        kind=EventKind.SPOT_INTERRUPTION,
        instance_id=instance,
        source="imds",
        notice_time=received_at,
        received_at=received_at,
        start_time=when,
        detail={"action": action},
    )


def parse_imds_rebalance(instance: str, text: str, received_at: datetime) -> InterruptionEvent:
    data = _json(text, "events/recommendations/rebalance")
    if not isinstance(data, dict) or "noticeTime" not in data:
        raise PayloadError("malformed", "rebalance: expected {noticeTime}")
    when = parse_iso(data["noticeTime"], "rebalance noticeTime")
    return InterruptionEvent(
        id=f"imds:rebalance:{instance}:{when.isoformat()}",
        kind=EventKind.REBALANCE,
        instance_id=instance,
        source="imds",
        notice_time=when,
        received_at=received_at,
    )


def parse_imds_scheduled(
    instance: str, text: str, received_at: datetime
) -> list[InterruptionEvent]:
    data = _json(text, "events/maintenance/scheduled")
    if not isinstance(data, list):
        raise PayloadError("malformed", "events/maintenance/scheduled: expected a JSON list")
    out = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("EventId"), str):
            raise PayloadError("malformed", "scheduled event without an EventId")
        state = str(item.get("State", "active"))
        if state == "completed":
            continue
        kind = EventKind.SCHEDULED_CANCELLED if state == "canceled" else EventKind.SCHEDULED_CHANGE
        eid = item["EventId"]
        out.append(
            InterruptionEvent(
                id=f"imds:scheduled:{instance}:{eid}:{kind}",
                kind=kind,
                instance_id=instance,
                source="imds",
                notice_time=received_at,
                received_at=received_at,
                start_time=_parse_imds_date(item.get("NotBefore"), "scheduled NotBefore"),
                detail={"event_id": eid, "code": str(item.get("Code", ""))},
            )
        )
    return out
