"""The Autopilot client against the local Autopilot server, over real sockets.

Every test asserts what arrived at the server (contacts, lists, members, the request log) or what the
client returned or raised; faults come from the server's seeded switches, never from mocks.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from devtools.autopilot_server import LocalAutopilot, RequestRecord
from shared.autopilot_client import (
    AutopilotAuthError,
    AutopilotError,
    ClientStats,
    RejectedContact,
    UpsertOutcome,
    error_message,
    parse_retry_after,
    shared_http_client,
)
from shared.rate_limit import RateLimiter
from tests.fixtures.autopilot import (
    AUTOPILOT_TEST_CONNECTION,
    StaticKeySource,
    autopilot_server_fixture,  # noqa: F401
    make_autopilot_client,
)


def people(count: int, prefix: str = "person") -> list[dict[str, Any]]:
    return [
        {
            "Email": f"{prefix}{i}@example.com",
            "FirstName": f"First{i}",
            "LastName": "Lee",
            "custom": {"string--Loyalty--Tier": "Gold", "integer--Points": i},
        }
        for i in range(count)
    ]


def emails(contacts: list[dict[str, Any]]) -> set[str]:
    return {c["Email"].lower() for c in contacts}


def posts(server: LocalAutopilot, path: str) -> list[RequestRecord]:
    return [r for r in server.request_log() if r.method == "POST" and r.path == path]


# -- bulk upserts ------------------------------------------------------------------------------


def test_bulk_upsert_lands_contacts_with_their_fields_in_the_list(autopilot_server: LocalAutopilot) -> None:
    client = make_autopilot_client(autopilot_server)
    list_id = client.find_or_create_list("High value")
    contacts = people(3)

    outcome = client.upsert_contacts(contacts, list_id)

    assert outcome == UpsertOutcome(uploaded=3, rejected=(), membership_added=0)
    assert autopilot_server.contacts["person1@example.com"] == {
        "contact_id": autopilot_server.contacts["person1@example.com"]["contact_id"],
        "Email": "person1@example.com",
        "FirstName": "First1",
        "LastName": "Lee",
        "custom": {"string--Loyalty--Tier": "Gold", "integer--Points": 1},
    }
    assert autopilot_server.members(list_id) == emails(contacts)
    assert [r.contacts for r in posts(autopilot_server, "/contacts")] == [3]


def test_more_than_100_contacts_are_sent_in_chunks_of_100(autopilot_server: LocalAutopilot) -> None:
    client = make_autopilot_client(autopilot_server)
    list_id = client.find_or_create_list("Big")
    contacts = people(250)

    outcome = client.upsert_contacts(contacts, list_id)

    assert outcome.uploaded == 250
    assert [r.contacts for r in posts(autopilot_server, "/contacts")] == [100, 100, 50]
    assert set(autopilot_server.contacts) == emails(contacts)
    assert autopilot_server.members(list_id) == emails(contacts)


def test_upsert_without_a_list_joins_no_list(autopilot_server: LocalAutopilot) -> None:
    list_id = autopilot_server.create_list("Untouched")
    client = make_autopilot_client(autopilot_server)

    outcome = client.upsert_contacts(people(5), None)

    assert outcome.uploaded == 5
    assert autopilot_server.members(list_id) == set()


def test_emails_differing_in_case_from_the_answer_count_as_uploaded(autopilot_server: LocalAutopilot) -> None:
    client = make_autopilot_client(autopilot_server)

    outcome = client.upsert_contacts([{"Email": "Ann.Lee@Example.COM"}, {"Email": "bo@example.com"}], None)

    assert outcome == UpsertOutcome(uploaded=2, rejected=(), membership_added=0)
    assert posts(autopilot_server, "/contact") == []  # nothing needed a single retry


def test_unsubscribed_is_sent_only_when_the_caller_gives_it(autopilot_server: LocalAutopilot) -> None:
    client = make_autopilot_client(autopilot_server)

    client.upsert_contacts(
        [{"Email": "keep@example.com"}, {"Email": "out@example.com", "unsubscribed": True}], None
    )

    assert "unsubscribed" not in autopilot_server.contacts["keep@example.com"]
    assert autopilot_server.contacts["out@example.com"]["unsubscribed"] is True


def test_the_callers_contacts_are_not_modified(autopilot_server: LocalAutopilot) -> None:
    client = make_autopilot_client(autopilot_server)
    list_id = client.find_or_create_list("Own dicts")
    contacts = people(2)

    client.upsert_contacts(contacts, list_id)

    assert all("_autopilot_list" not in c for c in contacts)


@pytest.mark.parametrize("mode", ["reject", "omit"])
def test_one_bad_contact_in_a_bulk_costs_only_that_contact(
    autopilot_server: LocalAutopilot, mode: str
) -> None:
    autopilot_server.configure(bad_contact_mode=mode)
    client = make_autopilot_client(autopilot_server)
    list_id = client.find_or_create_list("With a bad one")
    contacts = people(120)
    contacts[37]["Email"] = "not-an-address@nowhere"

    outcome = client.upsert_contacts(contacts, list_id)

    good = emails(contacts) - {"not-an-address@nowhere"}
    assert outcome.uploaded == 119
    assert [r.email for r in outcome.rejected] == ["not-an-address@nowhere"]
    assert "invalid Email" in outcome.rejected[0].reason
    assert set(autopilot_server.contacts) == good
    assert autopilot_server.members(list_id) == good


def test_a_refused_bulk_is_split_to_isolate_the_refused_contacts(autopilot_server: LocalAutopilot) -> None:
    client = make_autopilot_client(autopilot_server)
    contacts = people(100)
    for index in (3, 64):
        contacts[index]["Email"] = f"broken{index}@"

    outcome = client.upsert_contacts(contacts, None)

    assert outcome.uploaded == 98
    assert sorted(r.email for r in outcome.rejected) == ["broken3@", "broken64@"]
    assert client.stats.bisections > 0
    assert len(autopilot_server.contacts) == 98


def test_a_rejection_reason_masks_the_address_the_server_echoed(autopilot_server: LocalAutopilot) -> None:
    client = make_autopilot_client(autopilot_server)

    outcome = client.upsert_contacts([{"Email": "jane.doe@localhost"}], None)

    (rejected,) = outcome.rejected
    assert rejected == RejectedContact(email="jane.doe@localhost", reason=rejected.reason)
    assert "jane.doe@localhost" not in rejected.reason
    assert "invalid Email" in rejected.reason


# -- list membership ---------------------------------------------------------------------------


def test_membership_is_spot_checked_once_per_bulk_request(autopilot_server: LocalAutopilot) -> None:
    client = make_autopilot_client(autopilot_server)
    list_id = client.find_or_create_list("Checked")

    client.upsert_contacts(people(250), list_id)

    checks = [r for r in autopilot_server.request_log() if r.method == "GET" and "/contact/" in r.path]
    assert len(checks) == 3


def test_membership_is_added_singly_when_the_bulk_endpoint_ignores_the_list(
    autopilot_server: LocalAutopilot,
) -> None:
    autopilot_server.configure(bulk_honours_list=False)
    client = make_autopilot_client(autopilot_server)
    list_id = client.find_or_create_list("Fallback")
    contacts = people(150)

    outcome = client.upsert_contacts(contacts, list_id)

    assert outcome == UpsertOutcome(uploaded=150, rejected=(), membership_added=150)
    assert autopilot_server.members(list_id) == emails(contacts)


def test_adding_an_existing_member_again_counts_as_success(autopilot_server: LocalAutopilot) -> None:
    autopilot_server.configure(bulk_honours_list=False)
    client = make_autopilot_client(autopilot_server)
    list_id = client.find_or_create_list("Twice")
    client.upsert_contacts(people(10), list_id)

    outcome = client.upsert_contacts(people(10), list_id)  # the server answers {"not_modified": true}

    assert outcome == UpsertOutcome(uploaded=10, rejected=(), membership_added=10)
    assert len(autopilot_server.members(list_id)) == 10


def test_list_members_are_paged_through(autopilot_server: LocalAutopilot) -> None:
    client = make_autopilot_client(autopilot_server)
    list_id = client.find_or_create_list("Paged")
    contacts = people(250)
    client.upsert_contacts(contacts, list_id)

    members = list(client.list_member_emails(list_id))

    assert sorted(m.lower() for m in members) == sorted(emails(contacts))
    pages = [r for r in autopilot_server.request_log() if r.method == "GET" and "/contacts" in r.path]
    assert len(pages) == 3


def test_an_unknown_list_is_an_error_without_addresses(autopilot_server: LocalAutopilot) -> None:
    client = make_autopilot_client(autopilot_server)

    with pytest.raises(AutopilotError) as caught:
        client.upsert_contacts(people(2), "contactlist_missing")

    assert caught.value.status_code == 404
    assert "@example.com" not in str(caught.value)


# -- lists ---------------------------------------------------------------------------------------


def test_an_existing_list_is_reused(autopilot_server: LocalAutopilot) -> None:
    existing = autopilot_server.create_list("Lapsed")
    client = make_autopilot_client(autopilot_server)

    assert client.find_or_create_list("Lapsed") == existing
    assert posts(autopilot_server, "/list") == []


def test_a_missing_list_is_created_once_and_found_afterwards(autopilot_server: LocalAutopilot) -> None:
    first = make_autopilot_client(autopilot_server).find_or_create_list("New segment")

    second = make_autopilot_client(autopilot_server).find_or_create_list("New segment")

    assert second == first
    assert autopilot_server.lists == {first: "New segment"}


def test_a_409_on_create_looks_the_list_up_again(autopilot_server: LocalAutopilot) -> None:
    existing = autopilot_server.create_list("Raced")
    autopilot_server.set_faults(stale_lists_next=1)  # the first lookup misses the list
    client = make_autopilot_client(autopilot_server)

    list_id = client.find_or_create_list("Raced")

    assert list_id == existing
    assert [r.status for r in posts(autopilot_server, "/list")] == [409]
    assert list(autopilot_server.lists) == [existing]


def test_concurrent_creators_end_with_one_list(autopilot_server: LocalAutopilot) -> None:
    results: list[str] = []
    lock = threading.Lock()

    def create() -> None:
        list_id = make_autopilot_client(autopilot_server).find_or_create_list("Contended")
        with lock:
            results.append(list_id)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(autopilot_server.lists) == 1
    assert set(results) == set(autopilot_server.lists)


# -- throttling, server errors, dropped connections -----------------------------------------------


def test_a_429_storm_without_retry_after_still_delivers_within_the_rate(
    autopilot_server: LocalAutopilot,
) -> None:
    autopilot_server.requests_per_second = 10
    client = make_autopilot_client(autopilot_server, requests_per_second=10)
    list_id = client.find_or_create_list("Storm")
    autopilot_server.set_faults(throttle_next=4)
    contacts = people(450)

    outcome = client.upsert_contacts(contacts, list_id)

    assert outcome.uploaded == 450
    assert autopilot_server.members(list_id) == emails(contacts)
    assert client.stats.throttled == 4
    assert autopilot_server.max_requests_in_window(1.0) <= 11


def test_a_429_with_retry_after_holds_the_next_request_back_that_long(
    autopilot_server: LocalAutopilot,
) -> None:
    client = make_autopilot_client(autopilot_server)
    autopilot_server.set_faults(throttle_next=2, throttle_retry_after=1)

    outcome = client.upsert_contacts(people(50), None)

    assert outcome.uploaded == 50
    log = autopilot_server.request_log()
    assert [r.status for r in log] == [429, 429, 200]
    assert log[1].time - log[0].time >= 1.0
    assert log[2].time - log[1].time >= 1.0


@pytest.mark.parametrize("after_processing", [False, True])
def test_server_errors_and_dropped_connections_still_deliver_every_contact(
    autopilot_server: LocalAutopilot, after_processing: bool
) -> None:
    autopilot_server.requests_per_second = 20
    client = make_autopilot_client(autopilot_server, requests_per_second=20, max_retries=10)
    list_id = client.find_or_create_list("Flaky")
    autopilot_server.set_faults(
        server_error_rate=0.2, drop_rate=0.2, drop_after_processing=after_processing, seed=7
    )
    contacts = people(800)

    outcome = client.upsert_contacts(contacts, list_id)

    assert outcome == UpsertOutcome(uploaded=800, rejected=(), membership_added=0)
    assert autopilot_server.members(list_id) == emails(contacts)
    assert client.stats.server_errors > 0
    assert client.stats.transport_errors > 0
    assert autopilot_server.max_requests_in_window(1.0) <= 21


def test_a_request_that_times_out_is_retried(autopilot_server: LocalAutopilot) -> None:
    client = make_autopilot_client(autopilot_server, timeout=0.3)
    autopilot_server.set_faults(stall_next=1, stall_seconds=1.5)

    outcome = client.upsert_contacts(people(20), None)

    assert outcome.uploaded == 20
    assert client.stats.transport_errors == 1
    assert len(autopilot_server.contacts) == 20


def test_giving_up_after_max_retries_raises_with_the_status(autopilot_server: LocalAutopilot) -> None:
    client = make_autopilot_client(autopilot_server, max_retries=2)
    autopilot_server.set_faults(server_error_rate=1.0, server_error_status=503)

    with pytest.raises(AutopilotError) as caught:
        client.upsert_contacts(people(5), None)

    assert caught.value.status_code == 503
    assert AUTOPILOT_TEST_CONNECTION in str(caught.value)
    assert client.stats.snapshot() == {
        "requests": 3,
        "retries": 2,
        "throttled": 0,
        "server_errors": 3,
        "transport_errors": 0,
        "bisections": 0,
    }


def test_clients_sharing_a_limiter_together_stay_within_the_rate(autopilot_server: LocalAutopilot) -> None:
    autopilot_server.requests_per_second = 20
    limiter = RateLimiter(20)
    stats = ClientStats()
    outcomes: list[UpsertOutcome] = []

    def upload(prefix: str) -> None:
        client = make_autopilot_client(autopilot_server, rate_limiter=limiter, stats=stats)
        outcomes.append(client.upsert_contacts(people(600, prefix), None))

    threads = [threading.Thread(target=upload, args=(p,)) for p in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(o.uploaded for o in outcomes) == [600, 600, 600]
    assert len(autopilot_server.contacts) == 1800
    assert stats.throttled == 0
    assert autopilot_server.max_requests_in_window(1.0) <= 21


# -- keys ------------------------------------------------------------------------------------------


def test_a_rotated_key_is_picked_up_with_one_refresh(autopilot_server: LocalAutopilot) -> None:
    keys = StaticKeySource(autopilot_server.api_key, after_refresh="rotated-key-abcdef0123456789")
    client = make_autopilot_client(autopilot_server, key_source=keys)
    list_id = client.find_or_create_list("Rotation")
    autopilot_server.rotate_key("rotated-key-abcdef0123456789")

    outcome = client.upsert_contacts(people(250), list_id)

    assert outcome.uploaded == 250
    assert keys.refreshes == 1
    assert len(autopilot_server.members(list_id)) == 250


def test_a_wrong_key_after_refresh_is_an_auth_error_naming_the_connection(
    autopilot_server: LocalAutopilot,
) -> None:
    old_key = autopilot_server.api_key
    keys = StaticKeySource(old_key, after_refresh="still-the-wrong-key-987654")
    client = make_autopilot_client(autopilot_server, key_source=keys, connection_name="acme-marketing")
    autopilot_server.rotate_key("regenerated-key-1122334455")

    with pytest.raises(AutopilotAuthError) as caught:
        client.find_or_create_list("Anything")

    message = str(caught.value)
    assert caught.value.status_code == 401
    assert "acme-marketing" in message
    assert "Key Vault" in message
    for key in (old_key, "still-the-wrong-key-987654", "regenerated-key-1122334455"):
        assert key not in message
    assert keys.refreshes == 1


def test_no_key_and_no_address_reach_the_logs(
    autopilot_server: LocalAutopilot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    new_key = "fresh-key-5566778899aabbcc"
    keys = StaticKeySource(autopilot_server.api_key, after_refresh=new_key)
    autopilot_server.configure(bulk_honours_list=False)
    client = make_autopilot_client(autopilot_server, key_source=keys)
    list_id = client.find_or_create_list("Quiet logs")
    autopilot_server.rotate_key(new_key)
    autopilot_server.set_faults(throttle_next=1, server_error_rate=0.2, drop_rate=0.1, seed=3)
    contacts = people(150)
    contacts[5]["Email"] = "broken.address@invalid"

    outcome = client.upsert_contacts(contacts, list_id)

    assert outcome.uploaded == 149
    text = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records).lower()
    assert caplog.records  # the client did log: retries, the refused contact, the refresh
    assert new_key.lower() not in text
    assert "test-autopilot-key" not in text
    assert "@example.com" not in text
    assert "broken.address@invalid" not in text


# -- pure helpers ------------------------------------------------------------------------------------


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)

    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("status", "content", "expected"),
    [
        (400, b'{"error": "Bad Request", "message": "Email is invalid"}', "Bad Request: Email is invalid"),
        (404, b'{"code": "NotFound", "message": "No such list"}', "NotFound: No such list"),
        (404, b"", "Not Found"),
        (502, b"<html>gateway</html>", "<html>gateway</html>"),
    ],
)
def test_error_bodies_of_every_shape_give_a_message(status: int, content: bytes, expected: str) -> None:
    assert error_message(httpx.Response(status, content=content)) == expected


def test_one_http_client_serves_the_whole_process() -> None:
    assert shared_http_client() is shared_http_client()
