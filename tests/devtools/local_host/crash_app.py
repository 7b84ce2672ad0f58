"""A toy durable app run in a child process that the crash test SIGKILLs.

``python -m tests.devtools.local_host.crash_app STATE_DIR LOG GATE`` starts (or resumes) the
instance ``crash-1`` and prints its final status as JSON. Every activity appends ``start <x>`` and
``done <x>`` lines to LOG; activities whose input starts with ``block`` wait until the GATE file
exists, so the test knows exactly which ones are in flight when it kills the process.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from devtools.local_host.durable_engine import DurableEngine

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
INSTANCE = "crash-1"
FAN_OUT = ["fast-1", "fast-2", "fast-3", "fast-4", "block-5", "block-6"]
_paths: dict[str, Path] = {}
_log_lock = threading.Lock()


def _log(line: str) -> None:
    with _log_lock, _paths["log"].open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


@app.activity_trigger(input_name="payload")
def step(payload: str) -> str:
    _log(f"start {payload}")
    if payload.startswith("block"):
        gate = _paths["gate"]
        while not gate.exists():
            threading.Event().wait(0.01)
    _log(f"done {payload}")
    return payload.upper()


@app.orchestration_trigger(context_name="context")
def crash_orch(context: df.DurableOrchestrationContext) -> Generator[Any, Any, Any]:
    first = yield context.call_activity("step", "seq-a")
    second = yield context.call_activity("step", "seq-b")
    fanned = yield context.task_all([context.call_activity("step", name) for name in FAN_OUT])
    last = yield context.call_activity("step", "final")
    return [first, second, *fanned, last]


def main(argv: list[str]) -> int:
    state_dir, log, gate = (Path(arg) for arg in argv[1:4])
    _paths.update(log=log, gate=gate)
    engine = DurableEngine(app, state_dir, activity_workers=8)
    engine.start()
    engine.start_new("crash_orch", INSTANCE, None)  # a running instance is kept, not restarted
    status = engine.wait_for(INSTANCE, 60)
    print(json.dumps({"status": status.runtime_status, "output": status.output}), flush=True)
    engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
