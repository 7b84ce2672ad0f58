"""A local Durable Functions task hub: the app's orchestrators replayed by azure-functions-durable.

``func`` cannot run here, so this engine plays the Durable extension's part: it keeps each
instance's DTFx history, calls the SDK's registered ``handle(context_json)`` with it (the same
generator code, replayed by the library's own ``Orchestrator``), schedules the new actions of the
reply, runs activities in a thread pool and persists everything so a killed process resumes where
it stopped (only activities that were in flight run again). See specs/durable-replay.md.

Threads: one dispatcher runs episodes one at a time (replay is CPU-bound Python, more threads would
only contend for the GIL); activities run in a pool; HTTP handlers call the public methods. One
condition variable guards all state; the replay itself runs outside it, so status queries never
wait for a long replay.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared.redact import scrub

from . import episode as ep_mod
from . import fast_timestamps
from . import history as h
from .actions import OrchestratorReply, ResponseError, parse_failure, parse_reply
from .backend import InstanceStatus
from .episode import ChildStart, Episode, EpisodeConfig, Outcome
from .functions import FunctionRegistry, UnknownFunctionError, registry_for, run_activity
from .instance_state import Instance, ParentLink, from_meta, to_meta
from .instance_store import InstanceStore

log = logging.getLogger("devtools.local_host.durable")

__all__ = ["DurableEngine", "EngineStats", "UnknownFunctionError", "utcnow"]

_FORBIDDEN_ID_CHARS = set("/\\#?")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class EngineStats:
    """Replay work done so far: the quadratic cost the design notes warn about, made visible."""

    episodes: int
    events_replayed: int
    replay_seconds: float


def _decode(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _aware(moment: datetime | None) -> datetime | None:
    """Query bounds without a zone are read as UTC, the zone of every stored time."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def validate_instance_id(instance_id: str) -> None:
    """Instance ids end up in URLs and blob names: the same characters Azure refuses are refused."""
    if not instance_id or len(instance_id) > 256:
        raise ValueError("instance id must be 1..256 characters")
    if any(ch in _FORBIDDEN_ID_CHARS or ord(ch) < 32 for ch in instance_id):
        raise ValueError("instance id must not contain '/', '\\', '#', '?' or control characters")


class DurableEngine:
    """Implements :class:`devtools.local_host.backend.OrchestrationBackend` over a state folder."""

    def __init__(
        self,
        app: Any,
        state_dir: Path,
        *,
        activity_workers: int = 8,
        fast_timestamps: bool = True,
        max_batch: int | None = None,
        clock: Callable[[], datetime] = utcnow,
        virtual_timers: bool = False,
        full_sdk_history: bool = False,
    ) -> None:
        """``full_sdk_history`` sends the bookkeeping events too (the SDK ignores them; slower)."""
        self._registry: FunctionRegistry = registry_for(app)
        self._store = InstanceStore(Path(state_dir))
        self._workers = activity_workers
        self._max_batch = max_batch
        self._clock = clock
        if fast_timestamps:
            fast_timestamps_install()
        self._cfg = EpisodeConfig(
            activities=frozenset(self._registry.activities),
            orchestrators=frozenset(self._registry.orchestrators),
            virtual_timers=virtual_timers,
            fast_timestamps=fast_timestamps,
            full_sdk_history=full_sdk_history,
        )
        self._cond = threading.Condition(threading.RLock())
        self._instances: dict[str, Instance] = {}
        self._ready: deque[str] = deque()
        self._ready_set: set[str] = set()
        self._timers: list[tuple[datetime, int, str, str, int]] = []
        self._timer_seq = itertools.count()
        self._pool: ThreadPoolExecutor | None = None
        self._dispatcher: threading.Thread | None = None
        self._stopping = False
        self._closed = False
        self._episodes = 0
        self._events_replayed = 0
        self._replay_seconds = 0.0
        self._load()

    # === lifecycle ===========================================================================
    def _load(self) -> None:
        """Read the state folder; writes nothing, so a second engine can inspect a live folder."""
        for meta in self._store.load_metas():
            inst = from_meta(meta)
            if inst.is_running:
                lines = self._store.read_history(inst.instance_id, inst.history_gen, inst.history_bytes)
                inst.rebuild_from_history(lines, full_sdk_history=self._cfg.full_sdk_history)
                inst.inbox.extend(self._store.read_journal(inst.instance_id, inst.journal_gen))
            self._instances[inst.instance_id] = inst

    def start(self) -> None:
        """Start the dispatcher and the activity pool; resume every unfinished instance."""
        with self._cond:
            if self._dispatcher is not None:
                return
            self._stopping = self._closed = False
            self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="durable-activity")
            for inst in list(self._instances.values()):
                if inst.is_running:
                    self._resume(inst)
            self._dispatcher = threading.Thread(
                target=self._dispatch_loop, name="durable-dispatcher", daemon=True
            )
            self._dispatcher.start()

    def _resume(self, inst: Instance) -> None:
        self._store.truncate_history(inst.instance_id, inst.history_gen, inst.history_bytes)
        self._commit(inst)  # folds the inbox file into the metadata, dropping a torn last line
        answered = {h.completion_task_id(event) for event in inst.inbox}
        for task_id, (name, input_json) in inst.activities.items():
            if task_id not in answered:
                self._submit(inst, task_id, name, input_json)
        for task_id, timer in inst.timers.items():
            timer.fired = task_id in answered  # its TimerFired may sit in the inbox file only
            if not timer.fired:
                self._arm(inst, task_id, timer.fire_at)
        self._mark_ready(inst)

    def stop(self, wait: bool = True) -> None:
        """Stop dispatching. ``wait``: finish the running episode and activities and record them."""
        with self._cond:
            self._stopping = True
            if not wait:
                self._closed = True
            self._cond.notify_all()
            dispatcher, pool = self._dispatcher, self._pool
        if dispatcher is not None and wait:
            dispatcher.join()
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)
        with self._cond:
            self._closed = True
            self._dispatcher = None
            self._pool = None

    def stats(self) -> EngineStats:
        with self._cond:
            return EngineStats(self._episodes, self._events_replayed, self._replay_seconds)

    # === OrchestrationBackend ================================================================
    def start_new(self, name: str, instance_id: str | None = None, input: Any = None) -> str:
        if name not in self._registry.orchestrators:
            raise UnknownFunctionError(
                f"The function '{name}' doesn't exist or is not an orchestrator function."
            )
        iid = instance_id or uuid.uuid4().hex
        validate_instance_id(iid)
        input_json = None if input is None else json.dumps(input)
        with self._cond:
            existing = self._instances.get(iid)
            if existing is not None and existing.is_running:
                return iid
            self._create(iid, name, input_json, parent=None)
        return iid

    def get_status(self, instance_id: str, *, show_history: bool = False) -> InstanceStatus | None:
        with self._cond:
            inst = self._instances.get(instance_id)
            return None if inst is None else self._status(inst, show_history)

    def list_instances(
        self,
        *,
        runtime_status: Iterable[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> list[InstanceStatus]:
        wanted = None if runtime_status is None else set(runtime_status)
        created_from, created_to = _aware(created_from), _aware(created_to)
        with self._cond:
            found = [
                self._status(inst, False)
                for inst in self._instances.values()
                if (wanted is None or inst.status in wanted)
                and (created_from is None or inst.created >= created_from)
                and (created_to is None or inst.created <= created_to)
            ]
        return sorted(found, key=lambda s: s.created_time)

    def terminate(self, instance_id: str, reason: str) -> bool:
        with self._cond:
            inst = self._instances.get(instance_id)
            if inst is None or not inst.is_running:
                return False
            self._terminate(inst, reason)
            self._cond.notify_all()
            return True

    def raise_event(self, instance_id: str, event_name: str, data: Any) -> bool:
        with self._cond:
            inst = self._instances.get(instance_id)
            if inst is None or not inst.is_running:
                return False
            event = h.event_raised(self._ts(self._clock()), name=event_name, input_json=json.dumps(data))
            self._append_inbox(inst, event)
            return True

    def purge(self, instance_id: str) -> bool:
        """Forget a finished instance and its files; running instances are not purged."""
        with self._cond:
            inst = self._instances.get(instance_id)
            if inst is None or inst.is_running:
                return False
            del self._instances[instance_id]
            self._store.delete(instance_id)
            return True

    def wait_for(self, instance_id: str, timeout: float) -> InstanceStatus:
        """Block until the instance is no longer running; TimeoutError names the status it is in."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                inst = self._instances.get(instance_id)
                if inst is None:
                    raise KeyError(f"no orchestration instance {instance_id!r}")
                if not inst.is_running:
                    return self._status(inst, False)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"instance {instance_id!r} still {inst.status} after {timeout:g}s "
                        f"(custom status {inst.custom_status!r})"
                    )
                self._cond.wait(remaining)

    # === internals (all *_locked helpers run with self._cond held) ==============================
    def _ts(self, moment: datetime) -> str:
        return h.format_timestamp(moment, fast=self._cfg.fast_timestamps)

    def _status(self, inst: Instance, show_history: bool) -> InstanceStatus:
        events: list[dict[str, Any]] | None = None
        if show_history:
            lines = inst.history
            if lines is None:
                lines = self._store.read_history(inst.instance_id, inst.history_gen, inst.history_bytes)
            events = [json.loads(line) for line in lines]
        return InstanceStatus(
            name=inst.name,
            instance_id=inst.instance_id,
            runtime_status=inst.status,
            created_time=inst.created,
            last_updated_time=inst.updated,
            input=_decode(inst.input_json),
            output=inst.output,
            custom_status=inst.custom_status,
            parent_instance_id=inst.parent.instance_id if inst.parent else None,
            history=events,
        )

    def _create(self, iid: str, name: str, input_json: str | None, parent: ParentLink | None) -> Instance:
        now = self._clock()
        old = self._instances.get(iid)
        if old is not None:
            self._store.delete(iid)  # NonRunningStates: a finished instance is replaced
        inst = Instance(
            instance_id=iid,
            name=name,
            input_json=input_json,
            status="Pending",
            created=now,
            updated=now,
            execution_id=uuid.uuid4().hex,
            last_ts=now,
            parent=parent,
        )
        inst.inbox.append(
            h.execution_started(
                self._ts(now),
                name=name,
                input_json=input_json,
                instance_id=iid,
                execution_id=inst.execution_id,
                parent=ep_mod.parent_instance_field(inst),
            )
        )
        self._commit(inst)
        self._instances[iid] = inst
        self._mark_ready(inst)
        return inst

    def _commit(self, inst: Instance) -> None:
        """Atomically record the instance; events that came in since are now in the metadata."""
        inst.journal_gen += 1
        self._store.commit(to_meta(inst))
        self._store.drop_other_files(inst.instance_id, inst.history_gen, inst.journal_gen)

    def _append_inbox(self, inst: Instance, event: dict[str, Any]) -> None:
        self._store.append_journal(inst.instance_id, inst.journal_gen, event)
        inst.inbox.append(event)
        self._mark_ready(inst)

    def _mark_ready(self, inst: Instance) -> None:
        if inst.busy or not inst.is_running or not inst.inbox or inst.instance_id in self._ready_set:
            return
        self._ready.append(inst.instance_id)
        self._ready_set.add(inst.instance_id)
        self._cond.notify_all()

    def _deliver(self, iid: str, execution_id: str, event: dict[str, Any]) -> None:
        """Hand a result to an instance, unless it ended, restarted or the engine closed meanwhile."""
        inst = self._instances.get(iid)
        if self._closed or inst is None or not inst.is_running or inst.execution_id != execution_id:
            return
        self._append_inbox(inst, event)

    def _arm(self, inst: Instance, task_id: int, fire_at: datetime) -> None:
        heapq.heappush(
            self._timers, (fire_at, next(self._timer_seq), inst.instance_id, inst.execution_id, task_id)
        )
        self._cond.notify_all()

    def _fire_due_timers(self) -> float | None:
        """Deliver due timers; returns seconds until the next one (None: no timer pending)."""
        now = self._clock()
        while self._timers and self._timers[0][0] <= now:
            fire_at, _, iid, execution_id, task_id = heapq.heappop(self._timers)
            inst = self._instances.get(iid)
            if inst is None or inst.execution_id != execution_id or not inst.is_running:
                continue
            timer = inst.timers.get(task_id)
            if timer is None or timer.fired:
                continue
            timer.fired = True
            self._append_inbox(inst, h.timer_fired(self._ts(now), task_id=task_id, fire_at=self._ts(fire_at)))
        if not self._timers:
            return None
        return max((self._timers[0][0] - now).total_seconds(), 0.001)

    def _submit(self, inst: Instance, task_id: int, name: str, input_json: str | None) -> None:
        if self._pool is None:
            return  # not started: start() resubmits pending activities
        self._pool.submit(self._run_activity, inst.instance_id, inst.execution_id, task_id, name, input_json)

    def _run_activity(
        self, iid: str, execution_id: str, task_id: int, name: str, input_json: str | None
    ) -> None:
        with self._cond:
            inst = self._instances.get(iid)
            if inst is None or inst.execution_id != execution_id or task_id not in inst.activities:
                return  # terminated or finished while queued
        outcome = run_activity(self._registry.activities[name], input_json)
        ts = self._ts(self._clock())
        if outcome.ok:
            event = h.task_completed(ts, task_id=task_id, result_json=outcome.result_json)
        else:
            log.warning("activity %s of %s failed: %s", name, iid, scrub(outcome.reason))
            event = h.task_failed(ts, task_id=task_id, reason=outcome.reason, details=outcome.details)
        with self._cond:
            self._deliver(iid, execution_id, event)

    # --- dispatcher ---------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                wait = self._fire_due_timers()
                episode = self._next_episode()
                if episode is None:
                    self._cond.wait(0.25 if wait is None else min(wait, 0.25))
                    continue
            try:
                self._run_episode(episode)
            except Exception:
                log.exception("local durable engine failed on instance %s", episode.instance.instance_id)
                self._fail_after_engine_error(episode.instance)

    def _fail_after_engine_error(self, inst: Instance) -> None:
        """An engine bug fails the one instance; the dispatcher must live on for the others."""
        with self._cond:
            inst.busy = False
            try:
                self._fail_locked(inst, "local durable engine error (see the runner log)")
            except Exception:
                log.exception("could not record the failure of instance %s", inst.instance_id)

    def _next_episode(self) -> Episode | None:
        while self._ready:
            iid = self._ready.popleft()
            self._ready_set.discard(iid)
            inst = self._instances.get(iid)
            if inst is None or inst.busy or not inst.is_running:
                continue
            if inst.name not in self._registry.orchestrators:
                self._fail_locked(
                    inst, f"The function '{inst.name}' doesn't exist or is not an orchestrator function."
                )
                continue
            episode = ep_mod.prepare(inst, self._clock(), self._max_batch, self._cfg)
            if episode is not None:
                inst.busy = True
                return episode
        return None

    def _run_episode(self, episode: Episode) -> None:
        inst = episode.instance
        handle = self._registry.orchestrators[inst.name]
        started = time.perf_counter()
        reply, failure = _replay(handle, episode.context_json)
        elapsed = time.perf_counter() - started
        with self._cond:
            self._episodes += 1
            self._events_replayed += episode.replayed_events
            self._replay_seconds += elapsed
            inst.busy = False
            current = self._instances.get(inst.instance_id)
            if (
                self._closed
                or current is not inst
                or not inst.is_running
                or inst.execution_id != episode.execution_id
            ):
                return  # terminated, replaced or engine closed during the replay: discard
            outcome = ep_mod.apply(inst, episode, reply, failure, self._cfg)
            self._settle(inst, outcome)

    def _settle(self, inst: Instance, outcome: Outcome) -> None:
        """Persist an episode's outcome and start its work, in crash-safe order."""
        inst.updated = self._clock()
        # 1. Children first: a crash before the parent's commit re-runs the episode, which adopts them.
        for child in outcome.children:
            self._start_child(inst, child)
        # 2. The parent hears of the end before this instance commits it: a crash in between only
        #    repeats the notification, which the parent drops as a duplicate.
        if outcome.parent_event is not None and inst.parent is not None:
            self._deliver(inst.parent.instance_id, inst.parent.execution_id, outcome.parent_event)
        # 3. Commit: history lines, then the metadata that counts them.
        inst.history_bytes += self._store.append_history(inst.instance_id, inst.history_gen, outcome.lines)
        self._commit(inst)
        # 4. Work.
        for task_id, name, input_json in outcome.activities:
            self._submit(inst, task_id, name, input_json)
        for task_id, fire_at in outcome.timers:
            self._arm(inst, task_id, fire_at)
        if outcome.finished:
            inst.release_history()  # reloaded from disk if someone asks for it
            log.info("orchestration %s (%s) %s", inst.instance_id, inst.name, inst.status)
            if inst.status == "Failed":
                log.warning("orchestration %s failed: %s", inst.instance_id, scrub(str(inst.output)))
        self._mark_ready(inst)
        self._cond.notify_all()

    def _start_child(self, parent: Instance, child: ChildStart) -> None:
        link = ParentLink(parent.instance_id, parent.execution_id, child.task_id)
        existing = self._instances.get(child.instance_id)
        if existing is not None and existing.parent == link:
            return  # created by an earlier run of this same episode
        if existing is not None and existing.is_running:
            parent.inbox.append(
                h.sub_orchestration_failed(
                    self._ts(self._clock()),
                    task_id=child.task_id,
                    reason=f"An orchestration with instance id '{child.instance_id}' is already running.",
                    details="",
                )
            )
            return
        self._create(child.instance_id, child.name, child.input_json, link)

    def _fail_locked(self, inst: Instance, message: str) -> None:
        if not inst.is_running:
            return
        outcome = ep_mod.fail_unreplayable(inst, self._clock(), message, self._cfg)
        self._settle(inst, outcome)

    def _terminate(self, inst: Instance, reason: str) -> None:
        now = self._clock()
        children = list(inst.children.values())
        inst.status = "Terminated"
        inst.output = reason
        inst.updated = now
        inst.activities.clear()
        inst.timers.clear()
        inst.retries.clear()
        inst.children.clear()
        inst.inbox = []
        if inst.parent is not None:
            event = h.sub_orchestration_failed(
                self._ts(now),
                task_id=inst.parent.task_id,
                reason=f"Orchestrator function '{inst.name}' was terminated: {reason}",
                details="",
            )
            self._deliver(inst.parent.instance_id, inst.parent.execution_id, event)
        lines = inst.append_history(
            [h.execution_terminated(self._ts(now), reason=reason)],
            full_sdk_history=self._cfg.full_sdk_history,
        )
        inst.history_bytes += self._store.append_history(inst.instance_id, inst.history_gen, lines)
        self._commit(inst)
        inst.release_history()
        for child_id in children:
            child = self._instances.get(child_id)
            if (
                child is not None
                and child.is_running
                and child.parent
                and child.parent.instance_id == inst.instance_id
            ):
                self._terminate(child, reason)


def _replay(handle: Callable[[Any], str], context_json: str) -> tuple[OrchestratorReply | None, str | None]:
    """Run one replay: the reply, or why there is none (an SDK error outside the user's code)."""
    try:
        try:
            return parse_reply(handle(context_json)), None
        except ResponseError:
            raise
        except Exception as exc:  # noqa: BLE001 -- the SDK reports orchestrator errors by raising
            reply = parse_failure(exc)
            return (reply, None) if reply is not None else (None, f"{type(exc).__name__}: {exc}")
    except ResponseError as exc:
        return None, f"unreadable orchestrator reply: {exc}"


def fast_timestamps_install() -> bool:
    """Install the SDK timestamp fast path (fast_timestamps.py); False if it would change results."""
    return fast_timestamps.install()
