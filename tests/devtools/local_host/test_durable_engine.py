"""The local durable engine running a toy DFApp through azure-functions-durable's real replay."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import pytest

from devtools.local_host.durable_engine import DurableEngine, UnknownFunctionError
from tests.fixtures.durable import make_durable_engine  # noqa: F401

WAIT = 20.0
app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


class Recorder:
    """What the toy activities saw, shared across the engine's worker threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[str, Any]] = []
        self.attempts: Counter[str] = Counter()
        self.barrier: threading.Barrier | None = None
        self.release = threading.Event()

    def record(self, name: str, value: Any) -> None:
        with self.lock:
            self.calls.append((name, value))

    def inputs(self, name: str) -> list[Any]:
        with self.lock:
            return [value for called, value in self.calls if called == name]


REC = Recorder()
NONDETERMINISM = itertools.count()


@pytest.fixture(autouse=True)
def recorder() -> Iterator[Recorder]:
    global REC
    REC = Recorder()
    yield REC
    REC.release.set()  # never leave an activity blocked behind the test
    if REC.barrier is not None:
        REC.barrier.abort()


# --- activities ---------------------------------------------------------------------------------
@app.activity_trigger(input_name="payload")
def double(payload: int) -> int:
    REC.record("double", payload)
    return payload * 2


@app.activity_trigger(input_name="payload")
def window_item(payload: int) -> int:
    REC.record("window_item", payload)
    barrier = REC.barrier
    if barrier is not None and payload < barrier.parties:
        barrier.wait(timeout=WAIT)  # passes only when `parties` activities run at the same time
    return payload * 10


@app.activity_trigger(input_name="payload")
def flaky(payload: dict[str, Any]) -> str:
    with REC.lock:
        REC.attempts[payload["key"]] += 1
        attempt = REC.attempts[payload["key"]]
    if attempt <= payload["fail_times"]:
        raise ValueError(f"flaky failure {attempt} of {payload['key']}")
    return f"succeeded on attempt {attempt}"


@app.activity_trigger(input_name="payload")
def wait_for_release(payload: str) -> str:
    REC.record("wait_for_release", payload)
    REC.release.wait(timeout=WAIT)
    return payload


# --- orchestrators -------------------------------------------------------------------------------
Orch = Generator[Any, Any, Any]


@app.orchestration_trigger(context_name="context")
def sequence_orch(context: df.DurableOrchestrationContext) -> Orch:
    first = yield context.call_activity("double", 1)
    second = yield context.call_activity("double", first)
    third = yield context.call_activity("double", second)
    return [first, second, third]


@app.orchestration_trigger(context_name="context")
def fan_out_orch(context: df.DurableOrchestrationContext) -> Orch:
    count = context.get_input()
    return (yield context.task_all([context.call_activity("double", i) for i in range(count)]))


@app.orchestration_trigger(context_name="context")
def window_orch(context: df.DurableOrchestrationContext) -> Orch:
    spec = context.get_input()
    total, window = spec["total"], spec["window"]
    pending = [context.call_activity("window_item", i) for i in range(min(window, total))]
    started, results = len(pending), []
    while pending:
        done = yield context.task_any(pending)
        pending.remove(done)
        results.append(done.result)
        if started < total:
            pending.append(context.call_activity("window_item", started))
            started += 1
    return results


@app.orchestration_trigger(context_name="context")
def retry_orch(context: df.DurableOrchestrationContext) -> Orch:
    spec = context.get_input()
    options = df.RetryOptions(first_retry_interval_in_milliseconds=1, max_number_of_attempts=spec["attempts"])
    return (yield context.call_activity_with_retry("flaky", options, spec))


@app.orchestration_trigger(context_name="context")
def parent_orch(context: df.DurableOrchestrationContext) -> Orch:
    count = context.get_input()
    calls = [
        context.call_sub_orchestrator("child_orch", i, instance_id=f"{context.instance_id}-child-{i}")
        for i in range(count)
    ]
    return (yield context.task_all(calls))


@app.orchestration_trigger(context_name="context")
def child_orch(context: df.DurableOrchestrationContext) -> Orch:
    value = yield context.call_activity("double", context.get_input())
    return {"child": context.instance_id, "value": value}


@app.orchestration_trigger(context_name="context")
def failing_child_parent_orch(context: df.DurableOrchestrationContext) -> Orch:
    try:
        yield context.call_sub_orchestrator("failing_orch", None, instance_id=f"{context.instance_id}-child")
    except Exception as exc:  # noqa: BLE001 -- the SDK raises plain Exception for failed tasks
        return f"caught: {exc}"
    return "no error"


@app.orchestration_trigger(context_name="context")
def flaky_child_orch(context: df.DurableOrchestrationContext) -> Orch:
    return (yield context.call_activity("flaky", context.get_input()))


@app.orchestration_trigger(context_name="context")
def child_retry_orch(context: df.DurableOrchestrationContext) -> Orch:
    options = df.RetryOptions(first_retry_interval_in_milliseconds=1, max_number_of_attempts=4)
    spec = {"key": context.instance_id, "fail_times": 2}
    explicit = context.call_sub_orchestrator_with_retry(
        "flaky_child_orch", options, spec, instance_id=f"{context.instance_id}-child"
    )
    derived = context.call_sub_orchestrator_with_retry(
        "flaky_child_orch", options, {**spec, "key": "derived"}
    )
    return (yield context.task_all([explicit, derived]))


@app.orchestration_trigger(context_name="context")
def missing_activity_orch(context: df.DurableOrchestrationContext) -> Orch:
    return (yield context.call_activity("no_such_activity", 1))


@app.orchestration_trigger(context_name="context")
def status_orch(context: df.DurableOrchestrationContext) -> Orch:
    context.set_custom_status({"stage": "waiting for go"})
    payload = yield context.wait_for_external_event("go")
    context.set_custom_status({"stage": "done"})
    return payload


@app.orchestration_trigger(context_name="context")
def failing_orch(context: df.DurableOrchestrationContext) -> Orch:
    yield context.call_activity("double", 1)
    raise RuntimeError("orchestrator exploded on purpose")


@app.orchestration_trigger(context_name="context")
def catching_orch(context: df.DurableOrchestrationContext) -> Orch:
    try:
        yield context.call_activity("flaky", {"key": context.instance_id, "fail_times": 1})
    except Exception as exc:  # noqa: BLE001 -- the SDK raises plain Exception for failed tasks
        return f"caught: {exc}"
    return "no error"


@app.orchestration_trigger(context_name="context")
def nondeterministic_orch(context: df.DurableOrchestrationContext) -> Orch:
    # A counter that moves on every replay: the classic non-deterministic input.
    yield context.call_activity("double", next(NONDETERMINISM))
    yield context.call_activity("double", 0)
    return "unreachable"


@app.orchestration_trigger(context_name="context")
def held_parent_orch(context: df.DurableOrchestrationContext) -> Orch:
    child = context.call_sub_orchestrator("status_orch", None, instance_id=f"{context.instance_id}-held")
    return (yield child)


@app.orchestration_trigger(context_name="context")
def once_orch(context: df.DurableOrchestrationContext) -> Orch:
    return (yield context.call_activity("wait_for_release", context.instance_id))


@app.orchestration_trigger(context_name="context")
def continue_orch(context: df.DurableOrchestrationContext) -> Orch:
    round_no = context.get_input()
    if round_no >= 3:
        return f"finished after {round_no} rounds"
    yield context.call_activity("double", round_no)
    context.continue_as_new(round_no + 1)
    return None


@app.orchestration_trigger(context_name="context")
def timer_orch(context: df.DurableOrchestrationContext) -> Orch:
    delay = context.get_input()
    due = context.current_utc_datetime + timedelta(seconds=delay)
    yield context.create_timer(due)
    return {"due": due.isoformat(), "woke": context.current_utc_datetime.isoformat()}


@app.orchestration_trigger(context_name="context")
def timeout_orch(context: df.DurableOrchestrationContext) -> Orch:
    timeout = context.create_timer(context.current_utc_datetime + timedelta(hours=1))
    event = context.wait_for_external_event("answer")
    winner = yield context.task_any([event, timeout])
    if winner == event:
        timeout.cancel()
        return event.result
    return "timed out"


# --- helpers -------------------------------------------------------------------------------------
MakeEngine = Callable[..., DurableEngine]


@pytest.fixture
def make_engine(make_durable_engine: MakeEngine) -> MakeEngine:  # noqa: F811
    return make_durable_engine


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll for a state the engine reaches asynchronously (not a timing assertion)."""
    done = threading.Event()
    deadline = threading.Timer(timeout, done.set)
    deadline.start()
    try:
        while not predicate():
            if done.wait(0.005):
                raise AssertionError("condition not reached in time")
    finally:
        deadline.cancel()


def event_types(engine: DurableEngine, instance_id: str) -> list[int]:
    status = engine.get_status(instance_id, show_history=True)
    assert status is not None
    assert status.history is not None
    return [event["EventType"] for event in status.history]


# --- tests -------------------------------------------------------------------------------------
def test_sequence_of_activities_passes_each_result_to_the_next(make_engine: MakeEngine) -> None:
    engine = make_engine(app)
    engine.start_new("sequence_orch", "seq-1", None)

    status = engine.wait_for("seq-1", WAIT)

    assert (status.runtime_status, status.output) == ("Completed", [2, 4, 8])
    assert REC.inputs("double") == [1, 2, 4]


def test_fan_out_with_task_all_returns_results_in_call_order(make_engine: MakeEngine) -> None:
    engine = make_engine(app)
    engine.start_new("fan_out_orch", "fan-1", 20)

    status = engine.wait_for("fan-1", WAIT)

    assert status.output == [i * 2 for i in range(20)]
    assert sorted(REC.inputs("double")) == list(range(20))


def test_sliding_window_keeps_n_in_flight_and_collects_every_result(make_engine: MakeEngine) -> None:
    REC.barrier = threading.Barrier(4)  # the first 4 items complete only if they run together
    engine = make_engine(app, activity_workers=8)
    engine.start_new("window_orch", "win-1", {"total": 30, "window": 4})

    status = engine.wait_for("win-1", WAIT)

    assert status.runtime_status == "Completed"
    assert sorted(status.output) == [i * 10 for i in range(30)]
    history = engine.get_status("win-1", show_history=True)
    assert history is not None
    assert history.history is not None
    in_flight = peak = 0
    for event in history.history:
        in_flight += {4: 1, 5: -1, 6: -1}.get(event["EventType"], 0)
        peak = max(peak, in_flight)
    assert peak == 4


def test_retry_succeeds_after_two_failures(make_engine: MakeEngine) -> None:
    engine = make_engine(app)
    engine.start_new("retry_orch", "retry-ok", {"key": "retry-ok", "fail_times": 2, "attempts": 5})

    status = engine.wait_for("retry-ok", WAIT)

    assert (status.runtime_status, status.output) == ("Completed", "succeeded on attempt 3")
    types = event_types(engine, "retry-ok")
    assert (types.count(4), types.count(6), types.count(10), types.count(11)) == (3, 2, 2, 2)


def test_retry_that_exhausts_its_attempts_fails_the_instance_with_the_activity_message(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(app)
    engine.start_new("retry_orch", "retry-bad", {"key": "retry-bad", "fail_times": 99, "attempts": 3})

    status = engine.wait_for("retry-bad", WAIT)

    assert status.runtime_status == "Failed"
    assert "flaky failure 3 of retry-bad" in status.output
    assert REC.attempts["retry-bad"] == 3


def test_sub_orchestrations_with_explicit_ids_report_to_the_parent(make_engine: MakeEngine) -> None:
    engine = make_engine(app)
    engine.start_new("parent_orch", "par-1", 4)

    status = engine.wait_for("par-1", WAIT)

    assert status.output == [{"child": f"par-1-child-{i}", "value": i * 2} for i in range(4)]
    child = engine.get_status("par-1-child-2")
    assert child is not None
    assert (child.runtime_status, child.parent_instance_id, child.input) == ("Completed", "par-1", 2)


def test_sub_orchestration_failure_reaches_the_parent_as_an_exception(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(app)
    engine.start_new("failing_child_parent_orch", "fcp-1", None)

    status = engine.wait_for("fcp-1", WAIT)

    assert status.runtime_status == "Completed"
    assert status.output.startswith("caught: Orchestrator function 'failing_orch' failed")
    assert "orchestrator exploded on purpose" in status.output


def test_sub_orchestration_with_retry_reruns_failed_children(make_engine: MakeEngine) -> None:
    engine = make_engine(app)
    engine.start_new("child_retry_orch", "cr-1", None)

    status = engine.wait_for("cr-1", WAIT)

    assert (status.runtime_status, status.output) == ("Completed", ["succeeded on attempt 3"] * 2)
    assert (REC.attempts["cr-1"], REC.attempts["derived"]) == (3, 3)
    child = engine.get_status("cr-1-child")
    assert child is not None
    assert (child.runtime_status, child.parent_instance_id) == ("Completed", "cr-1")


def test_calling_an_unknown_activity_fails_the_orchestration(make_engine: MakeEngine) -> None:
    engine = make_engine(app)
    engine.start_new("missing_activity_orch", "miss-1", None)

    status = engine.wait_for("miss-1", WAIT)

    assert status.runtime_status == "Failed"
    assert "The function 'no_such_activity' doesn't exist" in status.output


def test_custom_status_is_visible_while_running(make_engine: MakeEngine) -> None:
    engine = make_engine(app)
    engine.start_new("status_orch", "stat-1", None)

    wait_until(lambda: getattr(engine.get_status("stat-1"), "custom_status", None) is not None)
    running = engine.get_status("stat-1")
    engine.raise_event("stat-1", "go", {"answer": 42})
    finished = engine.wait_for("stat-1", WAIT)

    assert running is not None
    assert (running.runtime_status, running.custom_status) == ("Running", {"stage": "waiting for go"})
    assert (finished.output, finished.custom_status) == ({"answer": 42}, {"stage": "done"})


def test_orchestrator_exception_fails_the_instance_with_its_message(make_engine: MakeEngine) -> None:
    engine = make_engine(app)
    engine.start_new("failing_orch", "fail-1", None)

    status = engine.wait_for("fail-1", WAIT)

    assert status.runtime_status == "Failed"
    assert status.output.startswith("Orchestrator function 'failing_orch' failed:")
    assert "orchestrator exploded on purpose" in status.output


def test_activity_exception_reaches_the_orchestrator_with_type_and_message(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(app)
    engine.start_new("catching_orch", "catch-1", None)

    status = engine.wait_for("catch-1", WAIT)

    assert status.output.startswith(
        "caught: Activity function 'flaky' failed: ValueError: flaky failure 1 of catch-1"
    )
    assert "Traceback" in status.output


def test_non_deterministic_orchestrator_fails_with_a_clear_message(make_engine: MakeEngine) -> None:
    engine = make_engine(app)
    engine.start_new("nondeterministic_orch", "nondet-1", None)

    status = engine.wait_for("nondet-1", WAIT)

    assert status.runtime_status == "Failed"
    assert "Non-deterministic orchestrator: task 0 is activity 'double' with input" in status.output
    assert "but the history has activity 'double' with input" in status.output


def test_terminate_stops_the_instance_and_its_sub_orchestrations(make_engine: MakeEngine) -> None:
    engine = make_engine(app)
    engine.start_new("held_parent_orch", "held-1", None)
    wait_until(lambda: getattr(engine.get_status("held-1-held"), "custom_status", None) is not None)

    terminated = engine.terminate("held-1", "operator cancelled")

    parent, child = engine.get_status("held-1"), engine.get_status("held-1-held")
    assert terminated is True
    assert parent is not None
    assert child is not None
    assert (parent.runtime_status, parent.output) == ("Terminated", "operator cancelled")
    assert child.runtime_status == "Terminated"
    assert engine.raise_event("held-1-held", "go", 1) is False


def test_start_new_with_a_running_instance_id_keeps_the_running_instance(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(app)
    first = engine.start_new("once_orch", "once-1", None)
    wait_until(lambda: REC.inputs("wait_for_release") == ["once-1"])

    second = engine.start_new("once_orch", "once-1", None)
    REC.release.set()
    status = engine.wait_for("once-1", WAIT)

    assert (first, second) == ("once-1", "once-1")
    assert status.output == "once-1"
    assert REC.inputs("wait_for_release") == ["once-1"]


def test_start_new_with_a_finished_instance_id_runs_it_again(make_engine: MakeEngine) -> None:
    engine = make_engine(app)
    engine.start_new("sequence_orch", "again-1", None)
    engine.wait_for("again-1", WAIT)

    engine.start_new("sequence_orch", "again-1", None)
    status = engine.wait_for("again-1", WAIT)

    assert status.runtime_status == "Completed"
    assert REC.inputs("double") == [1, 2, 4, 1, 2, 4]


def test_continue_as_new_restarts_with_the_new_input_and_a_fresh_history(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(app)
    engine.start_new("continue_orch", "can-1", 0)

    status = engine.wait_for("can-1", WAIT)

    assert (status.output, status.input) == ("finished after 3 rounds", 3)
    assert REC.inputs("double") == [0, 1, 2]
    assert event_types(engine, "can-1") == [12, 0, 13, 1]


def test_virtual_timer_fires_at_once_and_advances_orchestration_time(make_engine: MakeEngine) -> None:
    engine = make_engine(app, virtual_timers=True)
    engine.start_new("timer_orch", "vt-1", 30 * 24 * 3600)  # 30 days: V3 long timer, several intervals

    status = engine.wait_for("vt-1", WAIT)

    assert status.runtime_status == "Completed"
    assert status.output["woke"] >= status.output["due"]


def test_real_timer_fires_after_its_time(make_engine: MakeEngine) -> None:
    engine = make_engine(app)
    engine.start_new("timer_orch", "rt-1", 0.05)

    status = engine.wait_for("rt-1", WAIT)

    assert status.output["woke"] >= status.output["due"]


def test_canceled_timer_does_not_keep_the_instance_alive(make_engine: MakeEngine) -> None:
    engine = make_engine(app)
    engine.start_new("timeout_orch", "to-1", None)
    wait_until(lambda: 10 in event_types(engine, "to-1"))

    engine.raise_event("to-1", "answer", "in time")
    status = engine.wait_for("to-1", WAIT)

    assert (status.runtime_status, status.output) == ("Completed", "in time")


def test_a_new_engine_resumes_a_persisted_instance(make_engine: MakeEngine, tmp_path: Path) -> None:
    first = make_engine(app, state_dir=tmp_path / "hub")
    first.start_new("status_orch", "resume-1", None)
    wait_until(lambda: getattr(first.get_status("resume-1"), "custom_status", None) is not None)
    first.stop()

    second = make_engine(app, state_dir=tmp_path / "hub")
    second.raise_event("resume-1", "go", "after restart")
    status = second.wait_for("resume-1", WAIT)

    assert (status.runtime_status, status.output) == ("Completed", "after restart")


def test_list_and_purge_finished_instances(make_engine: MakeEngine) -> None:
    engine = make_engine(app)
    engine.start_new("sequence_orch", "list-1", None)
    engine.wait_for("list-1", WAIT)

    listed = [s.instance_id for s in engine.list_instances(runtime_status=["Completed"])]
    purged = engine.purge("list-1")

    assert listed == ["list-1"]
    assert purged is True
    assert engine.get_status("list-1") is None


def test_start_new_of_an_unknown_orchestrator_is_refused(make_engine: MakeEngine) -> None:
    engine = make_engine(app)

    with pytest.raises(UnknownFunctionError, match="no_such_orch"):
        engine.start_new("no_such_orch", None, None)


def test_replay_one_event_per_episode_gives_the_same_result(make_engine: MakeEngine) -> None:
    engine = make_engine(app, max_batch=1, full_sdk_history=True, fast_timestamps=False)
    engine.start_new("retry_orch", "b1-retry", {"key": "b1-retry", "fail_times": 2, "attempts": 4})
    engine.start_new("window_orch", "b1-win", {"total": 12, "window": 3})

    retry, window = engine.wait_for("b1-retry", WAIT), engine.wait_for("b1-win", WAIT)

    assert retry.output == "succeeded on attempt 3"
    assert sorted(window.output) == [i * 10 for i in range(12)]
