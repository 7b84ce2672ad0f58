"""The export orchestrations: plan, ensure the list, upload in bounded windows, report.

Orchestrator code is replayed from history many times, so it does no IO, reads no clock but the
context's and draws no random numbers; all of that is in the activities. Uploads fan out through
sub-orchestrations of at most ``batches_per_sub`` batches each, because replay cost grows with the
square of one instance's history (specs/durable-replay.md): a million-row run stays ten small
histories instead of one huge one.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import asdict, dataclass
from typing import Any

import azure.durable_functions as df

from shared.report import STAT_KEYS, UploadTotals

EXPORT_ORCHESTRATOR = "export_run"
UPLOAD_ORCHESTRATOR = "upload_batches"
PLAN_ACTIVITY = "plan_run"
ENSURE_LIST_ACTIVITY = "ensure_list"
UPLOAD_ACTIVITY = "upload_batch"
REPORT_ACTIVITY = "write_report"


@dataclass(frozen=True)
class Tuning:
    """Knobs fixed when a run starts, so a replay never sees a changed setting mid-run."""

    upload_concurrency: int = 4
    batches_per_sub: int = 100
    requests_per_second: float = 5.0
    retry_first_ms: int = 5_000
    retry_attempts: int = 5
    plan_retry_first_ms: int = 15_000
    plan_retry_attempts: int = 8

    @property
    def rate_share(self) -> float:
        """Each in-flight upload paces at its share, so the run never exceeds the connection's rate
        however many workers or machines the activities land on."""
        return self.requests_per_second / self.upload_concurrency

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Tuning:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in (data or {}).items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sub_instance_id(parent: str, index: int) -> str:
    """Deterministic, so the HTTP API can find (and cancel) a run's sub-orchestrations."""
    return f"{parent}-u{index:04d}"


def batch_windows(batches: int, per_sub: int) -> list[tuple[int, int]]:
    """Split batches 1..N into consecutive ``[first, last]`` windows of at most ``per_sub``."""
    return [(first, min(first + per_sub - 1, batches)) for first in range(1, batches + 1, per_sub)]


def progress(stage: str, plan: dict[str, Any] | None, totals: UploadTotals, **extra: Any) -> dict[str, Any]:
    """Custom status: small (the 16 KB cap), enough for a progress bar."""
    plan = plan or {}
    status: dict[str, Any] = {
        "stage": stage,
        "rows_read": int(plan.get("rows_read", 0)),
        "contacts_total": int(plan.get("staged", 0)),
        "batches_total": int(plan.get("batches", 0)),
        "batches_done": totals.batches_done,
        "contacts_uploaded": totals.uploaded,
        "rejected": sum(int(v) for v in plan.get("rejected", {}).values()) + totals.refused,
    }
    status.update(extra)
    return status


def _retry(first_ms: int, attempts: int) -> df.RetryOptions:
    return df.RetryOptions(first_retry_interval_in_milliseconds=first_ms, max_number_of_attempts=attempts)


def export_run(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    """One segment run from staging to report. Fails, after writing the report, if a batch cannot go."""
    payload: dict[str, Any] = context.get_input()
    run: dict[str, Any] = payload["run"]
    tuning = Tuning.from_dict(payload.get("tuning"))
    started_at = context.current_utc_datetime.isoformat()
    totals = UploadTotals()
    plan: dict[str, Any] = {}
    list_id: str | None = None
    list_title = payload.get("list_title", "")

    context.set_custom_status(progress("planning", None, totals))
    plan = yield context.call_activity_with_retry(
        PLAN_ACTIVITY, _retry(tuning.plan_retry_first_ms, tuning.plan_retry_attempts), run
    )
    error: str | None = plan.get("error")
    if error is None and not run.get("dry_run") and plan["batches"] > 0:
        context.set_custom_status(progress("preparing list", plan, totals))
        listed = yield context.call_activity_with_retry(
            ENSURE_LIST_ACTIVITY,
            _retry(tuning.retry_first_ms, tuning.retry_attempts),
            {"export": run["export"], "segment": run["segment"]},
        )
        error = listed.get("error")
        list_id = listed.get("list_id")
        windows = [] if error else batch_windows(plan["batches"], tuning.batches_per_sub)
        for index, (first, last) in enumerate(windows):
            child_id = sub_instance_id(context.instance_id, index)
            context.set_custom_status(progress("uploading", plan, totals, current_upload=child_id))
            result = yield context.call_sub_orchestrator(
                UPLOAD_ORCHESTRATOR,
                {"run": run, "list_id": list_id, "first": first, "last": last, "tuning": tuning.to_dict()},
                child_id,
            )
            totals.add(result)
            if totals.failed_batches:
                failed = totals.failed_batches[0]
                error = f"batch {failed['batch']} could not be uploaded: {failed['error']}"
                break

    status = "failed" if error else ("dry-run" if run.get("dry_run") else "completed")
    context.set_custom_status(progress("reporting", plan, totals))
    report: dict[str, Any] = yield context.call_activity_with_retry(
        REPORT_ACTIVITY,
        _retry(tuning.retry_first_ms, tuning.retry_attempts),
        {
            "run": run,
            "plan": plan,
            "totals": totals.to_dict(),
            "list_title": list_title,
            "list_id": list_id,
            "status": status,
            "error": error,
            "started_at": started_at,
            "finished_at": context.current_utc_datetime.isoformat(),
        },
    )
    context.set_custom_status(progress(status, plan, totals, report=_report_summary(report)))
    if error:
        raise RuntimeError(
            f"export run {context.instance_id} failed: {error} (report: {report.get('report_blob')})"
        )
    return report


def _report_summary(report: dict[str, Any]) -> dict[str, Any]:
    keys = ("status", "rows_read", "contacts_uploaded", "rejected", "report_blob", "rejects_blob", "list_id")
    return {k: report.get(k) for k in keys}


def upload_batches(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    """A sliding window over batches ``first..last``: ``upload_concurrency`` in flight at all times.

    A batch that still fails after its retries stops new scheduling; those in flight finish, and the
    failure is returned (not raised) so the parent keeps the totals of what was delivered.
    """
    payload: dict[str, Any] = context.get_input()
    run = payload["run"]
    tuning = Tuning.from_dict(payload.get("tuning"))
    retry = _retry(tuning.retry_first_ms, tuning.retry_attempts)
    totals = UploadTotals()
    next_batch = int(payload["first"])
    last = int(payload["last"])
    in_flight: list[Any] = []
    task_batch: dict[int, int] = {}
    stop = False

    while in_flight or (next_batch <= last and not stop):
        while not stop and next_batch <= last and len(in_flight) < tuning.upload_concurrency:
            task = context.call_activity_with_retry(
                UPLOAD_ACTIVITY,
                retry,
                {
                    "instance_id": run["instance_id"],
                    "export": run["export"],
                    "batch": next_batch,
                    "list_id": payload["list_id"],
                    "requests_per_second": tuning.rate_share,
                },
            )
            in_flight.append(task)
            task_batch[id(task)] = next_batch
            next_batch += 1
        done = yield context.task_any(in_flight)
        in_flight = [task for task in in_flight if task is not done]
        batch = task_batch.pop(id(done))
        if _failed(done):
            stop = True
            totals.failed_batches.append({"batch": batch, "error": _error_text(done.result)})
        elif done.result.get("error"):
            stop = True
            totals.failed_batches.append({"batch": batch, "error": _error_text(done.result["error"])})
            totals.add({k: v for k, v in done.result.items() if k in STAT_KEYS})
        else:
            totals.add(done.result)
        context.set_custom_status(
            {
                "batches_done": totals.batches_done,
                "contacts_uploaded": totals.uploaded,
                "refused": totals.refused,
            }
        )
    return totals.to_dict()


def _failed(task: Any) -> bool:
    state = getattr(task, "state", None)
    return getattr(state, "name", "") == "FAILED" or isinstance(getattr(task, "result", None), Exception)


def _error_text(error: Any) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:500] if text else "unknown error"
