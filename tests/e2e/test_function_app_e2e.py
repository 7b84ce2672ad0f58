"""End to end: ``function_app.py`` hosted by the local runner over Azurite, the local Key Vault and the
local Autopilot server. Every assertion is about what reached Autopilot, storage or the HTTP API.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from devtools.local_stack import (
    EXPORTS_CONTAINER,
    RESULTS_CONTAINER,
    LocalStack,
    example_config,
    wait_for_runs,
    wait_until_done,
)
from devtools.sample_data import GeneratedRun, container_writer, generate_run
from shared.scheduling import SCHEDULER_STATE, dump_last_check

NEWSLETTER_FOLDER = "CustomerInsights_3f2b9c1e-5a7d-4e8f-9b6a-0c1d2e3f4a5b/NewsletterEMEA"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    with LocalStack(tmp_path / "stack", autopilot_rps=50) as running:
        yield running


def generate(stack: LocalStack, profiles: int, partitions: int) -> GeneratedRun:
    container = stack.blob_service.get_container_client(EXPORTS_CONTAINER)
    return generate_run(container_writer(container), profiles=profiles, partitions=partitions)


def read_blob(stack: LocalStack, container: str, name: str) -> bytes:
    return bytes(stack.blob_service.get_blob_client(container, name).download_blob().readall())


def upserts_per_email(stack: LocalStack) -> Counter[str]:
    with stack.autopilot.lock:
        return Counter(stack.autopilot.upsert_counts)


def wait_for_progress(
    api: httpx.Client, instance_id: str, key: str, *, at_least: int, timeout: float
) -> None:
    """Until the run's progress counter ``key`` reaches ``at_least`` (it moves as batches finish)."""
    deadline = time.monotonic() + timeout
    while (api.get(f"runs/{instance_id}").json().get("custom_status") or {}).get(key, 0) < at_least:
        assert time.monotonic() < deadline, f"{key} stayed below {at_least} for {timeout}s"
        time.sleep(0.1)


def results_path(blob: str) -> str:
    container, _, name = blob.partition("/")
    assert container == RESULTS_CONTAINER
    return name


def test_a_run_dropped_into_the_container_is_exported_once_with_every_row_accounted_for(
    stack: LocalStack,
) -> None:
    runner = stack.start_runner()
    generated = generate(stack, profiles=3000, partitions=3)
    with stack.api(runner.url) as api:
        runs = wait_for_runs(api, count=1, timeout=60)
        body = wait_until_done(api, runs[0]["instance_id"], timeout=120)
        time.sleep(1.5)  # three more blob polls: late partition events must not start a second run
        assert len(api.get("runs").json()["runs"]) == 1
    report = body["output"]
    assert body["runtime_status"] == "Completed"
    assert report["contacts_uploaded"] == generated.expected.unique_valid
    assert report["rejected"] == {
        "duplicate_email": generated.expected.duplicate_email,
        "invalid_email": generated.expected.invalid_email,
        "missing_email": generated.expected.missing_email,
    }
    counts = upserts_per_email(stack)
    assert len(counts) == generated.expected.unique_valid
    assert max(counts.values()) == 1
    with stack.autopilot.lock:
        members = stack.autopilot.list_members[report["list_id"]]
        assert stack.autopilot.lists[report["list_id"]] == "High value customers"
    assert len(members) == generated.expected.unique_valid


def test_mapped_standard_and_custom_fields_arrive_on_the_contact(stack: LocalStack) -> None:
    runner = stack.start_runner()
    generated = generate(stack, profiles=400, partitions=1)
    with stack.api(runner.url) as api:
        runs = wait_for_runs(api, count=1, timeout=60)
        wait_until_done(api, runs[0]["instance_id"], timeout=120)
    text = read_blob(stack, EXPORTS_CONTAINER, generated.partition_blobs[0]).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    row = next(r for r in rows if "@" in r[3] and r[6] and r[8] and r[1] and r[4])
    with stack.autopilot.lock:
        contact = stack.autopilot.contacts[row[3].strip().lower()]
    assert contact["FirstName"] == row[1].strip()
    assert contact["MailingCity"] == row[4].strip()
    assert contact["custom"]["string--Loyalty--Tier"] == row[6]
    assert contact["custom"]["float--Lifetime--Value"] == pytest.approx(float(row[7]))
    assert contact["custom"]["date--Birth--Date"].startswith(row[8][:10])
    assert contact["custom"]["boolean--VIP"] is (row[9] == "true")
    assert "unsubscribed" not in contact


def test_rejects_file_lists_every_rejected_row_with_reason_and_no_email(stack: LocalStack) -> None:
    runner = stack.start_runner()
    generated = generate(stack, profiles=2000, partitions=2)
    with stack.api(runner.url) as api:
        runs = wait_for_runs(api, count=1, timeout=60)
        report = wait_until_done(api, runs[0]["instance_id"], timeout=120)["output"]
    text = read_blob(stack, RESULTS_CONTAINER, results_path(report["rejects_blob"])).decode("utf-8")
    records = list(csv.DictReader(io.StringIO(text, newline="")))
    assert Counter(r["reason"] for r in records) == {
        "duplicate_email": generated.expected.duplicate_email,
        "invalid_email": generated.expected.invalid_email,
        "missing_email": generated.expected.missing_email,
    }
    assert "EmailAddress" not in records[0]
    assert all(r["file"] in generated.partition_blobs and int(r["row"]) >= 1 for r in records)
    stored = json.loads(read_blob(stack, RESULTS_CONTAINER, results_path(report["report_blob"])))
    assert (
        stored["rows_read"]
        == stored["contacts_uploaded"] + stored["rejected_total"]
        == generated.expected.rows
    )


def newsletter_csv(rows: int) -> bytes:
    lines = ["PrimaryEmail,GivenName,Company,OptedOut,SignupDate,Visits"]
    for i in range(rows):
        opted = "true" if i % 10 == 0 else ""
        lines.append(f'reader.{i}@example.org,Zoë {i},"Contoso, Ltd",{opted},2024-03-0{1 + i % 9},{i}')
    lines.append("not-an-email,Nobody,,,,")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def test_http_started_export_of_a_named_run_completes_and_is_reported(stack: LocalStack) -> None:
    runner = stack.start_runner()
    blob = f"{NEWSLETTER_FOLDER}/NewsletterSubscribers/april.csv"
    stack.blob_service.get_blob_client(EXPORTS_CONTAINER, blob).upload_blob(newsletter_csv(150))
    with stack.api(runner.url) as api:
        time.sleep(1.5)  # the blob poller sees the file; this export runs on demand only
        assert api.get("runs").json()["runs"] == []
        started = api.post(
            "exports/Newsletter-EMEA/runs", json={"segment": "NewsletterSubscribers", "run": blob}
        )
        assert started.status_code == 202
        [run] = started.json()["runs"]
        assert run["started"] is True
        body = wait_until_done(api, run["instance_id"], timeout=120)
        listed = api.get("runs", params={"export": "Newsletter-EMEA"}).json()["runs"]
    assert body["runtime_status"] == "Completed"
    assert body["output"]["trigger"] == "http"
    assert body["output"]["contacts_uploaded"] == 150
    assert body["output"]["rejected"] == {"invalid_email": 1}
    assert [r["instance_id"] for r in listed] == [run["instance_id"]]
    with stack.autopilot.lock:
        assert stack.autopilot.contacts["reader.10@example.org"]["unsubscribed"] is True
        assert "unsubscribed" not in stack.autopilot.contacts["reader.11@example.org"]
        assert stack.autopilot.contacts["reader.11@example.org"]["custom"]["integer--Visits"] == 11


def test_dry_run_plans_and_reports_without_sending_anything(stack: LocalStack) -> None:
    runner = stack.start_runner()
    blob = f"{NEWSLETTER_FOLDER}/NewsletterSubscribers/april.csv"
    stack.blob_service.get_blob_client(EXPORTS_CONTAINER, blob).upload_blob(newsletter_csv(40))
    with stack.api(runner.url) as api:
        started = api.post(
            "exports/Newsletter-EMEA/runs",
            json={"segment": "NewsletterSubscribers", "run": blob, "dry_run": True},
        ).json()["runs"][0]
        body = wait_until_done(api, started["instance_id"], timeout=120)
    assert body["output"]["status"] == "dry-run"
    assert body["output"]["contacts_staged"] == 40
    assert body["output"]["contacts_uploaded"] == 0
    assert stack.autopilot.state()["requests"] == 0


@pytest.mark.parametrize(
    ("path", "payload", "status", "field"),
    [
        ("exports/HighValue/runs", b"{not json", 400, "body"),
        ("exports/HighValue/runs", b"[1, 2]", 400, "body"),
        ("exports/HighValue/runs", b'{"segmnet": "HighValueSegment"}', 400, "segmnet"),
        ("exports/HighValue/runs", b'{"dry_run": "yes"}', 400, "dry_run"),
        ("exports/HighValue/runs", b'{"segment": "Nope"}', 400, "segment"),
        ("exports/HighValue/runs", b'{"run": "some/folder"}', 400, "segment"),
        ("exports/Unknown/runs", b"{}", 404, "export"),
        ("exports/HighValue/runs", b"{}", 404, "run"),
    ],
)
def test_bad_start_requests_get_an_error_naming_the_field(
    stack: LocalStack, path: str, payload: bytes, status: int, field: str
) -> None:
    runner = stack.start_runner()
    with stack.api(runner.url) as api:
        response = api.post(path, content=payload, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert response.json()["field"] == field
    assert response.json()["error"]


def test_bad_status_requests_get_clear_errors(stack: LocalStack) -> None:
    runner = stack.start_runner()
    with stack.api(runner.url) as api:
        assert api.get("runs", params={"top": "many"}).json()["field"] == "top"
        assert api.get("runs", params={"status": "Sleeping"}).status_code == 400
        unknown = api.get("runs/no-such-run")
        assert (unknown.status_code, unknown.json()["field"]) == (404, "instance_id")
        assert api.post("runs/no-such-run/cancel").status_code == 404
    with stack.api(runner.url) as api:
        api.headers.pop("x-functions-key")
        assert api.get("runs").status_code == 401


def test_cancel_stops_a_running_export(tmp_path: Path) -> None:
    with LocalStack(tmp_path / "stack", autopilot_rps=4, settings={"STAGED_BATCH_SIZE": "200"}) as slow:
        runner = slow.start_runner()
        generated = generate(slow, profiles=6000, partitions=2)
        with slow.api(runner.url) as api:
            instance_id = wait_for_runs(api, count=1, timeout=60)[0]["instance_id"]
            wait_for_progress(api, instance_id, "contacts_uploaded", at_least=1, timeout=60)
            cancelled = api.post(f"runs/{instance_id}/cancel")
            body = wait_until_done(api, instance_id, timeout=30)
            again = api.post(f"runs/{instance_id}/cancel")
        time.sleep(2)  # uploads in flight at the cancel may still finish; then nothing more arrives
        settled = slow.autopilot.state()["requests"]
        time.sleep(2)
        assert cancelled.status_code == 202
        assert body["runtime_status"] == "Terminated"
        assert again.status_code == 409
        assert slow.autopilot.state()["requests"] == settled
        assert len(upserts_per_email(slow)) < generated.expected.unique_valid


def test_killed_runner_resumes_without_resending_finished_batches(tmp_path: Path) -> None:
    batch = 300
    with LocalStack(
        tmp_path / "stack", autopilot_rps=10, settings={"STAGED_BATCH_SIZE": str(batch)}
    ) as stack:
        runner = stack.start_runner()
        generated = generate(stack, profiles=6000, partitions=2)
        with stack.api(runner.url) as api:
            instance_id = wait_for_runs(api, count=1, timeout=60)[0]["instance_id"]
            wait_for_progress(api, instance_id, "batches_done", at_least=4, timeout=90)
        runner.kill()
        before_restart = upserts_per_email(stack)
        runner = stack.start_runner()
        with stack.api(runner.url) as api:
            body = wait_until_done(api, instance_id, timeout=180)
        counts = upserts_per_email(stack)
    assert before_restart
    assert len(before_restart) < generated.expected.unique_valid
    assert body["runtime_status"] == "Completed"
    assert body["output"]["contacts_uploaded"] == generated.expected.unique_valid
    assert len(counts) == generated.expected.unique_valid
    sent_twice = [email for email, n in counts.items() if n > 1]
    assert max(counts.values()) <= 2
    assert len(sent_twice) <= 4 * batch  # only the batches in flight at the kill (UPLOAD_CONCURRENCY=4)


def test_timer_exports_a_scheduled_run_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devtools.local_runner import LocalRunner
    from shared.activities import app_context
    from shared.settings import get_settings

    config = example_config(50)
    config["exports"][0]["export_on_arrival"] = False
    config["exports"][0]["schedule"] = "* * * * *"
    with LocalStack(tmp_path / "stack", autopilot_rps=50, config=config) as stack:
        generated = generate(stack, profiles=500, partitions=1)
        stack.blob_service.get_blob_client(RESULTS_CONTAINER, SCHEDULER_STATE).upload_blob(
            dump_last_check(datetime.now(UTC) - timedelta(minutes=2)), overwrite=True
        )
        for name, value in stack.env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        app_context.cache_clear()
        runner = LocalRunner(tmp_path / "runner", http_port=0, poll_interval=0, run_timers=False)
        with runner:
            runner.host.fire_timer("scheduled_exports")
            [status] = [s for s in runner.engine.list_instances() if s.name == "export_run"]
            final = runner.engine.wait_for(status.instance_id, timeout=120)
            runner.host.fire_timer("scheduled_exports")
            after_second_tick = runner.engine.list_instances()
        app_context.cache_clear()
        get_settings.cache_clear()
        counts = upserts_per_email(stack)
    assert final.runtime_status == "Completed"
    assert final.output["trigger"] == "timer"
    assert [s.instance_id for s in after_second_tick if s.name == "export_run"] == [status.instance_id]
    assert len(counts) == generated.expected.unique_valid
    assert max(counts.values()) == 1


def test_a_run_that_cannot_deliver_fails_with_the_report_of_what_was_delivered(tmp_path: Path) -> None:
    with LocalStack(tmp_path / "stack", autopilot_rps=10, settings={"STAGED_BATCH_SIZE": "200"}) as stack:
        runner = stack.start_runner()
        generated = generate(stack, profiles=4000, partitions=2)
        with stack.api(runner.url) as api:
            instance_id = wait_for_runs(api, count=1, timeout=60)[0]["instance_id"]
            wait_for_progress(api, instance_id, "batches_done", at_least=2, timeout=60)
            stack.autopilot.rotate_key("regenerated-in-autopilot-but-not-in-key-vault")
            body = wait_until_done(api, instance_id, timeout=120)
        delivered = len(upserts_per_email(stack))
        summary = body["custom_status"]["report"]
        stored = json.loads(read_blob(stack, RESULTS_CONTAINER, results_path(summary["report_blob"])))
    assert body["runtime_status"] == "Failed"
    assert "Autopilot rejected the API key of connection 'main'" in json.dumps(body["output"])
    assert summary["status"] == "failed"
    assert 0 < summary["contacts_uploaded"] <= delivered < generated.expected.unique_valid
    assert stored["status"] == "failed"
    assert stored["contacts_uploaded"] == summary["contacts_uploaded"]
    assert "rejected the API key" in stored["error"]


def test_files_no_export_claims_are_left_alone(stack: LocalStack) -> None:
    runner = stack.start_runner()
    service = stack.blob_service
    for name in ("somewhere/else.csv", f"{NEWSLETTER_FOLDER}/UnknownSegment/x.csv", "notes/readme.txt"):
        service.get_blob_client(EXPORTS_CONTAINER, name).upload_blob(b"Email\r\na@example.com\r\n")
    with stack.api(runner.url) as api:
        time.sleep(2)  # four blob polls
        assert api.get("runs").json()["runs"] == []
    assert stack.autopilot.state()["requests"] == 0
    assert "no export claims blob ci-exports/somewhere/else.csv" in runner.log_path.read_text()
