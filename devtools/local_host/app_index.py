"""What a ``FunctionApp`` declares, read the way the Functions host indexes it, without the host.

``app.get_functions()`` can run only once per app object (a second call fails its duplicate-name
check), and both the durable engine and the local Functions host need the list: ``app_functions``
caches it per app, resets the app's duplicate-name bookkeeping afterwards so another indexer's own
``get_functions()`` call still succeeds, and recovers the list if someone else indexed the app first.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

HANDLED_ELSEWHERE = frozenset({"orchestrationTrigger", "activityTrigger", "entityTrigger"})
_SETTING = re.compile(r"%([^%]+)%")

_cache: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def app_functions(app: Any) -> list[Any]:
    """``app.get_functions()``, once per app object; later calls get the same ``Function`` list."""
    with _cache_lock:
        cached = _cache.get(app)
        if cached is None:
            seen_before = getattr(app, "functions_bindings", None)
            try:
                cached = list(app.get_functions())
            except ValueError:
                if not seen_before:
                    raise  # a genuine duplicate function name
                # Indexed already by code that does not share this cache: building is idempotent.
                cached = [builder.build(app.auth_level) for builder in app._function_builders]
            else:
                # Leave the app as we found it, so another indexer's own get_functions() still works.
                app.functions_bindings = seen_before
            _cache[app] = cached
        return cached


def _value(item: Any) -> Any:
    """Enum members (AuthLevel, HttpMethod, BlobSource) as their wire values."""
    return getattr(item, "value", item)


def resolve_settings(text: str, settings: Mapping[str, str]) -> str:
    """Replace ``%NAME%`` app-setting references, as the host does for binding expressions."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in settings:
            raise KeyError(f"app setting '{name}' (referenced as %{name}%) is not set")
        return settings[name]

    return _SETTING.sub(lookup, text)


@dataclass(frozen=True)
class FunctionEntry:
    """One function: its name, the callable the worker would call, and the parameters to fill."""

    name: str
    trigger_type: str
    trigger_param: str
    user_function: Callable[..., Any]
    client_params: tuple[str, ...]
    takes_context: bool

    def annotation(self, param: str) -> Any:
        parameter = inspect.signature(self.user_function).parameters.get(param)
        return inspect.Parameter.empty if parameter is None else parameter.annotation


@dataclass(frozen=True)
class HttpFunction:
    entry: FunctionEntry
    route: str
    methods: frozenset[str] | None
    auth_level: str


@dataclass(frozen=True)
class TimerFunction:
    entry: FunctionEntry
    schedule: str
    run_on_startup: bool
    use_monitor: bool | None


@dataclass(frozen=True)
class BlobFunction:
    entry: FunctionEntry
    path: str
    connection: str | None
    source: str | None


@dataclass(frozen=True)
class AppIndex:
    http: tuple[HttpFunction, ...]
    timers: tuple[TimerFunction, ...]
    blobs: tuple[BlobFunction, ...]
    orchestrators: frozenset[str]
    activities: frozenset[str]

    def timer(self, name: str) -> TimerFunction:
        for timer in self.timers:
            if timer.entry.name == name:
                return timer
        known = ", ".join(t.entry.name for t in self.timers) or "none"
        raise KeyError(f"no timer function named '{name}' (timer functions: {known})")


_index_cache: weakref.WeakKeyDictionary[Any, AppIndex] = weakref.WeakKeyDictionary()


def index_app(app: Any) -> AppIndex:
    """The app's triggers, grouped by what serves them; cached per app like ``app_functions``."""
    with _cache_lock:
        cached = _index_cache.get(app)
    if cached is not None:
        return cached
    http: list[HttpFunction] = []
    timers: list[TimerFunction] = []
    blobs: list[BlobFunction] = []
    orchestrators: set[str] = set()
    activities: set[str] = set()
    for function in app_functions(app):
        trigger = function.get_trigger()
        name = function.get_function_name()
        if trigger.type == "orchestrationTrigger":
            orchestrators.add(name)
        elif trigger.type == "activityTrigger":
            activities.add(name)
        if trigger.type in HANDLED_ELSEWHERE:
            continue
        entry = _entry(function, name, trigger)
        if trigger.type == "httpTrigger":
            methods = getattr(trigger, "methods", None)
            http.append(
                HttpFunction(
                    entry=entry,
                    route=str(getattr(trigger, "route", None) or name),
                    methods=frozenset(str(_value(m)).upper() for m in methods) if methods else None,
                    auth_level=str(_value(getattr(trigger, "auth_level", None) or "function")).lower(),
                )
            )
        elif trigger.type == "timerTrigger":
            timers.append(
                TimerFunction(
                    entry=entry,
                    schedule=str(trigger.schedule),
                    run_on_startup=bool(getattr(trigger, "run_on_startup", False)),
                    use_monitor=getattr(trigger, "use_monitor", None),
                )
            )
        elif trigger.type == "blobTrigger":
            source = getattr(trigger, "source", None)
            blobs.append(
                BlobFunction(
                    entry=entry,
                    path=str(trigger.path),
                    connection=getattr(trigger, "connection", None),
                    source=None if source is None else str(_value(source)),
                )
            )
        else:
            log.warning(
                "function '%s' has a %s trigger, which the local host does not serve", name, trigger.type
            )
    index = AppIndex(
        http=tuple(http),
        timers=tuple(timers),
        blobs=tuple(blobs),
        orchestrators=frozenset(orchestrators),
        activities=frozenset(activities),
    )
    with _cache_lock:
        _index_cache[app] = index
    return index


def _entry(function: Any, name: str, trigger: Any) -> FunctionEntry:
    client_params: list[str] = []
    for binding in function.get_bindings():
        if (binding.name == trigger.name and binding.type == trigger.type) or binding.name == "$return":
            continue
        if binding.type == "durableClient":
            client_params.append(binding.name)
        else:
            log.warning(
                "function '%s': binding '%s' of type %s is not provided by the local host",
                name,
                binding.name,
                binding.type,
            )
    user_function = function.get_user_function()
    parameters = inspect.signature(user_function).parameters
    bound = {trigger.name, *client_params}
    return FunctionEntry(
        name=name,
        trigger_type=trigger.type,
        trigger_param=trigger.name,
        user_function=user_function,
        client_params=tuple(client_params),
        takes_context="context" in parameters and "context" not in bound,
    )


class InvocationContext:
    """What a function's ``context`` parameter offers (``func.Context``'s commonly used fields)."""

    def __init__(self, function_name: str) -> None:
        self.invocation_id = str(uuid.uuid4())
        self.function_name = function_name
        self.function_directory = os.getcwd()
        self.thread_local_storage = threading.local()
        self.trace_context = None
        self.retry_context = None


def invocation_kwargs(
    entry: FunctionEntry, trigger_value: Any, client_binding: Callable[[], str]
) -> dict[str, Any]:
    """The keyword arguments for one invocation: trigger value, durable clients, ``context``."""
    kwargs: dict[str, Any] = {entry.trigger_param: trigger_value}
    for param in entry.client_params:
        kwargs[param] = client_binding()
    if entry.takes_context:
        kwargs["context"] = InvocationContext(entry.name)
    return kwargs
