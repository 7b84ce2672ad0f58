"""End-to-end runs on the local stack, through the local runner: what a user's export would take.

A generated Customer Insights export is written to a local folder first (not timed: in real life
it already exists), then uploaded into the exports container exactly as Customer Insights writes it
(partitions first, ``model.json`` last). The clock starts as the first blob is written; the blob
trigger starts the run; the run's completion time is the orchestration's own last update. The local
Autopilot server's request log (in this process) then says where the time went.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.stats_runner import start_stats_runner
from devtools.autopilot_server import RequestRecord, max_in_window
from devtools.demo import check_report
from devtools.local_host.history import ORCHESTRATOR_STARTED
from devtools.local_host.instance_store import InstanceStore
from devtools.local_stack import EXPORTS_CONTAINER, LocalStack, example_config, wait_until_done
from devtools.sample_data import GeneratedRun, directory_writer, generate_run

_MEMBERSHIP = re.compile(r"^/list/[^/]+/contact/[^/]+$")


@dataclass
class RunMeasurement:
    """One end-to-end run: times (seconds from the first blob written), requests, checks, engine."""

    contacts: int
    rows: int
    wall_s: float
    to_first_request_s: float
    last_request_s: float
    requests: dict[str, int]
    throttled: int
    max_in_1s: int
    report: dict[str, Any]
    engine: dict[str, Any]
    histories: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def api_requests(self) -> int:
        return sum(self.requests.values())

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["report"] = {k: v for k, v in self.report.items() if k not in {"files"}}
        return data


def classify(record: RequestRecord) -> str:
    """The kind of API request, by method and path (paths carry emails: never stored as such)."""
    if record.method == "POST" and record.path == "/contacts":
        return "bulk_upsert"
    if record.method == "POST" and record.path == "/contact":
        return "single_upsert"
    if _MEMBERSHIP.match(record.path):
        return "membership_check" if record.method == "GET" else "membership_add"
    if record.path in ("/lists", "/list"):
        return "lists"
    return "other"


def generate(folder: Path, *, profiles: int, partitions: int) -> GeneratedRun:
    """The sample export as files (what Customer Insights would write), with its expected counts."""
    shutil.rmtree(folder, ignore_errors=True)
    return generate_run(directory_writer(folder), profiles=profiles, partitions=partitions)


def _wait_for_instance(api: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.get("runs").json().get("runs", [])
        if runs:
            return str(runs[0]["instance_id"])
        time.sleep(0.1)
    raise TimeoutError(f"no run started within {timeout:.0f} s of the export being written")


def histories(state_dir: Path) -> list[dict[str, Any]]:
    """Per instance of the runner's task hub: stored history events and episodes (replays) it took."""
    store = InstanceStore(state_dir)
    found = []
    for meta in store.load_metas():
        lines = store.read_history(meta["instance_id"], meta["history_gen"], meta["history_bytes"])
        types = [json.loads(line)["EventType"] for line in lines]
        found.append(
            {
                "instance_id": meta["instance_id"],
                "name": meta["name"],
                "events": len(types),
                "episodes": types.count(ORCHESTRATOR_STARTED),  # it opens every episode
            }
        )
    return sorted(found, key=lambda item: str(item["instance_id"]))


def export_run(
    root: Path,
    generated: GeneratedRun,
    export_folder: Path,
    *,
    autopilot_rps: float | None,
    config_rps: float,
    latency: float = 0.0,
    settings: dict[str, str] | None = None,
    timeout: float,
) -> RunMeasurement:
    """Write the export into the stack's container and follow the run it starts to its end."""
    shutil.rmtree(root, ignore_errors=True)
    config = example_config(config_rps)
    with LocalStack(root, autopilot_rps=autopilot_rps, config=config, settings=settings) as stack:
        if latency:
            stack.autopilot.set_faults(latency=latency)
        runner = start_stats_runner(stack)
        container = stack.blob_service.get_container_client(EXPORTS_CONTAINER)
        with stack.api() as api:
            started = time.monotonic()
            for name in (*generated.partition_blobs, generated.model_json_blob):
                with (export_folder / name).open("rb") as handle:
                    container.upload_blob(name, handle, overwrite=True, max_concurrency=2)
            instance_id = _wait_for_instance(api, 120)
            body = wait_until_done(api, instance_id, timeout=timeout, interval=0.1)
            # When the status says "done" (polled every 0.1 s): the engine's own timestamps are
            # whole seconds, too coarse for a ratio to a floor of 100 s.
            completed = time.monotonic()
        log = stack.autopilot.request_log()
        stack.runner = None
        runner.stop()
        engine = runner.stats()
    output = body.get("output")
    report: dict[str, Any] = output if isinstance(output, dict) else {}
    problems = []
    if body.get("runtime_status") != "Completed":
        problems.append(f"run ended {body.get('runtime_status')}: {str(body.get('output'))[:300]}")
    else:
        problems.extend(check_report(report, generated.expected))
    kinds: dict[str, int] = {}
    for record in log:
        kind = classify(record)
        kinds[kind] = kinds.get(kind, 0) + 1
    times = [record.time - started for record in log]
    return RunMeasurement(
        contacts=int(report.get("contacts_uploaded", 0)),
        rows=int(report.get("rows_read", 0)),
        wall_s=completed - started,
        to_first_request_s=min(times) if times else float("nan"),
        last_request_s=max(times) if times else float("nan"),
        requests=dict(sorted(kinds.items())),
        throttled=sum(1 for record in log if record.status == 429),
        max_in_1s=max_in_window(record.time for record in log),
        report=report,
        engine=engine,
        histories=histories(root / "runner" / "durable"),
        problems=problems,
    )
