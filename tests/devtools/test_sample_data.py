"""The sample-data generator: its files parse as Customer Insights' do, and its expected counts are right.

The counts are checked against an independent recount (csv module + email-validator) of the files, so a
bug in either the generator's tally or its content shows up as a mismatch.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email

from devtools.sample_data import (
    SAMPLE_COLUMNS,
    ExpectedCounts,
    GeneratedRun,
    directory_writer,
    generate_run,
    main,
)

ROWS = 5000
PARTITIONS = 3
BOM = b"\xef\xbb\xbf"


class MemoryWriter:
    """Collects blobs in memory and remembers the order and chunking of the writes."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.order: list[str] = []
        self.chunk_sizes: dict[str, list[int]] = {}

    def __call__(self, name: str, chunks: Iterable[bytes]) -> None:
        parts = list(chunks)
        self.order.append(name)
        self.chunk_sizes[name] = [len(p) for p in parts]
        self.blobs[name] = b"".join(parts)


def _generate(**kwargs: object) -> tuple[GeneratedRun, MemoryWriter]:
    writer = MemoryWriter()
    params: dict[str, object] = {"profiles": ROWS, "partitions": PARTITIONS}
    params.update(kwargs)
    run = generate_run(writer, **params)  # type: ignore[arg-type]
    return run, writer


@pytest.fixture(scope="module")
def sample() -> tuple[GeneratedRun, MemoryWriter]:
    return _generate()


def _rows(blob: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(blob.decode("utf-8-sig"), newline="")))


def _all_rows(run: GeneratedRun, writer: MemoryWriter) -> list[list[str]]:
    return [row for name in run.partition_blobs for row in _rows(writer.blobs[name])]


def test_expected_counts_add_up_to_rows(sample: tuple[GeneratedRun, MemoryWriter]) -> None:
    e = sample[0].expected
    assert e.rows == ROWS
    assert e.unique_valid + e.invalid_email + e.missing_email + e.duplicate_email == e.rows


def test_every_email_category_occurs_at_default_rates(sample: tuple[GeneratedRun, MemoryWriter]) -> None:
    e = sample[0].expected
    assert min(e.invalid_email, e.missing_email, e.duplicate_email) > 0


def test_partitions_parse_back_to_rows_of_every_column(sample: tuple[GeneratedRun, MemoryWriter]) -> None:
    run, writer = sample
    rows = _all_rows(run, writer)
    assert len(rows) == run.expected.rows
    assert {len(row) for row in rows} == {len(SAMPLE_COLUMNS)}


def test_rows_are_spread_over_every_partition(sample: tuple[GeneratedRun, MemoryWriter]) -> None:
    run, writer = sample
    sizes = [len(_rows(writer.blobs[name])) for name in run.partition_blobs]
    assert sizes == [1667, 1667, 1666]


def test_email_categories_match_an_independent_recount(sample: tuple[GeneratedRun, MemoryWriter]) -> None:
    run, writer = sample
    email_at = SAMPLE_COLUMNS.index("EmailAddress")
    seen: set[str] = set()
    unique = invalid = missing = duplicate = 0
    for row in _all_rows(run, writer):
        raw = row[email_at].strip()
        if not raw:
            missing += 1
            continue
        try:
            validate_email(raw, check_deliverability=False)
        except EmailNotValidError:
            invalid += 1
            continue
        key = raw.lower()
        if key in seen:
            duplicate += 1
        else:
            seen.add(key)
            unique += 1
    recount = ExpectedCounts(
        rows=unique + invalid + missing + duplicate,
        unique_valid=unique,
        invalid_email=invalid,
        missing_email=missing,
        duplicate_email=duplicate,
    )
    assert recount == run.expected


def test_duplicates_include_other_case_and_surrounding_spaces(
    sample: tuple[GeneratedRun, MemoryWriter],
) -> None:
    run, writer = sample
    email_at = SAMPLE_COLUMNS.index("EmailAddress")
    first_raw: dict[str, str] = {}
    variants = []
    for row in _all_rows(run, writer):
        raw = row[email_at]
        key = raw.strip().lower()
        if "@" not in key:
            continue
        if key in first_raw and raw != first_raw[key]:
            variants.append(raw)
        first_raw.setdefault(key, raw)
    assert any(v != v.strip() for v in variants)
    assert any(v.strip() != v.strip().lower() for v in variants)


def test_invalid_emails_cover_each_kind_of_mistake(sample: tuple[GeneratedRun, MemoryWriter]) -> None:
    run, writer = sample
    email_at = SAMPLE_COLUMNS.index("EmailAddress")
    invalid = []
    for row in _all_rows(run, writer):
        raw = row[email_at].strip()
        if raw:
            try:
                validate_email(raw, check_deliverability=False)
            except EmailNotValidError:
                invalid.append(raw)
    kinds = {
        "no @": any("@" not in v for v in invalid),
        "two @": any(v.count("@") == 2 for v in invalid),
        "space": any(" " in v for v in invalid),
        "trailing dot": any(v.endswith(".") for v in invalid),
        "no domain": any(v.endswith("@") for v in invalid),
        "no dot in domain": any(
            v.count("@") == 1 and "." not in v.split("@")[1] and v[-1] != "@" for v in invalid
        ),
    }
    assert kinds == dict.fromkeys(kinds, True)


def test_first_occurrences_are_ascii_addresses_on_example_domains(
    sample: tuple[GeneratedRun, MemoryWriter],
) -> None:
    run, writer = sample
    email_at = SAMPLE_COLUMNS.index("EmailAddress")
    pattern = re.compile(r"[a-z-]+\.[a-z-]+\.\d+@(mail\.)?example(-\d)?\.(com|org|net)")
    seen: set[str] = set()
    firsts = []
    for row in _all_rows(run, writer):
        raw = row[email_at].strip()
        try:
            validate_email(raw, check_deliverability=False)
        except EmailNotValidError:
            continue
        if raw.lower() not in seen:
            seen.add(raw.lower())
            firsts.append(raw)
    assert len(firsts) == run.expected.unique_valid
    assert [e for e in firsts if not pattern.fullmatch(e)] == []


def test_only_the_first_partition_starts_with_a_bom(sample: tuple[GeneratedRun, MemoryWriter]) -> None:
    run, writer = sample
    starts = [writer.blobs[name].startswith(BOM) for name in run.partition_blobs]
    assert starts == [True, False, False]


def test_every_field_is_quoted_and_every_record_ends_with_crlf(
    sample: tuple[GeneratedRun, MemoryWriter],
) -> None:
    run, writer = sample
    field = r'"(?:[^"]|"")*"'
    record = re.compile(rf"(?:{field}(?:,{field}){{{len(SAMPLE_COLUMNS) - 1}}}\r\n)*")
    for name in run.partition_blobs:
        text = writer.blobs[name].decode("utf-8").removeprefix("\ufeff")
        assert record.fullmatch(text), name


def test_values_carry_the_awkward_cases(sample: tuple[GeneratedRun, MemoryWriter]) -> None:
    run, writer = sample
    rows = _all_rows(run, writer)
    first = [r[1] for r in rows]
    last = [r[2] for r in rows]
    values = [v for r in rows for v in r]
    assert {"Zoë", "Łukasz", "José", "Søren", "Renée", "王"} <= set(first)
    assert {"Ñúñez", "Müller"} <= set(last)
    assert any("," in v for v in last)
    assert any('"' in v for v in last)
    assert any("\n" in v for v in values)
    assert "" in first
    assert "" in last


def test_typed_columns_hold_their_documented_formats(sample: tuple[GeneratedRun, MemoryWriter]) -> None:
    run, writer = sample
    rows = _all_rows(run, writer)
    col = {name: i for i, name in enumerate(SAMPLE_COLUMNS)}
    assert {r[col["LoyaltyTier"]] for r in rows} == {"Gold", "Silver", "Bronze", ""}
    assert {r[col["IsVip"]] for r in rows} == {"true", "false"}
    assert all(re.fullmatch(r"\d+\.\d{2}", r[col["LifetimeValue"]]) for r in rows)
    births = [r[col["BirthDate"]] for r in rows]
    assert "" in births
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}T00:00:00Z", b) for b in births if b)
    assert all(datetime.fromisoformat(b) for b in births if b)


def test_customer_ids_are_unique(sample: tuple[GeneratedRun, MemoryWriter]) -> None:
    run, writer = sample
    ids = [r[0] for r in _all_rows(run, writer)]
    assert len(set(ids)) == len(ids)


def test_same_seed_gives_identical_files() -> None:
    _, first = _generate(profiles=500)
    _, second = _generate(profiles=500)
    assert first.blobs == second.blobs


def test_another_seed_gives_other_rows() -> None:
    run, first = _generate(profiles=500)
    _, second = _generate(profiles=500, seed=8)
    assert first.blobs[run.partition_blobs[0]] != second.blobs[run.partition_blobs[0]]


def test_model_json_lists_every_partition_without_header(sample: tuple[GeneratedRun, MemoryWriter]) -> None:
    run, writer = sample
    model = json.loads(writer.blobs[run.model_json_blob])
    (entity,) = model["entities"]
    assert entity["name"] == run.segment
    assert [p["location"] for p in entity["partitions"]] == [
        f"https://example.blob.core.windows.net/ci-exports/{name}" for name in run.partition_blobs
    ]
    assert {p["fileFormatSettings"]["columnHeaders"] for p in entity["partitions"]} == {False}


def test_model_json_attributes_follow_the_column_order(sample: tuple[GeneratedRun, MemoryWriter]) -> None:
    run, writer = sample
    (entity,) = json.loads(writer.blobs[run.model_json_blob])["entities"]
    assert [(a["name"], a["dataType"]) for a in entity["attributes"]] == list(
        zip(
            SAMPLE_COLUMNS,
            ["string"] * 7 + ["double", "dateTime", "boolean"],
            strict=True,
        )
    )


def test_model_json_is_written_last(sample: tuple[GeneratedRun, MemoryWriter]) -> None:
    run, writer = sample
    assert writer.order == [*run.partition_blobs, run.model_json_blob]


def test_layout_follows_customer_insights_paths() -> None:
    run, _ = _generate(
        profiles=10,
        partitions=2,
        export_folder="CustomerInsights_abc/BlobExport",
        segment="Vip",
        run_time=datetime(2020, 8, 24, 16, 33, tzinfo=timezone(timedelta(hours=2))),
    )
    assert run.run_folder == "CustomerInsights_abc/BlobExport/Vip/2020/08/24/1433"
    assert run.model_json_blob == "CustomerInsights_abc/BlobExport/model.json"
    assert run.partition_blobs == (f"{run.run_folder}/Vip_1.csv", f"{run.run_folder}/Vip_2.csv")


def test_locations_are_percent_encoded() -> None:
    run, writer = _generate(
        profiles=10, partitions=1, segment="High Value Ünits", location_base="https://a/c"
    )
    (entity,) = json.loads(writer.blobs[run.model_json_blob])["entities"]
    location = entity["partitions"][0]["location"]
    assert location.endswith("/High%20Value%20%C3%9Cnits_1.csv")
    assert location.startswith("https://a/c/CustomerInsights_")
    assert run.partition_blobs[0].endswith("/High Value Ünits_1.csv")


def test_more_partitions_than_rows_leaves_empty_partitions() -> None:
    run, writer = _generate(profiles=2, partitions=4)
    assert [len(_rows(writer.blobs[n])) for n in run.partition_blobs] == [1, 1, 0, 0]


def test_partitions_are_streamed_in_bounded_chunks() -> None:
    run, writer = _generate(profiles=20000, partitions=1)
    sizes = writer.chunk_sizes[run.partition_blobs[0]]
    assert len(sizes) > 4
    assert max(sizes) < 1024 * 1024


def test_writer_that_stops_early_is_an_error() -> None:
    def lazy(name: str, chunks: Iterable[bytes]) -> None:
        next(iter(chunks))

    with pytest.raises(RuntimeError, match="before consuming all"):
        generate_run(lazy, profiles=100, partitions=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"partitions": 0},
        {"profiles": -1},
        {"invalid_rate": -0.1},
        {"invalid_rate": 0.5, "missing_rate": 0.3, "duplicate_rate": 0.3},
    ],
)
def test_impossible_parameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be"):
        _generate(**kwargs)


def test_directory_writer_writes_blobs_as_files(tmp_path: Path) -> None:
    run = generate_run(directory_writer(tmp_path), profiles=50, partitions=2)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted([*run.partition_blobs, run.model_json_blob])


def test_directory_writer_refuses_names_outside_its_root(tmp_path: Path) -> None:
    write = directory_writer(tmp_path / "root")
    with pytest.raises(ValueError, match="relative path"):
        write("../escape.csv", [b"x"])


def test_cli_prints_the_expected_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--profiles", "300", "--partitions", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    expected = generate_run(MemoryWriter(), profiles=300, partitions=2).expected
    assert printed == asdict(expected)


def test_cli_writes_the_run_into_the_folder(tmp_path: Path) -> None:
    main(["--out", str(tmp_path), "--profiles", "30", "--partitions", "2", "--run-time", "2021-01-02T03:04"])
    models = list(tmp_path.rglob("model.json"))
    assert len(models) == 1
    (entity,) = json.loads(models[0].read_bytes())["entities"]
    assert all("/2021/01/02/0304/" in p["location"] for p in entity["partitions"])
