"""Starting export runs, shared by the blob, HTTP and timer doors and the local runner.

Every door goes through :func:`start_run`, which derives the instance id from the run and asks the
task hub first, so a run triggered twice (each partition's event, a re-delivered event, a timer
after a blob event) is exported once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from shared.config import ExportsConfig
from shared.orchestration import EXPORT_ORCHESTRATOR, Tuning
from shared.runs import ExportRun
from shared.settings import Settings

log = logging.getLogger(__name__)

RUNNING_STATES = frozenset({"Pending", "Running", "ContinuedAsNew", "Suspended"})
RETRYABLE_STATES = frozenset({"Failed", "Terminated", "Canceled"})


class DurableClient(Protocol):
    """The part of ``DurableOrchestrationClient`` this module uses (also satisfied by test doubles of
    the same protocol in the local host)."""

    async def start_new(
        self, orchestration_function_name: str, instance_id: str | None = None, client_input: Any = None
    ) -> str: ...

    async def get_status(
        self,
        instance_id: str,
        show_history: bool = False,
        show_history_output: bool = False,
        show_input: bool = False,
    ) -> Any: ...


@dataclass(frozen=True)
class StartOutcome:
    """What happened to one start request; the HTTP API returns it and the triggers log it."""

    instance_id: str
    export: str
    segment: str
    run_folder: str
    started: bool
    reason: str  # "started", "restarted", "already running", "already exported", "already failed"
    runtime_status: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "export": self.export,
            "segment": self.segment,
            "run_folder": self.run_folder,
            "started": self.started,
            "reason": self.reason,
            "runtime_status": self.runtime_status,
        }


def tuning_for(config: ExportsConfig, settings: Settings, export_name: str) -> Tuning:
    connection = config.connection_for(config.export(export_name))
    return Tuning(
        upload_concurrency=settings.upload_concurrency,
        batches_per_sub=settings.batches_per_sub_orchestration,
        requests_per_second=connection.requests_per_second,
    )


def orchestration_input(
    run: ExportRun,
    config: ExportsConfig,
    settings: Settings,
    *,
    dry_run: bool = False,
    trigger: str,
    tuning: Tuning | None = None,
) -> dict[str, Any]:
    export = config.export(run.export)
    segment = export.segment(run.segment)
    return {
        "run": run.to_input(dry_run=dry_run, trigger=trigger),
        "list_title": segment.list_title if segment else run.segment,
        "tuning": (tuning or tuning_for(config, settings, run.export)).to_dict(),
    }


def _runtime_status(status: Any) -> str | None:
    if status is None:
        return None
    value = getattr(status, "runtime_status", None)
    if value is None:
        return None
    return str(getattr(value, "value", value))


async def start_run(
    client: DurableClient,
    run: ExportRun,
    config: ExportsConfig,
    settings: Settings,
    *,
    trigger: str,
    dry_run: bool = False,
    retry_failed: bool = False,
    force: bool = False,
) -> StartOutcome:
    """Start the run unless its instance already runs or (without ``force``) already finished."""
    payload = orchestration_input(run, config, settings, dry_run=dry_run, trigger=trigger)
    instance_id = payload["run"]["instance_id"]
    current = _runtime_status(await client.get_status(instance_id))
    base = {
        "instance_id": instance_id,
        "export": run.export,
        "segment": run.segment,
        "run_folder": run.run_folder,
    }
    if current in RUNNING_STATES:
        return StartOutcome(**base, started=False, reason="already running", runtime_status=current)
    if current == "Completed" and not (force or dry_run):
        return StartOutcome(**base, started=False, reason="already exported", runtime_status=current)
    if current in RETRYABLE_STATES and not (retry_failed or force or dry_run):
        return StartOutcome(
            **base, started=False, reason=f"already {current.lower()}", runtime_status=current
        )
    await client.start_new(EXPORT_ORCHESTRATOR, instance_id, payload)
    reason = "restarted" if current else "started"
    log.info("%s export run %s (%s/%s, trigger %s)", reason, instance_id, run.export, run.segment, trigger)
    return StartOutcome(**base, started=True, reason=reason, runtime_status="Pending")
