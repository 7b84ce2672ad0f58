"""One orchestration episode: which new events to deliver, and what the orchestrator's reply means.

This is where the engine must agree with the SDK on task numbering (specs/durable-replay.md
sections 2 and 7). The SDK numbers tasks 0, 1, 2, ... when they are first yielded, and those show
up as the action list's atomic actions in the same order. Retries are the exception: the SDK
numbers a retry's timer while it processes the attempt's TaskFailed, and the next attempt while it
processes that timer's TimerFired; neither appears as an action. To know those numbers without
reading SDK internals, such "allocating" events are delivered at the front of an episode, before
any event that can resume user code: their ids are then the next numbers in a row, and the new
actions of the reply are numbered after them.

No threads, no files: ``prepare`` and ``apply`` mutate an :class:`Instance`; the engine persists
and dispatches what :class:`Outcome` lists.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from . import history as h
from .actions import (
    ACTIVITY_TYPES,
    CONTINUE_AS_NEW,
    CREATE_TIMER,
    RETRY_TYPES,
    SUB_ORCHESTRATOR_TYPES,
    UNSUPPORTED_TYPES,
    Leaf,
    OrchestratorReply,
    derived_child_id,
    first_mismatch,
    task_key,
)
from .instance_state import Instance, PendingTimer, RetryChain

# What the Durable extension sends besides the history (OrchestrationTriggerAttributeBindingProvider).
_CONTEXT_EXTRAS: dict[str, Any] = {
    "upperSchemaVersion": 1,
    "upperSchemaVersionNew": 2,
    "maximumShortTimerDuration": "6.00:00:00",
    "longRunningTimerIntervalDuration": "3.00:00:00",
    "defaultHttpAsyncRequestSleepTimeMillseconds": 30000,
}


@dataclass(frozen=True)
class EpisodeConfig:
    activities: frozenset[str]
    orchestrators: frozenset[str]
    virtual_timers: bool = False
    fast_timestamps: bool = True
    full_sdk_history: bool = False

    def ts(self, moment: datetime) -> str:
        return h.format_timestamp(moment, fast=self.fast_timestamps)


@dataclass
class Episode:
    instance: Instance
    execution_id: str
    timestamp: datetime
    delivered: list[dict[str, Any]]
    context_json: str
    replayed_events: int


@dataclass(frozen=True)
class ChildStart:
    task_id: int
    instance_id: str
    name: str
    input_json: str | None


@dataclass
class Outcome:
    """What the engine must do after an episode, in this order: children, parent, commit, work."""

    lines: list[str] = field(default_factory=list)
    activities: list[tuple[int, str, str | None]] = field(default_factory=list)
    children: list[ChildStart] = field(default_factory=list)
    timers: list[tuple[int, datetime]] = field(default_factory=list)
    finished: bool = False
    continued_as_new: bool = False
    parent_event: dict[str, Any] | None = None


def _valid_completion(inst: Instance, event: dict[str, Any], task_id: int) -> bool:
    event_type = event["EventType"]
    if event_type in (h.TASK_COMPLETED, h.TASK_FAILED):
        return task_id in inst.activities
    if event_type in (h.SUB_ORCHESTRATION_COMPLETED, h.SUB_ORCHESTRATION_FAILED):
        return task_id in inst.children
    return event_type == h.TIMER_FIRED and task_id in inst.timers


def _allocates(inst: Instance, event: dict[str, Any], task_id: int) -> bool:
    """True when the SDK numbers a new task while processing this event (see module doc)."""
    event_type = event["EventType"]
    if event_type in (h.TASK_FAILED, h.SUB_ORCHESTRATION_FAILED):
        return inst.chain_for_attempt(task_id) is not None
    if event_type == h.TIMER_FIRED:
        chain = inst.chain_for_timer(task_id)
        return chain is not None and chain.attempts < chain.max_attempts
    return False


def select_events(inst: Instance, max_batch: int | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split the inbox into (events to deliver now, in SDK-safe order) and (events to keep).

    Completions of tasks that are no longer pending (duplicates after a crash, results of a
    canceled timer) are dropped; completions of ids not numbered yet stay in the inbox.
    """
    start: list[dict[str, Any]] = []
    first: list[dict[str, Any]] = []
    rest: list[dict[str, Any]] = []
    keep: list[dict[str, Any]] = []
    seen: set[int] = set()
    for event in inst.inbox:
        task_id = h.completion_task_id(event)
        if task_id is not None:
            if task_id in seen:
                continue
            if not _valid_completion(inst, event, task_id):
                if task_id >= inst.next_seq:
                    keep.append(event)
                continue
        taken = len(start) + len(first) + len(rest)
        if max_batch is not None and taken >= max_batch and event["EventType"] != h.EXECUTION_STARTED:
            keep.append(event)
            continue
        if task_id is not None:
            seen.add(task_id)
        if event["EventType"] == h.EXECUTION_STARTED:
            start.append(event)
        elif task_id is not None and _allocates(inst, event, task_id):
            first.append(event)
        else:
            rest.append(event)
    return start + first + rest, keep


def fire_time(event: dict[str, Any]) -> datetime | None:
    if event["EventType"] != h.TIMER_FIRED or not event.get("FireAt"):
        return None
    return h.parse_timestamp(str(event["FireAt"]))


def build_context(inst: Instance, new_lines: list[str]) -> str:
    """The request JSON of the Durable extension (spec section 2); history spliced in as text."""
    head = {
        "instanceId": inst.instance_id,
        "parentInstanceId": inst.parent.instance_id if inst.parent else None,
        "isReplaying": bool(inst.sdk_history),
        "input": inst.input_json,
        **_CONTEXT_EXTRAS,
    }
    prefix = json.dumps(head, separators=(",", ":"))[:-1]
    return prefix + ',"history":[' + ",".join([*inst.sdk_history, *new_lines]) + "]}"


def prepare(inst: Instance, now: datetime, max_batch: int | None, cfg: EpisodeConfig) -> Episode | None:
    """Take the next events off the inbox and build the replay request; None when nothing is due."""
    delivered, keep = select_events(inst, max_batch)
    inst.inbox = keep
    if not delivered:
        return None
    timestamp = max(now, inst.last_ts)
    for event in delivered:
        fired = fire_time(event)
        if fired is not None and fired > timestamp:
            # Timers fire no earlier than their time, also on a virtual clock (spec pitfall 8).
            timestamp = fired
    started = h.orchestrator_started(cfg.ts(timestamp))
    new_lines = [
        h.dumps(event)
        for event in (started, *delivered)
        if cfg.full_sdk_history or event["EventType"] in h.SDK_EVENT_TYPES
    ]
    context_json = build_context(inst, new_lines)
    return Episode(
        instance=inst,
        execution_id=inst.execution_id,
        timestamp=timestamp,
        delivered=delivered,
        context_json=context_json,
        replayed_events=len(inst.sdk_history) + len(new_lines),
    )


class _Applier:
    """Applies one reply to an instance; collects history events and the outcome."""

    def __init__(self, inst: Instance, ep: Episode, cfg: EpisodeConfig) -> None:
        self.inst = inst
        self.ep = ep
        self.cfg = cfg
        self.ts = cfg.ts(ep.timestamp)
        self.events: list[dict[str, Any]] = [h.orchestrator_started(self.ts), *ep.delivered]
        self.out = Outcome()

    # --- helpers ---------------------------------------------------------------------------
    def next_id(self) -> int:
        task_id = self.inst.next_seq
        self.inst.next_seq += 1
        return task_id

    def add_timer(self, task_id: int, fire_at: datetime) -> None:
        if self.cfg.virtual_timers:
            self.inst.timers[task_id] = PendingTimer(fire_at, fired=True)
            self.inst.inbox.append(h.timer_fired(self.ts, task_id=task_id, fire_at=self.cfg.ts(fire_at)))
        else:
            self.inst.timers[task_id] = PendingTimer(fire_at)
            self.out.timers.append((task_id, fire_at))

    def schedule_activity(
        self, task_id: int, name: str, input_json: str | None, retry_of: int | None
    ) -> None:
        self.events.append(
            h.task_scheduled(self.ts, task_id=task_id, name=name, input_json=input_json, retry_of=retry_of)
        )
        self.inst.activities[task_id] = (name, input_json)
        if name in self.cfg.activities:
            self.out.activities.append((task_id, name, input_json))
        else:
            self.inst.inbox.append(
                h.task_failed(
                    self.ts,
                    task_id=task_id,
                    reason=f"The function '{name}' doesn't exist or is not an activity function.",
                    details="",
                )
            )

    def schedule_child(
        self, task_id: int, name: str, child_id: str, input_json: str | None, retry_of: int | None
    ) -> None:
        self.events.append(
            h.sub_orchestration_created(
                self.ts,
                task_id=task_id,
                name=name,
                instance_id=child_id,
                input_json=input_json,
                retry_of=retry_of,
            )
        )
        self.inst.children[task_id] = child_id
        if name in self.cfg.orchestrators:
            self.out.children.append(ChildStart(task_id, child_id, name, input_json))
        else:
            self.inst.inbox.append(
                h.sub_orchestration_failed(
                    self.ts,
                    task_id=task_id,
                    reason=f"The function '{name}' doesn't exist or is not an orchestrator function.",
                    details="",
                )
            )

    # --- delivered events ------------------------------------------------------------------
    def settle_delivered(self) -> None:
        """Close delivered tasks and allocate retry ids in delivery order (allocating ones first)."""
        inst = self.inst
        for event in self.ep.delivered:
            task_id = h.completion_task_id(event)
            if task_id is None:
                continue
            event_type = event["EventType"]
            if event_type in (h.TASK_COMPLETED, h.TASK_FAILED):
                inst.activities.pop(task_id, None)
            elif event_type in (h.SUB_ORCHESTRATION_COMPLETED, h.SUB_ORCHESTRATION_FAILED):
                inst.children.pop(task_id, None)
            elif event_type == h.TIMER_FIRED:
                inst.timers.pop(task_id, None)
            attempt = inst.chain_for_attempt(task_id)
            if attempt is not None:
                if event_type in (h.TASK_FAILED, h.SUB_ORCHESTRATION_FAILED):
                    self.retry_timer(attempt)
                else:
                    del inst.retries[attempt.first_id]
                continue
            waiting = inst.chain_for_timer(task_id) if event_type == h.TIMER_FIRED else None
            if waiting is not None:
                self.retry_attempt(waiting)

    def retry_timer(self, chain: RetryChain) -> None:
        # DTFx waits for a timer after every failed attempt, the last one included (spec pitfall 2).
        timer_id = self.next_id()
        fire_at = self.ep.timestamp + timedelta(milliseconds=chain.interval_ms)
        chain.attempt_id = None
        chain.timer_id = timer_id
        self.events.append(
            h.timer_created(self.ts, task_id=timer_id, fire_at=self.cfg.ts(fire_at), retry_of=chain.first_id)
        )
        self.add_timer(timer_id, fire_at)

    def retry_attempt(self, chain: RetryChain) -> None:
        chain.timer_id = None
        if chain.attempts >= chain.max_attempts:
            del self.inst.retries[chain.first_id]  # the SDK now fails the task with the last error
            return
        attempt_id = self.next_id()
        chain.attempts += 1
        chain.attempt_id = attempt_id
        if chain.kind == "activity":
            self.schedule_activity(attempt_id, chain.name, chain.input, chain.first_id)
        else:
            child_id = chain.child_instance_id or derived_child_id(self.inst.instance_id, attempt_id)
            self.schedule_child(attempt_id, chain.name, child_id, chain.input, chain.first_id)

    # --- the reply ---------------------------------------------------------------------------
    def apply_reply(self, reply: OrchestratorReply) -> None:
        inst = self.inst
        id_leaves = reply.id_leaves
        replayed = [
            task_key(leaf, task_id, inst.instance_id)
            for leaf, (task_id, _) in zip(id_leaves, inst.known, strict=False)
        ]
        mismatch = first_mismatch(inst.known, replayed)
        if mismatch is not None:
            self.fail(
                f"Non-deterministic orchestrator: {mismatch}. Orchestrator code must make the same "
                "calls with the same inputs on every replay (no random values, wall-clock time or "
                "code changes while instances are running).",
                reply.custom_status,
            )
            return
        continue_input: str | None = None
        continues = False
        for leaf in id_leaves[len(inst.known) :]:
            task_id = self.next_id()
            inst.leaf_index[task_id] = len(inst.known)
            inst.known.append((task_id, task_key(leaf, task_id, inst.instance_id)))
            if leaf.action_type in UNSUPPORTED_TYPES:
                self.fail(
                    f"Action type {leaf.action_type} (entities, durable HTTP) is not supported "
                    "by the local durable engine.",
                    reply.custom_status,
                )
                return
            if leaf.action_type == CONTINUE_AS_NEW:
                continues, continue_input = True, leaf.input
            else:
                self.schedule_leaf(task_id, leaf)
        self.drop_canceled_timers(id_leaves)
        inst.custom_status = reply.custom_status
        if reply.error is not None:
            self.fail(reply.error, reply.custom_status)
        elif reply.is_done and continues:
            self.continue_as_new(continue_input)
        elif reply.is_done:
            self.complete(reply.output)

    def schedule_leaf(self, task_id: int, leaf: Leaf) -> None:
        if leaf.action_type in ACTIVITY_TYPES:
            self.schedule_activity(task_id, leaf.name, leaf.input, None)
            kind = "activity"
        elif leaf.action_type in SUB_ORCHESTRATOR_TYPES:
            child_id = leaf.instance_id or derived_child_id(self.inst.instance_id, task_id)
            self.schedule_child(task_id, leaf.name, child_id, leaf.input, None)
            kind = "suborchestration"
        elif leaf.action_type == CREATE_TIMER:
            fire_text = leaf.fire_at or self.ts
            self.events.append(h.timer_created(self.ts, task_id=task_id, fire_at=fire_text))
            if not leaf.is_canceled:
                self.add_timer(task_id, h.parse_timestamp(fire_text))
            return
        else:
            return
        if leaf.action_type in RETRY_TYPES:
            self.inst.retries[task_id] = RetryChain(
                first_id=task_id,
                kind=kind,
                name=leaf.name,
                input=leaf.input,
                child_instance_id=leaf.instance_id,
                max_attempts=max(1, leaf.max_attempts),
                interval_ms=leaf.retry_interval_ms,
                attempt_id=task_id,
            )

    def drop_canceled_timers(self, id_leaves: list[Leaf]) -> None:
        """A timer canceled by the orchestrator (``timer.cancel()``) must not wake it again."""
        for task_id in list(self.inst.timers):
            index = self.inst.leaf_index.get(task_id)
            if index is not None and index < len(id_leaves) and id_leaves[index].is_canceled:
                del self.inst.timers[task_id]

    # --- endings -----------------------------------------------------------------------------
    def finish(self, status: str, output: Any, result_json: str | None) -> None:
        inst = self.inst
        inst.status = status
        inst.output = output
        inst.activities.clear()
        inst.timers.clear()
        inst.retries.clear()
        inst.children.clear()  # children keep running on their own, as in DTFx
        inst.inbox = []
        self.out.activities.clear()
        self.out.children.clear()
        self.out.timers.clear()
        self.events.append(h.orchestrator_completed(self.ts))
        self.events.append(h.execution_completed(self.ts, status=status, result=result_json))
        self.out.finished = True

    def complete(self, output: Any) -> None:
        result_json = json.dumps(output)
        self.finish("Completed", output, result_json)
        parent = self.inst.parent
        if parent is not None:
            self.out.parent_event = h.sub_orchestration_completed(
                self.ts, task_id=parent.task_id, result_json=result_json
            )

    def fail(self, error: str, custom_status: Any) -> None:
        message = f"Orchestrator function '{self.inst.name}' failed: {error}"
        self.inst.custom_status = custom_status
        self.finish("Failed", message, json.dumps(message))
        parent = self.inst.parent
        if parent is not None:
            self.out.parent_event = h.sub_orchestration_failed(
                self.ts, task_id=parent.task_id, reason=message, details=""
            )

    def continue_as_new(self, input_json: str | None) -> None:
        inst = self.inst
        raised = [event for event in inst.inbox if event["EventType"] == h.EVENT_RAISED]
        new_execution = uuid.uuid4().hex
        inst.reset_execution(new_execution)
        inst.input_json = input_json
        inst.inbox = [
            h.execution_started(
                self.ts,
                name=inst.name,
                input_json=input_json,
                instance_id=inst.instance_id,
                execution_id=new_execution,
                parent=parent_instance_field(inst),
            ),
            *raised,  # events not delivered yet belong to the next execution
        ]
        self.out.continued_as_new = True

    def finalize(self) -> Outcome:
        inst = self.inst
        if not self.out.continued_as_new:
            if not self.out.finished:
                self.events.append(h.orchestrator_completed(self.ts))
            self.out.lines = inst.append_history(self.events, full_sdk_history=self.cfg.full_sdk_history)
        inst.last_ts = self.ep.timestamp
        if inst.status == "Pending":
            inst.status = "Running"
        return self.out


def parent_instance_field(inst: Instance) -> dict[str, Any] | None:
    """ExecutionStarted.ParentInstance as DTFx writes it."""
    if inst.parent is None:
        return None
    return {
        "OrchestrationInstance": {
            "InstanceId": inst.parent.instance_id,
            "ExecutionId": inst.parent.execution_id,
        },
        "TaskScheduleId": inst.parent.task_id,
    }


def apply(
    inst: Instance, ep: Episode, reply: OrchestratorReply | None, failure: str | None, cfg: EpisodeConfig
) -> Outcome:
    """Record the episode in the instance. ``reply`` None means the replay itself broke (``failure``)."""
    applier = _Applier(inst, ep, cfg)
    applier.settle_delivered()
    if reply is None:
        applier.fail(failure or "the orchestrator replay failed", inst.custom_status)
    else:
        applier.apply_reply(reply)
    return applier.finalize()


def fail_unreplayable(inst: Instance, now: datetime, message: str, cfg: EpisodeConfig) -> Outcome:
    """End an instance that cannot even be replayed (e.g. its orchestrator is not in the app)."""
    ep = Episode(inst, inst.execution_id, max(now, inst.last_ts), [], "", 0)
    applier = _Applier(inst, ep, cfg)
    applier.fail(message, inst.custom_status)
    return applier.finalize()
