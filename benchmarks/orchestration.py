"""Replay cost of the export orchestrations, which the durable runtime replays from history on every
episode (specs/durable-replay.md section 6: the cost of one instance grows with the square of its
history, so the product splits a run into sub-orchestrations of ``BATCHES_PER_SUB_ORCHESTRATION``).

Two measurements: a real run through the local runner (its engine's statistics and the histories it
persisted), and the product's orchestrator code over trivial activities in an in-process engine
that delivers one completion per episode - what a rate-bound run does, where uploads finish seconds
apart - once with the default sub-orchestrations and once as ONE flat orchestration.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks import e2e, toy_app
from devtools.local_host.durable_engine import DurableEngine
from shared.orchestration import Tuning

TOY_INSTANCE = "toy-run"


def toy_run(folder: Path, *, batches: int, per_sub: int, concurrency: int = 4) -> dict[str, Any]:
    """The product's ``export_run`` over ``batches`` trivial uploads, one completion per episode."""
    shutil.rmtree(folder, ignore_errors=True)
    engine = DurableEngine(toy_app.app, folder, max_batch=1)
    engine.start()
    try:
        payload = {
            "run": {
                "instance_id": TOY_INSTANCE,
                "export": "toy",
                "segment": "toy",
                "dry_run": False,
                "toy_batches": batches,
            },
            "list_title": "toy",
            "tuning": Tuning(
                upload_concurrency=concurrency, batches_per_sub=per_sub, requests_per_second=10.0
            ).to_dict(),
        }
        started = time.perf_counter()
        engine.start_new("export_run", TOY_INSTANCE, payload)
        status = engine.wait_for(TOY_INSTANCE, 3600)
        wall = time.perf_counter() - started
        stats = engine.stats()
    finally:
        engine.stop()
    output = status.output if isinstance(status.output, dict) else {}
    uploaded = int((output.get("totals") or {}).get("uploaded", -1))
    if status.runtime_status != "Completed" or uploaded != batches * toy_app.CONTACTS_PER_BATCH:
        raise RuntimeError(f"toy run ended {status.runtime_status} with {str(status.output)[:300]}")
    instances = e2e.histories(folder)
    return {
        "batches": batches,
        "per_sub": per_sub,
        "instances": len(instances),
        "events_total": sum(item["events"] for item in instances),
        "events_max": max(item["events"] for item in instances),
        "episodes": stats.episodes,
        "events_replayed": stats.events_replayed,
        "replay_seconds": stats.replay_seconds,
        "wall_seconds": wall,
    }


def summarize_real(run: e2e.RunMeasurement) -> dict[str, Any]:
    """The run's instances (parent and subs) as the runner persisted them, and its engine's totals."""
    return {
        "instances": len(run.histories),
        "events_total": sum(item["events"] for item in run.histories),
        "events_max": max((item["events"] for item in run.histories), default=0),
        "episodes": run.engine.get("episodes", 0),
        "events_replayed": run.engine.get("events_replayed", 0),
        "replay_seconds": run.engine.get("replay_seconds", 0.0),
        "per_instance": run.histories,
    }
