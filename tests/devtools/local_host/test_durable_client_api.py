"""The real ``DurableOrchestrationClient`` against ``DurableClientApi`` over sockets.

The backend is a small in-memory ``OrchestrationBackend`` (below) so these tests pin the HTTP
contract alone; the durable engine has its own tests.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import httpx
import pytest
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from devtools.local_host.backend import NON_RUNNING_STATUSES, InstanceStatus
from devtools.local_host.durable_client_api import DurableClientApi
from devtools.local_host.worker_loop import run_coroutine

T0 = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)


@dataclass
class Call:
    operation: str
    args: tuple[Any, ...]


class InMemoryBackend:
    """A minimal ``OrchestrationBackend``: instances are records the test moves between states."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.instances: dict[str, InstanceStatus] = {}
        self.calls: list[Call] = []
        self._tick = 0

    def _now(self) -> datetime:
        self._tick += 1
        return T0 + timedelta(minutes=self._tick)

    def start_new(self, name: str, instance_id: str | None, input: Any) -> str:
        with self._lock:
            assert instance_id, "the API always passes an instance id"
            if "\\" in instance_id:
                raise ValueError("instance id must not contain '/', '\\', '#', '?' or control characters")
            self.calls.append(Call("start_new", (name, instance_id, input)))
            existing = self.instances.get(instance_id)
            if existing is not None and existing.runtime_status not in NON_RUNNING_STATUSES:
                return instance_id
            now = self._now()
            self.instances[instance_id] = InstanceStatus(
                name=name,
                instance_id=instance_id,
                runtime_status="Running",
                created_time=now,
                last_updated_time=now,
                input=input,
                history=[{"EventType": "ExecutionStarted", "Name": name, "Result": None}],
            )
            return instance_id

    def get_status(self, instance_id: str, *, show_history: bool = False) -> InstanceStatus | None:
        with self._lock:
            status = self.instances.get(instance_id)
            if status is None:
                return None
            return replace(status, history=list(status.history or []) if show_history else None)

    def list_instances(
        self,
        *,
        runtime_status: Iterable[str] | None = None,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> list[InstanceStatus]:
        wanted = None if runtime_status is None else set(runtime_status)
        with self._lock:
            return [
                replace(s, history=None)
                for s in self.instances.values()
                if (wanted is None or s.runtime_status in wanted)
                and (created_from is None or s.created_time >= created_from)
                and (created_to is None or s.created_time <= created_to)
            ]

    def terminate(self, instance_id: str, reason: str) -> bool:
        with self._lock:
            self.calls.append(Call("terminate", (instance_id, reason)))
            status = self.instances.get(instance_id)
            if status is None or status.runtime_status in NON_RUNNING_STATUSES:
                return False
            self.instances[instance_id] = replace(status, runtime_status="Terminated", output=reason)
            return True

    def raise_event(self, instance_id: str, event_name: str, data: Any) -> bool:
        with self._lock:
            self.calls.append(Call("raise_event", (instance_id, event_name, data)))
            status = self.instances.get(instance_id)
            return status is not None and status.runtime_status not in NON_RUNNING_STATUSES

    def purge(self, instance_id: str) -> bool:
        with self._lock:
            self.calls.append(Call("purge", (instance_id,)))
            return self.instances.pop(instance_id, None) is not None

    # --- test controls ---
    def set(self, instance_id: str, **changes: Any) -> None:
        with self._lock:
            self.instances[instance_id] = replace(self.instances[instance_id], **changes)

    def add(
        self,
        instance_id: str,
        runtime_status: str,
        *,
        name: str = "flow",
        created: datetime = T0,
        **more: Any,
    ) -> None:
        with self._lock:
            self.instances[instance_id] = InstanceStatus(
                name=name,
                instance_id=instance_id,
                runtime_status=runtime_status,
                created_time=created,
                last_updated_time=created,
                **more,
            )

    def calls_of(self, operation: str) -> list[tuple[Any, ...]]:
        return [c.args for c in self.calls if c.operation == operation]


@pytest.fixture
def backend() -> InMemoryBackend:
    return InMemoryBackend()


@pytest.fixture
def api(backend: InMemoryBackend) -> Iterator[DurableClientApi]:
    with DurableClientApi(backend, task_hub="SegmentExport", orchestrators={"flow", "other_flow"}) as server:
        yield server


@pytest.fixture
def client(api: DurableClientApi) -> df.DurableOrchestrationClient:
    return df.DurableOrchestrationClient(api.client_binding_json())


def _request(url: str = "http://127.0.0.1:7071/api/start") -> func.HttpRequest:
    return func.HttpRequest(method="POST", url=url, headers={}, params={}, route_params={}, body=b"")


# --- binding ---
def test_binding_json_has_the_extension_fields(api: DurableClientApi) -> None:
    binding = json.loads(api.client_binding_json())

    assert binding["taskHubName"] == "SegmentExport"
    assert binding["rpcBaseUrl"] == f"http://127.0.0.1:{api.port}/durabletask/"
    assert binding["baseUrl"] == f"http://127.0.0.1:{api.port}/runtime/webhooks/durabletask"
    assert binding["requiredQueryStringParameters"].startswith("code=")
    assert binding["managementUrls"]["id"] == "INSTANCEID"
    assert set(binding["managementUrls"]) == {
        "id",
        "statusQueryGetUri",
        "sendEventPostUri",
        "terminatePostUri",
        "rewindPostUri",
        "purgeHistoryDeleteUri",
        "restartPostUri",
        "suspendPostUri",
        "resumePostUri",
    }
    assert set(binding["creationUrls"]) == {"createNewInstancePostUri", "createAndWaitOnNewInstancePostUri"}


def test_binding_follows_the_public_base_url(backend: InMemoryBackend) -> None:
    with DurableClientApi(backend, public_base_url="http://127.0.0.1:7071/") as server:
        binding = json.loads(server.client_binding_json())

    assert binding["baseUrl"] == "http://127.0.0.1:7071/runtime/webhooks/durabletask"
    assert binding["managementUrls"]["statusQueryGetUri"].startswith(
        "http://127.0.0.1:7071/runtime/webhooks/durabletask/instances/INSTANCEID?taskHub="
    )


# --- start_new ---
def test_start_new_passes_the_decoded_input(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    instance_id = run_coroutine(client.start_new("flow", "run-1", {"export": "weekly", "files": ["a.csv"]}))

    assert instance_id == "run-1"
    assert backend.calls_of("start_new") == [("flow", "run-1", {"export": "weekly", "files": ["a.csv"]})]


def test_start_new_keeps_a_plain_string_input(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    run_coroutine(client.start_new("flow", "run-s", "hello"))

    assert backend.calls_of("start_new") == [("flow", "run-s", "hello")]


def test_start_new_without_id_generates_one(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    instance_id = run_coroutine(client.start_new("flow"))

    assert len(instance_id) == 32
    assert backend.calls_of("start_new") == [("flow", instance_id, None)]


def test_start_new_of_unknown_orchestrator_fails_with_the_extension_message(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    with pytest.raises(Exception, match="The function 'nope' doesn't exist"):
        run_coroutine(client.start_new("nope", "x"))
    assert backend.calls_of("start_new") == []


def test_start_new_with_an_id_the_backend_refuses_fails_with_its_message(
    client: df.DurableOrchestrationClient,
) -> None:
    with pytest.raises(Exception, match="instance id must not contain"):
        run_coroutine(client.start_new("flow", "bad\\id", {}))


def test_start_new_over_a_running_instance_is_refused(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("run-2", "Running")

    with pytest.raises(Exception, match="already exists"):
        run_coroutine(client.start_new("flow", "run-2", {}))
    assert backend.calls_of("start_new") == []


def test_start_new_over_a_completed_instance_replaces_it(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("run-3", "Completed")

    assert run_coroutine(client.start_new("flow", "run-3", {"again": True})) == "run-3"
    assert backend.calls_of("start_new") == [("flow", "run-3", {"again": True})]


# --- get_status ---
def test_get_status_of_a_running_instance(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("run-4", "Running", input={"n": 1}, custom_status={"batches_done": 3})

    status = run_coroutine(client.get_status("run-4"))

    assert status.runtime_status == OrchestrationRuntimeStatus.Running
    assert status.name == "flow"
    assert status.instance_id == "run-4"
    assert status.custom_status == {"batches_done": 3}
    assert status.created_time == T0
    assert json.loads(status.input_) == {"n": 1}  # JSON text, as Azure returns a client-started input


def test_get_status_of_a_completed_instance_has_its_output(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("run-5", "Completed", output={"uploaded": 10})

    status = run_coroutine(client.get_status("run-5"))

    assert status.runtime_status == OrchestrationRuntimeStatus.Completed
    assert status.output == {"uploaded": 10}


def test_get_status_of_an_unknown_instance_is_falsy(client: df.DurableOrchestrationClient) -> None:
    status = run_coroutine(client.get_status("missing"))

    assert not status
    assert status.runtime_status is None


def test_get_status_with_history_returns_history_events(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    run_coroutine(client.start_new("flow", "run-6", None))

    status = run_coroutine(client.get_status("run-6", show_history=True))

    assert status.historyEvents == [{"EventType": "ExecutionStarted", "Name": "flow"}]


def test_get_status_without_input(api: DurableClientApi, backend: InMemoryBackend) -> None:
    backend.add("run-7", "Running", input={"big": "x"})

    response = httpx.get(_rpc(api, "instances/run-7?showInput=false"))

    assert response.status_code == 202
    assert response.json()["input"] is None


def test_status_codes_follow_the_runtime_status(api: DurableClientApi, backend: InMemoryBackend) -> None:
    backend.add("r", "Running")
    backend.add("c", "Completed")
    backend.add("f", "Failed", output="Orchestrator function 'flow' failed: boom")
    backend.add("t", "Terminated")

    codes = {i: httpx.get(_rpc(api, f"instances/{i}")).status_code for i in ("r", "c", "f", "t", "missing")}
    failed_500 = httpx.get(_rpc(api, "instances/f?returnInternalServerErrorOnFailure=true")).status_code

    assert codes == {"r": 202, "c": 200, "f": 200, "t": 200, "missing": 404}
    assert failed_500 == 500


def test_running_status_carries_location_and_retry_after(
    api: DurableClientApi, backend: InMemoryBackend
) -> None:
    backend.add("run-8", "Pending")

    response = httpx.get(_rpc(api, "instances/run-8"))

    assert response.headers["Retry-After"] == "5"
    assert response.headers["Location"].endswith("/durabletask/instances/run-8")
    assert response.json()["createdTime"] == "2030-05-06T07:08:09Z"


# --- listing ---
def test_get_status_all_lists_every_instance(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("a", "Running")
    backend.add("b", "Completed")

    statuses = run_coroutine(client.get_status_all())

    assert sorted(s.instance_id for s in statuses) == ["a", "b"]


def test_get_status_by_filters_status_prefix_and_time(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("weekly-1", "Running", created=T0)
    backend.add("weekly-2", "Completed", created=T0)
    backend.add("weekly-3", "Running", created=T0 + timedelta(days=2))
    backend.add("daily-1", "Running", created=T0)

    statuses = run_coroutine(
        client.get_status_by(
            created_time_from=T0 - timedelta(hours=1),
            created_time_to=T0 + timedelta(hours=1),
            runtime_status=[OrchestrationRuntimeStatus.Running, OrchestrationRuntimeStatus.Pending],
            instance_id_prefix="weekly-",
        )
    )

    assert [s.instance_id for s in statuses] == ["weekly-1"]


def test_list_pages_with_continuation_token(api: DurableClientApi, backend: InMemoryBackend) -> None:
    for index in range(3):
        backend.add(f"p{index}", "Running", created=T0 + timedelta(seconds=index))

    first = httpx.get(_rpc(api, "instances/?top=2"))
    second = httpx.get(
        _rpc(api, "instances/?top=2"),
        headers={"x-ms-continuation-token": first.headers["x-ms-continuation-token"]},
    )

    assert [s["instanceId"] for s in first.json()] == ["p0", "p1"]
    assert [s["instanceId"] for s in second.json()] == ["p2"]
    assert "x-ms-continuation-token" not in second.headers


# --- terminate / raise_event / purge ---
def test_terminate_reaches_the_backend_with_its_reason(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("run-9", "Running")

    run_coroutine(client.terminate("run-9", "cancelled through the HTTP API"))

    assert backend.calls_of("terminate") == [("run-9", "cancelled through the HTTP API")]


def test_terminate_of_a_finished_instance_is_accepted_quietly(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("done", "Completed")

    run_coroutine(client.terminate("done", "late"))  # 410, which the client accepts

    assert backend.calls_of("terminate") == []


def test_terminate_of_an_unknown_instance_fails(client: df.DurableOrchestrationClient) -> None:
    with pytest.raises(Exception, match="No instance with ID 'ghost' found"):
        run_coroutine(client.terminate("ghost", "why"))


def test_raise_event_delivers_the_data(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("run-10", "Running")

    run_coroutine(client.raise_event("run-10", "approval", {"ok": True}))

    # The client JSON-encodes the data twice; the extension passes the decoded body through.
    assert backend.calls_of("raise_event") == [("run-10", "approval", json.dumps({"ok": True}))]


def test_raise_event_to_a_finished_instance_fails_as_gone(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("old", "Completed")

    with pytest.raises(Exception, match="is gone"):
        run_coroutine(client.raise_event("old", "approval", 1))


def test_raise_event_to_an_unknown_instance_fails(client: df.DurableOrchestrationClient) -> None:
    with pytest.raises(Exception, match="No instance with ID ghost found"):
        run_coroutine(client.raise_event("ghost", "approval", 1))


def test_raise_event_needs_json_content(api: DurableClientApi, backend: InMemoryBackend) -> None:
    backend.add("run-11", "Running")

    response = httpx.post(_rpc(api, "instances/run-11/raiseEvent/x"), content=b"1")

    assert response.status_code == 400
    assert response.json()["Message"] == "Only application/json request content is supported"


def test_purge_of_a_completed_instance(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("finished", "Completed")

    result = run_coroutine(client.purge_instance_history("finished"))

    assert result.instances_deleted == 1
    assert "finished" not in backend.instances


def test_purge_of_an_unknown_instance_deletes_nothing(client: df.DurableOrchestrationClient) -> None:
    assert run_coroutine(client.purge_instance_history("ghost")).instances_deleted == 0


def test_purge_of_a_running_instance_is_refused(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("busy", "Running")

    with pytest.raises(Exception, match="unexpected status code 412"):
        run_coroutine(client.purge_instance_history("busy"))
    assert "busy" in backend.instances


def test_purge_by_filter_removes_only_finished_matches(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("old-done", "Completed", created=T0)
    backend.add("old-busy", "Running", created=T0)
    backend.add("new-done", "Completed", created=T0 + timedelta(days=3))

    result = run_coroutine(
        client.purge_instance_history_by(
            created_time_from=T0 - timedelta(days=1), created_time_to=T0 + timedelta(days=1)
        )
    )

    assert result.instances_deleted == 1
    assert sorted(backend.instances) == ["new-done", "old-busy"]


# --- HTTP management payloads ---
def test_check_status_response_points_at_the_request_origin(client: df.DurableOrchestrationClient) -> None:
    response = client.create_check_status_response(_request("http://127.0.0.1:7071/api/start"), "run-12")
    payload = json.loads(response.get_body())

    assert response.status_code == 202
    assert payload["id"] == "run-12"
    assert response.headers["Location"] == payload["statusQueryGetUri"]
    assert payload["statusQueryGetUri"].startswith(
        "http://127.0.0.1:7071/runtime/webhooks/durabletask/instances/run-12?taskHub=SegmentExport&connection=Storage&code="
    )


def test_management_payload_urls_answer(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("run-13", "Completed", output=[1, 2])

    urls = client.create_http_management_payload("run-13")
    response = httpx.get(urls["statusQueryGetUri"])

    assert response.status_code == 200
    assert response.json()["output"] == [1, 2]


def test_webhook_urls_need_the_system_key(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("run-14", "Completed")
    url = client.create_http_management_payload("run-14")["statusQueryGetUri"].split("&code=")[0]

    assert httpx.get(url).status_code == 401


def test_terminate_post_uri_works(client: df.DurableOrchestrationClient, backend: InMemoryBackend) -> None:
    backend.add("run-15", "Running")
    url = client.create_http_management_payload("run-15")["terminatePostUri"].replace("{text}", "operator")

    response = httpx.post(url)

    assert response.status_code == 202
    assert backend.calls_of("terminate") == [("run-15", "operator")]


def test_wait_for_completion_returns_the_output(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("run-16", "Completed", output={"rows": 5})

    response = run_coroutine(
        client.wait_for_completion_or_create_check_status_response(_request(), "run-16", 2000, 100)
    )

    assert response.status_code == 200
    assert json.loads(response.get_body()) == {"rows": 5}


def test_wait_for_completion_times_out_into_check_status(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("run-17", "Running")

    response = run_coroutine(
        client.wait_for_completion_or_create_check_status_response(_request(), "run-17", 200, 50)
    )

    assert response.status_code == 202
    assert json.loads(response.get_body())["id"] == "run-17"


def test_create_and_wait_endpoint_returns_output_when_done(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend, api: DurableClientApi
) -> None:
    def finish_when_started() -> None:
        while "run-18" not in backend.instances:
            threading.Event().wait(0.01)
        backend.set("run-18", runtime_status="Completed", output="done")

    finisher = threading.Thread(target=finish_when_started)
    finisher.start()
    response = httpx.post(
        f"{api.rpc_base_url}orchestrators/flow/run-18?timeout=5&pollingInterval=0.05", json="{}"
    )
    finisher.join()

    assert response.status_code == 200
    assert response.json() == "done"


def _rpc(api: DurableClientApi, path: str) -> str:
    return f"{api.rpc_base_url}{path}"


# --- event loops ---
def test_client_works_after_another_event_loop_used_it(
    client: df.DurableOrchestrationClient, backend: InMemoryBackend
) -> None:
    backend.add("run-19", "Running")
    before = asyncio.run(client.get_status("run-19"))  # leaves the SDK's global session on a closed loop

    after = run_coroutine(client.get_status("run-19"))
    again = asyncio.run(client.get_status("run-19"))  # and the worker loop leaves none behind

    assert [s.instance_id for s in (before, after, again)] == ["run-19", "run-19", "run-19"]


def test_api_refuses_a_non_loopback_address(backend: InMemoryBackend) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.1 only"):
        DurableClientApi(backend, host="0.0.0.0")
