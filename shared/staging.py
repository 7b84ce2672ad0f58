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
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
DUPLICATE_DETAIL = "email already seen earlier in this run (the first occurrence is uploaded)"


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


def _compact_json() -> Callable[[Any], str]:
    """Compact JSON text of a value, non-ASCII kept as is, from the C encoder built once.

    ``json.dumps`` with options builds a new encoder object per call; at a million contacts that
    setup cost as much as the encoding itself (profiled: encoding was a third of the plan's time).
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (another Python implementation): the same output, slower
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def unsupported(value: Any) -> Any:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    fallback = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    try:
        encode = make(None, unsupported, json.encoder.encode_basestring, None, ":", ",", False, False, True)
        fast: Callable[[Any], str] = lambda value: "".join(encode(value, 0))  # noqa: E731
        probe = {"files": [[0, 'a,"b".csv']], "contacts": [(1, {"Email": "z@x.io", "custom": {"n": 1.5}})]}
        if fast(probe) == fallback(probe):
            return fast
    except TypeError:  # the private C encoder's signature changed in another Python version
        pass
    return fallback


_to_json = _compact_json()


def _encode_document(files: list[list[Any]], contacts: list[tuple[int, dict[str, Any]]]) -> bytes:
    return _to_json({"files": files, "contacts": contacts}).encode("utf-8")


def encode_batch(items: Sequence[StagedContact]) -> bytes:
    """One JSON object: ``{"files": [[first, name], ...], "contacts": [[row, contact], ...]}``,
    where contacts from index ``first`` on (up to the next entry's) come from file ``name``.

    One encoder call for the whole batch, and each file named once rather than on every contact:
    encoding was the largest single cost of planning a million rows (see BENCHMARKS.md).
    """
    files: list[list[Any]] = []
    contacts: list[tuple[int, dict[str, Any]]] = []
    for index, item in enumerate(items):
        if not files or files[-1][1] != item.file:
            files.append([index, item.file])
        contacts.append((item.row, item.contact))
    return _encode_document(files, contacts)


def decode_batch(data: bytes) -> list[StagedContact]:
    """Reads what :func:`encode_batch` writes, and the JSON lines ``[file, row, contact]`` of
    earlier versions (a run staged before an upgrade still uploads after it)."""
    text = data.decode("utf-8")
    if not text.startswith("{"):
        items = []
        for line in text.splitlines():
            if line:
                file_name, row, contact = json.loads(line)
                items.append(StagedContact(file=file_name, row=int(row), contact=contact))
        return items
    document = json.loads(text)
    contacts = document["contacts"]
    spans = document["files"]
    ends = [int(first) for first, _ in spans[1:]] + [len(contacts)]
    return [
        StagedContact(file=str(name), row=int(row), contact=contact)
        for (first, name), end in zip(spans, ends, strict=True)
        for row, contact in contacts[int(first) : end]
    ]


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
    with _BatchWriter(sink) as writer:
        summary = _plan(run, export, open_file, writer, batch_size=batch_size, on_progress=on_progress)
    return summary


def _plan(
    run: ExportRun,
    export: ExportConfig,
    open_file: Callable[[str], BinaryIO],
    writer: _BatchWriter,
    *,
    batch_size: int,
    on_progress: Callable[[int], None] | None,
) -> PlanSummary:
    summary = PlanSummary()
    duplicates = DuplicateFilter()
    reasons: Counter[str] = Counter()
    batch: list[tuple[int, dict[str, Any]]] = []  # (row, contact)
    batch_files: list[list[Any]] = []  # [first index in batch, file name], as encode_batch writes
    rejects: RejectsWriter | None = None

    def flush() -> None:
        if batch:
            summary.batches += 1
            writer.write_batch(summary.batches, _encode_document(batch_files, batch))
            summary.staged += len(batch)
            batch.clear()
        batch_files.clear()

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
            # The hot loop (a million iterations): map, then de-duplicate (the first occurrence of
            # an email wins, later ones are rejected as duplicates); bound methods looked up once.
            map_row, seen_before, append = mapper.map_row, duplicates.seen_before, batch.append
            batch_files.append([len(batch), file_name])
            for row in segment_file.rows:
                file_rows += 1
                if on_progress is not None and file_rows % 50_000 == 0:
                    on_progress(summary.rows_read + file_rows)
                outcome = map_row(row)
                if isinstance(outcome, tuple):
                    email, contact = outcome
                    if not seen_before(email):
                        append((row.row_number, contact))
                        if len(batch) >= batch_size:
                            flush()
                            batch_files.append([0, file_name])
                        continue
                    outcome = RowReject(
                        row_number=row.row_number,
                        reason=REJECT_DUPLICATE_EMAIL,
                        detail=DUPLICATE_DETAIL,
                        values=mapper.reject_values(row),
                    )
                reasons[outcome.reason] += 1
                rejects.add(file_name, outcome)
        summary.rows_read += file_rows
        summary.files.append({"file": file_name, "rows": file_rows})
        log.info("planned file %s: %d rows", file_name, file_rows)
    flush()
    writer.drain()
    summary.rejected = dict(sorted(reasons.items()))
    if rejects is None:
        rejects = RejectsWriter(())
    writer.sink.write_rejects(PLAN_REJECTS, rejects.finish())
    return summary


class _BatchWriter:
    """Hands staged batches to the sink from one background thread, a few at a time.

    Writing a batch to blob storage is a network round trip (~7 ms on Azurite, more in Azure) during
    which reading and mapping can go on: the upload releases the GIL while it waits. At most
    ``pending`` encoded batches wait (memory stays flat), one thread keeps the writes in order, and
    the first failed write is raised in the planning thread.
    """

    def __init__(self, sink: StagingSink, pending: int = 4) -> None:
        self.sink = sink
        self._limit = pending
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plan-stage")
        self._pending: deque[Future[None]] = deque()

    def write_batch(self, index: int, data: bytes) -> None:
        while len(self._pending) >= self._limit or (self._pending and self._pending[0].done()):
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(self.sink.write_batch, index, data))

    def drain(self) -> None:
        while self._pending:
            self._pending.popleft().result()

    def __enter__(self) -> _BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        # On an error, batches not yet written are dropped: the activity fails and is retried whole.
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)


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
