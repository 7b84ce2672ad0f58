"""The export configuration: which Customer Insights exports go to which Autopilot account, and how.

The configuration is written by hand by marketing-data engineers and read by every trigger, so it is
validated completely up front: a typo ("shedule", "MailingCty", connection "mian") must fail at load
time with the export and the field named, never silently disable a schedule or drop a field at
run time. Every problem found is reported at once, so one edit-and-validate round fixes them all.

JSON shape (see ``examples/exports.json``)::

    {
      "connections": {"<name>": {"display_name": "...", "key_secret_name": "...", "requests_per_second": 5}},
      "exports": [
        {"name": "...", "connection": "<name>", "folder": "CustomerInsights_<id>/<ExportName>",
         "segments": [{"name": "<TableName>", "list_title": "<Autopilot list title>"}],
         "email_column": "...", "first_name_column": "...", "last_name_column": "...",
         "fields": [{"column": "...", "field": "MailingCity"},
                    {"column": "...", "custom": "Loyalty Tier", "type": "string"}],
         "schedule": "0 6 * * *", "export_on_arrival": true}
      ]
    }

``"$comment"`` is accepted (and ignored) in every object, since JSON has no comments.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from croniter import croniter

CUSTOM_FIELD_TYPES = ("string", "integer", "float", "date", "boolean")

STANDARD_FIELDS: frozenset[str] = frozenset(
    {
        "Email",
        "FirstName",
        "LastName",
        "Salutation",
        "Company",
        "Phone",
        "MobilePhone",
        "Website",
        "LeadSource",
        "Status",
        "Title",
        "Industry",
        "NumberOfEmployees",
        "MailingStreet",
        "MailingCity",
        "MailingState",
        "MailingPostalCode",
        "MailingCountry",
        "Twitter",
        "LinkedIn",
        "unsubscribed",
    }
)
"""Autopilot's standard contact fields, spelled exactly as the API expects them."""

# Standard fields that have their own configuration key: mapping them under "fields" as well would
# give two sources for one value.
_DEDICATED_FIELDS = {
    "Email": "email_column",
    "FirstName": "first_name_column",
    "LastName": "last_name_column",
}

COMMENT_KEY = "$comment"
DEFAULT_REQUESTS_PER_SECOND = 5.0

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")
_SECRET_NAME_RE = re.compile(r"[A-Za-z0-9-]{1,127}\Z")

_TOP_KEYS = ("connections", "exports")
_CONNECTION_KEYS = ("display_name", "key_secret_name", "requests_per_second")
_EXPORT_KEYS = (
    "name",
    "connection",
    "folder",
    "segments",
    "email_column",
    "first_name_column",
    "last_name_column",
    "fields",
    "schedule",
    "export_on_arrival",
)
_SEGMENT_KEYS = ("name", "list_title")
_FIELD_KEYS = ("column", "field", "custom", "type")


class ConfigError(ValueError):
    """The configuration is unusable; the message names the export (or connection) and the field.

    When several problems were found, ``problems`` holds one error per problem (this error's
    ``export``/``field`` are the first one's) and the message has one line per problem.
    """

    def __init__(
        self,
        message: str,
        *,
        export: str | None = None,
        field: str | None = None,
        connection: str | None = None,
        problems: tuple[ConfigError, ...] = (),
    ) -> None:
        super().__init__(message)
        self.export = export
        self.field = field
        self.connection = connection
        self.problems: tuple[ConfigError, ...] = problems or (self,)


@dataclass(frozen=True)
class Connection:
    """One Autopilot account: its key lives in Key Vault, and its rate limit is shared by all exports."""

    name: str
    display_name: str
    key_secret_name: str
    requests_per_second: float = DEFAULT_REQUESTS_PER_SECOND


@dataclass(frozen=True)
class FieldMapping:
    """A source column feeding one Autopilot field (standard, or a typed custom field)."""

    column: str
    target: str
    custom_type: str | None

    @property
    def is_custom(self) -> bool:
        return self.custom_type is not None


@dataclass(frozen=True)
class SegmentConfig:
    """A Customer Insights segment (a table of the export) and the Autopilot list that stands for it."""

    name: str
    list_title: str


@dataclass(frozen=True)
class ExportConfig:
    """One Customer Insights export (a folder in the exports container) and how its rows map to contacts."""

    name: str
    connection: str
    folder: str
    segments: tuple[SegmentConfig, ...]
    email_column: str
    first_name_column: str | None
    last_name_column: str | None
    fields: tuple[FieldMapping, ...]
    schedule: str | None
    export_on_arrival: bool = True

    def segment(self, name: str) -> SegmentConfig | None:
        """Case-insensitive: segment names come from folder names and HTTP calls typed by people."""
        wanted = name.lower()
        for segment in self.segments:
            if segment.name.lower() == wanted:
                return segment
        return None


@dataclass(frozen=True)
class ExportsConfig:
    """Everything configured: connections by name and exports by name (read-only mappings)."""

    connections: Mapping[str, Connection]
    exports: Mapping[str, ExportConfig]

    def export(self, name: str) -> ExportConfig:
        """Exact name first, then case-insensitively; a KeyError names the exports that exist."""
        found = self.exports.get(name)
        if found is not None:
            return found
        for export_name, export in self.exports.items():
            if export_name.lower() == name.lower():
                return export
        known = ", ".join(sorted(self.exports)) or "none"
        raise KeyError(f"unknown export '{name}' (configured: {known})")

    def connection_for(self, export: ExportConfig) -> Connection:
        return self.connections[export.connection]


def custom_field_key(name: str, custom_type: str) -> str:
    """Autopilot's key for a custom field: ``<type>--<Name>`` with spaces written as ``--``."""
    return f"{custom_type}--{name.replace(' ', '--')}"


# --------------------------------------------------------------------------------------- loading


def load_config(location: str, *, read_blob: Callable[[str, str], bytes] | None = None) -> ExportsConfig:
    """Read the configuration from a path, inline JSON (starts with ``{``) or ``blob:<container>/<path>``.

    A missing file raises FileNotFoundError (and a missing blob whatever ``read_blob`` raises), so
    callers can tell "not there" from "there but wrong" (ConfigError).
    """
    text = location.strip()
    if text.startswith("{"):
        return parse_config(text, source="inline JSON")
    if text.startswith("blob:"):
        container, _, path = text[len("blob:") :].lstrip("/").partition("/")
        if not container or not path:
            raise ConfigError(
                f"exports config '{location}': a blob location must be 'blob:<container>/<path>'"
            )
        if read_blob is None:
            raise ConfigError(f"exports config '{location}': no blob storage is available to read it from")
        return parse_config(read_blob(container, path), source=text)
    return parse_config(Path(text).read_bytes(), source=text)


def parse_config(data: Any, *, source: str) -> ExportsConfig:
    """Validate parsed JSON (or JSON text/bytes) into an :class:`ExportsConfig`, or raise ConfigError."""
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"exports config '{source}': not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
    if isinstance(data, str):
        data = _parse_json(data, source)
    problems = _Problems(source)
    config = _parse_root(problems, data)
    problems.raise_if_any()
    assert config is not None
    return config


def _parse_json(text: str, source: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                raise ConfigError(
                    f"exports config '{source}': field '{key}': appears twice in the same object", field=key
                )
            result[key] = value
        return result

    def no_constants(name: str) -> Any:
        raise ConfigError(f"exports config '{source}': '{name}' is not valid JSON")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"exports config '{source}': invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


# ------------------------------------------------------------------------------------ validation


class _Problems:
    """Collects every problem so that one validation round reports them all."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[ConfigError] = []

    def add(
        self,
        message: str,
        *,
        export: str | None = None,
        connection: str | None = None,
        field: str | None = None,
    ) -> None:
        where = [f"exports config '{self.source}'"]
        if export is not None:
            where.append(f"export '{export}'")
        if connection is not None:
            where.append(f"connection '{connection}'")
        if field is not None:
            where.append(f"field '{field}'")
        text = ": ".join([*where, message])
        self.items.append(ConfigError(text, export=export, field=field, connection=connection))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        first = self.items[0]
        message = "\n".join(str(item) for item in self.items)
        raise ConfigError(
            message,
            export=first.export,
            field=first.field,
            connection=first.connection,
            problems=tuple(self.items),
        )


class _Scope:
    """Where a value sits (export or connection, and the path to the field) for error messages."""

    def __init__(
        self,
        problems: _Problems,
        *,
        export: str | None = None,
        connection: str | None = None,
        prefix: str = "",
    ) -> None:
        self.problems = problems
        self.export = export
        self.connection = connection
        self.prefix = prefix

    def path(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str | None, message: str) -> None:
        field = self.path(key) if key is not None else (self.prefix or None)
        self.problems.add(message, export=self.export, connection=self.connection, field=field)

    def nested(self, prefix: str) -> _Scope:
        return _Scope(self.problems, export=self.export, connection=self.connection, prefix=self.path(prefix))


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _suggest(word: str, choices: Iterable[str]) -> str:
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    if word.lower() in lowered:
        return f"; did you mean '{lowered[word.lower()]}'?"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if not close:
        close_lower = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
        close = [lowered[c] for c in close_lower]
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_keys(scope: _Scope, obj: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in obj:
        if key == COMMENT_KEY or key in allowed:
            continue
        scope.error(key, f"unknown key{_suggest(key, allowed)} (allowed: {', '.join(allowed)})")


def _object(scope: _Scope, value: Any, key: str | None) -> dict[str, Any] | None:
    if isinstance(value, dict):
        return value
    scope.error(key, f"must be an object, got {_type_name(value)}")
    return None


def _text(
    scope: _Scope, obj: Mapping[str, Any], key: str, *, required: bool, nullable: bool = False
) -> str | None:
    """A non-blank string; ``None`` when absent (or null, if allowed) or invalid (error recorded)."""
    if key not in obj:
        if required:
            scope.error(key, "is required")
        return None
    value = obj[key]
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        scope.error(key, f"must be a string, got {_type_name(value)}")
        return None
    if not value.strip():
        scope.error(key, "must not be empty")
        return None
    return value


def _parse_root(problems: _Problems, data: Any) -> ExportsConfig | None:
    root = _Scope(problems)
    if not isinstance(data, dict):
        problems.add(f"must be a JSON object with 'connections' and 'exports', got {_type_name(data)}")
        return None
    _check_keys(root, data, _TOP_KEYS)
    connections: dict[str, Connection] = {}
    raw: Any = None
    if "connections" not in data:
        root.error("connections", "is required")
    else:
        raw = _object(root, data["connections"], "connections")
        if raw is not None:
            if not raw:
                root.error("connections", "must define at least one connection")
            for name, value in raw.items():
                if name == COMMENT_KEY:
                    continue
                connection = _parse_connection(problems, name, value)
                if connection is not None:
                    connections[name] = connection
    exports: dict[str, ExportConfig] = {}
    if "exports" not in data:
        root.error("exports", "is required")
    elif not isinstance(data["exports"], list):
        root.error("exports", f"must be a list of export objects, got {_type_name(data['exports'])}")
    elif not data["exports"]:
        root.error("exports", "must list at least one export")
    else:
        connection_names = set(raw.keys()) - {COMMENT_KEY} if isinstance(raw, dict) else set()
        folders: dict[str, str] = {}
        for index, value in enumerate(data["exports"]):
            export = _parse_export(problems, index, value, connection_names)
            if export is None:
                continue
            scope = _Scope(problems, export=export.name)
            clash = next((n for n in exports if n.lower() == export.name.lower()), None)
            if clash is not None:
                scope.error("name", f"duplicate export name (export '{clash}' is already defined)")
                continue
            if export.folder in folders:
                scope.error(
                    "folder", f"'{export.folder}' is already the folder of export '{folders[export.folder]}'"
                )
                continue
            folders[export.folder] = export.name
            exports[export.name] = export
    if problems.items:
        return None
    return ExportsConfig(connections=MappingProxyType(connections), exports=MappingProxyType(exports))


def _parse_connection(problems: _Problems, name: str, value: Any) -> Connection | None:
    scope = _Scope(problems, connection=name)
    before = len(problems.items)
    if not _NAME_RE.match(name):
        scope.error(None, "a connection name may only hold letters, digits, '-' and '_' (1-64 characters)")
    obj = _object(scope, value, None)
    if obj is None:
        return None
    _check_keys(scope, obj, _CONNECTION_KEYS)
    display_name = _text(scope, obj, "display_name", required=False)
    secret = _text(scope, obj, "key_secret_name", required=True)
    if secret is not None and not _SECRET_NAME_RE.match(secret):
        scope.error(
            "key_secret_name",
            f"'{secret}' is not a valid Key Vault secret name (1-127 letters, digits and dashes)",
        )
    rate = DEFAULT_REQUESTS_PER_SECOND
    if "requests_per_second" in obj:
        raw_rate = obj["requests_per_second"]
        if isinstance(raw_rate, bool) or not isinstance(raw_rate, int | float):
            scope.error("requests_per_second", f"must be a number, got {_type_name(raw_rate)}")
        elif not math.isfinite(raw_rate) or raw_rate <= 0:
            scope.error("requests_per_second", f"must be greater than 0, got {raw_rate}")
        else:
            rate = float(raw_rate)
    if len(problems.items) > before or secret is None:
        return None
    return Connection(
        name=name,
        display_name=(display_name or name).strip(),
        key_secret_name=secret,
        requests_per_second=rate,
    )


def _parse_export(problems: _Problems, index: int, value: Any, connections: set[str]) -> ExportConfig | None:
    label = f"exports[{index}]"
    if isinstance(value, dict) and isinstance(value.get("name"), str) and value["name"].strip():
        label = value["name"]
    scope = _Scope(problems, export=label)
    before = len(problems.items)
    obj = _object(scope, value, None)
    if obj is None:
        return None
    _check_keys(scope, obj, _EXPORT_KEYS)

    name = _text(scope, obj, "name", required=True)
    if name is not None and not _NAME_RE.match(name):
        scope.error("name", "an export name may only hold letters, digits, '-' and '_' (1-64 characters)")

    connection = _text(scope, obj, "connection", required=True)
    if connection is not None and connection not in connections:
        known = ", ".join(sorted(connections)) or "none defined"
        scope.error(
            "connection",
            f"unknown connection '{connection}'{_suggest(connection, connections)} (known: {known})",
        )

    folder = _parse_folder(scope, obj)
    segments = _parse_segments(scope, obj)
    email_column = _text(scope, obj, "email_column", required=True)
    first_name = _text(scope, obj, "first_name_column", required=False, nullable=True)
    last_name = _text(scope, obj, "last_name_column", required=False, nullable=True)
    fields = _parse_fields(scope, obj, email_column)
    schedule = _parse_schedule(scope, obj)
    on_arrival = True
    if "export_on_arrival" in obj:
        raw = obj["export_on_arrival"]
        if isinstance(raw, bool):
            on_arrival = raw
        else:
            scope.error("export_on_arrival", f"must be true or false, got {_type_name(raw)}")

    if len(problems.items) > before or name is None or connection is None:
        return None
    if folder is None or email_column is None:
        return None
    return ExportConfig(
        name=name,
        connection=connection,
        folder=folder,
        segments=segments,
        email_column=email_column,
        first_name_column=first_name,
        last_name_column=last_name,
        fields=fields,
        schedule=schedule,
        export_on_arrival=on_arrival,
    )


def _parse_folder(scope: _Scope, obj: Mapping[str, Any]) -> str | None:
    if "folder" not in obj:
        scope.error(
            "folder",
            "is required (the export's folder in the container, e.g. "
            "'CustomerInsights_<instance id>/<export name>'; \"\" for the container root)",
        )
        return None
    raw = obj["folder"]
    if not isinstance(raw, str):
        scope.error("folder", f"must be a string, got {_type_name(raw)}")
        return None
    folder = raw.strip().strip("/")
    if not folder:
        return ""
    parts = folder.split("/")
    if "\\" in folder or any(part in ("", ".", "..") or part != part.strip() for part in parts):
        scope.error("folder", f"'{raw}' is not a blob folder path (use '/' between non-empty folder names)")
        return None
    if parts[-1].lower() in ("model.json",) or parts[-1].lower().endswith(".csv"):
        scope.error("folder", f"'{raw}' names a file; give the folder that holds model.json")
        return None
    return folder


def _parse_segments(scope: _Scope, obj: Mapping[str, Any]) -> tuple[SegmentConfig, ...]:
    if "segments" not in obj:
        scope.error("segments", "is required (at least one segment)")
        return ()
    raw = obj["segments"]
    if not isinstance(raw, list) or not raw:
        scope.error(
            "segments",
            f"must be a non-empty list of segment objects, got {_type_name(raw)}"
            if not isinstance(raw, list)
            else "must list at least one segment",
        )
        return ()
    segments: list[SegmentConfig] = []
    names: dict[str, int] = {}
    titles: dict[str, int] = {}
    for index, value in enumerate(raw):
        item = scope.nested(f"segments[{index}]")
        seg = _object(item, value, None)
        if seg is None:
            continue
        _check_keys(item, seg, _SEGMENT_KEYS)
        name = _text(item, seg, "name", required=True)
        if name is not None:
            name = name.strip()
            if "/" in name:
                item.error(
                    "name", f"'{name}' must not contain '/' (it is a table name, used as a folder name)"
                )
                name = None
        title = _text(item, seg, "list_title", required=False)
        title = title.strip() if title is not None else name
        if name is None or title is None:
            continue
        if name.lower() in names:
            item.error("name", f"duplicate segment '{name}' (also segments[{names[name.lower()]}])")
            continue
        if title.lower() in titles:
            item.error(
                "list_title",
                f"duplicate list title '{title}' (also segments[{titles[title.lower()]}]); "
                "two segments would fill one Autopilot list",
            )
            continue
        names[name.lower()] = index
        titles[title.lower()] = index
        segments.append(SegmentConfig(name=name, list_title=title))
    return tuple(segments)


def _parse_fields(
    scope: _Scope, obj: Mapping[str, Any], email_column: str | None
) -> tuple[FieldMapping, ...]:
    raw = obj.get("fields", [])
    if raw is None:
        return ()
    if not isinstance(raw, list):
        scope.error("fields", f"must be a list of field objects, got {_type_name(raw)}")
        return ()
    fields: list[FieldMapping] = []
    targets: dict[str, int] = {}
    for index, value in enumerate(raw):
        item = scope.nested(f"fields[{index}]")
        spec = _object(item, value, None)
        if spec is None:
            continue
        _check_keys(item, spec, _FIELD_KEYS)
        mapping = _parse_field(item, spec)
        if mapping is None:
            continue
        if email_column is not None and mapping.column.strip().lower() == email_column.strip().lower():
            item.error("column", f"'{mapping.column}' is the email column; it is sent as Email already")
            continue
        key = mapping.target.lower()
        if key in targets:
            item.error(
                "custom" if mapping.is_custom else "field",
                f"'{mapping.target}' is mapped twice (also fields[{targets[key]}])",
            )
            continue
        targets[key] = index
        fields.append(mapping)
    return tuple(fields)


def _parse_field(item: _Scope, spec: Mapping[str, Any]) -> FieldMapping | None:
    column = _text(item, spec, "column", required=True)
    has_field, has_custom = "field" in spec, "custom" in spec
    if has_field == has_custom:
        item.error(
            None,
            "give either 'field' (an Autopilot standard field) or 'custom' and 'type' "
            "(a custom field), not " + ("both" if has_field else "neither"),
        )
        return None
    if has_field:
        if "type" in spec:
            item.error("type", "only custom fields have a type; standard fields are sent as given")
        target = _text(item, spec, "field", required=True)
        if target is None:
            return None
        if target not in STANDARD_FIELDS:
            item.error(
                "field",
                f"'{target}' is not an Autopilot standard field{_suggest(target, STANDARD_FIELDS)} "
                "(for your own fields use 'custom' and 'type')",
            )
            return None
        if target in _DEDICATED_FIELDS:
            item.error(
                "field", f"'{target}' is set by the export's '{_DEDICATED_FIELDS[target]}', not by a field"
            )
            return None
        return FieldMapping(column=column, target=target, custom_type=None) if column is not None else None
    name = _text(item, spec, "custom", required=True)
    custom_type = _text(item, spec, "type", required=True)
    if custom_type is not None and custom_type not in CUSTOM_FIELD_TYPES:
        item.error(
            "type",
            f"'{custom_type}' is not a custom field type{_suggest(custom_type, CUSTOM_FIELD_TYPES)} "
            f"(one of: {', '.join(CUSTOM_FIELD_TYPES)})",
        )
        return None
    if name is None or custom_type is None or column is None:
        return None
    name = name.strip()
    prefix = next((t for t in CUSTOM_FIELD_TYPES if name.lower().startswith(t + "--")), None)
    if prefix is not None:
        item.error(
            "custom",
            f"give the field's name without the type prefix (e.g. 'Loyalty Tier' with "
            f'"type": "{prefix}"); the key \'{prefix}--...\' is built from them',
        )
        return None
    return FieldMapping(column=column, target=custom_field_key(name, custom_type), custom_type=custom_type)


def _parse_schedule(scope: _Scope, obj: Mapping[str, Any]) -> str | None:
    schedule = _text(scope, obj, "schedule", required=False, nullable=True)
    if schedule is None:
        return None
    schedule = " ".join(schedule.split())
    if len(schedule.split(" ")) != 5 or not croniter.is_valid(schedule):
        scope.error(
            "schedule",
            f"'{schedule}' is not a 5-field cron expression "
            "(minute hour day-of-month month day-of-week, UTC), e.g. '0 6 * * *'",
        )
        return None
    return schedule
