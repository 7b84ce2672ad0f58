"""The plan step: stream a run's files once into staged contact batches and a rejects file.

Staging decouples reading (fast, local) from uploading (slow, rate bound): the upload fan-out then
works on small, independent, re-runnable batches, and a crash never means re-reading the export.
Memory stays flat in the file size: one batch and the duplicate filter are all that is held.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, Protocol

from shared.config import ExportConfig
from shared.contact_mapping import (
    REJECT_DUPLICATE_EMAIL,
    REJECT_REFUSED_BY_AUTOPILOT,
    ContactMapper,
    DuplicateFilter,
    RowReject,
)
from shared.redact import scrub
from shared.runs import ExportRun
from shared.segment_file import open_segment_file

log = logging.getLogger(__name__)

REJECTS_HEADER = ("file", "row", "reason", "detail")
PLAN_REJECTS = "plan-rejects.csv"


@dataclass(frozen=True)
class StagedContact:
    """A contact on its way to Autopilot, still traceable to its source file and row for a reject."""

    file: str
    row: int
    contact: dict[str, Any]


@dataclass
class PlanSummary:
    """Counts only: what crosses the orchestration boundary must stay small whatever the run size."""

    rows_read: int = 0
    staged: int = 0
    batches: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    files: list[dict[str, Any]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.rejected.get(REJECT_DUPLICATE_EMAIL, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows_read": self.rows_read,
            "staged": self.staged,
            "batches": self.batches,
            "rejected": dict(self.rejected),
            "files": list(self.files),
            "columns": list(self.columns),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanSummary:
        return cls(
            rows_read=int(data["rows_read"]),
            staged=int(data["staged"]),
            batches=int(data["batches"]),
            rejected={str(k): int(v) for k, v in data.get("rejected", {}).items()},
            files=list(data.get("files", [])),
            columns=list(data.get("columns", [])),
        )


class StagingSink(Protocol):
    """Where staged batches and the plan's rejects go (blob storage in Azure, a folder for the CLI)."""

    def write_batch(self, index: int, data: bytes) -> None: ...

    def write_rejects(self, name: str, stream: IO[bytes]) -> None: ...


def refused_rejects_csv(refused: Sequence[Any], items: Sequence[StagedContact]) -> bytes:
    """Rejects CSV rows for contacts Autopilot refused, traced back to their file and row.

    ``refused`` holds ``RejectedContact``-like values (``email``, ``reason``); the email itself is
    never written, only where the row came from and Autopilot's (already scrubbed) message.
    """
    by_email = {item.contact["Email"]: item for item in items}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(REJECTS_HEADER)
    for contact in refused:
        item = by_email.get(contact.email.strip().lower()) or by_email.get(contact.email)
        writer.writerow(
            [
                item.file if item else "",
                item.row if item else "",
                REJECT_REFUSED_BY_AUTOPILOT,
                scrub(contact.reason),
            ]
        )
    return buffer.getvalue().encode("utf-8")


def batch_name(index: int) -> str:
    return f"batch-{index:06d}.jsonl"


def encode_batch(items: Sequence[StagedContact]) -> bytes:
    """One JSON array per line ``[file, row, contact]``: self-describing, and streamable line by line."""
    return "".join(
        json.dumps([item.file, item.row, item.contact], ensure_ascii=False, separators=(",", ":")) + "\n"
        for item in items
    ).encode("utf-8")


def decode_batch(data: bytes) -> list[StagedContact]:
    items = []
    for line in data.decode("utf-8").splitlines():
        if line:
            file_name, row, contact = json.loads(line)
            items.append(StagedContact(file=file_name, row=int(row), contact=contact))
    return items


class RejectsWriter:
    """Rejects CSV spooled to disk past a few MB, so a run full of bad rows cannot exhaust memory."""

    def __init__(self, value_columns: Sequence[str]) -> None:
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)  # noqa: SIM115
        self._text = io.TextIOWrapper(self._spool, encoding="utf-8", newline="", write_through=True)
        self._writer = csv.writer(self._text)
        self._value_columns = tuple(value_columns)
        self._writer.writerow((*REJECTS_HEADER, *self._value_columns))
        self.count = 0

    def add(self, file_name: str, reject: RowReject) -> None:
        values = [reject.values.get(column, "") for column in self._value_columns]
        self._writer.writerow((file_name, reject.row_number, reject.reason, reject.detail, *values))
        self.count += 1

    def finish(self) -> IO[bytes]:
        """Rewound stream of the CSV bytes, for upload."""
        self._text.flush()
        self._text.detach()
        self._spool.seek(0)
        return self._spool


def plan_run(
    run: ExportRun,
    export: ExportConfig,
    open_file: Callable[[str], BinaryIO],
    sink: StagingSink,
    *,
    batch_size: int,
    on_progress: Callable[[int], None] | None = None,
) -> PlanSummary:
    """Read every file of the run once; stage valid unique contacts, reject the rest with a reason."""
    summary = PlanSummary()
    duplicates = DuplicateFilter()
    reasons: Counter[str] = Counter()
    batch: list[StagedContact] = []
    rejects: RejectsWriter | None = None

    def flush() -> None:
        if batch:
            summary.batches += 1
            sink.write_batch(summary.batches, encode_batch(batch))
            summary.staged += len(batch)
            batch.clear()

    for file_name in run.files:
        file_rows = 0
        with open_file(file_name) as stream:
            segment_file = open_segment_file(
                stream,
                file_name=file_name,
                fmt=run.fmt,
                columns=run.columns if not run.fmt.column_headers else None,
            )
            mapper = ContactMapper(export, segment_file.columns, file_name=file_name)
            if rejects is None:
                summary.columns = list(segment_file.columns)
                rejects = RejectsWriter(_non_email_columns(segment_file.columns, export.email_column))
            for outcome in _mapped_rows(mapper, segment_file.rows, duplicates):
                file_rows += 1
                if isinstance(outcome, RowReject):
                    reasons[outcome.reason] += 1
                    rejects.add(file_name, outcome)
                else:
                    batch.append(StagedContact(file_name, outcome[0], outcome[1]))
                    if len(batch) >= batch_size:
                        flush()
                if on_progress is not None and file_rows % 50_000 == 0:
                    on_progress(summary.rows_read + file_rows)
        summary.rows_read += file_rows
        summary.files.append({"file": file_name, "rows": file_rows})
        log.info("planned file %s: %d rows", file_name, file_rows)
    flush()
    summary.rejected = dict(sorted(reasons.items()))
    if rejects is None:
        rejects = RejectsWriter(())
    sink.write_rejects(PLAN_REJECTS, rejects.finish())
    return summary


def _mapped_rows(
    mapper: ContactMapper, rows: Iterator[Any], duplicates: DuplicateFilter
) -> Iterator[RowReject | tuple[int, dict[str, Any]]]:
    """Map and de-duplicate: first occurrence of an email wins, later ones are rejected as duplicates."""
    for row in rows:
        outcome = mapper.map_row(row)
        if isinstance(outcome, RowReject):
            yield outcome
            continue
        email, contact = outcome
        if duplicates.seen_before(email):
            yield RowReject(
                row_number=row.row_number,
                reason=REJECT_DUPLICATE_EMAIL,
                detail="email already seen earlier in this run (the first occurrence is uploaded)",
                values=mapper.reject_values(row),
            )
            continue
        yield row.row_number, contact


def _non_email_columns(columns: Sequence[str], email_column: str) -> list[str]:
    return [c for c in columns if c.lower() != email_column.lower()]


class BlobStaging:
    """Staged batches in the results container under ``staging/<instance id>/``."""

    def __init__(self, store: Any, container: str, prefix: str) -> None:
        self._store = store
        self._container = container
        self.prefix = prefix.rstrip("/")

    def write_batch(self, index: int, data: bytes) -> None:
        self._store.write_bytes(self._container, f"{self.prefix}/{batch_name(index)}", data)

    def write_rejects(self, name: str, stream: IO[bytes]) -> None:
        self._store.write_stream(self._container, f"{self.prefix}/{name}", stream, content_type="text/csv")

    def read_batch(self, index: int) -> list[StagedContact]:
        return decode_batch(self._store.read_bytes(self._container, f"{self.prefix}/{batch_name(index)}"))


def staging_prefix(instance_id: str) -> str:
    return f"staging/{instance_id}"
