"""Realistic Customer Insights segment exports, generated from a seed, for the demo, tests and benchmarks.

The product must never lose or silently drop a profile, so the inputs it is tried on have to carry the
awkward cases a real tenant has (non-Latin names, quotes, commas and line breaks inside values, invalid,
missing and repeated emails) and, next to them, the exact numbers the product must arrive at. Those
numbers are counted while the rows are produced, never by re-reading the files, so a test compares two
independent computations.

Everything streams: a run of 1,000,000 rows is produced chunk by chunk and the only state kept across
rows is a handful of counters (an earlier email is re-derived from its index, not remembered).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

Writer = Callable[[str, Iterable[bytes]], None]

SAMPLE_COLUMNS = (
    "CustomerId",
    "FirstName",
    "LastName",
    "EmailAddress",
    "City",
    "Country",
    "LoyaltyTier",
    "LifetimeValue",
    "BirthDate",
    "IsVip",
)
SAMPLE_DATA_TYPES = (
    "string",
    "string",
    "string",
    "string",
    "string",
    "string",
    "string",
    "double",
    "dateTime",
    "boolean",
)

DEFAULT_EXPORT_FOLDER = "CustomerInsights_3f2b9c1e-5a7d-4e8f-9b6a-0c1d2e3f4a5b/SegmentExport"
DEFAULT_RUN_TIME = datetime(2024, 5, 17, 14, 33, tzinfo=UTC)
DEFAULT_LOCATION_BASE = "https://example.blob.core.windows.net/ci-exports"

CSV_FORMAT_SETTINGS: dict[str, Any] = {
    "$type": "CsvFormatSettings",
    "columnHeaders": False,
    "delimiter": ",",
    "quoteStyle": "QuoteStyle.Csv",
    "csvStyle": "CsvStyle.QuoteAlways",
    "encoding": "UTF-8",
}

_BOM = "\ufeff".encode()
# A chunk is flushed once it holds this many characters: big enough that per-chunk overhead vanishes,
# small enough that a writer (or an upload's block buffer) never holds much.
_CHUNK_CHARS = 256 * 1024

# (display, ASCII slug for the email local part). Display values cover what real tenants carry:
# diacritics, non-Latin scripts, nicknames in quotes, suffixes after a comma.
_FIRST_NAMES: tuple[tuple[str, str], ...] = (
    ("Zoë", "zoe"),
    ("Łukasz", "lukasz"),
    ("José", "jose"),
    ("Søren", "soren"),
    ("Renée", "renee"),
    ("王", "wang"),
    ("Anna", "anna"),
    ("Mohammed", "mohammed"),
    ("Siobhán", "siobhan"),
    ("François", "francois"),
    ("Ægir", "aegir"),
    ("Ольга", "olga"),
    ("Yūki", "yuki"),
    ("Björn", "bjorn"),
    ("María José", "maria-jose"),
    ('Robert "Bob"', "robert"),
    ("Chloé", "chloe"),
    ("İsmail", "ismail"),
    ("Thảo", "thao"),
    ("Αλέξανδρος", "alexandros"),
    ("محمد", "muhammad"),
    ("Priya", "priya"),
    ("John", "john"),
    ("Emma", "emma"),
)
_LAST_NAMES: tuple[tuple[str, str], ...] = (
    ("Müller", "mueller"),
    ("Ñúñez", "nunez"),
    ("García", "garcia"),
    ("Kowalski", "kowalski"),
    ("Smith, Jr.", "smith"),
    ("O'Brien", "obrien"),
    ('Van "Der" Berg', "vanderberg"),
    ("Nguyễn", "nguyen"),
    ("李", "li"),
    ("Øster", "oster"),
    ("Dvořák", "dvorak"),
    ("Jørgensen", "jorgensen"),
    ("Schröder", "schroeder"),
    ("D'Angelo, III", "dangelo"),
    ('Lee "The Hammer"', "lee"),
    ("Иванов", "ivanov"),
    ("Papadopoulos", "papadopoulos"),
    ("Şahin", "sahin"),
    ("Kim", "kim"),
    ("Brown", "brown"),
    ("Lefèvre", "lefevre"),
    ("Sánchez", "sanchez"),
)
_CITIES = (
    "Saint-Jean\nde-Luz",
    "Stratford-upon-Avon\r\nWarwickshire",
    "Washington, D.C.",
    '"Big Apple" New York',
    "Łódź",
    "São Paulo",
    "Zürich",
    "北京",
    "Kraków",
    "Reykjavík",
    "Montréal",
    "København",
    "Seattle",
    "London",
    "Paris",
    "Berlin",
    "",
)
_COUNTRIES = (
    "France",
    "Poland",
    "Brazil",
    "Switzerland",
    "China",
    "Denmark",
    "Canada",
    "United States",
    "Germany",
    "Korea, Republic of",
    "Côte d'Ivoire",
    "",
)
_TIERS = ("Gold", "Silver", "Bronze", "")
_VIP = ("true", "false", "false", "false")
# Real TLDs only: email-validator rejects special-use ones (.test, .local, .invalid) even offline.
_DOMAINS = (
    "example.com",
    "example.org",
    "example.net",
    "mail.example.com",
    "example-1.com",
    "example-2.com",
    "example-3.com",
    "example-4.org",
)
_MISSING = ("", "", " ", "   ")

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class ExpectedCounts:
    """What a correct export of the run must end with; ``rows`` is the sum of the other four."""

    rows: int
    unique_valid: int
    invalid_email: int
    missing_email: int
    duplicate_email: int


@dataclass(frozen=True)
class GeneratedRun:
    """Where a generated run was written, and what processing it must yield."""

    export_folder: str
    segment: str
    run_folder: str
    model_json_blob: str
    partition_blobs: tuple[str, ...]
    expected: ExpectedCounts


@dataclass
class _Tally:
    rows: int = 0
    unique_valid: int = 0
    invalid_email: int = 0
    missing_email: int = 0
    duplicate_email: int = 0

    def freeze(self) -> ExpectedCounts:
        return ExpectedCounts(
            rows=self.rows,
            unique_valid=self.unique_valid,
            invalid_email=self.invalid_email,
            missing_email=self.missing_email,
            duplicate_email=self.duplicate_email,
        )


def _mix(value: int) -> int:
    """splitmix64 finaliser: an earlier profile's identity is recomputed from its index, not stored."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _identity(seed: int, index: int) -> tuple[int, int, str]:
    """First-name index, last-name index and email of the ``index``-th unique valid profile."""
    h = _mix((seed & _MASK64) * 0x100000001B3 ^ index)
    first = h % len(_FIRST_NAMES)
    last = (h >> 16) % len(_LAST_NAMES)
    domain = _DOMAINS[(h >> 32) % len(_DOMAINS)]
    return first, last, f"{_FIRST_NAMES[first][1]}.{_LAST_NAMES[last][1]}.{index}@{domain}"


def _invalid_email(kind: int, first: str, last: str, n: int) -> str:
    """Addresses no validator accepts, one per kind of mistake seen in CRM data."""
    if kind == 0:
        return f"{first}.{last}.{n}.example.com"  # no @
    if kind == 1:
        return f"{first}@{last}.{n}@example.com"  # two @
    if kind == 2:
        return f"{first} {last}.{n}@example.com"  # space inside
    if kind == 3:
        return f"{first}.{last}.{n}@example.com."  # trailing dot in the domain
    if kind == 4:
        return f"{first}.{last}.{n}@"  # missing domain
    if kind == 5:
        return f"{first}.{last}.{n}@example"  # "a@b": domain without a dot
    return f"@{last}-{n}.example.org"  # missing local part


def _duplicate_variant(kind: int, email: str) -> str:
    """A repeat as CRMs store it: same address, other case and stray spaces (" Foo@Example.com ")."""
    if kind == 1:
        return f" {email} "
    if kind == 2:
        return email.title()
    if kind == 3:
        return f" {email.title()} "
    if kind == 4:
        return email.upper()
    return email


class _RowSource:
    """One run's rows in order; the single RNG and counters span all partitions."""

    def __init__(
        self, seed: int, invalid_rate: float, missing_rate: float, duplicate_rate: float, tally: _Tally
    ) -> None:
        self._seed = seed
        self._rng = random.Random(seed)
        self._invalid_cut = invalid_rate
        self._missing_cut = invalid_rate + missing_rate
        self._duplicate_cut = invalid_rate + missing_rate + duplicate_rate
        self._tally = tally

    def chunks(self, rows: int, *, bom: bool) -> Iterator[bytes]:
        """CSV bytes for the next ``rows`` rows, in bounded chunks (QuoteAlways, CRLF, no header)."""
        rng = self._rng
        rand = rng.random
        randrange = rng.randrange
        choice = rng.choice
        getrandbits = rng.getrandbits
        tally = self._tally
        seed = self._seed
        firsts, lasts = _FIRST_NAMES, _LAST_NAMES
        n_first, n_last = len(firsts), len(lasts)
        invalid_cut, missing_cut, duplicate_cut = self._invalid_cut, self._missing_cut, self._duplicate_cut

        if bom:
            yield _BOM
        lines: list[str] = []
        size = 0
        for _ in range(rows):
            category = rand()
            if category < invalid_cut:
                fi, li = randrange(n_first), randrange(n_last)
                email = _invalid_email(randrange(7), firsts[fi][1], lasts[li][1], tally.rows)
                tally.invalid_email += 1
            elif category < missing_cut:
                fi, li = randrange(n_first), randrange(n_last)
                email = choice(_MISSING)
                tally.missing_email += 1
            elif category < duplicate_cut and tally.unique_valid:
                # The same customer again (projected attributes repeat rows): same names, same address.
                fi, li, email = _identity(seed, randrange(tally.unique_valid))
                email = _duplicate_variant(randrange(6), email)
                tally.duplicate_email += 1
            else:
                fi, li, email = _identity(seed, tally.unique_valid)
                tally.unique_valid += 1
            tally.rows += 1

            names = rand()
            first = "" if names < 0.03 else firsts[fi][0]
            last = "" if 0.02 < names < 0.05 else lasts[li][0]
            h = getrandbits(128)
            customer_id = (
                f"{h >> 96:08x}-{(h >> 80) & 0xFFFF:04x}-4{(h >> 68) & 0xFFF:03x}-"
                f"{0x8000 | ((h >> 52) & 0x3FFF):04x}-{h & 0xFFFFFFFFFFFF:012x}"
            )
            birth = (
                ""
                if (h & 0x1F) == 0
                else f"{1940 + (h >> 5) % 66:04d}-{1 + (h >> 12) % 12:02d}-{1 + (h >> 16) % 28:02d}T00:00:00Z"
            )
            fields = (
                customer_id,
                first,
                last,
                email,
                choice(_CITIES),
                choice(_COUNTRIES),
                choice(_TIERS),
                f"{rand() * 25000:.2f}",
                birth,
                _VIP[(h >> 24) & 3],
            )
            line = '"' + '","'.join([v.replace('"', '""') for v in fields]) + '"\r\n'
            lines.append(line)
            size += len(line)
            if size >= _CHUNK_CHARS:
                yield "".join(lines).encode()
                lines.clear()
                size = 0
        if lines:
            yield "".join(lines).encode()


def _until_done(chunks: Iterator[bytes], done: list[bool]) -> Iterator[bytes]:
    """Passes ``chunks`` through and records whether the consumer drained them."""
    yield from chunks
    done.append(True)


def _run_folder(export_folder: str, segment: str, run_time: datetime) -> str:
    when = run_time.astimezone(UTC) if run_time.tzinfo else run_time.replace(tzinfo=UTC)
    return f"{export_folder}/{segment}/{when:%Y/%m/%d/%H%M}"


def _partition_sizes(rows: int, partitions: int) -> list[int]:
    base, extra = divmod(rows, partitions)
    return [base + (1 if i < extra else 0) for i in range(partitions)]


def build_model_json(
    export_folder: str,
    segment: str,
    partition_blobs: Sequence[str],
    *,
    location_base: str,
    run_time: datetime,
) -> bytes:
    """The CDM ``model.json`` Customer Insights writes for one exported segment."""
    when = (run_time.astimezone(UTC) if run_time.tzinfo else run_time.replace(tzinfo=UTC)).isoformat()
    when = when.replace("+00:00", "Z")
    base = location_base.rstrip("/")
    model = {
        "name": export_folder.rstrip("/").rsplit("/", 1)[-1],
        "description": "Segment export generated by devtools.sample_data",
        "version": "1.0",
        "modifiedTime": when,
        "entities": [
            {
                "$type": "LocalEntity",
                "name": segment,
                "description": "",
                "attributes": [
                    {"name": name, "dataType": data_type}
                    for name, data_type in zip(SAMPLE_COLUMNS, SAMPLE_DATA_TYPES, strict=True)
                ],
                "partitions": [
                    {
                        "name": PurePosixPath(blob).stem,
                        "refreshTime": when,
                        "location": f"{base}/{quote(blob, safe='/')}",
                        "fileFormatSettings": dict(CSV_FORMAT_SETTINGS),
                    }
                    for blob in partition_blobs
                ],
            }
        ],
    }
    return json.dumps(model, indent=2, ensure_ascii=False).encode()


def generate_run(
    writer: Writer,
    *,
    profiles: int,
    partitions: int,
    seed: int = 7,
    export_folder: str = DEFAULT_EXPORT_FOLDER,
    segment: str = "HighValueSegment",
    run_time: datetime = DEFAULT_RUN_TIME,
    location_base: str = DEFAULT_LOCATION_BASE,
    invalid_rate: float = 0.01,
    missing_rate: float = 0.01,
    duplicate_rate: float = 0.02,
) -> GeneratedRun:
    """Write one export run (partitions first, ``model.json`` last, as Customer Insights does).

    ``writer`` must consume every chunk it is given before returning: the expected counts are tallied
    as the chunks are produced, so a writer that stops early would leave them wrong.
    """
    if profiles < 0:
        raise ValueError(f"profiles must be >= 0, got {profiles}")
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    rates = {"invalid_rate": invalid_rate, "missing_rate": missing_rate, "duplicate_rate": duplicate_rate}
    for name, rate in rates.items():
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {rate}")
    if sum(rates.values()) > 1.0:
        raise ValueError(
            f"invalid_rate + missing_rate + duplicate_rate must be <= 1, got {sum(rates.values())}"
        )
    export_folder = export_folder.strip("/")

    run_folder = _run_folder(export_folder, segment, run_time)
    tally = _Tally()
    source = _RowSource(seed, invalid_rate, missing_rate, duplicate_rate, tally)
    blobs: list[str] = []
    for number, rows in enumerate(_partition_sizes(profiles, partitions), start=1):
        blob = f"{run_folder}/{segment}_{number}.csv"
        finished: list[bool] = []
        writer(blob, _until_done(source.chunks(rows, bom=number == 1), finished))
        if not finished:
            raise RuntimeError(
                f"writer returned before consuming all of '{blob}'; expected counts would be wrong"
            )
        blobs.append(blob)

    model_blob = f"{export_folder}/model.json"
    writer(
        model_blob,
        (build_model_json(export_folder, segment, blobs, location_base=location_base, run_time=run_time),),
    )
    return GeneratedRun(
        export_folder=export_folder,
        segment=segment,
        run_folder=run_folder,
        model_json_blob=model_blob,
        partition_blobs=tuple(blobs),
        expected=tally.freeze(),
    )


def directory_writer(root: Path) -> Writer:
    """Blobs as files under ``root``; each appears whole (temp file + rename) so watchers never see half."""

    def write(name: str, chunks: Iterable[bytes]) -> None:
        relative = PurePosixPath(name)
        if relative.is_absolute() or ".." in relative.parts or not relative.parts:
            raise ValueError(f"blob name must be a relative path inside the root, got '{name}'")
        target = root.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            with temp.open("wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    return write


def container_writer(container_client: Any) -> Writer:
    """Blobs uploaded to an azure ``ContainerClient`` as a stream (block upload; memory stays bounded)."""
    from azure.storage.blob import ContentSettings

    def write(name: str, chunks: Iterable[bytes]) -> None:
        content_type = "application/json" if name.endswith(".json") else "text/csv; charset=utf-8"
        # A generator, not the iterable itself: the SDK refuses lists/tuples and would buffer other types.
        container_client.upload_blob(
            name,
            data=(chunk for chunk in chunks),
            overwrite=True,
            content_settings=ContentSettings(content_type=content_type),
        )

    return write


def _parse_time(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m devtools.sample_data``: write a run into a folder, print its expected counts."""
    parser = argparse.ArgumentParser(
        prog="python -m devtools.sample_data",
        description="Write a realistic Customer Insights segment export into a folder.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder standing for the container")
    parser.add_argument("--profiles", type=int, required=True, help="data rows over all partitions")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--segment", default="HighValueSegment")
    parser.add_argument("--export-folder", default=DEFAULT_EXPORT_FOLDER)
    parser.add_argument(
        "--run-time", type=_parse_time, default=DEFAULT_RUN_TIME, help="ISO 8601, UTC if naive"
    )
    parser.add_argument("--location-base", default=DEFAULT_LOCATION_BASE)
    parser.add_argument("--invalid-rate", type=float, default=0.01)
    parser.add_argument("--missing-rate", type=float, default=0.01)
    parser.add_argument("--duplicate-rate", type=float, default=0.02)
    args = parser.parse_args(argv)
    try:
        run = generate_run(
            directory_writer(args.out),
            profiles=args.profiles,
            partitions=args.partitions,
            seed=args.seed,
            export_folder=args.export_folder,
            segment=args.segment,
            run_time=args.run_time,
            location_base=args.location_base,
            invalid_rate=args.invalid_rate,
            missing_rate=args.missing_rate,
            duplicate_rate=args.duplicate_rate,
        )
    except ValueError as error:
        parser.error(str(error))
    print(json.dumps(asdict(run.expected)))
    print(f"wrote {len(run.partition_blobs)} partition(s) to {args.out / run.run_folder}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
