"""A whole export in one process, for the CLI: the same plan, upload and report steps as the
orchestration, staged in a local folder instead of blob storage.

People who run an export by hand (a first test against a real Autopilot account, a one-off
backfill) should not need a Function App; they still get the same rejects file and report.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, BinaryIO

from shared.autopilot_client import AutopilotClient, UpsertOutcome
from shared.config import ExportConfig
from shared.redact import scrub
from shared.report import RunReport, UploadTotals, build_report, merge_rejects
from shared.runs import ExportRun
from shared.staging import (
    PLAN_REJECTS,
    PlanSummary,
    StagedContact,
    batch_name,
    decode_batch,
    plan_run,
    refused_rejects_csv,
)


class DirectoryStaging:
    """Staged batches and rejects as plain files, so a dry run leaves something to inspect."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def write_batch(self, index: int, data: bytes) -> None:
        (self.root / batch_name(index)).write_bytes(data)

    def write_rejects(self, name: str, stream: IO[bytes]) -> None:
        with (self.root / name).open("wb") as target:
            shutil.copyfileobj(stream, target)

    def read_batch(self, index: int) -> list[StagedContact]:
        return decode_batch((self.root / batch_name(index)).read_bytes())


@dataclass
class LocalExportResult:
    report: RunReport
    rejects_path: Path
    report_path: Path
    sample: list[StagedContact]


def plan_locally(
    run: ExportRun,
    export: ExportConfig,
    open_file: Callable[[str], BinaryIO],
    out_dir: Path,
    *,
    batch_size: int,
) -> tuple[PlanSummary, DirectoryStaging]:
    staging = DirectoryStaging(out_dir / "staging")
    summary = plan_run(run, export, open_file, staging, batch_size=batch_size)
    return summary, staging


def export_locally(
    run: ExportRun,
    export: ExportConfig,
    list_title: str,
    open_file: Callable[[str], BinaryIO],
    out_dir: Path,
    *,
    client: AutopilotClient | None,
    batch_size: int = 1000,
    concurrency: int = 4,
    on_batch: Callable[[int, int], None] | None = None,
    stats: Callable[[], dict[str, int]] | None = None,
) -> LocalExportResult:
    """Plan, then (unless ``client`` is None: a dry run) upload every batch and write the report."""
    started = datetime.now(UTC)
    summary, staging = plan_locally(run, export, open_file, out_dir, batch_size=batch_size)
    totals = UploadTotals()
    list_id: str | None = None
    sample = staging.read_batch(1)[:5] if summary.batches else []
    error: Exception | None = None
    if client is not None and summary.batches:
        refused_parts: list[bytes] = []
        try:
            list_id = client.find_or_create_list(list_title)

            def upload(index: int) -> tuple[UpsertOutcome, list[StagedContact]]:
                items = staging.read_batch(index)
                return client.upsert_contacts([i.contact for i in items], list_id), items

            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                for index, (outcome, items) in enumerate(
                    pool.map(upload, range(1, summary.batches + 1)), start=1
                ):
                    totals.add(
                        {"batches_done": 1, "uploaded": outcome.uploaded, "refused": len(outcome.rejected)}
                    )
                    if outcome.rejected:
                        refused_parts.append(refused_rejects_csv(outcome.rejected, items))
                    if on_batch is not None:
                        on_batch(index, summary.batches)
        except Exception as exc:  # noqa: BLE001 - reported below, then re-raised for the caller's exit code
            error = exc
        for number, part in enumerate(refused_parts, start=1):
            (staging.root / f"upload-rejects-{number:06d}.csv").write_bytes(part)
    if stats is not None:
        totals.add(stats())
    finished = datetime.now(UTC)
    status = "dry-run" if client is None else ("failed" if error else "completed")
    run_input = run.to_input(dry_run=client is None, trigger="cli")
    report = build_report(
        run=run_input,
        plan=summary.to_dict(),
        totals=totals,
        list_title=list_title,
        list_id=list_id,
        status=status,
        started_at=started.isoformat(),
        finished_at=finished.isoformat(),
        duration_seconds=(finished - started).total_seconds(),
        error=scrub(str(error)) if error else None,
    )
    rejects_path = out_dir / "rejects.csv"
    parts = [staging.root / PLAN_REJECTS, *sorted(staging.root.glob("upload-rejects-*.csv"))]
    files = [p.open("rb") for p in parts]
    try:
        merged = merge_rejects(files)
        with rejects_path.open("wb") as target:
            shutil.copyfileobj(merged, target)
    finally:
        for f in files:
            f.close()
    report.rejects_blob = str(rejects_path)
    report_path = out_dir / "report.json"
    report.report_blob = str(report_path)
    report_path.write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
    # Staged batches hold full email addresses: they never outlive the command, dry run or not.
    shutil.rmtree(staging.root, ignore_errors=True)
    if error is not None:
        raise error
    return LocalExportResult(report=report, rejects_path=rejects_path, report_path=report_path, sample=sample)
