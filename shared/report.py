"""Run totals and the run report: what was read, delivered, rejected and why, and what it cost.

The report is the user's proof that nothing was lost: ``rows_read`` always equals the contacts
uploaded plus every reject, and the check is made here, not left to the reader.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import IO, Any

from shared.contact_mapping import REJECT_DUPLICATE_EMAIL, REJECT_REFUSED_BY_AUTOPILOT

STAT_KEYS = ("requests", "retries", "throttled", "server_errors", "transport_errors", "bisections")


@dataclass
class UploadTotals:
    """Sum of the upload activities' results; small and JSON-safe so it can travel in orchestration state."""

    batches_done: int = 0
    uploaded: int = 0
    refused: int = 0
    membership_added: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    server_errors: int = 0
    transport_errors: int = 0
    bisections: int = 0
    failed_batches: list[dict[str, Any]] = field(default_factory=list)

    def add(self, result: dict[str, Any]) -> None:
        """Fold one batch result (or a sub-orchestration's totals) into this one."""
        for item in fields(self):
            if item.name == "failed_batches":
                self.failed_batches.extend(result.get("failed_batches", []))
            else:
                setattr(self, item.name, getattr(self, item.name) + int(result.get(item.name, 0)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UploadTotals:
        totals = cls()
        totals.add(data)
        return totals


@dataclass
class RunReport:
    """What the run did; written as ``report.json`` next to its rejects and returned as the output."""

    instance_id: str
    export: str
    segment: str
    run_folder: str
    trigger: str
    status: str  # "completed", "failed" or "dry-run"
    list_title: str
    list_id: str | None
    rows_read: int
    contacts_uploaded: int
    contacts_staged: int
    rejected: dict[str, int]
    duplicates: int
    api_requests: int
    retries: int
    throttled: int
    batches: int
    batches_done: int
    started_at: str
    finished_at: str
    duration_seconds: float
    rejects_blob: str | None = None
    report_blob: str | None = None
    error: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def accounted(self) -> bool:
        """Every row read is uploaded or rejected: the product's central promise, checked per run."""
        if self.status != "completed":
            return True
        return self.rows_read == self.contacts_uploaded + self.rejected_total

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rejected_total"] = self.rejected_total
        return data


def build_report(
    *,
    run: dict[str, Any],
    plan: dict[str, Any],
    totals: UploadTotals,
    list_title: str,
    list_id: str | None,
    status: str,
    started_at: str,
    finished_at: str,
    duration_seconds: float,
    error: str | None = None,
) -> RunReport:
    rejected = {str(k): int(v) for k, v in plan.get("rejected", {}).items()}
    if totals.refused:
        rejected[REJECT_REFUSED_BY_AUTOPILOT] = rejected.get(REJECT_REFUSED_BY_AUTOPILOT, 0) + totals.refused
    return RunReport(
        instance_id=run["instance_id"],
        export=run["export"],
        segment=run["segment"],
        run_folder=run["run_folder"],
        trigger=run.get("trigger", ""),
        status=status,
        list_title=list_title,
        list_id=list_id,
        rows_read=int(plan.get("rows_read", 0)),
        contacts_uploaded=totals.uploaded,
        contacts_staged=int(plan.get("staged", 0)),
        rejected=dict(sorted(rejected.items())),
        duplicates=rejected.get(REJECT_DUPLICATE_EMAIL, 0),
        api_requests=totals.requests,
        retries=totals.retries,
        throttled=totals.throttled,
        batches=int(plan.get("batches", 0)),
        batches_done=totals.batches_done,
        started_at=started_at,
        finished_at=finished_at,
        duration_seconds=round(duration_seconds, 3),
        error=error,
        files=list(plan.get("files", [])),
    )


def merge_rejects(parts: Iterable[IO[bytes]]) -> IO[bytes]:
    """Concatenate reject CSVs that share a header into one spooled file, keeping one header."""
    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
    first = True
    for part in parts:
        text = io.TextIOWrapper(part, encoding="utf-8", newline="")
        header = text.readline()
        if first and header:
            out.write(header.encode("utf-8"))
            first = False
        while chunk := text.read(1024 * 1024):
            out.write(chunk.encode("utf-8"))
    out.seek(0)
    return out
