"""The local Autopilot server speaks the API of specs/autopilot-api.md, over real sockets."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.autopilot_server import Faults, LocalAutopilot, max_in_window
from tests.fixtures.autopilot import (
    AUTOPILOT_TEST_KEY,
    autopilot_server_fixture,  # noqa: F401
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def api(autopilot_server: LocalAutopilot) -> Iterator[httpx.Client]:
    """An HTTP client carrying the server's key, rooted at ``/v1``."""
    with httpx.Client(
        base_url=autopilot_server.base_url, headers={"autopilotapikey": AUTOPILOT_TEST_KEY}, timeout=5
    ) as client:
        yield client


def contact(email: str, **fields: Any) -> dict[str, Any]:
    return {"Email": email, **fields}


def bulk(count: int, **fields: Any) -> list[dict[str, Any]]:
    return [contact(f"user{i:03d}@example.com", **fields) for i in range(count)]


# -- auth ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"autopilotapikey": "wrong"}])
def test_a_missing_or_wrong_key_is_answered_401_json(
    autopilot_server: LocalAutopilot, headers: dict[str, str]
) -> None:
    response = httpx.get(autopilot_server.base_url + "/lists", headers=headers)

    assert response.status_code == 401
    assert set(response.json()) == {"error", "message"}


def test_after_rotation_the_old_key_is_refused_and_the_new_one_works(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    autopilot_server.rotate_key("the-new-key")

    assert api.get("/lists").status_code == 401
    assert api.get("/lists", headers={"autopilotapikey": "the-new-key"}).status_code == 200


# -- contacts ----------------------------------------------------------------------------------------


def test_a_single_upsert_stores_and_updates_the_contact(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    first = api.post("/contact", json={"contact": contact("Ann@Example.com", FirstName="Ann")})
    api.post("/contact", json={"contact": contact("ann@example.com", custom={"string--Tier": "Gold"})})

    contact_id = first.json()["contact_id"]
    by_email = api.get("/contact/ann@example.com").json()
    by_id = api.get(f"/contact/{contact_id}").json()
    assert contact_id.startswith("person_")
    assert by_email == by_id
    assert by_email["FirstName"] == "Ann"
    assert by_email["custom"] == {"string--Tier": "Gold"}
    assert list(autopilot_server.contacts) == ["ann@example.com"]


def test_a_bulk_upsert_answers_ids_and_the_email_map(api: httpx.Client) -> None:
    response = api.post("/contacts", json={"contacts": bulk(3)})

    body = response.json()
    assert response.status_code == 200
    assert len(body["contact_ids"]) == 3
    assert sorted(body["email_contact_map"]) == [
        "user000@example.com",
        "user001@example.com",
        "user002@example.com",
    ]


def test_more_than_100_contacts_in_one_request_is_refused(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    response = api.post("/contacts", json={"contacts": bulk(101)})

    assert response.status_code == 400
    assert "at most 100" in response.json()["message"]
    assert autopilot_server.contacts == {}


def test_an_invalid_email_refuses_the_whole_bulk_naming_it(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    contacts = [*bulk(3), contact("broken@")]

    response = api.post("/contacts", json={"contacts": contacts})

    assert response.status_code == 400
    assert response.json()["message"] == "Contact 3 has an invalid Email: 'broken@'."
    assert autopilot_server.contacts == {}


def test_in_omit_mode_an_invalid_email_is_left_out_of_a_200(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    autopilot_server.configure(bad_contact_mode="omit")

    response = api.post("/contacts", json={"contacts": [*bulk(2), contact("broken@")]})

    assert response.status_code == 200
    assert sorted(response.json()["email_contact_map"]) == ["user000@example.com", "user001@example.com"]
    assert sorted(autopilot_server.contacts) == ["user000@example.com", "user001@example.com"]


def test_a_malformed_custom_field_key_is_refused(api: httpx.Client) -> None:
    response = api.post("/contact", json={"contact": contact("a@example.com", custom={"Tier": "Gold"})})

    assert response.status_code == 400
    assert "<type>--<Name>" in response.json()["message"]


def test_special_keys_are_not_stored_as_fields(autopilot_server: LocalAutopilot, api: httpx.Client) -> None:
    list_id = autopilot_server.create_list("L")

    api.post("/contact", json={"contact": contact("a@example.com", _autopilot_list=list_id, notify=False)})

    assert set(autopilot_server.contacts["a@example.com"]) == {"contact_id", "Email"}


def test_a_deleted_contact_is_gone_from_contacts_and_lists(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    list_id = autopilot_server.create_list("L")
    api.post("/contact", json={"contact": contact("a@example.com", _autopilot_list=list_id)})

    assert api.delete("/contact/a@example.com").status_code == 200

    assert api.get("/contact/a@example.com").status_code == 404
    assert autopilot_server.members(list_id) == set()


def test_all_contacts_are_paged_100_at_a_time(api: httpx.Client) -> None:
    for start in range(0, 250, 100):
        api.post("/contacts", json={"contacts": bulk(250)[start : start + 100]})

    seen: list[str] = []
    path = "/contacts"
    pages = 0
    while True:
        body = api.get(path).json()
        pages += 1
        assert body["total_contacts"] == 250
        seen.extend(c["Email"] for c in body["contacts"])
        if "bookmark" not in body:
            break
        path = f"/contacts/{body['bookmark']}"

    assert pages == 3
    assert seen == [c["Email"] for c in bulk(250)]


def test_custom_fields_are_listed_by_name_and_type(api: httpx.Client) -> None:
    api.post("/contact", json={"contact": contact("a@example.com", custom={"string--Loyalty--Tier": "Gold"})})

    assert api.get("/contacts/custom_fields").json() == [
        {"name": "Loyalty Tier", "kind": "string", "fieldType": "string"}
    ]


# -- lists -------------------------------------------------------------------------------------------


def test_a_created_list_is_listed(api: httpx.Client) -> None:
    list_id = api.post("/list", json={"name": "Segment A"}).json()["list_id"]

    assert list_id.startswith("contactlist_")
    assert api.get("/lists").json() == {"lists": [{"list_id": list_id, "title": "Segment A"}]}


def test_a_duplicate_list_name_is_answered_409_in_the_code_shape(api: httpx.Client) -> None:
    api.post("/list", json={"name": "Segment A"})

    response = api.post("/list", json={"name": "Segment A"})

    assert response.status_code == 409
    assert set(response.json()) == {"code", "message"}


def test_in_create_mode_a_duplicate_name_makes_a_second_list(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    autopilot_server.configure(duplicate_list_mode="create")

    first = api.post("/list", json={"name": "Segment A"}).json()["list_id"]
    second = api.post("/list", json={"name": "Segment A"}).json()["list_id"]

    assert first != second
    assert sorted(autopilot_server.lists.values()) == ["Segment A", "Segment A"]


def test_bulk_upserts_join_the_list_named_in_autopilot_list(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    list_id = autopilot_server.create_list("L")

    api.post("/contacts", json={"contacts": bulk(3, _autopilot_list=list_id)})

    assert len(autopilot_server.members(list_id)) == 3


def test_bulk_upserts_can_be_switched_to_ignore_the_list(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    autopilot_server.configure(bulk_honours_list=False)
    list_id = autopilot_server.create_list("L")

    api.post("/contacts", json={"contacts": bulk(3, _autopilot_list=list_id)})
    api.post("/contact", json={"contact": contact("single@example.com", _autopilot_list=list_id)})

    assert autopilot_server.members(list_id) == {"single@example.com"}


def test_list_membership_add_check_and_remove(autopilot_server: LocalAutopilot, api: httpx.Client) -> None:
    list_id = autopilot_server.create_list("L")
    api.post("/contact", json={"contact": contact("a+tag@example.com")})
    path = f"/list/{list_id}/contact/a%2Btag@example.com"

    not_yet = api.get(path)
    added = api.post(path)
    again = api.post(path)
    member = api.get(path)
    removed = api.delete(path)

    assert (not_yet.status_code, not_yet.content) == (404, b"")
    assert (added.status_code, again.json()) == (200, {"not_modified": True})
    assert member.status_code == 200
    assert removed.status_code == 200
    assert autopilot_server.members(list_id) == set()


def test_adding_an_unknown_contact_to_a_list_is_404(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    list_id = autopilot_server.create_list("L")

    assert api.post(f"/list/{list_id}/contact/nobody@example.com").status_code == 404


def test_list_members_are_paged_with_bookmarks(autopilot_server: LocalAutopilot, api: httpx.Client) -> None:
    list_id = autopilot_server.create_list("L")
    for start in range(0, 150, 100):
        api.post("/contacts", json={"contacts": bulk(150, _autopilot_list=list_id)[start : start + 100]})

    first = api.get(f"/list/{list_id}/contacts").json()
    second = api.get(f"/list/{list_id}/contacts/{first['bookmark']}").json()

    assert (len(first["contacts"]), len(second["contacts"])) == (100, 50)
    assert "bookmark" not in second
    assert {c["Email"] for c in first["contacts"] + second["contacts"]} == {c["Email"] for c in bulk(150)}


# -- limits and faults ---------------------------------------------------------------------------------


def test_requests_beyond_the_rate_are_answered_429(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    autopilot_server.requests_per_second = 1

    statuses = [api.get("/lists").status_code for _ in range(3)]
    throttled = api.get("/lists")

    assert statuses[0] == 200
    assert throttled.status_code == 429
    assert throttled.json() == {
        "error": "Too Many Requests",
        "message": "You have exceeded your request rate of 1 r/s.",
    }
    assert "Retry-After" not in throttled.headers


@pytest.mark.parametrize(("retry_after", "header"), [(None, None), (2, "2")])
def test_a_429_storm_answers_the_next_requests_with_or_without_retry_after(
    autopilot_server: LocalAutopilot, api: httpx.Client, retry_after: int | None, header: str | None
) -> None:
    autopilot_server.set_faults(throttle_next=2, throttle_retry_after=retry_after)

    responses = [api.get("/lists") for _ in range(3)]

    assert [r.status_code for r in responses] == [429, 429, 200]
    assert responses[0].headers.get("Retry-After") == header


def test_server_errors_are_answered_with_the_chosen_status(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    autopilot_server.set_faults(server_error_rate=1.0, server_error_status=503)

    assert api.get("/lists").status_code == 503


def test_a_dropped_connection_gives_no_answer(autopilot_server: LocalAutopilot, api: httpx.Client) -> None:
    autopilot_server.set_faults(drop_rate=1.0)

    with pytest.raises(httpx.TransportError):
        api.post("/contact", json={"contact": contact("a@example.com")})

    assert [r.status for r in autopilot_server.request_log()] == [0]
    assert autopilot_server.contacts == {}


def test_a_drop_after_processing_loses_only_the_answer(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    autopilot_server.set_faults(drop_rate=1.0, drop_after_processing=True)

    with pytest.raises(httpx.TransportError):
        api.post("/contact", json={"contact": contact("a@example.com")})

    assert list(autopilot_server.contacts) == ["a@example.com"]


def test_a_stall_makes_a_short_client_timeout_expire(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    autopilot_server.set_faults(stall_next=1, stall_seconds=1.0)

    with pytest.raises(httpx.ReadTimeout):
        api.get("/lists", timeout=0.2)

    assert api.get("/lists").status_code == 200


def test_stale_list_lookups_hide_existing_lists(autopilot_server: LocalAutopilot, api: httpx.Client) -> None:
    autopilot_server.create_list("L")
    autopilot_server.set_faults(stale_lists_next=1)

    assert api.get("/lists").json() == {"lists": []}
    assert len(api.get("/lists").json()["lists"]) == 1


def test_unknown_fault_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        Faults.from_dict({"explode": True})


def test_the_request_log_records_method_path_status_and_contacts(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    api.post("/contacts", json={"contacts": bulk(7)})

    (record,) = autopilot_server.request_log()
    assert (record.method, record.path, record.status, record.contacts) == ("POST", "/contacts", 200, 7)


def test_max_in_window_counts_the_busiest_second() -> None:
    assert max_in_window([0.0, 0.5, 0.99, 1.0, 1.5, 1.6, 1.7]) == 5
    assert max_in_window([]) == 0


# -- protocol -----------------------------------------------------------------------------------------


def test_one_connection_serves_several_requests(autopilot_server: LocalAutopilot) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", autopilot_server.port, timeout=5)
    try:
        statuses = []
        sockets = []
        for _ in range(3):
            connection.request("GET", "/v1/lists", headers={"autopilotapikey": AUTOPILOT_TEST_KEY})
            response = connection.getresponse()
            body = response.read()
            statuses.append(response.status)
            sockets.append(connection.sock)
            assert int(response.headers["Content-Length"]) == len(body)
    finally:
        connection.close()

    assert statuses == [200, 200, 200]
    assert sockets[0] is sockets[1] is sockets[2]


def test_an_unknown_path_is_a_json_404(api: httpx.Client) -> None:
    response = api.get("/nothing/here")

    assert response.status_code == 404
    assert set(response.json()) == {"code", "message"}


def test_a_body_that_is_not_json_is_a_400(api: httpx.Client) -> None:
    response = api.post("/contact", content=b"{not json", headers={"Content-Type": "application/json"})

    assert response.status_code == 400


# -- admin API and command line ------------------------------------------------------------------------


def test_admin_state_counts_contacts_lists_and_requests(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    list_id = autopilot_server.create_list("L")
    api.post("/contacts", json={"contacts": bulk(4, _autopilot_list=list_id)})
    api.get("/lists", headers={"autopilotapikey": "wrong"})

    state = httpx.get(autopilot_server.url + "/_admin/state").json()

    assert state["contacts"] == 4
    assert state["lists"] == [{"list_id": list_id, "title": "L", "members": 4}]
    assert state["requests_by_status"] == {"200": 1, "401": 1}
    assert state["max_requests_in_1s"] == 2


def test_admin_sets_faults_rotates_the_key_and_resets(
    autopilot_server: LocalAutopilot, api: httpx.Client
) -> None:
    api.post("/contact", json={"contact": contact("a@example.com")})
    admin = autopilot_server.url + "/_admin"

    faults = httpx.post(admin + "/faults", json={"throttle_next": 1, "throttle_retry_after": 3}).json()
    throttled = api.get("/lists")
    httpx.post(admin + "/key", json={"key": "k2"})
    refused = api.get("/lists")
    httpx.post(admin + "/reset")

    assert (faults["throttle_next"], throttled.status_code, throttled.headers["Retry-After"]) == (1, 429, "3")
    assert refused.status_code == 401
    assert autopilot_server.contacts == {}
    assert autopilot_server.request_log() == []


def test_admin_refuses_an_unknown_fault_field(autopilot_server: LocalAutopilot) -> None:
    response = httpx.post(autopilot_server.url + "/_admin/faults", json={"explode": True})

    assert response.status_code == 400


def test_admin_config_switches_the_undocumented_behaviours(autopilot_server: LocalAutopilot) -> None:
    httpx.post(
        autopilot_server.url + "/_admin/config", json={"bulk_honours_list": False, "requests_per_second": 7}
    )

    assert autopilot_server.bulk_honours_list is False
    assert autopilot_server.requests_per_second == 7


def test_the_command_line_prints_its_url_and_stops_on_sigterm() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "devtools.autopilot_server", "--port", "0", "--key", "K", "--rps", "5"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            name, _, base_url = line.partition("=")
            state = httpx.get(base_url.removesuffix("/v1") + "/_admin/state", timeout=5).json()
            lists = httpx.get(base_url + "/lists", headers={"autopilotapikey": "K"}, timeout=5)
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()

    assert name == "AUTOPILOT_BASE_URL"
    assert base_url.startswith("http://127.0.0.1:")
    assert base_url.endswith("/v1")
    assert state["requests_per_second"] == 5
    assert lists.json() == {"lists": []}
    assert code == 0


def test_stop_ends_idle_keep_alive_connections() -> None:
    server = LocalAutopilot("k").start()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)

    def state() -> Any:
        connection.request("GET", "/_admin/state")
        return json.loads(connection.getresponse().read())

    state()
    server.stop()

    with pytest.raises((OSError, http.client.HTTPException)):
        state()
    connection.close()
