"""The local Functions host serving a toy app's HTTP, timer and blob triggers over sockets and Azurite."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import azure.storage.blob
import azurefunctions.extensions.bindings.blob as blob
import httpx
import pytest
from azure.storage.blob import ContainerClient

from devtools.local_host.app_index import app_functions
from devtools.local_host.azurite import Azurite
from devtools.local_host.blob_poller import parse_blob_path
from devtools.local_host.durable_engine import DurableEngine
from devtools.local_host.functions_host import DEFAULT_FUNCTION_KEY, DEFAULT_MASTER_KEY, LocalFunctionsHost
from devtools.local_host.http_routes import compile_route
from devtools.local_host.ncrontab import parse_schedule
from tests.devtools.local_host.test_durable_client_api import InMemoryBackend
from tests.fixtures.azurite import azurite, azurite_container, azurite_container_name  # noqa: F401


class Recorder:
    """What the toy functions saw; tests wait on it instead of sleeping."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.calls: dict[str, list[Any]] = {}

    def reset(self) -> None:
        with self._cond:
            self.calls = {}

    def add(self, name: str, value: Any) -> None:
        with self._cond:
            self.calls.setdefault(name, []).append(value)
            self._cond.notify_all()

    def of(self, name: str) -> list[Any]:
        with self._cond:
            return list(self.calls.get(name, []))

    def wait_for(self, name: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.calls.get(name, [])) >= count, timeout)
            return list(self.calls.get(name, []))


seen = Recorder()

# --- the toy app ---
app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="items/{id:int}/{name?}", methods=["GET", "POST"])
def items(req: func.HttpRequest) -> func.HttpResponse:
    echo = {
        "method": req.method,
        "url": req.url,
        "route": dict(req.route_params),
        "params": dict(req.params),
        "header": req.headers.get("x-toy"),
        "body": req.get_body().decode(),
    }
    return func.HttpResponse(
        json.dumps(echo), status_code=201, headers={"X-Toy": "yes"}, mimetype="application/json"
    )


@app.route(route="public", auth_level=func.AuthLevel.ANONYMOUS)
def public(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("hello")


@app.route(route="admin-only", auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin")


@app.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("boom")


@app.route(route="orders/{order}/start", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start_order(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = await client.start_new("order_flow", f"order-{req.route_params['order']}", req.get_json())
    return client.create_check_status_response(req, instance_id)


@app.timer_trigger(arg_name="timer", schedule="0 0 3 * * *", run_on_startup=False, use_monitor=True)
def nightly(timer: func.TimerRequest) -> None:
    seen.add("nightly", {"past_due": timer.past_due, "status": dict(timer.schedule_status)})


@app.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True, use_monitor=False)
def on_startup(timer: func.TimerRequest) -> None:
    seen.add("on_startup", timer.past_due)


@app.timer_trigger(arg_name="timer", schedule="* * * * * *", use_monitor=False)
def every_second(timer: func.TimerRequest) -> None:
    seen.add("every_second", timer.past_due)


@app.blob_trigger(
    arg_name="blob",
    path="%TOY_CONTAINER%/incoming/{name}",
    connection="TOY_STORAGE",
    source=func.BlobSource.EVENT_GRID,
)
@app.durable_client_input(client_name="client")
async def on_blob(blob: func.InputStream, client: df.DurableOrchestrationClient) -> None:
    data = blob.read()
    if b"refuse" in data:
        raise ValueError(f"refusing {blob.name}")
    seen.add("on_blob", {"name": blob.name, "length": blob.length, "uri": blob.uri, "data": data})
    instance_id = hashlib.sha256(f"{blob.name}".encode() + data).hexdigest()[:16]  # one run per version
    await client.start_new("order_flow", instance_id, {"blob": blob.name})


@app.blob_trigger(arg_name="payload", path="%TOY_CONTAINER%/raw/{stem}.txt", connection="TOY_STORAGE")
def raw_blob(payload: bytes) -> None:
    seen.add("raw_blob", payload)


@app.orchestration_trigger(context_name="context")
def order_flow(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    doubled = yield context.call_activity("double", 21)
    return {"input": context.get_input(), "doubled": doubled}


@app.activity_trigger(input_name="value")
def double(value: int) -> int:
    return value * 2


# --- a second toy app, whose blob trigger takes the SDK's BlobClient instead of the content ---
sdk_app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


@sdk_app.blob_trigger(
    arg_name="client",
    path="%TOY_CONTAINER%/sdk/{name}",
    connection="TOY_STORAGE",
    source=func.BlobSource.EVENT_GRID,
)
def on_sdk_blob(client: blob.BlobClient) -> None:
    seen.add(
        "on_sdk_blob",
        {
            "is_sdk_client": isinstance(client, azure.storage.blob.BlobClient),
            "container": client.container_name,
            "name": client.blob_name,
            "size": client.get_blob_properties().size,
        },
    )


# --- fixtures ---
@pytest.fixture(autouse=True)
def _fresh_recorder() -> None:
    seen.reset()


@pytest.fixture
def backend() -> InMemoryBackend:
    return InMemoryBackend()


@pytest.fixture
def make_host(
    azurite: Azurite,  # noqa: F811
    azurite_container: ContainerClient,  # noqa: F811
    backend: InMemoryBackend,
    tmp_path: Path,
) -> Iterator[Callable[..., LocalFunctionsHost]]:
    hosts: list[LocalFunctionsHost] = []

    def make(**options: Any) -> LocalFunctionsHost:
        chosen_backend = options.pop("backend", backend)
        chosen_app = options.pop("app", app)
        settings: dict[str, Any] = {
            "blob_connection_string": azurite.connection_string,
            "state_dir": tmp_path / "host",
            "http_port": 0,
            "poll_interval": 0,
            "run_timers": False,
            "app_settings": {"TOY_CONTAINER": azurite_container.container_name},
        }
        settings.update(options)
        host = LocalFunctionsHost(chosen_app, chosen_backend, **settings)
        hosts.append(host)
        return host.start()

    yield make
    for host in hosts:
        host.stop()


@pytest.fixture
def host(make_host: Callable[..., LocalFunctionsHost]) -> LocalFunctionsHost:
    return make_host()


KEY = {"code": DEFAULT_FUNCTION_KEY}


# --- route templates, schedules, blob paths (pure) ---
def test_route_with_constraint_and_optional_param() -> None:
    route = compile_route("items/{id:int}/{name?}")

    assert route.match("items/5") == {"id": "5"}
    assert route.match("Items/5/big%20box") == {"id": "5", "name": "big box"}
    assert route.match("items/five") is None
    assert route.match("items/5/a/b") is None


def test_route_catch_all_and_default() -> None:
    assert compile_route("files/{*path}").match("files/a/b.csv") == {"path": "a/b.csv"}
    assert compile_route("runs/{top:int=20}").match("runs") == {"top": "20"}
    assert compile_route("v{version:alpha}/x").match("vbeta/x") == {"version": "beta"}


def test_ncrontab_has_seconds_first() -> None:
    schedule = parse_schedule("0 */5 * * * *")

    assert schedule.next_after(datetime(2030, 1, 1, 0, 1, 30, tzinfo=UTC)) == datetime(
        2030, 1, 1, 0, 5, tzinfo=UTC
    )


def test_timespan_schedule_is_an_interval() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)

    assert parse_schedule("01:30:00").next_after(start) == start + timedelta(minutes=90)


def test_invalid_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid NCRONTAB"):
        parse_schedule("every five minutes")


def test_blob_path_matches_across_folders() -> None:
    path = parse_blob_path("exports/runs/{name}.csv")

    assert path.container == "exports"
    assert path.prefix == "runs/"
    assert path.match("runs/2030/part-1.csv") == {"name": "2030/part-1"}
    assert path.match("runs/model.json") is None


def _small_app() -> df.DFApp:
    small = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @small.route(route="ping")
    def ping(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("pong")

    return small


def test_indexing_leaves_get_functions_usable_for_the_engine() -> None:
    small = _small_app()

    ours = app_functions(small)

    assert [f.get_function_name() for f in small.get_functions()] == ["ping"]
    assert app_functions(small) is ours


def test_indexing_works_after_someone_else_called_get_functions() -> None:
    small = _small_app()
    small.get_functions()

    assert [f.get_function_name() for f in app_functions(small)] == ["ping"]


# --- HTTP ---
def test_http_function_gets_route_query_headers_and_body(host: LocalFunctionsHost) -> None:
    response = httpx.post(
        f"{host.url}/api/items/7/box",
        params={**KEY, "color": "red"},
        headers={"X-Toy": "hi"},
        content=b"payload",
    )
    echo = response.json()

    assert response.status_code == 201
    assert response.headers["X-Toy"] == "yes"
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"
    assert echo["method"] == "POST"
    assert echo["route"] == {"id": "7", "name": "box"}
    assert echo["params"] == {"code": DEFAULT_FUNCTION_KEY, "color": "red"}
    assert echo["header"] == "hi"
    assert echo["body"] == "payload"
    assert echo["url"].startswith(f"{host.url}/api/items/7/box?")


def test_chunked_request_body_reaches_the_function(host: LocalFunctionsHost) -> None:
    response = httpx.post(f"{host.url}/api/items/8", params=KEY, content=iter([b"part one, ", b"part two"]))

    assert response.json()["body"] == "part one, part two"


def test_function_key_in_header_is_accepted(host: LocalFunctionsHost) -> None:
    response = httpx.get(f"{host.url}/api/items/7", headers={"x-functions-key": DEFAULT_FUNCTION_KEY})

    assert response.status_code == 201


def test_missing_or_wrong_key_is_401(host: LocalFunctionsHost) -> None:
    assert httpx.get(f"{host.url}/api/items/7").status_code == 401
    assert httpx.get(f"{host.url}/api/items/7", params={"code": "wrong"}).status_code == 401


def test_anonymous_function_needs_no_key(host: LocalFunctionsHost) -> None:
    response = httpx.get(f"{host.url}/api/public")

    assert response.status_code == 200
    assert response.text == "hello"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_admin_function_needs_the_master_key(host: LocalFunctionsHost) -> None:
    assert httpx.get(f"{host.url}/api/admin-only", params=KEY).status_code == 401
    assert httpx.get(f"{host.url}/api/admin-only", params={"code": DEFAULT_MASTER_KEY}).status_code == 200


def test_unknown_route_and_wrong_method_are_404(host: LocalFunctionsHost) -> None:
    assert httpx.get(f"{host.url}/api/nothing-here", params=KEY).status_code == 404
    assert httpx.delete(f"{host.url}/api/items/7", params=KEY).status_code == 404
    assert httpx.get(f"{host.url}/api/items/seven", params=KEY).status_code == 404


def test_failing_function_is_500(host: LocalFunctionsHost) -> None:
    assert httpx.get(f"{host.url}/api/boom").status_code == 500


def test_durable_starter_returns_check_status_on_the_host(
    host: LocalFunctionsHost, backend: InMemoryBackend
) -> None:
    response = httpx.post(f"{host.url}/api/orders/42/start", params=KEY, json={"sku": "A-1"})
    payload = response.json()

    assert response.status_code == 202
    assert backend.calls_of("start_new") == [("order_flow", "order-42", {"sku": "A-1"})]
    assert payload["id"] == "order-42"
    assert response.headers["Location"].startswith(
        f"{host.url}/runtime/webhooks/durabletask/instances/order-42?"
    )


def test_status_query_uri_is_served_by_the_host(host: LocalFunctionsHost) -> None:
    started = httpx.post(f"{host.url}/api/orders/43/start", params=KEY, json={})

    status = httpx.get(started.json()["statusQueryGetUri"])

    assert status.status_code == 202
    assert status.json()["runtimeStatus"] == "Running"
    assert status.json()["instanceId"] == "order-43"


def test_missing_app_setting_fails_the_start(make_host: Callable[..., LocalFunctionsHost]) -> None:
    with pytest.raises(KeyError, match="TOY_CONTAINER"):
        make_host(app_settings={})


# --- timers ---
def test_fire_timer_passes_a_timer_request(host: LocalFunctionsHost) -> None:
    host.fire_timer("nightly")

    assert seen.of("nightly") == [{"past_due": False, "status": {}}]


def test_fire_timer_of_unknown_function_names_the_timers(host: LocalFunctionsHost) -> None:
    with pytest.raises(KeyError, match="every_second, nightly, on_startup"):
        host.fire_timer("nope")


def test_run_on_startup_timer_fires_when_the_host_starts(
    make_host: Callable[..., LocalFunctionsHost],
) -> None:
    make_host(run_timers=True)

    assert seen.wait_for("on_startup") == [False]


def test_timer_fires_on_its_schedule(make_host: Callable[..., LocalFunctionsHost]) -> None:
    make_host(run_timers=True)

    assert seen.wait_for("every_second")[0] is False


def test_missed_occurrence_fires_past_due_after_downtime(
    make_host: Callable[..., LocalFunctionsHost],
) -> None:
    first_run = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    make_host(run_timers=True, clock=lambda: first_run).stop()  # records Next = 2030-01-02T03:00

    make_host(run_timers=True, clock=lambda: first_run + timedelta(days=2))
    fired = seen.wait_for("nightly")

    assert fired[0]["past_due"] is True
    assert fired[0]["status"]["Next"] == "2030-01-02T03:00:00+00:00"


# --- blobs ---
def test_new_blob_triggers_the_function_once(
    host: LocalFunctionsHost,
    azurite_container: ContainerClient,  # noqa: F811
    backend: InMemoryBackend,
) -> None:
    azurite_container.upload_blob("incoming/run-1/part.csv", b"email\na@example.org\n")
    azurite_container.upload_blob("elsewhere/other.csv", b"ignored")
    container = azurite_container.container_name

    outcomes = host.poll_blobs_once()

    assert [(o.function, o.blob_name, o.status, o.attempts) for o in outcomes] == [
        ("on_blob", "incoming/run-1/part.csv", "processed", 1)
    ]
    call = seen.of("on_blob")[0]
    assert call["name"] == f"{container}/incoming/run-1/part.csv"
    assert call["length"] == len(b"email\na@example.org\n")
    assert call["data"] == b"email\na@example.org\n"
    assert call["uri"].endswith(f"/{container}/incoming/run-1/part.csv")
    assert [c[2] for c in backend.calls_of("start_new")] == [{"blob": f"{container}/incoming/run-1/part.csv"}]


def test_processed_blob_is_not_triggered_again_even_after_restart(
    make_host: Callable[..., LocalFunctionsHost],
    azurite_container: ContainerClient,  # noqa: F811
) -> None:
    azurite_container.upload_blob("incoming/a.csv", b"1")
    first = make_host()
    first.poll_blobs_once()
    first.stop()

    again = make_host().poll_blobs_once()

    assert again == []
    assert len(seen.of("on_blob")) == 1


def test_changed_blob_triggers_again(
    host: LocalFunctionsHost,
    azurite_container: ContainerClient,  # noqa: F811
) -> None:
    azurite_container.upload_blob("incoming/a.csv", b"1")
    host.poll_blobs_once()
    azurite_container.upload_blob("incoming/a.csv", b"22", overwrite=True)

    outcomes = host.poll_blobs_once()

    assert [o.blob_name for o in outcomes] == ["incoming/a.csv"]
    assert [c["data"] for c in seen.of("on_blob")] == [b"1", b"22"]


def test_failing_blob_is_retried_five_times_then_poisoned(
    host: LocalFunctionsHost,
    azurite_container: ContainerClient,  # noqa: F811
    tmp_path: Path,
) -> None:
    azurite_container.upload_blob("incoming/bad.csv", b"refuse me")

    outcomes = host.poll_blobs_once()
    later = host.poll_blobs_once()

    assert [(o.status, o.attempts) for o in outcomes] == [("poisoned", 5)]
    assert "ValueError: refusing" in (outcomes[0].error or "")
    assert later == []
    poison = [
        json.loads(line)
        for line in (tmp_path / "host" / "blob-poison" / "on_blob.jsonl").read_text().splitlines()
    ]
    assert [(p["BlobName"], p["ContainerName"]) for p in poison] == [
        ("incoming/bad.csv", azurite_container.container_name)
    ]


def test_bytes_parameter_gets_the_content(
    host: LocalFunctionsHost,
    azurite_container: ContainerClient,  # noqa: F811
) -> None:
    azurite_container.upload_blob("raw/note.txt", b"plain bytes")
    azurite_container.upload_blob("raw/note.csv", b"not matching the .txt pattern")

    host.poll_blobs_once()

    assert seen.of("raw_blob") == [b"plain bytes"]


def test_background_polling_finds_new_blobs(
    make_host: Callable[..., LocalFunctionsHost],
    azurite_container: ContainerClient,  # noqa: F811
) -> None:
    make_host(poll_interval=0.05)
    azurite_container.upload_blob("incoming/late.csv", b"x")

    assert [c["data"] for c in seen.wait_for("on_blob")] == [b"x"]


def test_sdk_typed_trigger_gets_a_working_client_for_the_new_blob(
    make_host: Callable[..., LocalFunctionsHost],
    azurite: Azurite,  # noqa: F811
    azurite_container: ContainerClient,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The extension reads the connection from the process environment, as the worker's app settings.
    monkeypatch.setenv("TOY_STORAGE", azurite.connection_string)
    azurite_container.upload_blob("sdk/run-1/part.csv", b"email\na@example.org\n")
    host = make_host(app=sdk_app)

    outcomes = host.poll_blobs_once()

    assert [(o.function, o.blob_name, o.status) for o in outcomes] == [
        ("on_sdk_blob", "sdk/run-1/part.csv", "processed")
    ]
    assert seen.of("on_sdk_blob") == [
        {
            "is_sdk_client": True,
            "container": azurite_container.container_name,
            "name": "sdk/run-1/part.csv",
            "size": len(b"email\na@example.org\n"),
        }
    ]


def test_sdk_typed_trigger_without_its_connection_setting_fails_the_start(
    make_host: Callable[..., LocalFunctionsHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TOY_STORAGE", raising=False)

    with pytest.raises(KeyError, match="connection setting 'TOY_STORAGE'"):
        make_host(app=sdk_app)


# --- with the real durable engine ---
def test_http_start_runs_the_orchestration_on_the_durable_engine(
    make_host: Callable[..., LocalFunctionsHost], tmp_path: Path
) -> None:
    engine = DurableEngine(app, tmp_path / "durable")
    engine.start()
    try:
        host = make_host(backend=engine)
        started = httpx.post(f"{host.url}/api/orders/44/start", params=KEY, json={"sku": "B-2"})
        engine.wait_for("order-44", timeout=30)

        status = httpx.get(started.json()["statusQueryGetUri"])
    finally:
        engine.stop()

    assert status.status_code == 200
    assert status.json()["runtimeStatus"] == "Completed"
    assert status.json()["output"] == {"input": {"sku": "B-2"}, "doubled": 42}
