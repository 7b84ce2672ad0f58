"""The Durable extension's HTTP API, served locally over an ``OrchestrationBackend``.

azure-functions-durable's ``DurableOrchestrationClient`` (what ``durable_client_input`` hands a
function) is built from a binding JSON string and does everything over HTTP against the
extension's ``rpcBaseUrl``; the management URLs it hands out (``create_check_status_response``)
point at the host's ``/runtime/webhooks/durabletask`` API. This module answers both, with the
status codes and JSON shapes of the real extension (HttpApiHandler.cs), so the app's starters and
status endpoints run unmodified. Shapes worth knowing, all as the real extension does:

* ``POST orchestrators/{name}/{id?}``: the Python client JSON-encodes the input twice; it is decoded
  back to the value for the backend. 202 + check-status payload; 400 for an unknown orchestrator
  (when the list is known); 409 when a running instance has that id (``NonRunningStates``).
* ``GET instances/{id}``: 202 while Pending/Running/ContinuedAsNew/Suspended (with ``Location``,
  ``Retry-After: 5``), 200 when Completed/Terminated/Failed (500 for Failed only with
  ``returnInternalServerErrorOnFailure=true``), 404 with an empty body when unknown. ``input`` of an
  instance started by a client is the JSON text of the input (so ``status.input_`` is a ``str`` in
  Python, as in Azure); ``output`` and ``customStatus`` are JSON values; times are
  ``yyyy-MM-ddTHH:mm:ssZ``; ``historyEvents`` only with ``showHistory=true``.
* ``GET instances/`` lists (filters ``runtimeStatus``, ``createdTimeFrom/To``, ``instanceIdPrefix``,
  ``showInput``, ``top`` + ``x-ms-continuation-token``); ``DELETE`` purges (404/412/200).
* ``POST instances/{id}/terminate`` and ``.../raiseEvent/{name}``: 202, 404 unknown, 410 finished;
  raise-event needs ``application/json`` (400 otherwise) and passes the JSON body as the event data.
* rewind/restart/suspend/resume and entities: 501, the backend protocol does not offer them.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

from devtools.local_host.backend import NON_RUNNING_STATUSES, InstanceStatus, OrchestrationBackend

log = logging.getLogger(__name__)

RPC_PATH = "/durabletask"
WEBHOOK_PATH = "/runtime/webhooks/durabletask"
DEFAULT_TASK_HUB = "TestHubName"
DEFAULT_CONNECTION_NAME = "Storage"
DEFAULT_SYSTEM_KEY = "local-durabletask-system-key"
INSTANCE_ID_PLACEHOLDER = "INSTANCEID"
RUNNING_STATUSES = frozenset({"Pending", "Running", "ContinuedAsNew", "Suspended"})
# Canceled is a DTFx status the backend protocol never reports, but clients may filter on it.
FINISHED_STATUSES = NON_RUNNING_STATUSES | {"Canceled"}
KNOWN_STATUSES = RUNNING_STATUSES | FINISHED_STATUSES
SHUTDOWN_POLL = 0.05  # serve_forever's poll interval: how long stop() may wait for the server loop


@dataclass
class ApiResponse:
    """One HTTP answer of the API: status, headers and body bytes."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_json(cls, status: int, value: Any, headers: Mapping[str, str] | None = None) -> ApiResponse:
        merged = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        return cls(status, json.dumps(value).encode("utf-8"), merged)

    @classmethod
    def empty(cls, status: int) -> ApiResponse:
        return cls(status)

    @classmethod
    def error(cls, status: int, message: str, exception: BaseException | None = None) -> ApiResponse:
        """ASP.NET ``HttpError`` shape; the Python client reads ``ExceptionMessage`` on a 400 start."""
        body: dict[str, Any] = {"Message": message}
        if exception is not None:
            body["ExceptionMessage"] = str(exception)
            body["ExceptionType"] = _dotnet_exception_type(exception)
            body["StackTrace"] = None
        return cls.of_json(status, body)


def _dotnet_exception_type(exception: BaseException) -> str:
    if isinstance(exception, json.JSONDecodeError):
        return "Newtonsoft.Json.JsonReaderException"
    if isinstance(exception, ValueError):
        return "System.ArgumentException"
    return "System.Exception"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """.NET ``ToString("s") + "Z"``: seconds precision, UTC."""
    return _utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime | None:
    """Query-string times as the Python client writes them (``%Y-%m-%dT%H:%M:%S.%fZ``) or ISO 8601."""
    value = text.strip()
    if not value:
        return None
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    head, dash, _ = value.partition("-")
    if dash and head.isdigit() and len(head) < 4:
        value = head.zfill(4) + value[len(head) :]  # strftime on Linux drops leading zeros of years < 1000
    try:
        return _utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def _bool_param(query: Mapping[str, str], name: str, default: bool) -> bool:
    value = query.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return default


def decode_start_input(body: bytes) -> Any:
    """The orchestration input from a start request body (raises ``json.JSONDecodeError`` if invalid).

    The Python client sends ``json.dumps(df_dumps(value))`` -- a JSON string holding JSON text --
    so a string is decoded a second time when it holds JSON; a plain string input stays as it is.
    """
    text = body.decode("utf-8-sig") if body else ""
    if not text.strip():
        return None
    value = json.loads(text)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class DurableClientApi:
    """The extension's RPC + webhook HTTP API on 127.0.0.1, over a backend; a context manager."""

    def __init__(
        self,
        backend: OrchestrationBackend,
        *,
        task_hub: str = DEFAULT_TASK_HUB,
        connection_name: str = DEFAULT_CONNECTION_NAME,
        system_key: str = DEFAULT_SYSTEM_KEY,
        extra_keys: Collection[str] = (),
        orchestrators: Collection[str] | None = None,
        public_base_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.backend = backend
        self.task_hub = task_hub
        self.connection_name = connection_name
        self._system_key = system_key
        self._accepted_keys = frozenset(k for k in (system_key, *extra_keys) if k)
        self._orchestrators = None if orchestrators is None else frozenset(orchestrators)
        self._public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self._host = require_loopback(host)
        self._port = port
        self._clock = clock
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> DurableClientApi:
        if self._server is not None:
            return self
        api = self

        class Handler(_ApiRequestHandler):
            def handle_api(
                self, method: str, target: str, headers: Mapping[str, str], body: bytes
            ) -> ApiResponse:
                return api.handle(method, target, headers, body, origin=api.origin)

        self._server = ThreadingHTTPServer((self._host, self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(SHUTDOWN_POLL,), name="durable-client-api", daemon=True
        )
        self._thread.start()
        log.info("durable client API listening on %s", self.rpc_base_url)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> DurableClientApi:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- addresses --------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the durable client API is not running: call start() first")
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def rpc_base_url(self) -> str:
        return f"{self.origin}{RPC_PATH}/"

    @property
    def public_base_url(self) -> str:
        """Where the webhook URLs point: the Functions host when there is one, else this server."""
        return self._public_base_url or self.origin

    def set_public_base_url(self, url: str) -> None:
        self._public_base_url = url.rstrip("/")

    @property
    def webhook_base_url(self) -> str:
        return f"{self.public_base_url}{WEBHOOK_PATH}"

    def _query_suffix(self) -> str:
        suffix = f"taskHub={quote(self.task_hub, safe='')}&connection={quote(self.connection_name, safe='')}"
        if self._system_key:
            suffix += f"&code={quote(self._system_key, safe='')}"
        return suffix

    def _required_query(self) -> str:
        return f"code={quote(self._system_key, safe='')}" if self._system_key else ""

    def management_urls(self, instance_id: str, base_url: str | None = None) -> dict[str, str]:
        """The extension's ``HttpManagementPayload`` for one instance (``GetClientResponseLinks``)."""
        base = base_url or self.webhook_base_url
        encoded = instance_id if instance_id == INSTANCE_ID_PLACEHOLDER else quote(instance_id, safe="")
        prefix = f"{base}/instances/{encoded}"
        suffix = self._query_suffix()
        return {
            "id": instance_id,
            "statusQueryGetUri": f"{prefix}?{suffix}",
            "sendEventPostUri": f"{prefix}/raiseEvent/{{eventName}}?{suffix}",
            "terminatePostUri": f"{prefix}/terminate?reason={{text}}&{suffix}",
            "rewindPostUri": f"{prefix}/rewind?reason={{text}}&{suffix}",
            "purgeHistoryDeleteUri": f"{prefix}?{suffix}",
            "restartPostUri": f"{prefix}/restart?{suffix}",
            "suspendPostUri": f"{prefix}/suspend?reason={{text}}&{suffix}",
            "resumePostUri": f"{prefix}/resume?reason={{text}}&{suffix}",
        }

    def client_binding_json(self) -> str:
        """The exact string the Functions host passes as a ``durableClient`` binding value."""
        base = self.webhook_base_url
        required = self._required_query()
        prefix = f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
        payload = {
            "taskHubName": self.task_hub,
            "connectionName": None,
            "creationUrls": {
                "createNewInstancePostUri": f"{prefix}?{required}",
                "createAndWaitOnNewInstancePostUri": (
                    f"{prefix}?timeout={{timeoutInSeconds}}&pollingInterval={{intervalInSeconds}}&{required}"
                ),
            },
            "managementUrls": self.management_urls(INSTANCE_ID_PLACEHOLDER),
            "baseUrl": base,
            "requiredQueryStringParameters": required,
            "rpcBaseUrl": self.rpc_base_url,
        }
        return json.dumps(payload, separators=(",", ":"))

    # --- dispatch -----------------------------------------------------------------------------------
    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes, *, origin: str
    ) -> ApiResponse:
        """Answer one request for ``target`` (path + query) under the RPC or the webhook prefix.

        ``origin`` (scheme://host:port the request came to) is where returned management URLs point,
        as the extension builds them from the request URI.
        """
        split = urlsplit(target)
        path = unquote(split.path)
        query = {k: ",".join(v) for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        if path == RPC_PATH or path.startswith(RPC_PATH + "/"):
            rest = path[len(RPC_PATH) :]
        elif path == WEBHOOK_PATH or path.startswith(WEBHOOK_PATH + "/"):
            rest = path[len(WEBHOOK_PATH) :]
            key = query.get("code") or _header(headers, "x-functions-key")
            if self._accepted_keys and key not in self._accepted_keys:
                return ApiResponse.empty(401)
        else:
            return ApiResponse.empty(404)
        parts = [p for p in rest.strip("/").split("/")]
        parts = [] if parts == [""] else parts
        request = _Request(
            method.upper(), parts, query, headers, body, origin.rstrip("/"), f"{origin}{target}"
        )
        try:
            return self._route(request)
        except Exception as exc:
            log.exception("durable client API failed on %s %s", method, path)
            return ApiResponse.error(500, "Something went wrong while processing your request", exc)

    def _route(self, r: _Request) -> ApiResponse:
        parts = r.parts
        if parts and parts[0] == "orchestrators" and len(parts) in (2, 3):
            if r.method != "POST":
                return ApiResponse.empty(404)
            return self._start(r, parts[1], parts[2] if len(parts) == 3 else "")
        if parts and parts[0] == "entities":
            return ApiResponse.error(501, "Entities are not supported by the local durable engine.")
        if parts and parts[0] == "instances":
            if len(parts) == 1:
                if r.method == "GET":
                    return self._list(r)
                if r.method == "DELETE":
                    return self._purge_by_filter(r)
                return ApiResponse.empty(404)
            instance_id = parts[1]
            if len(parts) == 2:
                if r.method == "GET":
                    return self._status(r, instance_id)
                if r.method == "DELETE":
                    return self._purge(instance_id)
                return ApiResponse.empty(404)
            if len(parts) == 3 and r.method == "POST":
                operation = parts[2].lower()
                if operation == "terminate":
                    return self._terminate(r, instance_id)
                if operation in ("rewind", "restart", "suspend", "resume"):
                    return ApiResponse.error(
                        501, f"'{operation}' is not supported by the local durable engine."
                    )
                return ApiResponse.empty(404)
            if len(parts) == 4 and parts[2] == "raiseEvent" and r.method == "POST":
                return self._raise_event(r, instance_id, parts[3])
        return ApiResponse.empty(404)

    # --- operations ---------------------------------------------------------------------------------
    def _start(self, r: _Request, name: str, instance_id: str) -> ApiResponse:
        try:
            value = decode_start_input(r.body)
        except (ValueError, UnicodeDecodeError) as exc:
            return ApiResponse.error(400, "Invalid JSON content", exc)
        if self._orchestrators is not None and name not in self._orchestrators:
            known = ", ".join(f"'{n}'" for n in sorted(self._orchestrators)) or "none"
            problem = ValueError(
                f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function. "
                f"Additional info: The following are the known orchestrator functions: {known}."
            )
            return ApiResponse.error(400, "One or more of the arguments submitted is incorrect", problem)
        if instance_id:
            existing = self.backend.get_status(instance_id)
            if existing is not None and existing.runtime_status not in FINISHED_STATUSES:
                return ApiResponse.error(
                    409,
                    f"An Orchestration instance with the status {existing.runtime_status} already exists.",
                )
        try:
            started = self.backend.start_new(name, instance_id or uuid.uuid4().hex, value)
        except (LookupError, ValueError) as exc:  # unknown orchestrator, invalid instance id
            return ApiResponse.error(400, "One or more of the arguments submitted is incorrect", exc)
        timeout = _seconds(r.query.get("timeout"))
        interval = _seconds(r.query.get("pollingInterval"))
        if timeout is not None and interval is not None:
            return self._wait_or_check_status(r, started, timeout, interval)
        return self._check_status_response(r, started)

    def _check_status_response(self, r: _Request, instance_id: str) -> ApiResponse:
        links = self.management_urls(instance_id, f"{r.origin}{WEBHOOK_PATH}")
        payload = {key: links[key] for key in _CHECK_STATUS_KEYS}
        return ApiResponse.of_json(
            202, payload, {"Location": links["statusQueryGetUri"], "Retry-After": "10"}
        )

    def _wait_or_check_status(
        self, r: _Request, instance_id: str, timeout: float, interval: float
    ) -> ApiResponse:
        if interval > timeout:
            return ApiResponse.error(
                400,
                f"Total timeout {timeout} should be bigger than retry timeout {interval}",
                ValueError("timeout"),
            )
        deadline = time.monotonic() + timeout
        while True:
            status = self.backend.get_status(instance_id)
            if status is not None and status.runtime_status in FINISHED_STATUSES:
                if status.runtime_status == "Completed":
                    return ApiResponse.of_json(200, status.output)
                return self._status(r, instance_id)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return self._check_status_response(r, instance_id)
            time.sleep(min(interval, remaining))

    def _status(self, r: _Request, instance_id: str) -> ApiResponse:
        show_history = _bool_param(r.query, "showHistory", False)
        show_history_output = _bool_param(r.query, "showHistoryOutput", False)
        show_input = _bool_param(r.query, "showInput", True)
        fail_500 = _bool_param(r.query, "returnInternalServerErrorOnFailure", False)
        status = self.backend.get_status(instance_id, show_history=show_history)
        if status is None:
            return ApiResponse.empty(404)
        payload = status_payload(status, show_input=show_input, show_history_output=show_history_output)
        runtime = status.runtime_status
        if runtime in RUNNING_STATUSES:
            return ApiResponse.of_json(202, payload, {"Location": r.url, "Retry-After": "5"})
        if runtime == "Failed":
            return ApiResponse.of_json(500 if fail_500 else 200, payload)
        if runtime in FINISHED_STATUSES:
            return ApiResponse.of_json(200, payload)
        log.error("unknown runtime status '%s' for instance %s", runtime, instance_id)
        return ApiResponse.of_json(500, payload)

    def _matching(self, query: Mapping[str, str]) -> list[InstanceStatus]:
        statuses = _status_filter(query.get("runtimeStatus"))
        if statuses == frozenset():
            statuses = None
        created_from = parse_time(query.get("createdTimeFrom", ""))
        created_to = parse_time(query.get("createdTimeTo", ""))
        found = self.backend.list_instances(
            runtime_status=statuses, created_from=created_from, created_to=created_to
        )
        prefix = query.get("instanceIdPrefix")
        matching = [
            s
            for s in found
            if (statuses is None or s.runtime_status in statuses)
            and (created_from is None or _utc(s.created_time) >= created_from)
            and (created_to is None or _utc(s.created_time) <= created_to)
            and (not prefix or s.instance_id.startswith(prefix))
        ]
        matching.sort(key=lambda s: (_utc(s.created_time), s.instance_id))
        return matching

    def _list(self, r: _Request) -> ApiResponse:
        matching = self._matching(r.query)
        show_input = _bool_param(r.query, "showInput", True)
        start = _int(_header(r.headers, "x-ms-continuation-token"), 0)
        top = _int(r.query.get("top"), 0)
        page = matching[start : start + top] if top > 0 else matching[start:]
        following = start + len(page)
        headers = {"x-ms-continuation-token": str(following)} if following < len(matching) else {}
        body = [status_payload(s, show_input=show_input) for s in page]
        return ApiResponse.of_json(200, body, headers)

    def _purge(self, instance_id: str) -> ApiResponse:
        status = self.backend.get_status(instance_id)
        if status is None:
            return ApiResponse.empty(404)
        if status.runtime_status not in FINISHED_STATUSES:
            return ApiResponse.of_json(
                412,
                "Only orchestrations in a terminal state can be purged, but the orchestration with "
                f"instance ID {instance_id} has status {status.runtime_status}",
            )
        deleted = 1 if self.backend.purge(instance_id) else 0
        return ApiResponse.of_json(200, {"instancesDeleted": deleted})

    def _purge_by_filter(self, r: _Request) -> ApiResponse:
        if parse_time(r.query.get("createdTimeFrom", "")) is None:
            return ApiResponse.of_json(400, "Please provide value for 'createdTimeFrom' parameter.")
        query = dict(r.query)
        if parse_time(query.get("createdTimeTo", "")) is None:
            query["createdTimeTo"] = format_time(self._clock())
        matching = self._matching(query)
        deleted = sum(
            1 for s in matching if s.runtime_status in FINISHED_STATUSES and self.backend.purge(s.instance_id)
        )
        if deleted == 0:
            return ApiResponse.empty(404)
        return ApiResponse.of_json(200, {"instancesDeleted": deleted})

    def _terminate(self, r: _Request, instance_id: str) -> ApiResponse:
        status = self.backend.get_status(instance_id)
        if status is None:
            return ApiResponse.empty(404)
        if status.runtime_status in FINISHED_STATUSES:
            return ApiResponse.empty(410)
        self.backend.terminate(instance_id, r.query.get("reason", ""))
        return ApiResponse.empty(202)

    def _raise_event(self, r: _Request, instance_id: str, event_name: str) -> ApiResponse:
        status = self.backend.get_status(instance_id)
        if status is None:
            return ApiResponse.empty(404)
        if status.runtime_status in FINISHED_STATUSES:
            return ApiResponse.empty(410)
        media_type = (_header(r.headers, "content-type") or "").split(";")[0].strip().lower()
        if media_type != "application/json":
            return ApiResponse.error(400, "Only application/json request content is supported")
        try:
            text = r.body.decode("utf-8-sig")
            data = json.loads(text) if text.strip() else None
        except (ValueError, UnicodeDecodeError) as exc:
            return ApiResponse.error(400, "Invalid JSON content", exc)
        if not self.backend.raise_event(instance_id, event_name, data):
            return ApiResponse.empty(410)
        return ApiResponse.empty(202)


_CHECK_STATUS_KEYS = (
    "id",
    "statusQueryGetUri",
    "sendEventPostUri",
    "terminatePostUri",
    "purgeHistoryDeleteUri",
    "restartPostUri",
    "suspendPostUri",
    "resumePostUri",
)


def status_payload(
    status: InstanceStatus, *, show_input: bool = True, show_history_output: bool = False
) -> dict[str, Any]:
    """The extension's ``StatusResponsePayload`` for one instance."""
    payload: dict[str, Any] = {
        "name": status.name,
        "instanceId": status.instance_id,
        "runtimeStatus": status.runtime_status,
        "input": _input_value(status) if show_input else None,
        "customStatus": status.custom_status,
        "output": status.output,
        "createdTime": format_time(status.created_time),
        "lastUpdatedTime": format_time(status.last_updated_time),
    }
    if status.history is not None:
        payload["historyEvents"] = [
            event
            if show_history_output
            else {k: v for k, v in event.items() if k not in ("Result", "Output")}
            for event in status.history
        ]
    return payload


def _input_value(status: InstanceStatus) -> Any:
    """A client-started instance keeps its input as the JSON text the client sent (Azure does).

    Sub-orchestrations get their input from the orchestrator's action as JSON, which the extension
    parses back: their status shows the value itself.
    """
    if status.input is None or status.parent_instance_id is not None:
        return status.input
    return json.dumps(status.input)


def _status_filter(text: str | None) -> frozenset[str] | None:
    if text is None:
        return None
    wanted = {name.strip().lower() for name in text.split(",") if name.strip()}
    return frozenset(s for s in KNOWN_STATUSES if s.lower() in wanted)


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


@dataclass(frozen=True)
class _Request:
    method: str
    parts: list[str]
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes
    origin: str
    url: str


class _ApiRequestHandler(BaseHTTPRequestHandler):
    """HTTP/1.0 (one request per connection): a stopped server leaves no keep-alive thread answering."""

    server_version = "LocalDurableTask/1.0"

    def handle_api(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> ApiResponse:
        raise NotImplementedError

    def _serve(self) -> None:
        response = self.handle_api(self.command, self.path, dict(self.headers.items()), read_body(self))
        write_response(self, response)

    do_GET = _serve
    do_POST = _serve
    do_DELETE = _serve
    do_PUT = _serve
    do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("durable API %s", format % args)


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, sent with ``Content-Length`` or chunked (shared with the Functions host)."""
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        chunks: list[bytes] = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length > 0 else b""


def require_loopback(host: str) -> str:
    """Dev servers listen on the loopback interface only; anything else is refused up front."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(f"local dev servers bind to 127.0.0.1 only, not {host!r}")
    return host


def write_response(handler: BaseHTTPRequestHandler, response: ApiResponse) -> None:
    """Send an ``ApiResponse`` on a ``BaseHTTPRequestHandler`` (shared with the Functions host)."""
    handler.send_response(response.status)
    for name, value in response.headers.items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(response.body)))
    handler.end_headers()
    if response.body and handler.command != "HEAD":
        handler.wfile.write(response.body)
