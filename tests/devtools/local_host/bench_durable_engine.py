"""Replay cost of the local durable engine: ~1000 trivial activities as 10 sub-orchestrations x 100.

Not collected by pytest (no ``test_`` prefix). Run from the repository root:

    .venv/bin/python -m tests.devtools.local_host.bench_durable_engine [--subs 10] [--per-sub 100]

Prints, per engine setting, the history events stored, the episodes run, the events the SDK
replayed in total (the quadratic term of specs/durable-replay.md section 6) and the wall times.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from devtools.local_host.durable_engine import DurableEngine

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.activity_trigger(input_name="payload")
def bench_item(payload: int) -> int:
    return payload + 1


@app.orchestration_trigger(context_name="context")
def bench_sub(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    first, count = context.get_input()
    results = yield context.task_all([context.call_activity("bench_item", first + i) for i in range(count)])
    return sum(results)


@app.orchestration_trigger(context_name="context")
def bench_parent(context: df.DurableOrchestrationContext) -> Generator[Any, Any, int]:
    subs, per_sub = context.get_input()
    calls = [
        context.call_sub_orchestrator(
            "bench_sub", [s * per_sub, per_sub], instance_id=f"{context.instance_id}-s{s}"
        )
        for s in range(subs)
    ]
    return sum((yield context.task_all(calls)))


def run(subs: int, per_sub: int, **options: Any) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        engine = DurableEngine(app, Path(folder), **options)
        engine.start()
        started = time.perf_counter()
        engine.start_new("bench_parent", "bench", [subs, per_sub])
        status = engine.wait_for("bench", 3600)
        wall = time.perf_counter() - started
        stats = engine.stats()
        events = 0
        for instance in engine.list_instances():
            full = engine.get_status(instance.instance_id, show_history=True)
            events += len(full.history or []) if full else 0
        engine.stop()
    total = subs * per_sub
    assert status.output == sum(range(1, total + 1)), status.output
    return {
        "options": options,
        "events_stored": events,
        "episodes": stats.episodes,
        "events_replayed": stats.events_replayed,
        "replay_s": round(stats.replay_seconds, 3),
        "wall_s": round(wall, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subs", type=int, default=10)
    parser.add_argument("--per-sub", type=int, default=100)
    args = parser.parse_args()
    settings: list[dict[str, Any]] = [
        {},
        {"fast_timestamps": False, "full_sdk_history": True},
        {"max_batch": 10},
        {"max_batch": 10, "fast_timestamps": False, "full_sdk_history": True},
        {"max_batch": 1},
        {"max_batch": 1, "fast_timestamps": False, "full_sdk_history": True},
    ]
    for options in settings:
        print(run(args.subs, args.per_sub, **options), flush=True)


if __name__ == "__main__":
    main()
