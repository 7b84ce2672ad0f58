"""Reading what the SDK's ``handle`` returns: the V3 action list, output, error and custom status.

The action list is cumulative since ExecutionStarted (specs/durable-replay.md section 3): the
engine compares its prefix with what it already scheduled (determinism) and schedules the suffix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.redact import scrub

# actionType values (azure.durable_functions.models.actions.ActionType).
CALL_ACTIVITY = 0
CALL_ACTIVITY_WITH_RETRY = 1
CALL_SUB_ORCHESTRATOR = 2
CALL_SUB_ORCHESTRATOR_WITH_RETRY = 3
CONTINUE_AS_NEW = 4
CREATE_TIMER = 5
WAIT_FOR_EXTERNAL_EVENT = 6
CALL_ENTITY = 7
CALL_HTTP = 8
SIGNAL_ENTITY = 9
WHEN_ANY = 11
WHEN_ALL = 12

ACTIVITY_TYPES = frozenset({CALL_ACTIVITY, CALL_ACTIVITY_WITH_RETRY})
SUB_ORCHESTRATOR_TYPES = frozenset({CALL_SUB_ORCHESTRATOR, CALL_SUB_ORCHESTRATOR_WITH_RETRY})
RETRY_TYPES = frozenset({CALL_ACTIVITY_WITH_RETRY, CALL_SUB_ORCHESTRATOR_WITH_RETRY})
UNSUPPORTED_TYPES = frozenset({CALL_ENTITY, CALL_HTTP, SIGNAL_ENTITY})

_ERROR_LABEL = "\n\n$OutOfProcData$:"


class ResponseError(Exception):
    """The orchestrator's reply could not be understood (not an orchestrator bug: an engine/SDK one)."""


@dataclass(frozen=True)
class Leaf:
    """One atomic action. ``takes_id``: the SDK gave it the next sequence number when yielded."""

    action_type: int
    raw: dict[str, Any]

    @property
    def takes_id(self) -> bool:
        # WaitForExternalEvent is keyed by event name, not by a sequence number.
        return self.action_type != WAIT_FOR_EXTERNAL_EVENT

    @property
    def name(self) -> str:
        return str(self.raw.get("functionName") or self.raw.get("externalEventName") or "")

    @property
    def input(self) -> str | None:
        value = self.raw.get("input")
        return value if isinstance(value, str) or value is None else json.dumps(value)

    @property
    def instance_id(self) -> str | None:
        value = self.raw.get("instanceId")
        return value if isinstance(value, str) and value else None

    @property
    def is_canceled(self) -> bool:
        return bool(self.raw.get("isCanceled"))

    @property
    def fire_at(self) -> str | None:
        value = self.raw.get("fireAt")
        return value if isinstance(value, str) else None

    @property
    def retry_interval_ms(self) -> int:
        options = self.raw.get("retryOptions") or {}
        return int(options.get("firstRetryIntervalInMilliseconds", 0))

    @property
    def max_attempts(self) -> int:
        options = self.raw.get("retryOptions") or {}
        return int(options.get("maxNumberOfAttempts", 1))


@dataclass
class OrchestratorReply:
    """The parsed reply of one episode."""

    is_done: bool
    leaves: list[Leaf]
    output: Any = None
    error: str | None = None
    custom_status: Any = None
    raw_state: dict[str, Any] = field(default_factory=dict)

    @property
    def id_leaves(self) -> list[Leaf]:
        return [leaf for leaf in self.leaves if leaf.takes_id]


def flatten(actions: Sequence[Any]) -> list[Leaf]:
    """Atomic actions in the order the SDK numbered them (compound WhenAll/WhenAny flattened)."""
    return list(_walk(actions))


def _walk(node: Any) -> Iterator[Leaf]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item)
        return
    if not isinstance(node, dict):
        raise ResponseError(f"unexpected action entry of type {type(node).__name__}")
    action_type = node.get("actionType")
    if action_type in (WHEN_ALL, WHEN_ANY):
        yield from _walk(node.get("compoundActions") or [])
        return
    if not isinstance(action_type, int):
        raise ResponseError("action without an integer actionType")
    yield Leaf(action_type, node)


def parse_state(state: dict[str, Any]) -> OrchestratorReply:
    actions = state.get("actions")
    if not isinstance(actions, list):
        raise ResponseError("orchestrator state has no action list")
    if state.get("schemaVersion") is None:
        # V1 repeats re-yielded tasks, so its suffix cannot be diffed (spec pitfall 4).
        raise ResponseError("orchestrator replied with the V1 replay schema; the engine needs V2/V3")
    error = state.get("error")
    return OrchestratorReply(
        is_done=bool(state.get("isDone")),
        leaves=flatten(actions),
        output=state.get("output"),
        error=str(error) if error else None,
        custom_status=state.get("customStatus"),
        raw_state=state,
    )


def parse_reply(text: str) -> OrchestratorReply:
    """The JSON ``handle`` returned."""
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ResponseError(f"orchestrator reply is not JSON: {exc}") from exc
    if not isinstance(state, dict):
        raise ResponseError("orchestrator reply is not a JSON object")
    return parse_state(state)


def parse_failure(exc: BaseException) -> OrchestratorReply | None:
    """The state carried by the exception ``handle`` raises when the orchestrator throws.

    The SDK formats it as ``f"{error}\\n\\n$OutOfProcData$:{state_json}"``; the state JSON has no
    raw newline, so the last label is the real one. None when the exception carries no state
    (an SDK-internal failure outside the user's generator).
    """
    message = str(exc)
    head, label, tail = message.rpartition(_ERROR_LABEL)
    if not label:
        return None
    try:
        state = json.loads(tail)
    except json.JSONDecodeError:
        return None
    if not isinstance(state, dict):
        return None
    reply = parse_state(state)
    if reply.error is None:
        reply.error = head or type(exc).__name__
    return reply


def task_key(leaf: Leaf, task_id: int, instance_id: str) -> tuple[Any, ...]:
    """What must be equal between a replayed action and the history for the replay to be faithful."""
    if leaf.action_type in ACTIVITY_TYPES:
        return ("activity", leaf.name, leaf.input)
    if leaf.action_type in SUB_ORCHESTRATOR_TYPES:
        return (
            "suborchestration",
            leaf.name,
            leaf.input,
            leaf.instance_id or derived_child_id(instance_id, task_id),
        )
    if leaf.action_type == CREATE_TIMER:
        return ("timer",)
    if leaf.action_type == CONTINUE_AS_NEW:
        return ("continue_as_new",)
    return ("action", leaf.action_type)


def derived_child_id(parent_id: str, task_id: int) -> str:
    """Sub-orchestration instance id when the orchestrator gave none (unique per parent and task)."""
    return f"{parent_id}:{task_id}"


def describe_key(key: Sequence[Any]) -> str:
    """Human text for an error message; inputs are shortened and scrubbed of emails."""
    kind = key[0]
    if kind == "activity":
        return f"activity {key[1]!r} with input {_short(key[2])}"
    if kind == "suborchestration":
        return f"sub-orchestration {key[1]!r} (instance {key[3]!r}) with input {_short(key[2])}"
    if kind == "timer":
        return "a timer"
    if kind == "continue_as_new":
        return "continue_as_new"
    return f"action type {key[1]}"


def _short(value: str | None, limit: int = 120) -> str:
    text = "none" if value is None else scrub(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_mismatch(
    known: Sequence[tuple[int, tuple[Any, ...]]], replayed: Sequence[tuple[Any, ...]]
) -> str | None:
    """Why the replayed actions contradict the scheduled history, or None when they agree.

    ``known`` pairs each scheduled task id with its key; replay regenerates every action scheduled
    before, so ``replayed`` (keys computed with the same ids) must start with the known keys.
    """
    for index, (task_id, expected) in enumerate(known):
        if index >= len(replayed):
            return (
                f"the history has {len(known)} scheduled tasks but the replay produced only "
                f"{len(replayed)}; task {task_id} was {describe_key(expected)}"
            )
        if replayed[index] != expected:
            return (
                f"task {task_id} is {describe_key(replayed[index])} on replay, "
                f"but the history has {describe_key(expected)}"
            )
    return None
