"""DTFx history events in the shape the Durable extension sends to the Python worker.

The SDK rebuilds its whole state from these events on every episode, so their field names and
types must be exactly what the extension produces (Newtonsoft default: PascalCase, EventType as
int); see specs/durable-replay.md section 2. Pure functions only: the engine decides when to emit.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

# HistoryEventType values (azure.durable_functions.models.history.HistoryEventType).
EXECUTION_STARTED = 0
EXECUTION_COMPLETED = 1
EXECUTION_TERMINATED = 3
TASK_SCHEDULED = 4
TASK_COMPLETED = 5
TASK_FAILED = 6
SUB_ORCHESTRATION_CREATED = 7
SUB_ORCHESTRATION_COMPLETED = 8
SUB_ORCHESTRATION_FAILED = 9
TIMER_CREATED = 10
TIMER_FIRED = 11
ORCHESTRATOR_STARTED = 12
ORCHESTRATOR_COMPLETED = 13
EVENT_RAISED = 15

#: Events the SDK's replay reads (TaskOrchestrationExecutor.process_event and the context
#: constructor). The others (TaskScheduled, TimerCreated, SubOrchestrationInstanceCreated,
#: OrchestratorCompleted, ExecutionCompleted) are bookkeeping the SDK parses and then ignores, so
#: leaving them out of the replay payload changes nothing but the parsing time.
SDK_EVENT_TYPES = frozenset(
    {
        EXECUTION_STARTED,
        TASK_COMPLETED,
        TASK_FAILED,
        SUB_ORCHESTRATION_COMPLETED,
        SUB_ORCHESTRATION_FAILED,
        TIMER_FIRED,
        ORCHESTRATOR_STARTED,
        EVENT_RAISED,
    }
)

#: Completion events and the field naming the task they complete.
COMPLETION_ID_FIELD = {
    TASK_COMPLETED: "TaskScheduledId",
    TASK_FAILED: "TaskScheduledId",
    SUB_ORCHESTRATION_COMPLETED: "TaskScheduledId",
    SUB_ORCHESTRATION_FAILED: "TaskScheduledId",
    TIMER_FIRED: "TimerId",
}

#: A retry attempt or retry timer is numbered by the SDK while it processes an event, never by an
#: action; this marker keeps such events out of the determinism table rebuilt from history.
RETRY_MARKER = "RetryOf"


def format_timestamp(moment: datetime, *, fast: bool = True) -> str:
    """ISO text for an event timestamp.

    ``fast`` uses microseconds (what ``datetime.fromisoformat`` reads, see fast_timestamps.py);
    otherwise .NET's 7-digit ticks, as the real extension writes them.
    """
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return f"{text}Z" if fast else f"{text}0Z"


def parse_timestamp(text: str) -> datetime:
    """Read back a timestamp written by :func:`format_timestamp` (either precision)."""
    body = text.rstrip("Z")
    head, _, fraction = body.partition(".")
    micro = (fraction + "000000")[:6] if fraction else "000000"
    return datetime.fromisoformat(f"{head}.{micro}").replace(tzinfo=UTC)


def _event(event_type: int, timestamp: str, event_id: int = -1, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"EventType": event_type, "EventId": event_id, "IsPlayed": False}
    event["Timestamp"] = timestamp
    event.update(fields)
    return event


def orchestrator_started(timestamp: str) -> dict[str, Any]:
    return _event(ORCHESTRATOR_STARTED, timestamp)


def orchestrator_completed(timestamp: str) -> dict[str, Any]:
    return _event(ORCHESTRATOR_COMPLETED, timestamp)


def execution_started(
    timestamp: str,
    *,
    name: str,
    input_json: str | None,
    instance_id: str,
    execution_id: str,
    parent: dict[str, Any] | None,
) -> dict[str, Any]:
    """``Version`` is required by the SDK (AttributeError without it), even when empty."""
    return _event(
        EXECUTION_STARTED,
        timestamp,
        Name=name,
        Input=input_json,
        Version="",
        OrchestrationInstance={"InstanceId": instance_id, "ExecutionId": execution_id},
        ParentInstance=parent,
    )


def execution_completed(timestamp: str, *, status: str, result: str | None) -> dict[str, Any]:
    return _event(EXECUTION_COMPLETED, timestamp, OrchestrationStatus=status, Result=result)


def execution_terminated(timestamp: str, *, reason: str) -> dict[str, Any]:
    return _event(EXECUTION_TERMINATED, timestamp, Input=reason)


def task_scheduled(
    timestamp: str, *, task_id: int, name: str, input_json: str | None, retry_of: int | None = None
) -> dict[str, Any]:
    extra = {} if retry_of is None else {RETRY_MARKER: retry_of}
    return _event(TASK_SCHEDULED, timestamp, task_id, Name=name, Input=input_json, **extra)


def task_completed(timestamp: str, *, task_id: int, result_json: str | None) -> dict[str, Any]:
    return _event(TASK_COMPLETED, timestamp, TaskScheduledId=task_id, Result=result_json)


def task_failed(timestamp: str, *, task_id: int, reason: str, details: str) -> dict[str, Any]:
    return _event(TASK_FAILED, timestamp, TaskScheduledId=task_id, Reason=reason, Details=details)


def sub_orchestration_created(
    timestamp: str,
    *,
    task_id: int,
    name: str,
    instance_id: str,
    input_json: str | None,
    retry_of: int | None = None,
) -> dict[str, Any]:
    extra = {} if retry_of is None else {RETRY_MARKER: retry_of}
    return _event(
        SUB_ORCHESTRATION_CREATED,
        timestamp,
        task_id,
        Name=name,
        InstanceId=instance_id,
        Input=input_json,
        **extra,
    )


def sub_orchestration_completed(timestamp: str, *, task_id: int, result_json: str | None) -> dict[str, Any]:
    return _event(SUB_ORCHESTRATION_COMPLETED, timestamp, TaskScheduledId=task_id, Result=result_json)


def sub_orchestration_failed(timestamp: str, *, task_id: int, reason: str, details: str) -> dict[str, Any]:
    return _event(
        SUB_ORCHESTRATION_FAILED, timestamp, TaskScheduledId=task_id, Reason=reason, Details=details
    )


def timer_created(
    timestamp: str, *, task_id: int, fire_at: str, retry_of: int | None = None
) -> dict[str, Any]:
    extra = {} if retry_of is None else {RETRY_MARKER: retry_of}
    return _event(TIMER_CREATED, timestamp, task_id, FireAt=fire_at, **extra)


def timer_fired(timestamp: str, *, task_id: int, fire_at: str) -> dict[str, Any]:
    return _event(TIMER_FIRED, timestamp, TimerId=task_id, FireAt=fire_at)


def event_raised(timestamp: str, *, name: str, input_json: str | None) -> dict[str, Any]:
    """The payload travels in ``Input`` (the SDK reads it from there, not from ``Result``)."""
    return _event(EVENT_RAISED, timestamp, Name=name, Input=input_json)


def completion_task_id(event: dict[str, Any]) -> int | None:
    """The task id a completion event resolves, or None for other events."""
    field = COMPLETION_ID_FIELD.get(event["EventType"])
    if field is None:
        return None
    value = event.get(field)
    return value if isinstance(value, int) else None


def dumps(event: dict[str, Any]) -> str:
    """Compact one-line JSON: the same text goes to the history file and into the replay payload."""
    return json.dumps(event, separators=(",", ":"))
