"""What an export run is, and how a blob, an HTTP call or a timer resolves to one.

All three ways in end here, so a run triggered twice (every partition file, a retry, a timer after a
blob event) gets the same durable instance id and starts once.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from shared.cdm_model import CdmModel, Entity, parse_model_json
from shared.config import ExportConfig, ExportsConfig
from shared.segment_file import CsvFormat

MODEL_JSON = "model.json"
_RUN_STAMP = re.compile(r"/(\d{4})/(\d{2})/(\d{2})/(\d{4})$")


class BlobReader(Protocol):
    """The one storage operation run resolution needs (``BlobStore`` provides it)."""

    def read_bytes(self, container: str, name: str) -> bytes: ...

    def list_names(self, container: str, prefix: str = "") -> Any: ...


class RunNotFoundError(LookupError):
    """An HTTP or timer request named a run that storage does not hold."""


class BlobKind(Enum):
    MODEL_JSON = "model.json"
    PARTITION = "partition"
    MANUAL_CSV = "manual csv"
    UNCLAIMED = "unclaimed"


@dataclass(frozen=True)
class BlobClaim:
    """Which export (and for a hand-dropped CSV, which segment) a blob belongs to."""

    kind: BlobKind
    export: ExportConfig | None = None
    segment: str | None = None


@dataclass(frozen=True)
class ExportRun:
    """One segment of one export run: the unit that becomes one orchestration and one Autopilot upload."""

    export: str
    segment: str
    container: str
    kind: str  # "cdm" (a Customer Insights run) or "csv" (a file dropped by hand)
    run_folder: str
    files: tuple[str, ...]
    fmt: CsvFormat
    columns: tuple[str, ...] | None = None
    version: str = ""  # the ETag of a hand-dropped file: a re-upload is a new run

    @property
    def instance_id(self) -> str:
        """Stable across triggers; durable instance ids cannot hold '/', so the run is hashed."""
        key = "|".join((self.export, self.segment, self.container, self.run_folder, self.version))
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
        return f"{instance_id_prefix(self.export)}{_slug(self.segment)}-{digest}"

    @property
    def label(self) -> str:
        """A readable name for the run in report paths: the run's timestamp folder or the file's stem."""
        match = _RUN_STAMP.search(self.run_folder)
        if self.kind == "cdm" and match:
            yyyy, mm, dd, hhmm = match.groups()
            return f"{yyyy}-{mm}-{dd}T{hhmm}"
        stem = posixpath.splitext(posixpath.basename(self.run_folder))[0]
        return f"{stem}-{self.instance_id[-8:]}"

    @property
    def report_prefix(self) -> str:
        return f"runs/{self.export}/{self.segment}/{self.label}"

    def to_input(self, *, dry_run: bool = False, trigger: str = "blob") -> dict[str, Any]:
        """The orchestration input: JSON-safe and small (file names, never contents)."""
        return {
            "export": self.export,
            "segment": self.segment,
            "container": self.container,
            "kind": self.kind,
            "run_folder": self.run_folder,
            "files": list(self.files),
            "column_headers": self.fmt.column_headers,
            "delimiter": self.fmt.delimiter,
            "encoding": self.fmt.encoding,
            "columns": list(self.columns) if self.columns is not None else None,
            "version": self.version,
            "instance_id": self.instance_id + ("-dryrun" if dry_run else ""),
            "report_prefix": self.report_prefix + ("/dry-run" if dry_run else ""),
            "dry_run": dry_run,
            "trigger": trigger,
        }

    @classmethod
    def from_input(cls, data: dict[str, Any]) -> ExportRun:
        return cls(
            export=data["export"],
            segment=data["segment"],
            container=data["container"],
            kind=data["kind"],
            run_folder=data["run_folder"],
            files=tuple(data["files"]),
            fmt=CsvFormat(
                column_headers=bool(data["column_headers"]),
                delimiter=data.get("delimiter", ","),
                encoding=data.get("encoding", "utf-8"),
            ),
            columns=tuple(data["columns"]) if data.get("columns") is not None else None,
            version=data.get("version", ""),
        )


def instance_id_prefix(export: str) -> str:
    """What every run of one export's instance id starts with (the HTTP API lists runs by it)."""
    return f"{_slug(export)}-"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "x"


def _partition_pattern(folder: str) -> re.Pattern[str]:
    prefix = re.escape(folder + "/") if folder else ""
    return re.compile(
        rf"^{prefix}(?P<seg>[^/]+)/(?:.+/)?\d{{4}}/\d{{2}}/\d{{2}}/\d{{4}}/(?P=seg)_[^/]*\.csv$", re.I
    )


def classify_blob(config: ExportsConfig, blob_name: str) -> BlobClaim:
    """Decide what a new blob means without reading it, so the trigger skips foreign files cheaply."""
    for export in config.exports.values():
        folder = export.folder
        inside = blob_name[len(folder) + 1 :] if folder else blob_name
        if folder and not blob_name.startswith(folder + "/"):
            continue
        if inside == MODEL_JSON:
            return BlobClaim(BlobKind.MODEL_JSON, export)
        if not inside.lower().endswith(".csv"):
            continue
        if _partition_pattern(folder).match(blob_name):
            return BlobClaim(BlobKind.PARTITION, export)
        segment_dir = inside.split("/", 1)[0] if "/" in inside else ""
        segment = export.segment(segment_dir) if segment_dir else None
        if segment is not None:
            return BlobClaim(BlobKind.MANUAL_CSV, export, segment.name)
    return BlobClaim(BlobKind.UNCLAIMED)


def runs_from_model(export: ExportConfig, model: CdmModel, container: str) -> list[ExportRun]:
    """The runs a ``model.json`` describes for the export's configured segments (absent ones skipped)."""
    runs = []
    by_lower = {name.lower(): entity for name, entity in model.entities.items()}
    for segment in export.segments:
        entity = by_lower.get(segment.name.lower())
        if entity is None or not entity.partitions:
            continue
        runs.append(_run_of_entity(export, segment.name, entity, container))
    return runs


def _run_of_entity(export: ExportConfig, segment: str, entity: Entity, container: str) -> ExportRun:
    first = entity.partitions[0]
    return ExportRun(
        export=export.name,
        segment=segment,
        container=container,
        kind="cdm",
        run_folder=entity.run_folder,
        files=tuple(p.blob_name for p in entity.partitions),
        fmt=first.fmt,
        columns=entity.attributes,
    )


def model_json_name(export: ExportConfig) -> str:
    return f"{export.folder}/{MODEL_JSON}" if export.folder else MODEL_JSON


def read_model(store: BlobReader, export: ExportConfig, container: str) -> CdmModel:
    name = model_json_name(export)
    return parse_model_json(
        store.read_bytes(container, name), source=f"{container}/{name}", container=container
    )


def manual_run(
    export: ExportConfig, segment: str, container: str, blob_name: str, etag: str = ""
) -> ExportRun:
    """A CSV dropped by hand is a run of one file with a header row."""
    return ExportRun(
        export=export.name,
        segment=segment,
        container=container,
        kind="csv",
        run_folder=blob_name,
        files=(blob_name,),
        fmt=CsvFormat(column_headers=True),
        version=etag.strip('"'),
    )


def resolve_blob(
    config: ExportsConfig, store: BlobReader, container: str, blob_name: str, etag: str = ""
) -> tuple[BlobClaim, list[ExportRun]]:
    """The runs a new blob completes. A partition starts its run only once ``model.json`` lists it."""
    claim = classify_blob(config, blob_name)
    if claim.export is None or claim.kind is BlobKind.UNCLAIMED:
        return claim, []
    export = claim.export
    if claim.kind is BlobKind.MANUAL_CSV:
        assert claim.segment is not None
        return claim, [manual_run(export, claim.segment, container, blob_name, etag)]
    try:
        model = read_model(store, export, container)
    except FileNotFoundError:
        return claim, []  # partitions written before model.json: the model.json trigger starts the run
    runs = runs_from_model(export, model, container)
    if claim.kind is BlobKind.PARTITION:
        runs = [run for run in runs if blob_name in run.files]
    return claim, runs


def latest_runs(
    config: ExportsConfig, store: BlobReader, export_name: str, container: str
) -> list[ExportRun]:
    """The runs the export's current ``model.json`` points at: what "export the latest" means."""
    export = config.export(export_name)
    try:
        model = read_model(store, export, container)
    except FileNotFoundError:
        raise RunNotFoundError(
            f"export '{export_name}' has no run yet: no {model_json_name(export)} in container '{container}'"
        ) from None
    return runs_from_model(export, model, container)


def named_run(
    config: ExportsConfig, store: BlobReader, export_name: str, segment: str, run_folder: str, container: str
) -> ExportRun:
    """An older Customer Insights run (its folder) or a hand-dropped file (its blob name), by name."""
    export = config.export(export_name)
    segment_config = export.segment(segment)
    if segment_config is None:
        known = ", ".join(s.name for s in export.segments)
        raise RunNotFoundError(f"export '{export_name}' has no segment '{segment}' (configured: {known})")
    run_folder = run_folder.strip("/")
    if run_folder.lower().endswith(".csv"):
        if not any(name == run_folder for name in store.list_names(container, run_folder)):
            raise RunNotFoundError(f"no file '{run_folder}' in container '{container}'")
        return manual_run(export, segment_config.name, container, run_folder)
    files = sorted(
        (
            name
            for name in store.list_names(container, run_folder + "/")
            if name.lower().endswith(".csv") and "/" not in name[len(run_folder) + 1 :]
        ),
        key=_partition_order,
    )
    if not files:
        raise RunNotFoundError(f"no partition files under '{run_folder}/' in container '{container}'")
    model = read_model(store, export, container)
    entity = {n.lower(): e for n, e in model.entities.items()}.get(segment_config.name.lower())
    if entity is None:
        raise RunNotFoundError(f"{model_json_name(export)} does not describe segment '{segment_config.name}'")
    fmt = entity.partitions[0].fmt if entity.partitions else CsvFormat(column_headers=False)
    return ExportRun(
        export=export.name,
        segment=segment_config.name,
        container=container,
        kind="cdm",
        run_folder=run_folder,
        files=tuple(files),
        fmt=fmt,
        columns=entity.attributes,
    )


def _partition_order(name: str) -> tuple[int, str]:
    match = re.search(r"_(\d+)\.csv$", name, re.I)
    return (int(match.group(1)) if match else 0, name)
