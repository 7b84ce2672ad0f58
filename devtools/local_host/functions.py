"""The app's durable functions, found the way the Functions host indexes them.

``app.get_functions()`` works once per app object (spec section 10); the list comes from
``app_index.app_functions``, the cache the local Functions host shares, so both can index one app.
Activities are called with the worker's own activity-trigger converter, so they receive exactly
what they would in Azure (decoded JSON, custom objects included) and their results are encoded the
same way.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import traceback
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter

from .app_index import InvocationContext, app_functions

ORCHESTRATION_TRIGGER = "orchestrationTrigger"
ACTIVITY_TRIGGER = "activityTrigger"


class UnknownFunctionError(LookupError):
    """No orchestrator (or activity) of that name is registered in the app."""


@dataclass(frozen=True)
class ActivityFunction:
    name: str
    param_name: str
    fn: Callable[..., Any]
    takes_context: bool = False


@dataclass(frozen=True)
class FunctionRegistry:
    """Orchestrators map to the SDK's ``handle(context_json) -> str``; activities to the user function."""

    orchestrators: Mapping[str, Callable[[Any], str]]
    activities: Mapping[str, ActivityFunction]


_cache: weakref.WeakKeyDictionary[Any, FunctionRegistry] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def registry_for(app: Any) -> FunctionRegistry:
    """The durable functions of ``app`` (a FunctionApp/DFApp), computed once per app object."""
    with _cache_lock:
        cached = _cache.get(app)
        if cached is None:
            cached = _cache[app] = _build(app)
        return cached


def _build(app: Any) -> FunctionRegistry:
    orchestrators: dict[str, Callable[[Any], str]] = {}
    activities: dict[str, ActivityFunction] = {}
    for function in app_functions(app):
        trigger = function.get_trigger()
        if trigger is None:
            continue
        name = function.get_function_name()
        if trigger.type == ORCHESTRATION_TRIGGER:
            orchestrators[name] = function.get_user_function()
        elif trigger.type == ACTIVITY_TRIGGER:
            fn = function.get_user_function()
            params = inspect.signature(fn).parameters
            takes_context = "context" in params and trigger.name != "context"
            activities[name] = ActivityFunction(name, trigger.name, fn, takes_context)
    return FunctionRegistry(orchestrators, activities)


@dataclass(frozen=True)
class ActivityOutcome:
    """Either ``result_json`` (success) or ``reason`` + ``details`` (the TaskFailed fields)."""

    ok: bool
    result_json: str | None = None
    reason: str = ""
    details: str = ""


def run_activity(activity: ActivityFunction, input_json: str | None) -> ActivityOutcome:
    """Call the activity like the worker does; an exception becomes a failure, never escapes."""
    try:
        value = ActivityTriggerConverter.decode(
            meta.Datum(type="json", value=input_json if input_json is not None else "null"),
            trigger_metadata=None,
        )
        kwargs: dict[str, Any] = {activity.param_name: value}
        if activity.takes_context:
            kwargs["context"] = InvocationContext(activity.name)
        result = activity.fn(**kwargs)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
        encoded = ActivityTriggerConverter.encode(result, expected_type=None)
        return ActivityOutcome(ok=True, result_json=str(encoded.value))
    except Exception as exc:  # noqa: BLE001 -- any activity error becomes a TaskFailed, as in the host
        return ActivityOutcome(
            ok=False,
            reason=f"Activity function '{activity.name}' failed: {type(exc).__name__}: {exc}",
            details="".join(traceback.format_exception(exc)),
        )


async def _await(awaitable: Any) -> Any:
    return await awaitable
