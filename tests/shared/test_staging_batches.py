"""Staged batches and the plan's fast paths: what the performance work of BENCHMARKS.md must not change.

Staged batches are one JSON document per batch (the file named once per run of contacts); batches
staged by the earlier JSON-lines format must still decode; batches are written from a background
thread whose failures must still fail the plan; and rows of a file are checked for undecodable bytes
even when such bytes first appear deep into the file.
"""

from __future__ import annotations

import io
import json
from typing import IO, BinaryIO

import pytest

from shared.config import ExportConfig, SegmentConfig
from shared.runs import ExportRun
from shared.segment_file import PROBLEM_INVALID_ENCODING, CsvFormat, open_segment_file
from shared.staging import StagedContact, decode_batch, encode_batch, plan_run

COLUMNS = ("Id", "Email", "First")


def make_export() -> ExportConfig:
    return ExportConfig(
        name="HighValue",
        connection="main",
        folder="CI/Export",
        segments=(SegmentConfig("HighValue", "High value"),),
        email_column="Email",
        first_name_column="First",
        last_name_column=None,
        fields=(),
        schedule=None,
    )


def make_run(files: tuple[str, ...]) -> ExportRun:
    return ExportRun(
        export="HighValue",
        segment="HighValue",
        container="ci-exports",
        kind="cdm",
        run_folder="CI/Export/HighValue/2024/05/17/1433",
        files=files,
        fmt=CsvFormat(column_headers=False),
        columns=COLUMNS,
    )


def csv_rows(start: int, count: int) -> bytes:
    return "".join(f'"{i}","user{i}@example.com","Zoë {i}"\r\n' for i in range(start, start + count)).encode()


class MemorySink:
    def __init__(self) -> None:
        self.batches: dict[int, bytes] = {}
        self.rejects = b""

    def write_batch(self, index: int, data: bytes) -> None:
        self.batches[index] = data

    def write_rejects(self, name: str, stream: IO[bytes]) -> None:
        self.rejects = stream.read()


class FailingSink(MemorySink):
    def write_batch(self, index: int, data: bytes) -> None:
        if index == 2:
            raise OSError("storage refused batch 2")
        super().write_batch(index, data)


def test_a_batch_spanning_files_decodes_to_its_contacts_in_order() -> None:
    items = [
        StagedContact("part_1.csv", 7, {"Email": "a@example.com", "FirstName": "Zoë"}),
        StagedContact("part_1.csv", 9, {"Email": "b@example.com"}),
        StagedContact("part_2.csv", 1, {"Email": "c@example.com", "custom": {"float--Spend": 12.5}}),
    ]

    assert decode_batch(encode_batch(items)) == items


def test_batches_staged_as_json_lines_by_earlier_versions_still_decode() -> None:
    lines = [
        ["part_1.csv", 3, {"Email": "a@example.com"}],
        ["part_2.csv", 4, {"Email": "b@example.com", "FirstName": "Łukasz"}],
    ]
    data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()

    assert decode_batch(data) == [
        StagedContact("part_1.csv", 3, {"Email": "a@example.com"}),
        StagedContact("part_2.csv", 4, {"Email": "b@example.com", "FirstName": "Łukasz"}),
    ]


def test_plan_stages_every_contact_once_in_file_and_row_order_across_batches() -> None:
    files = {"part_1.csv": csv_rows(0, 5), "part_2.csv": csv_rows(5, 4)}
    sink = MemorySink()

    summary = plan_run(
        make_run(tuple(files)), make_export(), lambda name: io.BytesIO(files[name]), sink, batch_size=3
    )

    staged = [item for index in sorted(sink.batches) for item in decode_batch(sink.batches[index])]
    assert [(item.file, item.row, item.contact["Email"]) for item in staged] == [
        ("part_1.csv", row, f"user{row - 1}@example.com") for row in range(1, 6)
    ] + [("part_2.csv", row, f"user{row + 4}@example.com") for row in range(1, 5)]
    assert (summary.staged, summary.batches) == (9, 3)


def test_a_failed_batch_write_fails_the_plan() -> None:
    files = {"part_1.csv": csv_rows(0, 10)}

    def open_file(name: str) -> BinaryIO:
        return io.BytesIO(files[name])

    with pytest.raises(OSError, match="storage refused batch 2"):
        plan_run(make_run(tuple(files)), make_export(), open_file, FailingSink(), batch_size=2)


def test_undecodable_bytes_deep_in_a_file_still_reject_their_row() -> None:
    clean = csv_rows(0, 20_000)  # several decode chunks of valid text first
    data = clean + b'"x","late@example.com","bad \xff byte"\r\n' + csv_rows(20_000, 2)

    rows = list(
        open_segment_file(
            io.BytesIO(data), file_name="part_1.csv", fmt=CsvFormat(column_headers=False), columns=COLUMNS
        ).rows
    )

    assert [(row.row_number, row.problem) for row in rows if row.problem] == [
        (20_001, PROBLEM_INVALID_ENCODING)
    ]
