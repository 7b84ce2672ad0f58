"""The parts of a Customer Insights ``model.json`` (CDM folder format) that say what a run exported.

``model.json`` is the run's table of contents: it is rewritten when an export run finishes and its
partitions point at that run's files, so runs are found through it rather than by scanning folders
(the folder layout has changed over the years). Header-less partition files get their column names
from the entity's attributes, so the attribute order matters and is kept.
"""

from __future__ import annotations

import codecs
import ipaddress
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote, urlsplit

from shared.segment_file import CsvFormat

_CSV_FORMAT_TYPE = "CsvFormatSettings"


class ModelJsonError(ValueError):
    """model.json is not usable; the message names the file and the JSON path of the bad value."""

    def __init__(self, message: str, *, file: str, path: str | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.path = path


@dataclass(frozen=True)
class Partition:
    """One file of an entity; ``blob_name`` is its name inside the exports container."""

    name: str
    location: str
    blob_name: str
    fmt: CsvFormat


@dataclass(frozen=True)
class Entity:
    """An exported table (a segment): its column names in file order, and this run's partition files."""

    name: str
    attributes: tuple[str, ...]
    partitions: tuple[Partition, ...]

    @property
    def run_folder(self) -> str:
        """The folder of this run's partitions (``.../<Table>/yyyy/MM/dd/HHmm``); "" without partitions."""
        folders = {posixpath.dirname(p.blob_name) for p in self.partitions}
        if not folders:
            return ""
        if len(folders) == 1:
            return folders.pop()
        return posixpath.commonpath(sorted(folders))


@dataclass(frozen=True)
class CdmModel:
    """A parsed model.json: the export's name and its local entities by name (as spelled in the file)."""

    name: str
    entities: Mapping[str, Entity]

    def entity(self, name: str) -> Entity | None:
        """Case-insensitive: configured segment names need not match the table's capitalisation."""
        found = self.entities.get(name)
        if found is not None:
            return found
        wanted = name.lower()
        return next((e for n, e in self.entities.items() if n.lower() == wanted), None)


def blob_name_from_location(location: str, container: str) -> str:
    """The blob name a partition ``location`` URL points at, inside ``container``.

    Accepts account URLs (``https://<acct>.blob.core.windows.net/<container>/<path>``, also
    ``.dfs.`` and other clouds), path-style emulator URLs (``http://127.0.0.1:10000/<acct>/<container>/<path>``)
    and ``abfss://<container>@<acct>.dfs.core.windows.net/<path>``. The path is percent-decoded.
    An empty ``container`` accepts any container (for a model.json copied out of storage).
    Raises ValueError when the URL is not a blob URL or points into another container.
    """
    parts = urlsplit(location.strip())
    scheme = parts.scheme.lower()
    if scheme in ("abfs", "abfss", "wasb", "wasbs"):
        found_container = parts.username or ""
        path = parts.path.lstrip("/")
    elif scheme in ("http", "https") and parts.hostname:
        segments = parts.path.lstrip("/").split("/")
        if _is_path_style(parts.hostname):
            segments = segments[1:]  # the first segment is the account name
        found_container, path = segments[0] if segments else "", "/".join(segments[1:])
    else:
        raise ValueError(
            f"'{location}' is not a blob URL (https://<account>.blob.core.windows.net/<container>/...)"
        )
    blob_name = unquote(path)
    if not found_container or not blob_name:
        raise ValueError(f"'{location}' does not name a container and a blob")
    if container and unquote(found_container) != container:
        raise ValueError(
            f"'{location}' points into container '{unquote(found_container)}', not '{container}'"
        )
    return blob_name


def _is_path_style(host: str) -> bool:
    """Emulators (Azurite) put the account in the path; real accounts (and custom domains) in the host."""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_model_json(data: bytes, *, source: str, container: str) -> CdmModel:
    """Parse ``model.json`` bytes; ``source`` names the file in errors, ``container`` is where it lives."""
    try:
        root = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ModelJsonError(
            f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})", file=source
        ) from None
    except json.JSONDecodeError as exc:
        raise ModelJsonError(
            f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}", file=source
        ) from None
    return _Parser(source, container).model(root)


class _Parser:
    def __init__(self, source: str, container: str) -> None:
        self.source = source
        self.container = container

    def fail(self, path: str, message: str) -> ModelJsonError:
        return ModelJsonError(f"{self.source}: {path}: {message}", file=self.source, path=path)

    def obj(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be an object, got {type(value).__name__}")
        return value

    def text(self, obj: Mapping[str, Any], key: str, path: str) -> str:
        value = obj.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{path}.{key}" if path else key, "must be a non-empty string")
        return value

    def items(self, obj: Mapping[str, Any], key: str, path: str, *, required: bool) -> list[Any]:
        value = obj.get(key)
        if value is None and not required:
            return []
        if not isinstance(value, list):
            raise self.fail(f"{path}.{key}" if path else key, "must be a list")
        return value

    def model(self, root: Any) -> CdmModel:
        if not isinstance(root, dict):
            raise self.fail("$", "model.json must be a JSON object")
        name = root.get("name")
        entities: dict[str, Entity] = {}
        seen_blobs: dict[str, str] = {}
        for index, value in enumerate(self.items(root, "entities", "", required=True)):
            path = f"entities[{index}]"
            raw = self.obj(value, path)
            if raw.get("$type", "LocalEntity") != "LocalEntity":
                continue  # reference entities describe no files of this export
            entity = self.entity(raw, path, seen_blobs)
            clash = next((n for n in entities if n.lower() == entity.name.lower()), None)
            if clash is not None:
                raise self.fail(f"{path}.name", f"entity '{entity.name}' is described twice")
            entities[entity.name] = entity
        return CdmModel(name=name if isinstance(name, str) else "", entities=MappingProxyType(entities))

    def entity(self, raw: Mapping[str, Any], path: str, seen_blobs: dict[str, str]) -> Entity:
        name = self.text(raw, "name", path)
        attributes = tuple(
            self.text(self.obj(a, f"{path}.attributes[{i}]"), "name", f"{path}.attributes[{i}]")
            for i, a in enumerate(self.items(raw, "attributes", path, required=True))
        )
        partitions = []
        for index, value in enumerate(self.items(raw, "partitions", path, required=False)):
            part_path = f"{path}.partitions[{index}]"
            partition = self.partition(self.obj(value, part_path), part_path)
            if partition.blob_name in seen_blobs:
                raise self.fail(
                    f"{part_path}.location",
                    f"'{partition.blob_name}' is already listed at {seen_blobs[partition.blob_name]}",
                )
            seen_blobs[partition.blob_name] = part_path
            partitions.append(partition)
        return Entity(name=name, attributes=attributes, partitions=tuple(partitions))

    def partition(self, raw: Mapping[str, Any], path: str) -> Partition:
        location = self.text(raw, "location", path)
        try:
            blob_name = blob_name_from_location(location, self.container)
        except ValueError as exc:
            raise self.fail(f"{path}.location", str(exc)) from None
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            name = posixpath.splitext(posixpath.basename(blob_name))[0]
        return Partition(name=name, location=location, blob_name=blob_name, fmt=self.csv_format(raw, path))

    def csv_format(self, raw: Mapping[str, Any], path: str) -> CsvFormat:
        """CDM's rule: absent settings mean no header row, comma, UTF-8."""
        settings_path = f"{path}.fileFormatSettings"
        value = raw.get("fileFormatSettings")
        if value is None:
            return CsvFormat(column_headers=False)
        settings = self.obj(value, settings_path)
        kind = settings.get("$type", _CSV_FORMAT_TYPE)
        if kind != _CSV_FORMAT_TYPE:
            raise self.fail(f"{settings_path}.$type", f"unsupported file format '{kind}' (only CSV is read)")
        headers = settings.get("columnHeaders", False)
        if not isinstance(headers, bool):
            raise self.fail(f"{settings_path}.columnHeaders", "must be true or false")
        delimiter = settings.get("delimiter", ",")
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '"\r\n':
            raise self.fail(f"{settings_path}.delimiter", f"{delimiter!r} is not a one-character delimiter")
        encoding = settings.get("encoding", "UTF-8")
        if not isinstance(encoding, str):
            raise self.fail(f"{settings_path}.encoding", "must be a string")
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise self.fail(f"{settings_path}.encoding", f"unknown encoding '{encoding}'") from None
        normalized = "utf-8" if codecs.lookup(encoding).name == "utf-8" else encoding
        return CsvFormat(column_headers=headers, delimiter=delimiter, encoding=normalized)
