"""``function_app.py`` indexed the way the Functions host indexes it: every function and binding."""

from __future__ import annotations

import importlib.util
import json
import typing
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from azurefunctions.extensions.base import get_binding_registry

APP_FILE = Path(__file__).resolve().parent.parent / "function_app.py"


@pytest.fixture(scope="module")
def indexed() -> dict[str, dict[str, Any]]:
    """Load a fresh copy of the module (the host imports it once per worker) and index it once."""
    spec = importlib.util.spec_from_file_location(f"function_app_{uuid.uuid4().hex}", APP_FILE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    functions = module.app.get_functions()
    result = {}
    for function in functions:
        raw = [json.loads(b) for b in worker_raw_bindings(function)]
        result[function.get_function_name()] = {"bindings": raw, "trigger": function.get_trigger().type}
    return result


def worker_raw_bindings(function: Any) -> list[str]:
    """The binding JSON the Python worker sends the host (its ``loader.get_fx_raw_bindings``).

    A function with a parameter annotated as an SDK type (``check_deferred_bindings_enabled``) has
    its bindings rendered by the extension base, which flags each one ``SupportsDeferredBinding``;
    the host then sends model binding data instead of content for the flagged ones. Other functions
    send ``get_raw_bindings()`` unchanged.
    """
    registry = get_binding_registry()
    hints = typing.get_type_hints(function.get_user_function())
    input_types = {b.name: SimpleNamespace(pytype=hints.get(b.name)) for b in function.get_bindings()}
    if any(registry.check_supported_type(t.pytype) for t in input_types.values()):
        raw, _ = registry.get_raw_bindings(function, input_types)
        return list(raw)
    return list(function.get_raw_bindings())


def binding(indexed: dict[str, dict[str, Any]], function: str, kind: str) -> dict[str, Any]:
    matches = [b for b in indexed[function]["bindings"] if b["type"] == kind]
    assert len(matches) == 1, f"{function} has {len(matches)} {kind} bindings"
    return matches[0]


def test_every_function_is_indexed_with_its_trigger(indexed: dict[str, dict[str, Any]]) -> None:
    assert {name: entry["trigger"] for name, entry in indexed.items()} == {
        "segment_blob_trigger": "blobTrigger",
        "scheduled_exports": "timerTrigger",
        "list_exports": "httpTrigger",
        "start_export": "httpTrigger",
        "list_runs": "httpTrigger",
        "run_status": "httpTrigger",
        "cancel_run": "httpTrigger",
        "export_run": "orchestrationTrigger",
        "upload_batches": "orchestrationTrigger",
        "plan_run": "activityTrigger",
        "ensure_list": "activityTrigger",
        "upload_batch": "activityTrigger",
        "write_report": "activityTrigger",
    }


def test_blob_trigger_uses_event_grid_on_the_exports_container(indexed: dict[str, dict[str, Any]]) -> None:
    trigger = binding(indexed, "segment_blob_trigger", "blobTrigger")
    assert trigger["path"] == "%EXPORTS_CONTAINER%/{name}"
    assert trigger["connection"] == "EXPORTS_STORAGE"
    assert trigger["source"] == "EventGrid"
    assert binding(indexed, "segment_blob_trigger", "durableClient")["direction"] == "IN"


def test_blob_trigger_gets_a_blob_client_instead_of_the_content(indexed: dict[str, dict[str, Any]]) -> None:
    trigger = binding(indexed, "segment_blob_trigger", "blobTrigger")
    client = binding(indexed, "segment_blob_trigger", "durableClient")

    assert trigger["name"] == "blob_client"
    assert trigger["properties"] == {"SupportsDeferredBinding": True}
    assert client["properties"] == {"SupportsDeferredBinding": False}


def test_timer_ticks_every_five_minutes(indexed: dict[str, dict[str, Any]]) -> None:
    trigger = binding(indexed, "scheduled_exports", "timerTrigger")
    assert trigger["schedule"] == "0 */5 * * * *"
    assert trigger["runOnStartup"] is False


@pytest.mark.parametrize(
    ("function", "route", "methods"),
    [
        ("list_exports", "exports", ["GET"]),
        ("start_export", "exports/{export}/runs", ["POST"]),
        ("list_runs", "runs", ["GET"]),
        ("run_status", "runs/{instance_id}", ["GET"]),
        ("cancel_run", "runs/{instance_id}/cancel", ["POST"]),
    ],
)
def test_http_routes_need_a_function_key(
    indexed: dict[str, dict[str, Any]], function: str, route: str, methods: list[str]
) -> None:
    trigger = binding(indexed, function, "httpTrigger")
    assert trigger["route"] == route
    assert [m.upper() for m in trigger["methods"]] == methods
    assert trigger["authLevel"].upper() == "FUNCTION"


@pytest.mark.parametrize("function", ["start_export", "list_runs", "run_status", "cancel_run"])
def test_run_routes_get_a_durable_client(indexed: dict[str, dict[str, Any]], function: str) -> None:
    assert binding(indexed, function, "durableClient")["name"] == "client"


@pytest.mark.parametrize("function", ["plan_run", "ensure_list", "upload_batch", "write_report"])
def test_activities_take_their_payload(indexed: dict[str, dict[str, Any]], function: str) -> None:
    assert binding(indexed, function, "activityTrigger")["name"] == "payload"


@pytest.mark.parametrize("function", ["export_run", "upload_batches"])
def test_orchestrators_take_the_context(indexed: dict[str, dict[str, Any]], function: str) -> None:
    assert binding(indexed, function, "orchestrationTrigger")["name"] == "context"


def test_every_name_the_orchestrations_call_is_an_indexed_function(
    indexed: dict[str, dict[str, Any]],
) -> None:
    from shared import orchestration

    called = {
        orchestration.EXPORT_ORCHESTRATOR: "orchestrationTrigger",
        orchestration.UPLOAD_ORCHESTRATOR: "orchestrationTrigger",
        orchestration.PLAN_ACTIVITY: "activityTrigger",
        orchestration.ENSURE_LIST_ACTIVITY: "activityTrigger",
        orchestration.UPLOAD_ACTIVITY: "activityTrigger",
        orchestration.REPORT_ACTIVITY: "activityTrigger",
    }
    assert {name: indexed[name]["trigger"] for name in called} == called
