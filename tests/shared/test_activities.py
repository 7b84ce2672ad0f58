"""The activities in process over the real local stack: Azurite, the local Key Vault (real SecretClient
and DefaultAzureCredential through the managed-identity endpoint) and the local Autopilot server.

The orchestration is driven by hand here (plan, ensure list, each batch, report) so a test can change
the world between steps: rotate the key, inject faults, refuse a contact.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from devtools.autopilot_server import LocalAutopilot
from devtools.local_host.azurite import Azurite
from devtools.sample_data import container_writer, generate_run
from shared import activities
from shared.config import parse_config
from shared.runs import latest_runs, manual_run
from shared.settings import Settings
from shared.starter import orchestration_input
from tests.fixtures.keyvault import LocalVaultStack

SECRET = "autopilot-api-key"
FOLDER = "exports/Manual"


def make_context(
    azurite: Azurite,
    container: str,
    server: LocalAutopilot,
    vault: LocalVaultStack,
    *,
    rps: float = 1000.0,
    batch_size: int = 100,
) -> activities.AppContext:
    config = parse_config(
        {
            "connections": {
                "main": {"display_name": "Main", "key_secret_name": SECRET, "requests_per_second": rps}
            },
            "exports": [
                {
                    "name": "Manual",
                    "connection": "main",
                    "folder": FOLDER,
                    "segments": [{"name": "VIP", "list_title": "VIP customers"}],
                    "email_column": "Email",
                    "first_name_column": "First",
                    "fields": [{"column": "Tier", "custom": "Tier", "type": "string"}],
                },
                {
                    "name": "HighValue",
                    "connection": "main",
                    "folder": "CustomerInsights_3f2b9c1e-5a7d-4e8f-9b6a-0c1d2e3f4a5b/SegmentExport",
                    "segments": [{"name": "HighValueSegment", "list_title": "High value"}],
                    "email_column": "EmailAddress",
                    "first_name_column": "FirstName",
                    "last_name_column": "LastName",
                    "fields": [{"column": "LoyaltyTier", "custom": "Loyalty Tier", "type": "string"}],
                },
            ],
        },
        source="test",
    )
    settings = Settings(
        storage_connection_string=azurite.connection_string,
        exports_container=container,
        results_container=f"{container}-results",
        key_vault_url=vault.url,
        autopilot_base_url=server.base_url,
        staged_batch_size=batch_size,
        key_cache_seconds=600,
        max_retries=10,
        key_vault_verify_challenge_resource=vault.vault.passes_default_verification,
    )
    store = activities.BlobStore.from_connection_string(azurite.connection_string)
    store.ensure_container(container)
    return activities.AppContext(settings=settings, config=config, exports=store, results=store)


def upload_csv(azurite: Azurite, container: str, name: str, rows: list[list[str]]) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["Email", "First", "Tier"], *rows])
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    service.get_blob_client(container, name).upload_blob(buffer.getvalue().encode("utf-8"), overwrite=True)


def run_all(
    ctx: activities.AppContext, payload: dict[str, Any], *, between_batches: Any = None
) -> dict[str, Any]:
    """Plan, ensure the list, upload every batch, report: the orchestration's steps, in order."""
    run = payload["run"]
    plan = activities.plan(ctx, run)
    assert "error" not in plan, plan
    list_id = activities.ensure_list(ctx, {"export": run["export"], "segment": run["segment"]})["list_id"]
    totals: dict[str, int] = {}
    for batch in range(1, plan["batches"] + 1):
        if between_batches is not None:
            between_batches(batch)
        result = activities.upload_batch(
            ctx,
            {
                "instance_id": run["instance_id"],
                "export": run["export"],
                "batch": batch,
                "list_id": list_id,
                "requests_per_second": payload["tuning"]["requests_per_second"],
            },
        )
        for key, value in result.items():
            if isinstance(value, int) and key != "batch":
                totals[key] = totals.get(key, 0) + value
    return activities.write_report(
        ctx,
        {
            "run": run,
            "plan": plan,
            "totals": totals,
            "list_title": payload["list_title"],
            "list_id": list_id,
            "status": "completed",
            "started_at": "2026-01-01T00:00:00+00:00",
            "finished_at": "2026-01-01T00:01:00+00:00",
        },
    )


@pytest.fixture
def stack(
    azurite: Azurite,
    azurite_container_name: str,
    autopilot_server: LocalAutopilot,
    local_vault: LocalVaultStack,
) -> dict[str, Any]:
    local_vault.vault.set(SECRET, autopilot_server.api_key)
    return {
        "azurite": azurite,
        "container": azurite_container_name,
        "server": autopilot_server,
        "vault": local_vault,
    }


def manual_payload(ctx: activities.AppContext, name: str) -> dict[str, Any]:
    export = ctx.config.export("Manual")
    run = manual_run(export, "VIP", ctx.settings.exports_container, name)
    return orchestration_input(run, ctx.config, ctx.settings, trigger="test")


def rows(count: int, domain: str = "example.com") -> list[list[str]]:
    return [[f"person.{i}@{domain}", f"Zoë {i}", "Gold"] for i in range(count)]


def test_ci_run_without_header_rows_lands_every_valid_contact_in_the_list(stack: dict[str, Any]) -> None:
    ctx = make_context(stack["azurite"], stack["container"], stack["server"], stack["vault"])
    service = BlobServiceClient.from_connection_string(stack["azurite"].connection_string)
    generated = generate_run(
        container_writer(service.get_container_client(stack["container"])),
        profiles=1200,
        partitions=3,
        location_base=f"https://acct.blob.core.windows.net/{stack['container']}",
    )
    [run] = latest_runs(ctx.config, ctx.exports, "HighValue", stack["container"])
    report = run_all(ctx, orchestration_input(run, ctx.config, ctx.settings, trigger="test"))
    server: LocalAutopilot = stack["server"]
    assert report["contacts_uploaded"] == generated.expected.unique_valid
    assert report["rows_read"] == generated.expected.rows
    with server.lock:
        [list_id] = [lid for lid, title in server.lists.items() if title == "High value"]
        assert len(server.list_members[list_id]) == generated.expected.unique_valid
        tiers = {c["custom"]["string--Loyalty--Tier"] for c in server.contacts.values() if "custom" in c}
    assert tiers <= {"Gold", "Silver", "Bronze"}
    assert tiers


def test_a_contact_refused_by_autopilot_costs_only_that_contact(stack: dict[str, Any]) -> None:
    ctx = make_context(stack["azurite"], stack["container"], stack["server"], stack["vault"])
    server: LocalAutopilot = stack["server"]
    server.refused_domains.add("blocked.example.net")
    data = rows(150)
    data.insert(37, ["someone@blocked.example.net", "Blocked", "Gold"])
    upload_csv(stack["azurite"], stack["container"], f"{FOLDER}/VIP/list.csv", data)
    report = run_all(ctx, manual_payload(ctx, f"{FOLDER}/VIP/list.csv"))
    assert report["contacts_uploaded"] == 150
    assert report["rejected"] == {"refused_by_autopilot": 1}
    with server.lock:
        assert len(server.contacts) == 150
        assert "someone@blocked.example.net" not in server.contacts
    rejects = ctx.results.read_bytes(*report["rejects_blob"].split("/", 1)).decode("utf-8")
    [record] = list(csv.DictReader(io.StringIO(rejects)))
    assert (record["reason"], record["row"]) == ("refused_by_autopilot", "38")
    assert "invalid Email" in record["detail"]
    assert "someone@blocked.example.net" not in rejects


def test_429_storms_5xx_and_dropped_connections_still_deliver_everything_within_the_rate(
    stack: dict[str, Any],
) -> None:
    server: LocalAutopilot = stack["server"]
    ctx = make_context(stack["azurite"], stack["container"], server, stack["vault"], rps=20)
    server.configure(requests_per_second=20)
    upload_csv(stack["azurite"], stack["container"], f"{FOLDER}/VIP/list.csv", rows(1000))
    payload = manual_payload(ctx, f"{FOLDER}/VIP/list.csv")

    def storm(batch: int) -> None:
        if batch == 2:
            server.set_faults(throttle_next=3, throttle_retry_after=0.2)
        elif batch == 4:
            server.set_faults(
                throttle_next=3, throttle_retry_after=None, server_error_rate=0.2, drop_rate=0.1
            )
        elif batch == 7:
            server.set_faults(throttle_next=0, server_error_rate=0.0, drop_rate=0.0)

    report = run_all(ctx, payload, between_batches=storm)
    state = server.state()
    assert report["contacts_uploaded"] == 1000
    assert state["contacts"] == 1000
    assert report["throttled"] >= 6
    assert report["retries"] >= 6
    assert state["max_requests_in_1s"] <= 21


def test_a_rotated_key_is_read_again_from_key_vault_once(stack: dict[str, Any]) -> None:
    server: LocalAutopilot = stack["server"]
    vault: LocalVaultStack = stack["vault"]
    ctx = make_context(stack["azurite"], stack["container"], server, vault)
    upload_csv(stack["azurite"], stack["container"], f"{FOLDER}/VIP/list.csv", rows(500))

    def rotate(batch: int) -> None:
        if batch == 3:
            vault.vault.set(SECRET, "the-regenerated-key")
            server.rotate_key("the-regenerated-key")

    report = run_all(ctx, manual_payload(ctx, f"{FOLDER}/VIP/list.csv"), between_batches=rotate)
    assert report["contacts_uploaded"] == 500
    assert vault.vault.reads(SECRET) == 2


def test_a_missing_secret_names_the_vault_and_the_secret(stack: dict[str, Any]) -> None:
    vault: LocalVaultStack = stack["vault"]
    vault.vault.delete(SECRET)
    ctx = make_context(stack["azurite"], stack["container"], stack["server"], vault)
    error = activities.ensure_list(ctx, {"export": "Manual", "segment": "VIP"})["error"]
    assert SECRET in error
    assert vault.url in error
    assert "az keyvault secret set" in error
    assert stack["server"].api_key not in error


def test_a_denied_vault_says_which_role_to_grant(stack: dict[str, Any]) -> None:
    vault: LocalVaultStack = stack["vault"]
    vault.vault.forbid()
    ctx = make_context(stack["azurite"], stack["container"], stack["server"], vault)
    error = activities.ensure_list(ctx, {"export": "Manual", "segment": "VIP"})["error"]
    assert "Key Vault Secrets User" in error


def test_no_key_and_no_email_reach_the_logs(stack: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    server: LocalAutopilot = stack["server"]
    vault: LocalVaultStack = stack["vault"]
    ctx = make_context(stack["azurite"], stack["container"], server, vault)
    server.refused_domains.add("blocked.example.net")
    data = rows(250)
    data.append(["someone@blocked.example.net", "Blocked", "Gold"])
    data.append(["not-an-email", "Bad", "Gold"])
    upload_csv(stack["azurite"], stack["container"], f"{FOLDER}/VIP/list.csv", data)
    keys = [server.api_key, "the-regenerated-key"]

    def trouble(batch: int) -> None:
        if batch == 2:
            vault.vault.set(SECRET, keys[1])
            server.rotate_key(keys[1])
            server.set_faults(throttle_next=2, throttle_retry_after=0.1, server_error_rate=0.1)

    with caplog.at_level(logging.DEBUG):
        run_all(ctx, manual_payload(ctx, f"{FOLDER}/VIP/list.csv"), between_batches=trouble)
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records
    for key in keys:
        assert key not in text
    assert "@example.com" not in text
    assert "blocked.example.net" not in text


def test_a_partition_listed_but_not_written_yet_is_retried_not_failed(stack: dict[str, Any]) -> None:
    ctx = make_context(stack["azurite"], stack["container"], stack["server"], stack["vault"])
    run = manual_run(ctx.config.export("Manual"), "VIP", stack["container"], f"{FOLDER}/VIP/late.csv")
    payload = orchestration_input(run, ctx.config, ctx.settings, trigger="test")
    with pytest.raises(activities.PartitionMissingError, match=r"late\.csv"):
        activities.plan(ctx, payload["run"])


def test_a_file_without_the_email_column_fails_the_plan_naming_file_and_columns(
    stack: dict[str, Any],
) -> None:
    ctx = make_context(stack["azurite"], stack["container"], stack["server"], stack["vault"])
    service = BlobServiceClient.from_connection_string(stack["azurite"].connection_string)
    service.get_blob_client(stack["container"], f"{FOLDER}/VIP/wrong.csv").upload_blob(
        b"Mail,First\r\na@b.com,A\r\n"
    )
    result = activities.plan(ctx, manual_payload(ctx, f"{FOLDER}/VIP/wrong.csv")["run"])
    assert "wrong.csv" in result["error"]
    assert "Mail" in result["error"]
    assert "Email" in result["error"]


def test_report_is_written_next_to_the_run_with_totals_that_add_up(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    ctx = make_context(stack["azurite"], stack["container"], stack["server"], stack["vault"])
    data = rows(120)
    data.append(["", "Nobody", "Gold"])
    data.append(["PERSON.3@example.com ", "Again", "Gold"])
    upload_csv(stack["azurite"], stack["container"], f"{FOLDER}/VIP/list.csv", data)
    report = run_all(ctx, manual_payload(ctx, f"{FOLDER}/VIP/list.csv"))
    stored = json.loads(ctx.results.read_bytes(*report["report_blob"].split("/", 1)))
    assert stored["rows_read"] == 122
    assert stored["contacts_uploaded"] == 120
    assert stored["rejected"] == {"duplicate_email": 1, "missing_email": 1}
    assert stored["rows_read"] == stored["contacts_uploaded"] + stored["rejected_total"]
    assert stored["api_requests"] >= 2
    assert stored["list_id"].startswith("contactlist_")
    staged = list(ctx.results.list_names(ctx.settings.results_container, "staging/"))
    assert [n for n in staged if n.endswith(".jsonl")] == []
    assert any(n.endswith("/plan-rejects.csv") for n in staged)


def test_a_key_autopilot_refuses_even_after_a_refresh_fails_the_batch_at_once(stack: dict[str, Any]) -> None:
    server: LocalAutopilot = stack["server"]
    ctx = make_context(stack["azurite"], stack["container"], server, stack["vault"])
    upload_csv(stack["azurite"], stack["container"], f"{FOLDER}/VIP/list.csv", rows(50))
    payload = manual_payload(ctx, f"{FOLDER}/VIP/list.csv")
    plan = activities.plan(ctx, payload["run"])
    list_id = activities.ensure_list(ctx, {"export": "Manual", "segment": "VIP"})["list_id"]
    server.rotate_key("regenerated-but-not-stored-in-key-vault")
    result = activities.upload_batch(
        ctx,
        {
            "instance_id": payload["run"]["instance_id"],
            "export": "Manual",
            "batch": plan["batches"],
            "list_id": list_id,
        },
    )
    assert "Autopilot rejected the API key of connection 'main'" in result["error"]
    assert server.api_key not in result["error"]
    assert result["requests"] == 2


def test_a_relative_config_path_is_found_beside_the_app_whatever_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert activities.config_location("examples/exports.json") == str(
        activities.APP_ROOT / "examples/exports.json"
    )
    assert activities.config_location('{"inline": true}') == '{"inline": true}'
    assert activities.config_location("missing.json") == "missing.json"


def test_two_runs_of_one_connection_in_one_process_share_its_rate(stack: dict[str, Any]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    server: LocalAutopilot = stack["server"]
    ctx = make_context(stack["azurite"], stack["container"], server, stack["vault"], rps=15)
    for name in ("a.csv", "b.csv"):
        upload_csv(
            stack["azurite"], stack["container"], f"{FOLDER}/VIP/{name}", rows(800, domain=name[0] + ".com")
        )
    payloads = [manual_payload(ctx, f"{FOLDER}/VIP/{name}") for name in ("a.csv", "b.csv")]
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda p: run_all(ctx, p), payloads))
    assert [r["contacts_uploaded"] for r in reports] == [800, 800]
    assert server.state()["max_requests_in_1s"] <= 17  # 15 evenly spaced, +1 window edge, +1 jitter
    assert server.state()["requests_by_status"].get("429", 0) == 0
