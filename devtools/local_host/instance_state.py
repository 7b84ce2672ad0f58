"""One orchestration instance as the engine keeps it: metadata, pending work and its history.

``to_meta``/``from_meta`` define the small JSON document committed after every episode; the history
itself is an append-only JSON-lines file (instance_store.py). The determinism table (which task id
scheduled what) is not stored twice: it is rebuilt from the history's scheduling events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import history as h
from .actions import derived_child_id

RUNNING_STATUSES = frozenset({"Pending", "Running", "ContinuedAsNew"})
META_VERSION = 1


@dataclass(frozen=True)
class ParentLink:
    """Where a sub-orchestration reports its end: the parent execution and the task id it waits on."""

    instance_id: str
    execution_id: str
    task_id: int


@dataclass
class RetryChain:
    """A ``*_with_retry`` call: attempts and retry timers get ids the SDK allocates during replay."""

    first_id: int
    kind: str  # "activity" | "suborchestration"
    name: str
    input: str | None
    child_instance_id: str | None
    max_attempts: int
    interval_ms: int
    attempts: int = 1
    attempt_id: int | None = None
    timer_id: int | None = None


@dataclass
class PendingTimer:
    fire_at: datetime
    fired: bool = False


@dataclass
class Instance:
    instance_id: str
    name: str
    input_json: str | None
    status: str
    created: datetime
    updated: datetime
    execution_id: str
    last_ts: datetime
    parent: ParentLink | None = None
    custom_status: Any = None
    output: Any = None
    next_seq: int = 0
    activities: dict[int, tuple[str, str | None]] = field(default_factory=dict)
    timers: dict[int, PendingTimer] = field(default_factory=dict)
    children: dict[int, str] = field(default_factory=dict)
    retries: dict[int, RetryChain] = field(default_factory=dict)
    inbox: list[dict[str, Any]] = field(default_factory=list)
    history_gen: int = 0
    history_bytes: int = 0
    journal_gen: int = 0
    # In memory only. ``history`` is None for finished instances until someone asks for it.
    history: list[str] | None = field(default_factory=list)
    sdk_history: list[str] = field(default_factory=list)
    known: list[tuple[int, tuple[Any, ...]]] = field(default_factory=list)
    leaf_index: dict[int, int] = field(default_factory=dict)
    busy: bool = False

    @property
    def is_running(self) -> bool:
        return self.status in RUNNING_STATUSES

    def pending_ids(self) -> set[int]:
        return set(self.activities) | set(self.timers) | set(self.children)

    def chain_for_attempt(self, task_id: int) -> RetryChain | None:
        for chain in self.retries.values():
            if chain.attempt_id == task_id:
                return chain
        return None

    def chain_for_timer(self, task_id: int) -> RetryChain | None:
        for chain in self.retries.values():
            if chain.timer_id == task_id:
                return chain
        return None

    def reset_execution(self, execution_id: str) -> None:
        """Start over for continue-as-new: a fresh history, numbering and pending work."""
        self.execution_id = execution_id
        self.next_seq = 0
        self.activities.clear()
        self.timers.clear()
        self.children.clear()
        self.retries.clear()
        self.history = []
        self.sdk_history = []
        self.known = []
        self.leaf_index = {}
        self.history_gen += 1
        self.history_bytes = 0

    def release_history(self) -> None:
        """Drop the replay views of a finished instance; its history stays on disk for queries."""
        self.history = None
        self.sdk_history = []
        self.known = []
        self.leaf_index = {}

    def append_history(self, events: list[dict[str, Any]], *, full_sdk_history: bool) -> list[str]:
        """Record events in memory; returns their lines for the history file."""
        lines = [h.dumps(event) for event in events]
        if self.history is not None:
            self.history.extend(lines)
        for event, line in zip(events, lines, strict=True):
            if full_sdk_history or event["EventType"] in h.SDK_EVENT_TYPES:
                self.sdk_history.append(line)
        return lines

    def rebuild_from_history(self, lines: list[str], *, full_sdk_history: bool) -> None:
        """Recover the in-memory views (replay payload, determinism table, pending activity
        names and inputs) from history lines."""
        self.history = list(lines)
        self.sdk_history = []
        self.known = []
        self.leaf_index = {}
        for line in lines:
            event = json.loads(line)
            event_type = event["EventType"]
            if full_sdk_history or event_type in h.SDK_EVENT_TYPES:
                self.sdk_history.append(line)
            if event_type == h.TASK_SCHEDULED and event["EventId"] in self.activities:
                self.activities[event["EventId"]] = (str(event["Name"]), event.get("Input"))
            if h.RETRY_MARKER in event:
                continue
            key = history_key(event, self.instance_id)
            if key is not None:
                self.leaf_index[int(event["EventId"])] = len(self.known)
                self.known.append((int(event["EventId"]), key))


def history_key(event: dict[str, Any], instance_id: str) -> tuple[Any, ...] | None:
    """The determinism key of a scheduling event (same shape as actions.task_key)."""
    event_type = event["EventType"]
    if event_type == h.TASK_SCHEDULED:
        return ("activity", event.get("Name"), event.get("Input"))
    if event_type == h.SUB_ORCHESTRATION_CREATED:
        child = event.get("InstanceId") or derived_child_id(instance_id, int(event["EventId"]))
        return ("suborchestration", event.get("Name"), event.get("Input"), child)
    if event_type == h.TIMER_CREATED:
        return ("timer",)
    return None


def _dt(value: datetime) -> str:
    return value.isoformat()


def to_meta(inst: Instance) -> dict[str, Any]:
    return {
        "version": META_VERSION,
        "instance_id": inst.instance_id,
        "name": inst.name,
        "input": inst.input_json,
        "status": inst.status,
        "created": _dt(inst.created),
        "updated": _dt(inst.updated),
        "execution_id": inst.execution_id,
        "last_ts": _dt(inst.last_ts),
        "parent": None
        if inst.parent is None
        else {
            "instance_id": inst.parent.instance_id,
            "execution_id": inst.parent.execution_id,
            "task_id": inst.parent.task_id,
        },
        "custom_status": inst.custom_status,
        "output": inst.output,
        "next_seq": inst.next_seq,
        # Names and inputs are in the history's TaskScheduled events; only the ids are repeated here.
        "activities": sorted(inst.activities),
        "timers": [[task_id, _dt(t.fire_at), t.fired] for task_id, t in inst.timers.items()],
        "children": [[task_id, child] for task_id, child in inst.children.items()],
        "retries": [vars(chain) for chain in inst.retries.values()],
        "inbox": inst.inbox,
        "history_gen": inst.history_gen,
        "history_bytes": inst.history_bytes,
        "journal_gen": inst.journal_gen,
    }


def from_meta(meta: dict[str, Any]) -> Instance:
    """An instance without its history loaded (``history`` None); see rebuild_from_history."""
    parent = meta.get("parent")
    inst = Instance(
        instance_id=meta["instance_id"],
        name=meta["name"],
        input_json=meta.get("input"),
        status=meta["status"],
        created=datetime.fromisoformat(meta["created"]),
        updated=datetime.fromisoformat(meta["updated"]),
        execution_id=meta["execution_id"],
        last_ts=datetime.fromisoformat(meta["last_ts"]),
        parent=None
        if not parent
        else ParentLink(parent["instance_id"], parent["execution_id"], parent["task_id"]),
        custom_status=meta.get("custom_status"),
        output=meta.get("output"),
        next_seq=int(meta.get("next_seq", 0)),
        activities={int(t): ("", None) for t in meta.get("activities", [])},
        timers={
            int(t): PendingTimer(datetime.fromisoformat(f), bool(fired))
            for t, f, fired in meta.get("timers", [])
        },
        children={int(t): str(c) for t, c in meta.get("children", [])},
        retries={int(c["first_id"]): RetryChain(**c) for c in meta.get("retries", [])},
        inbox=list(meta.get("inbox", [])),
        history_gen=int(meta.get("history_gen", 0)),
        history_bytes=int(meta.get("history_bytes", 0)),
        journal_gen=int(meta.get("journal_gen", 0)),
    )
    inst.history = None
    return inst
