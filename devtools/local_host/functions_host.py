"""A local stand-in for the Functions host: the HTTP, timer and blob triggers of a ``FunctionApp``.

Core Tools (``func start``) cannot be installed on our machines, so this serves ``function_app.py``
as written: HTTP functions under ``http://127.0.0.1:<port>/api/<route>`` with function-key auth,
timers on their NCRONTAB schedules (with the schedule monitor's past-due catch-up), blob triggers
by polling Azurite, and ``durableClient`` bindings backed by a local Durable HTTP API
(``DurableClientApi``) over any ``OrchestrationBackend``. Orchestrator and activity triggers are
the durable engine's job, not this module's. A blob trigger typed as an SDK client (e.g.
``blob.BlobClient``) gets that client built by the binding extension, as in Azure, and the blob is
never downloaded here.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
from azure.functions.timer import TimerRequest

from devtools.local_host.app_index import (
    AppIndex,
    BlobFunction,
    FunctionEntry,
    HttpFunction,
    TimerFunction,
    index_app,
    invocation_kwargs,
    resolve_settings,
)
from devtools.local_host.backend import OrchestrationBackend
from devtools.local_host.blob_poller import (
    MAX_ATTEMPTS,
    BlobEvent,
    BlobOutcome,
    BlobTriggerPoller,
    BlobTriggerSpec,
    LazyBlobStream,
    parse_blob_path,
)
from devtools.local_host.blob_sdk_types import (
    SdkBlobBinding,
    build_sdk_value,
    connection_is_set,
    parameter_type,
    sdk_blob_binding,
)
from devtools.local_host.durable_client_api import (
    DEFAULT_SYSTEM_KEY,
    DEFAULT_TASK_HUB,
    SHUTDOWN_POLL,
    WEBHOOK_PATH,
    ApiResponse,
    DurableClientApi,
    read_body,
    require_loopback,
    write_response,
)
from devtools.local_host.http_routes import RouteTemplate, compile_route
from devtools.local_host.ncrontab import Schedule, parse_schedule
from devtools.local_host.worker_loop import call_function
from shared.redact import scrub

log = logging.getLogger(__name__)

DEFAULT_FUNCTION_KEY = "local-function-key"
DEFAULT_MASTER_KEY = "local-master-key"
_TIMER_TICK = 0.5  # longest sleep between clock checks, so a test clock that jumps is noticed


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _Route:
    function: HttpFunction
    template: RouteTemplate


@dataclass(frozen=True)
class _Timer:
    function: TimerFunction
    schedule: Schedule
    lock: threading.Lock


class LocalFunctionsHost:
    """Serves an app's HTTP, timer and blob triggers; ``with LocalFunctionsHost(...) as host: host.url``.

    ``poll_interval <= 0`` turns background blob polling off and ``run_timers=False`` the timer
    threads (tests then drive ``poll_blobs_once()`` and ``fire_timer(name)`` themselves).
    ``app_settings`` resolves ``%NAME%`` in trigger paths and schedules (default: the environment).
    """

    def __init__(
        self,
        app: Any,
        backend: OrchestrationBackend,
        *,
        blob_connection_string: str,
        state_dir: Path,
        http_port: int = 7071,
        host: str = "127.0.0.1",
        poll_interval: float = 2.0,
        clock: Callable[[], datetime] = utc_now,
        function_key: str = DEFAULT_FUNCTION_KEY,
        master_key: str = DEFAULT_MASTER_KEY,
        system_key: str = DEFAULT_SYSTEM_KEY,
        task_hub: str = DEFAULT_TASK_HUB,
        route_prefix: str = "api",
        app_settings: Mapping[str, str] | None = None,
        run_timers: bool = True,
        max_blob_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self._app = app
        self._backend = backend
        self._connection_string = blob_connection_string
        self._state_dir = Path(state_dir)
        self._http_port = http_port
        self._host = require_loopback(host)
        self._poll_interval = poll_interval
        self._clock = clock
        self._function_key = function_key
        self._master_key = master_key
        self._system_key = system_key
        self._task_hub = task_hub
        self._route_prefix = route_prefix.strip("/")
        self._settings: Mapping[str, str] = os.environ if app_settings is None else app_settings
        self._run_timers = run_timers
        self._max_blob_attempts = max_blob_attempts
        self._secrets = tuple(k for k in (function_key, master_key, system_key, blob_connection_string) if k)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: ThreadingHTTPServer | None = None
        self._serving = False
        self._api: DurableClientApi | None = None
        self._index: AppIndex | None = None
        self._routes: list[_Route] = []
        self._timers: dict[str, _Timer] = {}
        self._poller: BlobTriggerPoller | None = None
        self._sdk_blobs: dict[str, SdkBlobBinding] = {}

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> LocalFunctionsHost:
        """Index the app (failing on a bad route, schedule or path, as the host does), then serve."""
        if self._server is not None:
            return self
        self._stop.clear()
        index = index_app(self._app)
        self._index = index
        self._routes = self._compile_routes(index)
        self._timers = {
            t.entry.name: _Timer(
                t, parse_schedule(resolve_settings(t.schedule, self._settings)), threading.Lock()
            )
            for t in index.timers
        }
        self._sdk_blobs = _sdk_blob_bindings(index)
        blob_specs = [
            BlobTriggerSpec(b.entry.name, parse_blob_path(resolve_settings(b.path, self._settings)))
            for b in index.blobs
        ]
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._poller = BlobTriggerPoller(
            blob_specs,
            self._connection_string,
            self._state_dir,
            self._invoke_blob,
            max_attempts=self._max_blob_attempts,
            secrets=self._secrets,
        )
        host = self

        class Handler(_HostRequestHandler):
            def dispatch(
                self, method: str, target: str, headers: Mapping[str, str], body: bytes
            ) -> ApiResponse:
                return host._handle_http(method, target, headers, body)

        try:
            self._api = DurableClientApi(
                self._backend,
                task_hub=self._task_hub,
                system_key=self._system_key,
                extra_keys=(self._master_key,),
                orchestrators=index.orchestrators,
                clock=self._clock,
            ).start()
            server = ThreadingHTTPServer((self._host, self._http_port), Handler)
            server.daemon_threads = True
            self._server = server
            self._api.set_public_base_url(self.url)
            self._spawn("functions-host-http", server.serve_forever, SHUTDOWN_POLL)
            self._serving = True
            if self._run_timers:
                for timer in self._timers.values():
                    self._spawn(f"timer-{timer.function.entry.name}", self._timer_loop, timer)
            if blob_specs and self._poll_interval > 0:
                self._spawn("blob-poller", self._blob_loop)
        except BaseException:
            self.stop()
            raise
        log.info("local Functions host listening on %s (%d HTTP functions)", self.url, len(self._routes))
        return self

    def stop(self) -> None:
        self._stop.set()
        server, self._server = self._server, None
        if server is not None:
            if self._serving:
                server.shutdown()
            server.server_close()
        self._serving = False
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads = []
        api, self._api = self._api, None
        if api is not None:
            api.stop()

    def __enter__(self) -> LocalFunctionsHost:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- public handles -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the local Functions host is not running: call start() first")
        return f"http://{self._host}:{self._server.server_address[1]}"

    @property
    def durable_api(self) -> DurableClientApi:
        if self._api is None:
            raise RuntimeError("the local Functions host is not running: call start() first")
        return self._api

    def client_binding_json(self) -> str:
        return self.durable_api.client_binding_json()

    def poll_blobs_once(self) -> list[BlobOutcome]:
        """Scan every blob trigger's container once and run the functions for new blob versions."""
        if self._poller is None:
            raise RuntimeError("the local Functions host is not running: call start() first")
        return self._poller.poll_once()

    def fire_timer(self, name: str, *, past_due: bool = False) -> Any:
        """Run a timer function now, as the portal's "Test/Run" does; returns what it returns."""
        timer = self._timers.get(name)
        if timer is None:
            known = ", ".join(sorted(self._timers)) or "none"
            raise KeyError(f"no timer function named '{name}' (timer functions: {known})")
        status = self._load_timer_status(name) or {}
        with timer.lock:
            return self._call(timer.function.entry, self._timer_request(past_due, status))

    # --- invocation -----------------------------------------------------------------------------------
    def _call(self, entry: FunctionEntry, trigger_value: Any) -> Any:
        kwargs = invocation_kwargs(entry, trigger_value, self.client_binding_json)
        return call_function(entry.user_function, kwargs)

    def _invoke_blob(self, event: BlobEvent, stream: LazyBlobStream) -> None:
        assert self._index is not None
        function = next(b for b in self._index.blobs if b.entry.name == event.function)
        sdk = self._sdk_blobs.get(event.function)
        if sdk is None:
            self._call(function.entry, _blob_value(function, stream))
            return
        # Built per attempt, like the worker's per-invocation decode; the stream is never read.
        value = build_sdk_value(sdk, event.container, event.blob_name, _trigger_metadata(event, stream.uri))
        self._call(function.entry, value)

    # --- HTTP -------------------------------------------------------------------------------------------
    def _compile_routes(self, index: AppIndex) -> list[_Route]:
        routes = [_Route(f, compile_route(f.route)) for f in index.http]
        routes.sort(key=lambda r: r.template.precedence)
        return routes

    def _handle_http(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> ApiResponse:
        split = urlsplit(target)
        path = split.path
        if path == WEBHOOK_PATH or path.startswith(WEBHOOK_PATH + "/"):
            return self.durable_api.handle(method, target, headers, body, origin=self.url)
        if path in ("", "/"):
            return ApiResponse(
                200,
                b"Your Functions app is up and running (local host).",
                {"Content-Type": "text/plain; charset=utf-8"},
            )
        prefix = f"/{self._route_prefix}" if self._route_prefix else ""
        if prefix and path != prefix and not path.startswith(prefix + "/"):
            return ApiResponse.empty(404)
        route_path = path[len(prefix) :]
        query = {k: ",".join(v) for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        for route in self._routes:
            params = route.template.match(route_path)
            if params is None:
                continue
            methods = route.function.methods
            if methods is not None and method.upper() not in methods:
                continue
            if not self._authorized(route.function.auth_level, query, headers):
                return ApiResponse.empty(401)
            request = func.HttpRequest(
                method=method.upper(),
                url=f"{self.url}{target}",
                headers=dict(headers),
                params=query,
                route_params=params,
                body=body,
            )
            return self._run_http(route.function, request)
        return ApiResponse.empty(404)

    def _authorized(self, auth_level: str, query: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        if auth_level == "anonymous":
            return True
        key = query.get("code") or _header(headers, "x-functions-key")
        if not key:
            return False
        if auth_level == "admin":
            return key == self._master_key
        return key in (self._function_key, self._master_key)

    def _run_http(self, function: HttpFunction, request: func.HttpRequest) -> ApiResponse:
        try:
            result = self._call(function.entry, request)
        except Exception as exc:
            log.error(
                "Executed 'Functions.%s' (Failed): %s",
                function.entry.name,
                scrub(f"{type(exc).__name__}: {exc}", *self._secrets),
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            return ApiResponse.empty(500)
        return _to_api_response(function.entry.name, result)

    # --- timers -------------------------------------------------------------------------------------------
    def _timer_status_file(self, name: str) -> Path:
        return self._state_dir / "timers" / f"{name}.json"

    def _load_timer_status(self, name: str) -> dict[str, str] | None:
        path = self._timer_status_file(name)
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return {k: str(v) for k, v in data.items()}

    def _save_timer_status(self, name: str, last: datetime | None, next_due: datetime) -> dict[str, str]:
        status = {
            "Last": (last or datetime.min.replace(tzinfo=UTC)).isoformat(),
            "Next": next_due.isoformat(),
            "LastUpdated": self._clock().isoformat(),
        }
        path = self._timer_status_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(status), encoding="utf-8")
        os.replace(temporary, path)
        return status

    @staticmethod
    def _timer_request(past_due: bool, status: Mapping[str, str]) -> TimerRequest:
        return TimerRequest(past_due=past_due, schedule_status=dict(status), schedule={"AdjustForDST": True})

    def _timer_loop(self, timer: _Timer) -> None:
        """The host's timer listener: catch up a missed occurrence, then fire on every occurrence."""
        name = timer.function.entry.name
        monitor = timer.function.use_monitor is not False
        previous = self._load_timer_status(name) if monitor else None
        now = self._clock()
        next_due = timer.schedule.next_after(now)
        missed = _parse(previous.get("Next")) if previous else None
        if missed is not None and missed < now:
            self._fire(timer, past_due=True, occurrence=missed, next_due=next_due, monitor=monitor)
        elif timer.function.run_on_startup:
            self._fire(timer, past_due=False, occurrence=None, next_due=next_due, monitor=monitor)
        elif monitor:
            last = _parse(previous.get("Last")) if previous else None
            self._save_timer_status(name, last, next_due)
        while not self._stop.is_set():
            now = self._clock()
            if now < next_due:
                self._stop.wait(min((next_due - now).total_seconds(), _TIMER_TICK))
                continue
            occurrence = next_due
            next_due = timer.schedule.next_after(max(now, occurrence))
            late = now - occurrence > timedelta(seconds=max(1.0, _TIMER_TICK * 2))
            self._fire(timer, past_due=late, occurrence=occurrence, next_due=next_due, monitor=monitor)

    def _fire(
        self, timer: _Timer, *, past_due: bool, occurrence: datetime | None, next_due: datetime, monitor: bool
    ) -> None:
        name = timer.function.entry.name
        previous = self._load_timer_status(name) or {}
        request = self._timer_request(past_due, previous)
        with timer.lock:
            try:
                self._call(timer.function.entry, request)
            except Exception as exc:  # noqa: BLE001 -- a failing timer function must not stop its schedule
                log.error(
                    "Executed 'Functions.%s' (Failed): %s",
                    name,
                    scrub(f"{type(exc).__name__}: {exc}", *self._secrets),
                )
        if monitor:
            self._save_timer_status(name, occurrence or self._clock(), next_due)

    # --- blobs ----------------------------------------------------------------------------------------------
    def _blob_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_blobs_once()
            except Exception as exc:  # noqa: BLE001 -- storage hiccups must not end polling
                log.error("blob polling failed: %s", scrub(f"{type(exc).__name__}: {exc}", *self._secrets))
            self._stop.wait(self._poll_interval)


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _sdk_blob_bindings(index: AppIndex) -> dict[str, SdkBlobBinding]:
    """The blob triggers typed as SDK clients; fails at start, as indexing would, on a bad one.

    The connection is checked here because the extension resolves it at every invocation from the
    process environment: a missing setting would otherwise fail each blob five times into poison.
    """
    bindings: dict[str, SdkBlobBinding] = {}
    for function in index.blobs:
        entry = function.entry
        pytype = parameter_type(entry.user_function, entry.trigger_param)
        binding = sdk_blob_binding(entry.name, entry.trigger_type, pytype, function.connection)
        if binding is None:
            continue
        if not connection_is_set(binding.connection):
            raise KeyError(
                f"blob trigger '{entry.name}' binds an SDK type, which the binding extension builds "
                f"from connection setting '{binding.connection}' in the process environment (where "
                "the worker finds app settings); it is not set there"
            )
        bindings[entry.name] = binding
    return bindings


def _trigger_metadata(event: BlobEvent, uri: str) -> dict[str, tuple[Any, str]]:
    """The blob trigger's metadata as the host sends it, from the listing (no read of the blob)."""
    metadata: dict[str, tuple[Any, str]] = {
        "BlobTrigger": (event.full_name, "string"),
        "Uri": (json.dumps(uri), "json"),
        "Properties": (json.dumps(event.properties), "json"),
        "Metadata": (json.dumps(event.metadata), "json"),
    }
    metadata.update({name: (value, "string") for name, value in event.path_params.items()})
    return metadata


def _blob_value(function: BlobFunction, stream: LazyBlobStream) -> Any:
    """What the worker passes for a blob trigger, by the parameter's annotation."""
    annotation = function.entry.annotation(function.entry.trigger_param)
    if annotation in (bytes, "bytes"):
        return stream.read()
    if annotation in (str, "str"):
        return stream.read().decode("utf-8")
    return stream


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def _to_api_response(function_name: str, result: Any) -> ApiResponse:
    """Write back what an HTTP function returned, as the worker does."""
    if isinstance(result, func.HttpResponse):
        headers = {k: v for k, v in result.headers.items()}
        if _header(headers, "content-type") is None and result.mimetype:
            headers["Content-Type"] = f"{result.mimetype}; charset={result.charset}"
        return ApiResponse(int(result.status_code), result.get_body(), headers)
    if result is None:
        return ApiResponse.empty(204)
    if isinstance(result, str | bytes):
        body = result.encode("utf-8") if isinstance(result, str) else result
        return ApiResponse(200, body, {"Content-Type": "text/plain; charset=utf-8"})
    log.error(
        "Executed 'Functions.%s' (Failed): returned %s, not an HttpResponse",
        function_name,
        type(result).__name__,
    )
    return ApiResponse.empty(500)


class _HostRequestHandler(BaseHTTPRequestHandler):
    """HTTP/1.0: one request per connection, so nothing keeps answering after ``stop()``."""

    server_version = "LocalFunctionsHost/1.0"

    def dispatch(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> ApiResponse:
        raise NotImplementedError

    def _serve(self) -> None:
        write_response(
            self, self.dispatch(self.command, self.path, dict(self.headers.items()), read_body(self))
        )

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_PATCH = _serve
    do_DELETE = _serve
    do_HEAD = _serve
    do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("functions host %s", format % args)
