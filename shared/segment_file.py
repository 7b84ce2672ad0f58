"""Streaming reader for the CSV partition files Customer Insights exports (and CSVs dropped by hand).

A segment can hold a million profiles, so the file is never read whole: rows are decoded and parsed
as they are pulled. A single bad row must not cost the other 999,999, so rows with the wrong number
of values or with bytes that are not valid text are yielded with a ``problem`` marker for the caller
to reject and report; only damage that makes the rest of the file unreadable (a quote that is never
closed) stops the file, with an error naming the file, the row and the line.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple

PROBLEM_MALFORMED_ROW = "malformed_row"
PROBLEM_INVALID_ENCODING = "invalid_encoding"

# Undecodable bytes are carried through the decoder as lone surrogates (errors="surrogateescape"),
# which a real decoded character never is: finding one in a row pins the bad bytes to that row.
_SURROGATES = re.compile("[\udc80-\udcff]")
_CHUNK_SIZE = 256 * 1024
# csv errors after which the reader cannot resynchronise on the next line without losing rows.
_FATAL_CSV_ERRORS = ("unexpected end of data", "field larger than field limit")


class _DecodeErrors:
    """How many runs of undecodable bytes any segment file has met so far.

    Rows decoded while it stays unchanged cannot hold the surrogates that mark bad bytes, so their
    per-row check (join + scan, ~6% of a plan) is skipped; once it moves, every later row is checked.
    Shared by all threads: another file's error only costs this one the slower, still exact path.
    """

    count = 0


_surrogate_escape = codecs.lookup_error("surrogateescape")


def _count_and_escape(error: UnicodeError) -> tuple[str | bytes, int]:
    _DecodeErrors.count += 1
    return _surrogate_escape(error)


_ERRORS = "segment-export-surrogateescape"
codecs.register_error(_ERRORS, _count_and_escape)


@dataclass(frozen=True)
class CsvFormat:
    """How a file is written: from model.json's ``fileFormatSettings``, or the defaults of a hand-made CSV."""

    column_headers: bool = True
    delimiter: str = ","
    encoding: str = "utf-8"


class SegmentRow(NamedTuple):
    """One record of the file (a NamedTuple rather than a dataclass: built a million times per run,
    and a frozen dataclass costs ten times more to build).

    ``row_number`` counts data records from 1 (the header is not counted; a record with line breaks
    inside quotes is one row). ``problem`` is None for a readable row, else ``"malformed_row"`` or
    ``"invalid_encoding"`` (the reject reasons of the same names), explained by ``problem_detail``.
    The values of an ``invalid_encoding`` row have the bad bytes replaced by U+FFFD.
    """

    row_number: int
    values: tuple[str, ...]
    problem: str | None = None
    problem_detail: str = ""


class SegmentFileError(ValueError):
    """The file cannot be read (any further); the message names the file and, when known, the row."""

    def __init__(self, message: str, *, file: str, row: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.row = row


@dataclass
class SegmentFile:
    """An opened file: its column names, and its rows as a one-shot iterator."""

    file_name: str
    columns: tuple[str, ...]
    rows: Iterator[SegmentRow]


class _KeepOpenText(io.TextIOWrapper):
    """A text view that never closes the caller's binary stream (TextIOWrapper does when collected)."""

    def close(self) -> None:
        pass


class _ReadAdapter(io.RawIOBase):
    """Lets any object with ``read(n)`` feed io.TextIOWrapper, which needs the full io protocol."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        return size


def open_segment_file(
    stream: BinaryIO, *, file_name: str, fmt: CsvFormat, columns: Sequence[str] | None = None
) -> SegmentFile:
    """Open a partition for streaming: reads the header row now (if any), the data rows as iterated.

    Column names come from the header row when ``fmt.column_headers`` is true (``columns``, if also
    given, must then have as many names), else from ``columns`` (model.json's attributes). The stream
    is not closed (it belongs to the caller).
    """
    encoding = _checked_encoding(fmt, file_name)
    if len(fmt.delimiter) != 1 or fmt.delimiter in '"\r\n':
        raise SegmentFileError(
            f"file '{file_name}': delimiter {fmt.delimiter!r} must be one character, not a quote or newline",
            file=file_name,
        )
    raw: Any = (
        stream if isinstance(stream, io.IOBase) else io.BufferedReader(_ReadAdapter(stream), _CHUNK_SIZE)
    )
    clean = _DecodeErrors.count
    text = _KeepOpenText(raw, encoding=encoding, errors=_ERRORS, newline="")
    text._CHUNK_SIZE = _CHUNK_SIZE  # type: ignore[attr-defined]  # fewer, larger decode calls: faster
    reader = csv.reader(text, delimiter=fmt.delimiter, quotechar='"', doublequote=True, strict=True)

    header_lines = 0
    if fmt.column_headers:
        header = _read_header(reader, file_name, fmt.encoding)
        header_lines = reader.line_num
        if header is None:
            names: tuple[str, ...] = tuple(columns) if columns is not None else ()
            return SegmentFile(file_name=file_name, columns=names, rows=iter(()))
        if columns is not None and len(columns) != len(header):
            raise SegmentFileError(
                f"file '{file_name}': the header row has {len(header)} columns but {len(columns)} were "
                f"expected ({', '.join(columns)})",
                file=file_name,
            )
        names = header
    else:
        if not columns:
            raise SegmentFileError(
                f"file '{file_name}': the file has no header row and no column names were given "
                "(model.json attributes)",
                file=file_name,
            )
        names = tuple(columns)
    return SegmentFile(
        file_name=file_name,
        columns=names,
        rows=_rows(reader, len(names), file_name, fmt.encoding, header_lines, clean),
    )


def _checked_encoding(fmt: CsvFormat, file_name: str) -> str:
    try:
        name = codecs.lookup(fmt.encoding).name
    except LookupError:
        raise SegmentFileError(
            f"file '{file_name}': unknown encoding '{fmt.encoding}'", file=file_name
        ) from None
    # A byte-order mark is optional in UTF-8 files: utf-8-sig drops it when present.
    return "utf-8-sig" if name in ("utf-8", "utf-8-sig") else name


def _read_header(reader: Any, file_name: str, encoding: str) -> tuple[str, ...] | None:
    try:
        for values in reader:
            if not values:
                continue  # blank lines before the header
            if any(_SURROGATES.search(v) for v in values):
                raise SegmentFileError(
                    f"file '{file_name}': the header row is not valid {encoding} text", file=file_name
                )
            return tuple(values)
    except csv.Error as exc:
        raise SegmentFileError(
            f"file '{file_name}': the header row (line {reader.line_num}) cannot be read: {exc}",
            file=file_name,
        ) from None
    return None


def _lines(first: int, last: int) -> str:
    return f"line {first}" if last <= first else f"lines {first}-{last}"


def _rows(
    reader: Any, width: int, file_name: str, encoding: str, header_lines: int, clean: int
) -> Iterator[SegmentRow]:
    """The data rows. Hot loop (a million iterations): keep the per-row work to a few C calls.

    ``clean`` is ``_DecodeErrors.count`` before this file's first byte was decoded."""
    number = 0
    last_line = header_lines
    surrogate = _SURROGATES.search
    new = tuple.__new__  # SegmentRow(...) without the keyword-handling __new__: 2x faster
    row = SegmentRow
    errors = _DecodeErrors
    while True:
        try:
            for values in reader:
                number += 1
                if len(values) == width:
                    if errors.count == clean:
                        yield new(row, (number, tuple(values), None, ""))
                        last_line = reader.line_num
                        continue
                    joined = "".join(values)
                    if joined.isascii() or surrogate(joined) is None:
                        yield new(row, (number, tuple(values), None, ""))
                    else:
                        yield row(
                            number,
                            _replace_bad_bytes(values),
                            PROBLEM_INVALID_ENCODING,
                            f"the row holds bytes that are not valid {encoding} text "
                            f"({_lines(last_line + 1, reader.line_num)})",
                        )
                elif values:
                    yield row(
                        number,
                        _replace_bad_bytes(values),
                        PROBLEM_MALFORMED_ROW,
                        f"{len(values)} values, expected {width} ({_lines(last_line + 1, reader.line_num)})",
                    )
                # else: a blank line holds no profile; it is numbered but not yielded
                last_line = reader.line_num
            return
        except csv.Error as exc:
            number += 1
            first_line = last_line + 1
            message = str(exc)
            if message.startswith(_FATAL_CSV_ERRORS):
                hint = (
                    "a quoted value is never closed before the end of the file"
                    if message.startswith("unexpected end of data")
                    else f"{message} (probably a quote that is never closed)"
                )
                raise SegmentFileError(
                    f"file '{file_name}': row {number} ({_lines(first_line, reader.line_num)}): {hint}",
                    file=file_name,
                    row=number,
                ) from None
            # The reader resumes at the next line: this record is lost (and reported), the rest is not.
            yield row(
                number,
                (),
                PROBLEM_MALFORMED_ROW,
                f"bad quoting: {message} ({_lines(first_line, reader.line_num)})",
            )
            last_line = reader.line_num


def _replace_bad_bytes(values: Sequence[str]) -> tuple[str, ...]:
    """Values safe to write back out as UTF-8: undecodable bytes become U+FFFD."""
    return tuple(
        v if v.isascii() or _SURROGATES.search(v) is None else _SURROGATES.sub("\ufffd", v) for v in values
    )
