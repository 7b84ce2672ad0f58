"""Turning one segment row into one Autopilot contact, or into a reject with its reason.

This runs once per row of every run (a million times for a big segment), so everything that depends
only on the export and the file's columns (column positions, value converters) is worked out once
per file, and ``map_row`` does only per-value work. A row is never silently skipped: it becomes a
contact or a :class:`RowReject`, and a reject's ``detail`` never carries the email address (reject
details may reach logs and reports read by people who must not see it).
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from hashlib import blake2b
from typing import Any

from email_validator import EmailNotValidError, validate_email

from shared.config import ExportConfig
from shared.redact import scrub
from shared.segment_file import (
    PROBLEM_INVALID_ENCODING,
    PROBLEM_MALFORMED_ROW,
    SegmentFileError,
    SegmentRow,
)

REJECT_MISSING_EMAIL = "missing_email"
REJECT_INVALID_EMAIL = "invalid_email"
REJECT_DUPLICATE_EMAIL = "duplicate_email"
REJECT_INVALID_FIELD = "invalid_field"
REJECT_MALFORMED_ROW = PROBLEM_MALFORMED_ROW
REJECT_INVALID_ENCODING = PROBLEM_INVALID_ENCODING
REJECT_REFUSED_BY_AUTOPILOT = "refused_by_autopilot"

# Largest integer a JSON consumer that stores numbers as doubles (JavaScript) keeps exactly.
_MAX_SAFE_INTEGER = 2**53 - 1


@dataclass(frozen=True)
class RowReject:
    """A row that will not be uploaded. ``values`` are the row's non-email columns (column -> value),
    so the rejects file lets a person find and fix the profile; ``detail`` never holds the email."""

    row_number: int
    reason: str
    detail: str
    values: Mapping[str, str]


class MissingColumnError(SegmentFileError):
    """The file lacks a column the export configuration maps: nothing in it can be exported correctly."""

    def __init__(
        self, *, file: str, export: str, missing: Sequence[tuple[str, str]], columns: Sequence[str]
    ) -> None:
        self.missing = tuple(column for column, _ in missing)
        self.columns = tuple(columns)
        shown = ", ".join(self.columns[:60]) + (
            f", ... ({len(self.columns)} in all)" if len(columns) > 60 else ""
        )
        if len(missing) == 1:
            column, role = missing[0]
            what = f"column '{column}' ({role} of export '{export}')"
        else:
            listed = ", ".join(f"'{column}' ({role})" for column, role in missing)
            what = f"columns {listed} of export '{export}'"
        super().__init__(f"file '{file}' has no {what} (columns: {shown or 'none'})", file=file)


# --------------------------------------------------------------------------------- value parsing

_INTEGER_RE = re.compile(r"[+-]?[0-9]+(?:\.0+)?\Z")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_CANONICAL_UTC_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z\Z")
_ISO_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_ISO_DATETIME_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?"
    r"(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?\Z"
)
# .NET's invariant-culture format ("8/24/2020 2:33:00 PM"), which exports from Microsoft data
# platforms use for dateTime values; the AM/PM marker makes it unambiguous as month/day/year.
_US_DATETIME_RE = re.compile(
    r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4}) ([0-9]{1,2}):([0-9]{2})(?::([0-9]{2}))? ?([AaPp][Mm])\Z"
)
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def parse_integer(value: str) -> int:
    """Whole numbers, also written as ``42.0`` (exports of int64 columns through a double)."""
    if not _INTEGER_RE.match(value):
        raise ValueError("not an integer")
    number = int(value.split(".", 1)[0])
    if abs(number) > _MAX_SAFE_INTEGER:
        raise ValueError("an integer out of range (beyond 2^53-1)")
    return number


def parse_float(value: str) -> float:
    """Decimal numbers with a '.' (no thousands separators, no NaN or infinity)."""
    if not _FLOAT_RE.match(value):
        raise ValueError("not a number (use '.' for decimals, e.g. 12.5)")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("a number out of range")
    return number


def parse_boolean(value: str) -> bool:
    """true/false, 1/0, yes/no in any case."""
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        raise ValueError("not a boolean (true/false, 1/0, yes/no)") from None


def parse_date(value: str) -> str:
    """An ISO 8601 date or date-time (or .NET's ``M/d/yyyy h:mm:ss AM``), as ISO 8601.

    A date stays a date (``2024-01-31``); a date-time becomes UTC with a ``Z``
    (``2024-01-31T09:00:00Z``, milliseconds when present). A date-time without an offset is taken
    as UTC, which is what Customer Insights writes. The error never quotes the value.
    """
    try:
        return _parse_date(value)
    except (ValueError, OverflowError):
        raise ValueError(
            "not an ISO 8601 date or date-time (e.g. 2024-01-31 or 2024-01-31T09:00:00Z)"
        ) from None


def _parse_date(value: str) -> str:
    if _CANONICAL_UTC_RE.match(value):
        datetime.fromisoformat(value[:-1])  # already the output form: only check it is a real moment
        return value
    if _ISO_DATE_RE.match(value):
        return date.fromisoformat(value).isoformat()
    if _ISO_DATETIME_RE.match(value):
        text = value.replace(",", ".")
        if text[-1] in "Zz":
            text = text[:-1] + "+00:00"
        moment = datetime.fromisoformat(text)
    else:
        match = _US_DATETIME_RE.match(value)
        if match is None:
            raise ValueError("not a date")
        month, day, year, hour, minute, second, half = match.groups()
        hour_12 = int(hour)
        if not 1 <= hour_12 <= 12:
            raise ValueError("not a date")
        hour_24 = hour_12 % 12 + (12 if half.lower() == "pm" else 0)
        moment = datetime(int(year), int(month), int(day), hour_24, int(minute), int(second or 0))
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    text = moment.replace(tzinfo=None, microsecond=0).isoformat()
    return f"{text}.{moment.microsecond // 1000:03d}Z" if moment.microsecond else f"{text}Z"


def _memoized(convert: Callable[[str], Any], limit: int = 40_000) -> Callable[[str], Any]:
    """Dates repeat across a segment (birth dates, signup days): convert each distinct value once.

    The limit holds a century of distinct days (~36,500): at 8,192 the birth dates of a large
    segment cleared the cache over and over and most lookups missed (profiled: ~3% of a plan).
    At most ~7 MB per date column, whatever the number of rows."""
    cache: dict[str, Any] = {}

    def cached(value: str) -> Any:
        try:
            return cache[value]
        except KeyError:
            pass
        result = convert(value)
        if len(cache) >= limit:
            cache.clear()  # bounded memory; an evicted value is just converted again
        cache[value] = result
        return result

    return cached


_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "integer": parse_integer,
    "float": parse_float,
    "boolean": parse_boolean,
    "date": parse_date,
}


# ------------------------------------------------------------------------------------------ email

_ATEXT = r"a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~"
_SIMPLE_LOCAL_RE = re.compile(f"[{_ATEXT}]+(?:\\.[{_ATEXT}]+)*\\Z")
_EMAIL_MAX_LENGTH = 254
_DOMAIN_CACHE_LIMIT = 50_000


class EmailNormalizer:
    """``email_validator`` (syntax only) with a fast path for the common case.

    Full validation costs ~35 µs, most of it checking the domain; a million rows share few domains.
    The fast path accepts an address only when its local part is plain ASCII dot-atom, its length is
    within the limit and its domain already passed full validation unchanged - exactly the checks
    ``validate_email`` makes for such an address - so the verdict and the normalised form are the same.
    """

    def __init__(self) -> None:
        self._good_domains: set[str] = set()

    def normalize(self, email: str) -> tuple[str | None, str]:
        """``(normalised address, "")`` or ``(None, why)``; ``email`` is already stripped and lower-cased."""
        local, at, domain = email.rpartition("@")
        if (
            at
            and domain in self._good_domains
            and len(email) <= _EMAIL_MAX_LENGTH
            and _SIMPLE_LOCAL_RE.match(local)
        ):
            return email, ""
        try:
            result = validate_email(email, check_deliverability=False)
        except EmailNotValidError as exc:
            return None, scrub(str(exc))
        normalized: str = result.normalized
        if (
            normalized == email
            and result.ascii_domain == domain
            and _SIMPLE_LOCAL_RE.match(local)
            and len(self._good_domains) < _DOMAIN_CACHE_LIMIT
        ):
            self._good_domains.add(domain)
        return normalized, ""


# ----------------------------------------------------------------------------------------- mapper


def _resolve_column(name: str, columns: Sequence[str], file_name: str) -> int | None:
    """Exact name first, then ignoring case and surrounding spaces; two candidates is an error."""
    exact = [i for i, column in enumerate(columns) if column == name]
    if not exact:
        wanted = name.strip().lower()
        exact = [i for i, column in enumerate(columns) if column.strip().lower() == wanted]
    if len(exact) > 1:
        names = ", ".join(f"'{columns[i]}'" for i in exact)
        raise SegmentFileError(
            f"file '{file_name}': column '{name}' is ambiguous: the file has {names}", file=file_name
        )
    return exact[0] if exact else None


class ContactMapper:
    """Maps the rows of one file (its columns resolved once) to Autopilot contacts."""

    def __init__(self, export: ExportConfig, columns: Sequence[str], *, file_name: str) -> None:
        self.file_name = file_name
        self.columns = tuple(columns)
        self._width = len(self.columns)
        missing: list[tuple[str, str]] = []

        def resolve(name: str, role: str) -> int:
            index = _resolve_column(name, self.columns, file_name)
            if index is None:
                missing.append((name, role))
                return -1
            return index

        self._email_index = resolve(export.email_column, "email_column")
        self._email_column = export.email_column
        # (index, key) of values sent as stripped strings; FirstName/LastName are standard fields too.
        standard: list[tuple[int, str]] = []
        custom_text: list[tuple[int, str]] = []
        # (index, key, converter, column, into_custom) of values that need converting.
        converted: list[tuple[int, str, Callable[[str], Any], str, bool]] = []
        if export.first_name_column:
            standard.append((resolve(export.first_name_column, "first_name_column"), "FirstName"))
        if export.last_name_column:
            standard.append((resolve(export.last_name_column, "last_name_column"), "LastName"))
        for mapping in export.fields:
            index = resolve(mapping.column, f"field {mapping.target}")
            if mapping.custom_type is None:
                if mapping.target == "unsubscribed":
                    converted.append((index, "unsubscribed", parse_boolean, mapping.column, False))
                else:
                    standard.append((index, mapping.target))
            elif mapping.custom_type == "string":
                custom_text.append((index, mapping.target))
            else:
                converter = _CONVERTERS[mapping.custom_type]
                if mapping.custom_type == "date":
                    converter = _memoized(converter)
                converted.append((index, mapping.target, converter, mapping.column, True))
        # A file without any column (0 bytes) has no rows to map: nothing is missing from it.
        if missing and self.columns:
            raise MissingColumnError(
                file=file_name, export=export.name, missing=missing, columns=self.columns
            )
        self._standard = tuple(standard)
        self._custom_text = tuple(custom_text)
        self._converted = tuple(converted)
        self._value_columns = tuple((i, c) for i, c in enumerate(self.columns) if i != self._email_index)
        self._emails = EmailNormalizer()

    def reject_values(self, row: SegmentRow) -> dict[str, str]:
        """The row's non-email columns, for a reject record (a short row yields the values it has)."""
        values = row.values
        count = len(values)
        return {column: values[i] for i, column in self._value_columns if i < count}

    def _reject(self, row: SegmentRow, reason: str, detail: str) -> RowReject:
        return RowReject(
            row_number=row.row_number, reason=reason, detail=detail, values=self.reject_values(row)
        )

    def map_row(self, row: SegmentRow) -> tuple[str, dict[str, Any]] | RowReject:
        """``(normalised email, contact)`` ready for ``POST /contacts``, or the reason it cannot be sent."""
        if row.problem is not None:
            return self._reject(row, row.problem, row.problem_detail)
        values = row.values
        if len(values) != self._width:
            return self._reject(row, REJECT_MALFORMED_ROW, f"{len(values)} values, expected {self._width}")
        raw = values[self._email_index].strip()
        if not raw:
            return self._reject(row, REJECT_MISSING_EMAIL, f"column '{self._email_column}' is empty")
        email, why = self._emails.normalize(raw.lower())
        if email is None:
            return self._reject(
                row,
                REJECT_INVALID_EMAIL,
                f"column '{self._email_column}' is not a valid email address: {why}",
            )
        contact: dict[str, Any] = {"Email": email}
        for index, key in self._standard:
            value = values[index].strip()
            if value:
                contact[key] = value
        custom: dict[str, Any] = {}
        for index, key in self._custom_text:
            value = values[index].strip()
            if value:
                custom[key] = value
        problems: list[str] | None = None
        for index, key, converter, column, into_custom in self._converted:
            value = values[index].strip()
            if not value:
                continue  # empty: omitted, never a default (an absent "unsubscribed" stays unchanged)
            try:
                converted = converter(value)
            except ValueError as exc:
                problems = problems or []
                problems.append(f"column '{column}' ({key}): {exc}")
                continue
            if into_custom:
                custom[key] = converted
            else:
                contact[key] = converted
        if problems:
            return self._reject(row, REJECT_INVALID_FIELD, "; ".join(problems))
        if custom:
            contact["custom"] = custom
        return email, contact


# ------------------------------------------------------------------------------------- duplicates

_BUCKET_BITS = 16
_KEY_SIZE = 16 - _BUCKET_BITS // 8  # the digest bytes after the two that pick the bucket


class DuplicateFilter:
    """Remembers emails seen in a run in O(16 bytes-ish) each: 1M emails must fit in well under 150 MB.

    Each email is kept as a 128-bit keyed BLAKE2b digest: its first two bytes pick one of 65,536
    buckets, the other 14 are appended to that bucket's bytearray, and membership is a C-speed
    ``find`` in a few hundred bytes. No Python object per email and no rehashing: ~27 MB and ~1.5 s
    for a million emails. The digest key is random per filter, so crafted addresses cannot pile
    into one bucket; a false "seen" needs a 128-bit digest collision (odds ~1e-26 per million rows).
    """

    def __init__(self) -> None:
        self._key = os.urandom(16)
        # Keyed BLAKE2b set up once and copied per email: ~40% cheaper than keying each digest.
        self._hasher = blake2b(digest_size=16, key=self._key)
        self._buckets: list[bytearray | None] = [None] * (1 << _BUCKET_BITS)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Memory held by the buckets and their index (what grows with the number of emails)."""
        return sys.getsizeof(self._buckets) + sum(sys.getsizeof(b) for b in self._buckets if b is not None)

    def seen_before(self, email: str) -> bool:
        """True if ``email`` (already normalised) was seen before; otherwise remembers it."""
        hasher = self._hasher.copy()
        hasher.update(email.encode("utf-8", "surrogatepass"))
        digest = hasher.digest()
        index = (digest[0] << 8) | digest[1]
        entry = digest[2:]
        bucket = self._buckets[index]
        if bucket is None:
            self._buckets[index] = bytearray(entry)
            self._count += 1
            return False
        at = bucket.find(entry)
        while at != -1:
            if at % _KEY_SIZE == 0:  # a match straddling two entries is not an entry
                return True
            at = bucket.find(entry, at + 1)
        bucket += entry
        self._count += 1
        return False
