"""Reading segment CSV files: encodings, RFC 4180 quoting, header or model.json columns, bad rows."""

from __future__ import annotations

import io
from typing import Any

import pytest

from shared.segment_file import (
    PROBLEM_INVALID_ENCODING,
    PROBLEM_MALFORMED_ROW,
    CsvFormat,
    SegmentFile,
    SegmentFileError,
    SegmentRow,
    open_segment_file,
)

HEADER = CsvFormat(column_headers=True)
NO_HEADER = CsvFormat(column_headers=False)


def open_bytes(data: bytes, fmt: CsvFormat = HEADER, columns: list[str] | None = None) -> SegmentFile:
    return open_segment_file(io.BytesIO(data), file_name="Seg_1.csv", fmt=fmt, columns=columns)


def rows_of(data: bytes, fmt: CsvFormat = HEADER, columns: list[str] | None = None) -> list[SegmentRow]:
    return list(open_bytes(data, fmt, columns).rows)


def test_header_row_gives_the_columns_and_is_not_a_data_row() -> None:
    segment = open_bytes(b"Id,Email\n1,a@example.com\n2,b@example.com\n")
    assert segment.columns == ("Id", "Email")
    rows = list(segment.rows)
    assert [(r.row_number, r.values) for r in rows] == [
        (1, ("1", "a@example.com")),
        (2, ("2", "b@example.com")),
    ]
    assert all(r.problem is None for r in rows)


def test_byte_order_mark_is_not_part_of_the_first_column_name() -> None:
    assert open_bytes(b"\xef\xbb\xbfEmail,Name\nx@example.com,Ann\n").columns == ("Email", "Name")


def test_byte_order_mark_is_not_part_of_the_first_value_without_header() -> None:
    rows = rows_of(b'\xef\xbb\xbf"x@example.com","Ann"\r\n', NO_HEADER, ["Email", "Name"])
    assert rows[0].values == ("x@example.com", "Ann")


def test_quoted_delimiters_quotes_and_line_breaks_stay_inside_one_value() -> None:
    data = (
        b'Email,Name,Note\r\n"a@example.com","Smith, Jr.","said ""hi""\r\nthen left"\r\n'
        b"b@example.com,Bo,x\r\n"
    )
    rows = rows_of(data)
    assert rows[0].values == ("a@example.com", "Smith, Jr.", 'said "hi"\r\nthen left')
    assert (rows[1].row_number, rows[1].values[0]) == (2, "b@example.com")


def test_crlf_line_ends_leave_no_carriage_return_in_values() -> None:
    rows = rows_of(b"Email,Name\r\na@example.com,Ann\r\nb@example.com,Bo\r\n")
    assert [r.values for r in rows] == [("a@example.com", "Ann"), ("b@example.com", "Bo")]


def test_accented_and_non_latin_text_is_decoded() -> None:
    rows = rows_of("Email,Name\nz@example.com,Zoë Łukasz 王\n".encode())
    assert rows[0].values[1] == "Zoë Łukasz 王"


def test_without_header_the_columns_come_from_model_json() -> None:
    segment = open_bytes(b"1,a@example.com\n", NO_HEADER, ["Id", "Email"])
    assert segment.columns == ("Id", "Email")
    assert [r.values for r in segment.rows] == [("1", "a@example.com")]


def test_without_header_and_without_columns_is_an_error_naming_the_file() -> None:
    with pytest.raises(SegmentFileError, match=r"Seg_1\.csv") as info:
        open_bytes(b"1,a@example.com\n", NO_HEADER, None)
    assert info.value.file == "Seg_1.csv"


def test_header_wins_over_given_columns_of_the_same_count() -> None:
    segment = open_bytes(b"CustomerId,EmailAddress\n1,a@example.com\n", HEADER, ["Id", "Email"])
    assert segment.columns == ("CustomerId", "EmailAddress")


def test_header_with_another_column_count_than_model_json_is_an_error() -> None:
    with pytest.raises(SegmentFileError, match=r"Seg_1\.csv.*header row has 3 columns but 2"):
        open_bytes(b"A,B,C\n1,2,3\n", HEADER, ["A", "B"])


def test_row_with_the_wrong_number_of_values_is_marked_and_reading_goes_on() -> None:
    rows = rows_of(b"A,B,C\n1,2,3\n1,2\n4,5,6\n")
    assert [r.problem for r in rows] == [None, PROBLEM_MALFORMED_ROW, None]
    assert rows[1].problem_detail.startswith("2 values, expected 3")
    assert rows[1].values == ("1", "2")
    assert rows[2].row_number == 3


def test_invalid_utf8_row_is_marked_and_the_next_rows_are_intact() -> None:
    rows = rows_of(b"Email,Name\na@example.com,Ann\nb@example.com,Bj\xf6rn\nc@example.com,Cy\n")
    assert [r.problem for r in rows] == [None, PROBLEM_INVALID_ENCODING, None]
    assert rows[1].values == ("b@example.com", "Bj\ufffdrn")
    assert "line 3" in rows[1].problem_detail
    assert rows[2].values == ("c@example.com", "Cy")


def test_unterminated_quote_at_end_of_file_names_the_file_and_row() -> None:
    data = b'Email,Name\na@example.com,Ann\nb@example.com,"Bo\nc@example.com,Cy\n'
    segment = open_bytes(data)
    rows = segment.rows
    assert next(rows).values == ("a@example.com", "Ann")
    with pytest.raises(SegmentFileError) as info:
        next(rows)
    assert (info.value.file, info.value.row) == ("Seg_1.csv", 2)
    assert "file 'Seg_1.csv': row 2 (lines 3-4)" in str(info.value)
    assert "never closed" in str(info.value)


def test_runaway_quote_in_a_large_file_stops_the_file_instead_of_swallowing_rows() -> None:
    rest = b"".join(b"u%d@example.com,Name %d\n" % (i, i) for i in range(10_000))
    with pytest.raises(SegmentFileError, match=r"file 'Seg_1\.csv': row 1 .*quote that is never closed"):
        rows_of(b'Email,Name\na@example.com,"Ann\n' + rest)


def test_text_after_a_closing_quote_rejects_that_row_only() -> None:
    rows = rows_of(b'A,B\n1,"x"y\n2,z\n')
    assert rows[0].problem == PROBLEM_MALFORMED_ROW
    assert "bad quoting" in rows[0].problem_detail
    assert (rows[1].row_number, rows[1].values) == (2, ("2", "z"))


def test_empty_file_has_no_rows() -> None:
    segment = open_bytes(b"")
    assert segment.columns == ()
    assert list(segment.rows) == []


def test_empty_file_keeps_the_given_columns() -> None:
    assert open_bytes(b"", HEADER, ["Email"]).columns == ("Email",)


def test_header_only_file_has_columns_and_no_rows() -> None:
    segment = open_bytes(b"Email,Name\r\n")
    assert segment.columns == ("Email", "Name")
    assert list(segment.rows) == []


def test_blank_lines_are_skipped_but_keep_their_row_number() -> None:
    rows = rows_of(b"A,B\n1,2\n\n3,4\n")
    assert [(r.row_number, r.values) for r in rows] == [(1, ("1", "2")), (3, ("3", "4"))]


def test_other_delimiter_from_model_json() -> None:
    rows = rows_of(
        b"a@example.com;Ann, Jr\n", CsvFormat(column_headers=False, delimiter=";"), ["Email", "Name"]
    )
    assert rows[0].values == ("a@example.com", "Ann, Jr")


def test_other_encoding_from_model_json() -> None:
    fmt = CsvFormat(column_headers=False, encoding="latin-1")
    assert rows_of("a@example.com,Björn\n".encode("latin-1"), fmt, ["Email", "Name"])[0].values[1] == "Björn"


def test_unknown_encoding_is_an_error_naming_the_file() -> None:
    with pytest.raises(SegmentFileError, match=r"Seg_1\.csv.*unknown encoding 'klingon'"):
        open_bytes(b"", CsvFormat(encoding="klingon"))


class CountingStream(io.RawIOBase):
    """A large CSV produced on demand, counting what the reader pulled."""

    def __init__(self, rows: int) -> None:
        self._data = io.BytesIO(
            b"Email,Name\n" + b"".join(b"u%d@example.com,Name %d\n" % (i, i) for i in range(rows))
        )
        self.size = len(self._data.getvalue())
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._data.read(min(len(buffer), 4096))
        buffer[: len(chunk)] = chunk
        self.consumed += len(chunk)
        return len(chunk)


def test_rows_are_streamed_not_read_all_at_once() -> None:
    stream = CountingStream(200_000)
    segment = open_segment_file(stream, file_name="big.csv", fmt=HEADER)  # type: ignore[arg-type]
    first = next(segment.rows)
    assert first.values == ("u0@example.com", "Name 0")
    assert stream.consumed < stream.size // 4


def test_stream_with_only_read_is_accepted() -> None:
    class OnlyRead:
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def read(self, size: int = -1) -> bytes:
            return self._data.read(min(size, 3) if size and size > 0 else 3)

    segment = open_segment_file(OnlyRead(b"Email\nz@example.com\n"), file_name="x.csv", fmt=HEADER)  # type: ignore[arg-type]
    assert [r.values for r in segment.rows] == [("z@example.com",)]


def test_the_callers_stream_is_left_open() -> None:
    stream = io.BytesIO(b"Email\na@example.com\n")
    segment = open_segment_file(stream, file_name="x.csv", fmt=HEADER)
    list(segment.rows)
    del segment
    assert not stream.closed
