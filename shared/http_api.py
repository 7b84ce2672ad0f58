"""The manual export API: start, dry-run, status, list, cancel.

Kept apart from ``function_app.py`` so the request validation and responses are plain functions
of (request data, durable client, context) that tests can call, and the HTTP wiring stays thin.
Every 4xx names the offending field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared.activities import AppContext
from shared.orchestration import UPLOAD_ORCHESTRATOR, sub_instance_id
from shared.runs import ExportRun, RunNotFoundError, instance_id_prefix, latest_runs, named_run
from shared.starter import RUNNING_STATES, DurableClient, start_run

_SUB_ID = re.compile(r"-u\d{4}$")
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_START_FIELDS = {"segment", "run", "dry_run", "force"}
MAX_TOP = 200


@dataclass
class ApiResponse:
    status: int
    body: dict[str, Any] = field(default_factory=dict)

    def json(self) -> str:
        return json.dumps(self.body, default=str)


class BadRequest(ValueError):
    def __init__(self, field_name: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field_name
        self.status = status


def error(status: int, message: str, field_name: str | None = None) -> ApiResponse:
    body: dict[str, Any] = {"error": message}
    if field_name:
        body["field"] = field_name
    return ApiResponse(status, body)


def parse_json_body(raw: bytes) -> dict[str, Any]:
    if not raw or not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("body", f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("body", "request body must be a JSON object")
    return data


def _optional_text(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(name, f"'{name}' must be a non-empty string")
    return value.strip()


def _optional_bool(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(name, f"'{name}' must be true or false")
    return value


def list_exports(ctx: AppContext) -> ApiResponse:
    exports = [
        {
            "name": e.name,
            "connection": e.connection,
            "folder": e.folder,
            "segments": [{"name": s.name, "list_title": s.list_title} for s in e.segments],
            "schedule": e.schedule,
        }
        for e in ctx.config.exports.values()
    ]
    return ApiResponse(200, {"exports": exports})


async def start_export(
    ctx: AppContext, client: DurableClient, export_name: str, raw_body: bytes, base_url: str = ""
) -> ApiResponse:
    """Start (or dry-run) the export's latest run, or a named one; 202 with where to poll."""
    try:
        body = parse_json_body(raw_body)
        unknown = sorted(set(body) - _START_FIELDS)
        if unknown:
            raise BadRequest(
                unknown[0], f"unknown field '{unknown[0]}' (allowed: {', '.join(sorted(_START_FIELDS))})"
            )
        segment = _optional_text(body, "segment")
        run_name = _optional_text(body, "run")
        dry_run = _optional_bool(body, "dry_run")
        force = _optional_bool(body, "force")
        if export_name not in ctx.config.exports:
            known = ", ".join(sorted(ctx.config.exports)) or "none"
            raise BadRequest("export", f"unknown export '{export_name}' (configured: {known})", status=404)
        export = ctx.config.export(export_name)
        if segment is not None and export.segment(segment) is None:
            known = ", ".join(s.name for s in export.segments)
            raise BadRequest(
                "segment", f"export '{export_name}' has no segment '{segment}' (configured: {known})"
            )
        if run_name is not None and segment is None:
            raise BadRequest("segment", "'segment' is required when 'run' names a run")
        container = ctx.settings.exports_container
        runs: list[ExportRun]
        if run_name is not None:
            assert segment is not None
            runs = [named_run(ctx.config, ctx.exports, export_name, segment, run_name, container)]
        else:
            runs = latest_runs(ctx.config, ctx.exports, export_name, container)
            if segment is not None:
                runs = [r for r in runs if r.segment.lower() == segment.lower()]
            if not runs:
                raise RunNotFoundError(f"export '{export_name}' has no run for the requested segment(s) yet")
    except BadRequest as exc:
        return error(exc.status, str(exc), exc.field)
    except RunNotFoundError as exc:
        return error(404, str(exc), "run")
    outcomes = []
    for run in runs:
        outcome = await start_run(
            client,
            run,
            ctx.config,
            ctx.settings,
            trigger="http",
            dry_run=dry_run,
            retry_failed=True,
            force=force,
        )
        item = outcome.to_dict()
        item["status_url"] = f"{base_url.rstrip('/')}/api/runs/{outcome.instance_id}"
        outcomes.append(item)
    return ApiResponse(202, {"runs": outcomes})


def _status_dict(status: Any) -> dict[str, Any]:
    runtime = getattr(status, "runtime_status", None)
    return {
        "instance_id": status.instance_id,
        "name": status.name,
        "runtime_status": getattr(runtime, "value", runtime),
        "created_time": _iso(status.created_time),
        "last_updated_time": _iso(status.last_updated_time),
        "custom_status": status.custom_status,
        "output": status.output,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)


def _valid_instance(instance_id: str) -> None:
    if not _INSTANCE_ID.match(instance_id):
        raise BadRequest("instance_id", "instance id must be 1-200 letters, digits, '-', '_', '.' or ':'")


async def run_status(client: DurableClient, instance_id: str) -> ApiResponse:
    """A run's state; while uploading, the running window's progress is folded in for a live bar."""
    try:
        _valid_instance(instance_id)
    except BadRequest as exc:
        return error(400, str(exc), exc.field)
    status = await client.get_status(instance_id)
    if status is None or getattr(status, "runtime_status", None) is None:
        return error(404, f"no run with instance id '{instance_id}'", "instance_id")
    body = _status_dict(status)
    custom = body.get("custom_status")
    if isinstance(custom, dict) and custom.get("current_upload") and body["runtime_status"] in RUNNING_STATES:
        child = await client.get_status(custom["current_upload"])
        child_custom = getattr(child, "custom_status", None) if child else None
        if isinstance(child_custom, dict):
            custom = dict(custom)
            custom["batches_done"] = int(custom.get("batches_done", 0)) + int(
                child_custom.get("batches_done", 0)
            )
            custom["contacts_uploaded"] = int(custom.get("contacts_uploaded", 0)) + int(
                child_custom.get("contacts_uploaded", 0)
            )
            custom["rejected"] = int(custom.get("rejected", 0)) + int(child_custom.get("refused", 0))
            body["custom_status"] = custom
    return ApiResponse(200, body)


async def list_runs(client: Any, params: dict[str, str]) -> ApiResponse:
    """Recent runs, newest first; sub-orchestrations are internal and left out."""
    from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

    export = params.get("export")
    status_filter = params.get("status")
    top_text = params.get("top", "20")
    try:
        top = int(top_text)
    except ValueError:
        return error(400, f"'top' must be a whole number from 1 to {MAX_TOP}, got {top_text!r}", "top")
    if not 1 <= top <= MAX_TOP:
        return error(400, f"'top' must be a whole number from 1 to {MAX_TOP}, got {top}", "top")
    statuses = None
    if status_filter:
        try:
            statuses = [OrchestrationRuntimeStatus(status_filter)]
        except ValueError:
            allowed = ", ".join(s.value for s in OrchestrationRuntimeStatus)
            return error(400, f"'status' must be one of {allowed}", "status")
    prefix = instance_id_prefix(export) if export else None
    found = await client.get_status_by(runtime_status=statuses, instance_id_prefix=prefix)
    runs = [
        _status_dict(s)
        for s in found
        if s.instance_id and not _SUB_ID.search(s.instance_id) and s.name != UPLOAD_ORCHESTRATOR
    ]
    runs.sort(key=lambda r: r.get("created_time") or "", reverse=True)
    return ApiResponse(200, {"runs": runs[:top]})


async def cancel_run(client: Any, instance_id: str) -> ApiResponse:
    """Terminate the run and its upload windows; batches already sent stay sent (upserts are idempotent)."""
    try:
        _valid_instance(instance_id)
    except BadRequest as exc:
        return error(400, str(exc), exc.field)
    status = await client.get_status(instance_id)
    runtime = getattr(getattr(status, "runtime_status", None), "value", None)
    if runtime is None:
        return error(404, f"no run with instance id '{instance_id}'", "instance_id")
    if runtime not in RUNNING_STATES:
        return error(409, f"run '{instance_id}' is not running (status {runtime})", "instance_id")
    await client.terminate(instance_id, "cancelled through the HTTP API")
    index = 0
    while True:
        child = await client.get_status(sub_instance_id(instance_id, index))
        child_runtime = getattr(getattr(child, "runtime_status", None), "value", None)
        if child_runtime is None:
            break
        if child_runtime in RUNNING_STATES:
            await client.terminate(child.instance_id, "parent run cancelled")
        index += 1
    return ApiResponse(202, {"instance_id": instance_id, "cancelled": True})
