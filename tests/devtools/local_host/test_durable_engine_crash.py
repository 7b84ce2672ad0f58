"""A SIGKILLed engine process resumes from its state folder; only in-flight activities run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from devtools.local_host.durable_engine import DurableEngine
from tests.devtools.local_host import crash_app

REPO = Path(__file__).resolve().parents[3]
WAIT = 30.0


def _spawn(state: Path, log: Path, gate: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.devtools.local_host.crash_app", str(state), str(log), str(gate)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _wait_until(predicate: Callable[[], bool], proc: subprocess.Popen[str]) -> None:
    done = threading.Event()
    timer = threading.Timer(WAIT, done.set)
    timer.start()
    try:
        while not predicate():
            if proc.poll() is not None:
                raise AssertionError(f"engine process exited early: {proc.communicate()[1][-2000:]}")
            if done.wait(0.02):
                raise AssertionError("engine process did not reach the expected state")
    finally:
        timer.cancel()


def _log_lines(log: Path) -> list[str]:
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def _persisted_completions(state: Path) -> int:
    """TaskCompleted events committed to disk, read by a second, never-started engine."""
    status = DurableEngine(crash_app.app, state).get_status(crash_app.INSTANCE, show_history=True)
    if status is None or status.history is None:
        return 0
    return sum(1 for event in status.history if event["EventType"] == 5)


def test_killed_engine_resumes_and_reruns_only_in_flight_activities(tmp_path: Path) -> None:
    state, log, gate = tmp_path / "hub", tmp_path / "activities.log", tmp_path / "gate"
    first = _spawn(state, log, gate)
    try:
        # seq-a, seq-b and fast-1..4 committed; block-5 and block-6 running behind the gate.
        _wait_until(lambda: _persisted_completions(state) == 6, first)
        _wait_until(lambda: {"start block-5", "start block-6"} <= set(_log_lines(log)), first)
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=WAIT)
    finally:
        if first.poll() is None:
            first.kill()
    first_run = _log_lines(log)
    in_flight = {line[6:] for line in first_run if line.startswith("start ")} - {
        line[5:] for line in first_run if line.startswith("done ")
    }

    gate.touch()
    second = _spawn(state, log, gate)
    out, err = second.communicate(timeout=WAIT)

    assert second.returncode == 0, err[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {
        "status": "Completed",
        "output": ["SEQ-A", "SEQ-B", "FAST-1", "FAST-2", "FAST-3", "FAST-4", "BLOCK-5", "BLOCK-6", "FINAL"],
    }
    runs = Counter(line[6:] for line in _log_lines(log) if line.startswith("start "))
    assert in_flight == {"block-5", "block-6"}
    assert {name for name, count in runs.items() if count == 2} == in_flight
    assert max(runs.values()) == 2
    assert set(runs) == {"seq-a", "seq-b", *crash_app.FAN_OUT, "final"}
