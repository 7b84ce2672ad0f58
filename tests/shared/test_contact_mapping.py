"""Mapping rows to Autopilot contacts: emails, standard and typed custom fields, rejects, duplicates."""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from devtools.sample_data import directory_writer, generate_run
from shared.cdm_model import parse_model_json
from shared.config import ExportConfig, FieldMapping, SegmentConfig
from shared.contact_mapping import (
    REJECT_DUPLICATE_EMAIL,
    REJECT_INVALID_EMAIL,
    REJECT_INVALID_ENCODING,
    REJECT_INVALID_FIELD,
    REJECT_MALFORMED_ROW,
    REJECT_MISSING_EMAIL,
    ContactMapper,
    DuplicateFilter,
    MissingColumnError,
    RowReject,
    parse_date,
)
from shared.segment_file import CsvFormat, SegmentFileError, SegmentRow, open_segment_file

COLUMNS = (
    "CustomerId",
    "EmailAddress",
    "FirstName",
    "LastName",
    "City",
    "OptOut",
    "Tier",
    "Visits",
    "Spend",
    "Since",
    "Vip",
)


def make_export(**overrides: Any) -> ExportConfig:
    values: dict[str, Any] = {
        "name": "HighValue",
        "connection": "main",
        "folder": "CI/BlobExport",
        "segments": (SegmentConfig("HighValue", "High value"),),
        "email_column": "EmailAddress",
        "first_name_column": "FirstName",
        "last_name_column": "LastName",
        "fields": (
            FieldMapping("City", "MailingCity", None),
            FieldMapping("OptOut", "unsubscribed", None),
            FieldMapping("Tier", "string--Loyalty--Tier", "string"),
            FieldMapping("Visits", "integer--Visits", "integer"),
            FieldMapping("Spend", "float--Spend", "float"),
            FieldMapping("Since", "date--Since", "date"),
            FieldMapping("Vip", "boolean--VIP", "boolean"),
        ),
        "schedule": None,
    }
    values.update(overrides)
    return ExportConfig(**values)


def mapper(columns: tuple[str, ...] = COLUMNS, **overrides: Any) -> ContactMapper:
    return ContactMapper(make_export(**overrides), columns, file_name="HighValue_1.csv")


def row(number: int = 1, /, **values: str) -> SegmentRow:
    defaults = {"CustomerId": "c1", "EmailAddress": "ann@example.com"}
    defaults.update(values)
    return SegmentRow(number, tuple(defaults.get(c, "") for c in COLUMNS))


def mapped(**values: str) -> dict[str, Any]:
    outcome = mapper().map_row(row(**values))
    assert not isinstance(outcome, RowReject), outcome
    return outcome[1]


def rejected(**values: str) -> RowReject:
    outcome = mapper().map_row(row(**values))
    assert isinstance(outcome, RowReject), outcome
    return outcome


# ----------------------------------------------------------------------------------------- emails


def test_email_is_stripped_and_lower_cased_and_sent_as_email() -> None:
    email, contact = mapper().map_row(row(EmailAddress="  Ann.Lee@Example.COM "))  # type: ignore[misc]
    assert email == "ann.lee@example.com"
    assert contact == {"Email": "ann.lee@example.com"}


def test_internationalised_email_is_accepted_in_normalised_form() -> None:
    assert mapped(EmailAddress="Zoë@Exämple.de")["Email"] == "zoë@exämple.de"


@pytest.mark.parametrize("value", ["", "   "])
def test_missing_email_is_rejected(value: str) -> None:
    reject = rejected(EmailAddress=value)
    assert reject.reason == REJECT_MISSING_EMAIL
    assert "EmailAddress" in reject.detail


@pytest.mark.parametrize(
    "value",
    [
        "bob",
        "bob@",
        "bob@@example.com",
        "bob..x@example.com",
        "bob@localhost",
        "Bob <bob@example.com>",
        "bob@example..com",
        "bob@x.local",
    ],
)
def test_invalid_email_is_rejected_without_the_address_in_the_detail(value: str) -> None:
    reject = rejected(EmailAddress=value)
    assert reject.reason == REJECT_INVALID_EMAIL
    assert "bob" not in reject.detail.lower()
    assert "EmailAddress" in reject.detail


def test_the_fast_path_gives_the_same_verdict_as_full_validation() -> None:
    m = mapper()
    m.map_row(row(EmailAddress="first@example.com"))  # example.com is now a known-good domain
    assert isinstance(m.map_row(row(EmailAddress="a..b@example.com")), RowReject)
    assert isinstance(m.map_row(row(EmailAddress=("x" * 250) + "@example.com")), RowReject)
    assert not isinstance(m.map_row(row(EmailAddress="o'neil+tag@example.com")), RowReject)


def test_reject_values_hold_every_column_but_the_email() -> None:
    reject = rejected(EmailAddress="nope", FirstName="Ann", City="Paris")
    assert "EmailAddress" not in reject.values
    assert reject.values["FirstName"] == "Ann"
    assert reject.values["City"] == "Paris"
    assert reject.row_number == 1


# ------------------------------------------------------------------------------ names and standard


def test_names_with_accents_and_commas_are_sent_stripped() -> None:
    contact = mapped(FirstName="  Zoë ", LastName="Ó Súilleabháin, Jr.")
    assert (contact["FirstName"], contact["LastName"]) == ("Zoë", "Ó Súilleabháin, Jr.")


def test_empty_names_and_standard_fields_are_omitted() -> None:
    contact = mapped(FirstName=" ", LastName="", City="")
    assert set(contact) == {"Email"}


def test_standard_field_is_sent_as_a_string() -> None:
    assert mapped(City=" São Paulo ")["MailingCity"] == "São Paulo"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("FALSE", False), ("1", True), ("0", False), ("Yes", True), ("no", False)],
)
def test_unsubscribed_is_parsed_as_a_boolean(value: str, expected: bool) -> None:
    assert mapped(OptOut=value)["unsubscribed"] is expected


def test_empty_unsubscribed_is_omitted_never_defaulted_to_false() -> None:
    assert "unsubscribed" not in mapped(OptOut="")


def test_unsubscribed_is_absent_when_not_mapped() -> None:
    m = mapper(fields=())
    outcome = m.map_row(row(OptOut="true"))
    assert not isinstance(outcome, RowReject)
    assert "unsubscribed" not in outcome[1]


def test_unparseable_unsubscribed_rejects_the_row() -> None:
    reject = rejected(OptOut="maybe")
    assert reject.reason == REJECT_INVALID_FIELD
    assert "OptOut" in reject.detail


# ---------------------------------------------------------------------------------- custom fields


def test_custom_fields_are_typed_and_sent_under_custom() -> None:
    contact = mapped(Tier="Gold", Visits="42", Spend="1234.50", Since="2024-01-31", Vip="yes")
    assert contact["custom"] == {
        "string--Loyalty--Tier": "Gold",
        "integer--Visits": 42,
        "float--Spend": 1234.5,
        "date--Since": "2024-01-31",
        "boolean--VIP": True,
    }


def test_empty_custom_fields_are_omitted() -> None:
    assert "custom" not in mapped(Tier=" ", Visits="")


def test_integer_written_with_a_zero_fraction_is_accepted() -> None:
    assert mapped(Visits="7.0")["custom"]["integer--Visits"] == 7


@pytest.mark.parametrize(
    ("column", "value", "words"),
    [
        ("Visits", "4.5", "not an integer"),
        ("Visits", "1_000", "not an integer"),
        ("Visits", "99999999999999999999", "out of range"),
        ("Spend", "12,50", "not a number"),
        ("Spend", "nan", "not a number"),
        ("Vip", "maybe", "not a boolean"),
        ("Since", "31/01/2024", "not an ISO 8601 date"),
        ("Since", "2024-02-30", "not an ISO 8601 date"),
    ],
)
def test_value_that_does_not_convert_rejects_the_row_naming_column_and_type(
    column: str, value: str, words: str
) -> None:
    reject = rejected(**{column: value})
    assert reject.reason == REJECT_INVALID_FIELD
    assert f"column '{column}'" in reject.detail
    assert words in reject.detail
    assert value not in reject.detail
    assert reject.values[column] == value


def test_every_invalid_field_of_a_row_is_named() -> None:
    reject = rejected(Visits="x", Vip="y")
    assert "'Visits'" in reject.detail
    assert "'Vip'" in reject.detail


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-31", "2024-01-31"),
        ("2024-01-31T09:00:00Z", "2024-01-31T09:00:00Z"),
        ("2024-01-31T09:00:00.0000000Z", "2024-01-31T09:00:00Z"),
        ("2024-01-31T09:00:00.1234567+00:00", "2024-01-31T09:00:00.123Z"),
        ("2024-01-31T11:00:00+02:00", "2024-01-31T09:00:00Z"),
        ("2024-01-31 09:00:00", "2024-01-31T09:00:00Z"),
        ("2024-01-31T09:00", "2024-01-31T09:00:00Z"),
        ("1/31/2024 9:00:00 AM", "2024-01-31T09:00:00Z"),
        ("1/31/2024 12:30:00 PM", "2024-01-31T12:30:00Z"),
        ("1/31/2024 12:30:00 AM", "2024-01-31T00:30:00Z"),
    ],
)
def test_dates_are_sent_as_iso_8601(value: str, expected: str) -> None:
    assert parse_date(value) == expected


# ------------------------------------------------------------------------------------ bad rows


def test_row_marked_malformed_by_the_reader_is_rejected_with_its_detail() -> None:
    bad = SegmentRow(4, ("c1", "ann@example.com"), REJECT_MALFORMED_ROW, "2 values, expected 11 (line 5)")
    reject = mapper().map_row(bad)
    assert isinstance(reject, RowReject)
    assert (reject.row_number, reject.reason, reject.detail) == (
        4,
        REJECT_MALFORMED_ROW,
        "2 values, expected 11 (line 5)",
    )
    assert reject.values == {"CustomerId": "c1"}


def test_row_with_invalid_encoding_is_rejected_even_with_a_valid_email() -> None:
    bad = SegmentRow(
        2, row(FirstName="Bj\ufffdrn").values, REJECT_INVALID_ENCODING, "not valid UTF-8 (line 3)"
    )
    reject = mapper().map_row(bad)
    assert isinstance(reject, RowReject)
    assert reject.reason == REJECT_INVALID_ENCODING
    assert reject.values["FirstName"] == "Bj\ufffdrn"


def test_row_of_another_width_is_malformed() -> None:
    reject = mapper().map_row(SegmentRow(1, ("c1", "ann@example.com")))
    assert isinstance(reject, RowReject)
    assert reject.reason == REJECT_MALFORMED_ROW


# --------------------------------------------------------------------------------------- columns


def test_missing_email_column_names_the_file_the_column_and_the_columns_present() -> None:
    with pytest.raises(MissingColumnError) as info:
        ContactMapper(
            make_export(fields=()), ("CustomerId", "Email", "FirstName", "LastName"), file_name="Seg_1.csv"
        )
    message = str(info.value)
    assert message == (
        "file 'Seg_1.csv' has no column 'EmailAddress' (email_column of export 'HighValue') "
        "(columns: CustomerId, Email, FirstName, LastName)"
    )
    assert info.value.missing == ("EmailAddress",)
    assert info.value.file == "Seg_1.csv"
    assert isinstance(info.value, SegmentFileError)


def test_every_missing_mapped_column_is_named() -> None:
    with pytest.raises(MissingColumnError) as info:
        ContactMapper(make_export(), ("CustomerId", "EmailAddress"), file_name="Seg_1.csv")
    assert set(info.value.missing) == {
        "FirstName",
        "LastName",
        "City",
        "OptOut",
        "Tier",
        "Visits",
        "Spend",
        "Since",
        "Vip",
    }


def test_columns_match_ignoring_case_when_no_exact_match() -> None:
    m = ContactMapper(
        make_export(fields=(), first_name_column=None, last_name_column=None),
        ("ID", "emailaddress"),
        file_name="x.csv",
    )
    assert m.map_row(SegmentRow(1, ("1", "a@example.com"))) == ("a@example.com", {"Email": "a@example.com"})


def test_ambiguous_column_is_an_error() -> None:
    with pytest.raises(SegmentFileError, match="column 'EmailAddress' is ambiguous"):
        ContactMapper(
            make_export(fields=(), first_name_column=None, last_name_column=None),
            ("emailaddress", "EMAILADDRESS"),
            file_name="x.csv",
        )


def test_file_without_any_column_needs_no_column() -> None:
    m = ContactMapper(make_export(), (), file_name="empty.csv")
    assert m.columns == ()


# ------------------------------------------------------------------------------------ duplicates


def test_duplicate_filter_remembers_what_it_has_seen() -> None:
    seen = DuplicateFilter()
    assert seen.seen_before("a@example.com") is False
    assert seen.seen_before("b@example.com") is False
    assert seen.seen_before("a@example.com") is True
    assert len(seen) == 2


def test_duplicate_filter_keeps_every_email_of_a_large_run() -> None:
    seen = DuplicateFilter()
    emails = [f"user{i}@example.com" for i in range(50_000)]
    assert not any(seen.seen_before(e) for e in emails)
    assert all(seen.seen_before(e) for e in emails)
    assert len(seen) == 50_000


def test_duplicate_filter_costs_about_16_bytes_an_email() -> None:
    seen = DuplicateFilter()
    for i in range(200_000):
        seen.seen_before(f"user{i}@example.com")
    at_200k = seen.nbytes
    for i in range(200_000, 300_000):
        seen.seen_before(f"user{i}@example.com")
    assert (seen.nbytes - at_200k) / 100_000 <= 24
    assert at_200k <= 10_000_000  # fixed bucket overhead included


# ---------------------------------------------------------------------------- a generated export


def test_a_generated_export_maps_to_exactly_the_generators_counts(tmp_path: Path) -> None:
    run = generate_run(directory_writer(tmp_path), profiles=3_000, partitions=2)
    export = make_export(
        folder=run.export_folder,
        fields=(
            FieldMapping("City", "MailingCity", None),
            FieldMapping("LifetimeValue", "float--LTV", "float"),
            FieldMapping("BirthDate", "date--Birth--Date", "date"),
            FieldMapping("IsVip", "boolean--VIP", "boolean"),
        ),
    )
    cdm = parse_model_json(
        (tmp_path / run.model_json_blob).read_bytes(), source="model.json", container="ci-exports"
    )
    entity = cdm.entity(run.segment)
    assert entity is not None
    outcomes: Counter[str] = Counter()
    seen = DuplicateFilter()
    for partition in entity.partitions:
        with (tmp_path / partition.blob_name).open("rb") as stream:
            segment = open_segment_file(
                stream, file_name=partition.blob_name, fmt=partition.fmt, columns=entity.attributes
            )
            m = ContactMapper(export, segment.columns, file_name=partition.blob_name)
            for source_row in segment.rows:
                outcome = m.map_row(source_row)
                if isinstance(outcome, RowReject):
                    outcomes[outcome.reason] += 1
                elif seen.seen_before(outcome[0]):
                    outcomes[REJECT_DUPLICATE_EMAIL] += 1
                else:
                    outcomes["staged"] += 1
    expected = run.expected
    assert outcomes == Counter(
        {
            "staged": expected.unique_valid,
            REJECT_INVALID_EMAIL: expected.invalid_email,
            REJECT_MISSING_EMAIL: expected.missing_email,
            REJECT_DUPLICATE_EMAIL: expected.duplicate_email,
        }
    )


def test_header_csv_end_to_end_with_reader() -> None:
    data = 'EmailAddress,FirstName\r\n"Zoë@Example.com","Zoë, ""Z"""\r\n'.encode()
    segment = open_segment_file(io.BytesIO(data), file_name="x.csv", fmt=CsvFormat())
    m = ContactMapper(make_export(fields=(), last_name_column=None), segment.columns, file_name="x.csv")
    assert [m.map_row(r) for r in segment.rows] == [
        ("zoë@example.com", {"Email": "zoë@example.com", "FirstName": 'Zoë, "Z"'})
    ]
