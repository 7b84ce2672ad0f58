"""``segment-export`` as a user runs it: a separate process, its exit code, what it prints and writes.

Every command runs as ``python -m shared.cli`` in a subprocess with its own environment, against the
real local servers (Azurite, the local Autopilot server and Key Vault, the local runner), so the
options, environment variables, exit codes and messages are tested exactly as a script would see them.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

from devtools.autopilot_server import LocalAutopilot
from devtools.local_host.azurite import Azurite
from devtools.local_stack import (
    EXPORTS_CONTAINER,
    FUNCTION_KEY,
    LocalStack,
    RunnerProcess,
    example_config,
    wait_for_runs,
    wait_until_done,
)
from devtools.sample_data import (
    ExpectedCounts,
    GeneratedRun,
    container_writer,
    directory_writer,
    generate_run,
)
from tests.fixtures.keyvault import LocalVaultStack

PROJECT_ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = PROJECT_ROOT / "examples" / "exports.json"
HIGH_VALUE = ["--export", "HighValue", "--segment", "HighValueSegment"]
LIST_TITLE = "High value customers"
NEWSLETTER_FOLDER = "CustomerInsights_3f2b9c1e-5a7d-4e8f-9b6a-0c1d2e3f4a5b/NewsletterEMEA"
# Settings a developer's shell may hold; a test passes what it means to pass and nothing else.
AMBIENT = (
    "EXPORTS_CONFIG",
    "AzureWebJobsStorage",
    "EXPORTS_STORAGE",
    "KEY_VAULT_URL",
    "AUTOPILOT_BASE_URL",
    "AUTOPILOT_MAX_RETRIES",
    "HTTP_TIMEOUT_SECONDS",
    "SEGMENT_EXPORT_URL",
    "SEGMENT_EXPORT_FUNCTION_KEY",
)
INPUT_OPTIONS = ("--config", "--export", "--segment", "--file", "--blob", "--connection-string", "--out")
EXPORT_OPTIONS = ("--key-env", "--vault-url", "--base-url", "--concurrency", "--max-retries", "--timeout")
EXIT_CODES = (
    "0 ok, 2 usage, 3 configuration, 4 input file, 5 Autopilot key or access, 6 export failed, "
    "7 status API error"
)

# A hand-written segment file with a header: accents, a quoted comma, a BOM, and every kind of reject.
SEGMENT_CSV = (
    "\ufeffCustomerId,FirstName,LastName,EmailAddress,City,Country,LoyaltyTier,LifetimeValue,BirthDate,IsVip\r\n"
    "1,Zoë,Müller, Zoe.Muller@Example.com ,Zürich,Switzerland,Gold,12.5,1980-01-02,true\r\n"
    "2,Bob,Smith,not-an-email,London,United Kingdom,,,,\r\n"
    "3,Zoé,Muller,zoe.muller@example.com,Paris,France,,,,\r\n"
    "4,Nobody,Known,,Berlin,Germany,,,,\r\n"
    '5,José,García,jose.garcia@example.org,"Washington, D.C.",United States,Silver,3,2000-05-06,false\r\n'
)
SEGMENT_EMAILS = ("zoe.muller@example.com", "jose.garcia@example.org")


@dataclass(frozen=True)
class Cli:
    """One finished command: exit code and both streams."""

    code: int
    out: str
    err: str

    @property
    def both(self) -> str:
        return self.out + self.err


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in AMBIENT}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Cli:
    completed = subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        cwd=Path.cwd(),  # a test's own folder (see work_in_tmp_path): the default --out goes there
        env=env if env is not None else base_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )
    return Cli(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture(autouse=True)
def work_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Commands run from the test's folder, so nothing lands in the checkout."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def closed_port() -> int:
    """A port nothing listens on (bound, read back and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(folder: Path, requests_per_second: float = 1000.0) -> Path:
    """The shipped example, paced fast enough that a test never waits on the rate limit."""
    path = folder / "exports.json"
    path.write_text(json.dumps(example_config(requests_per_second)), encoding="utf-8")
    return path


def generate_local(root: Path, profiles: int, partitions: int) -> GeneratedRun:
    return generate_run(directory_writer(root), profiles=profiles, partitions=partitions)


def read_rejects(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def assert_counts(report: dict[str, Any], expected: ExpectedCounts) -> None:
    assert report["rows_read"] == expected.rows
    assert report["contacts_staged"] == expected.unique_valid
    assert report["rejected"] == {
        "duplicate_email": expected.duplicate_email,
        "invalid_email": expected.invalid_email,
        "missing_email": expected.missing_email,
    }


def no_traceback(result: Cli) -> bool:
    return "Traceback" not in result.err


# ------------------------------------------------------------------------------------------ help


def test_root_help_documents_the_exit_codes() -> None:
    script = Path(sys.executable).parent / "segment-export"  # what scripts/setup.sh installs
    completed = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, check=False, env=base_env()
    )
    assert completed.returncode == 0
    assert EXIT_CODES in " ".join(completed.stdout.split())
    assert all(name in completed.stdout for name in ("validate", "plan", "export", "status"))


@pytest.mark.parametrize(
    ("command", "options"),
    [
        ("validate", ["--config"]),
        (
            "plan",
            [*INPUT_OPTIONS, "--batch-size", "--json", "--show"],
        ),
        (
            "export",
            [*INPUT_OPTIONS, *EXPORT_OPTIONS],
        ),
        ("status", ["INSTANCE_ID", "--url", "--code", "--export", "--watch", "--json"]),
    ],
)
def test_command_help_lists_its_options(command: str, options: list[str]) -> None:
    result = run_cli(command, "--help")
    assert result.code == 0
    assert [o for o in options if o not in result.out] == []


# -------------------------------------------------------------------------------------- validate


def test_validate_summarises_a_good_config() -> None:
    result = run_cli("validate", "--config", str(EXAMPLE_CONFIG))
    assert result.code == 0
    assert "OK — 2 connection(s), 2 export(s)" in result.out
    assert "export HighValue: connection main (5 req/s)" in result.out
    assert "segment HighValueSegment -> list 'High value customers'" in result.out
    assert "export Newsletter-EMEA: connection emea (4 req/s), schedule '30 5 * * 1-5'" in result.out


def test_validate_reads_the_config_named_by_exports_config() -> None:
    result = run_cli("validate", env=base_env(EXPORTS_CONFIG=str(EXAMPLE_CONFIG)))
    assert result.code == 0
    assert f"{EXAMPLE_CONFIG}: OK" in result.out


def test_validate_reports_every_problem_naming_the_export_and_the_field(tmp_path: Path) -> None:
    config = json.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    config["exports"][0]["connection"] = "mian"
    config["exports"][1]["shedule"] = config["exports"][1].pop("schedule")
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    result = run_cli("validate", "--config", str(path))
    assert result.code == 3
    assert result.out == ""
    assert (
        "export 'HighValue': field 'connection': unknown connection 'mian'; did you mean 'main'?"
        in result.err
    )
    assert "export 'Newsletter-EMEA': field 'shedule': unknown key; did you mean 'schedule'?" in result.err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "absent.json", "not found (set --config or EXPORTS_CONFIG)"),
        (lambda d: d, "cannot read configuration file"),
        (lambda d: (d / "bad.json").write_text("{oops", encoding="utf-8") and d / "bad.json", "invalid JSON"),
    ],
    ids=["missing", "a-folder", "not-json"],
)
def test_validate_of_an_unusable_file_exits_3(tmp_path: Path, make: Any, message: str) -> None:
    result = run_cli("validate", "--config", str(make(tmp_path)))
    assert result.code == 3
    assert message in result.err
    assert no_traceback(result)


def test_validate_reads_a_blob_config_from_the_apps_storage(
    azurite: Azurite, azurite_container: ContainerClient
) -> None:
    azurite_container.upload_blob("config/exports.json", EXAMPLE_CONFIG.read_bytes())
    location = f"blob:{azurite_container.container_name}/config/exports.json"
    env = base_env(EXPORTS_CONFIG=location, AzureWebJobsStorage=azurite.connection_string)
    result = run_cli("validate", env=env)
    assert result.code == 0
    assert "OK — 2 connection(s), 2 export(s)" in result.out


def test_validate_of_a_blob_config_without_storage_says_which_setting_is_missing() -> None:
    result = run_cli("validate", env=base_env(EXPORTS_CONFIG="blob:config/exports.json"))
    assert result.code == 3
    assert "set AzureWebJobsStorage" in result.err


# ------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class PlannedCsv:
    result: Cli
    source: Path
    out: Path


@pytest.fixture(scope="module")
def planned_csv(tmp_path_factory: pytest.TempPathFactory) -> PlannedCsv:
    """One dry run of the hand-written CSV; several tests read what it printed and wrote."""
    folder = tmp_path_factory.mktemp("plan-csv")
    source = folder / "segment.csv"
    source.write_bytes(SEGMENT_CSV.encode("utf-8"))
    out = folder / "out"
    result = run_cli(
        "plan", "--config", str(EXAMPLE_CONFIG), *HIGH_VALUE, "--file", str(source), "--out", str(out)
    )
    return PlannedCsv(result, source, out)


def test_plan_of_a_csv_previews_contacts_with_masked_emails(planned_csv: PlannedCsv) -> None:
    result = planned_csv.result
    assert result.code == 0
    previews = [line for line in result.out.splitlines() if "would send" in line]
    assert len(previews) == 2
    first = json.loads(previews[0].split(": ", 1)[1])
    assert first["Email"] == "z***@***.com"
    assert (first["FirstName"], first["LastName"], first["MailingCity"]) == ("Zoë", "Müller", "Zürich")
    assert "(row 5)" in previews[1]
    assert json.loads(previews[1].split(": ", 1)[1])["MailingCity"] == "Washington, D.C."


def test_plan_prints_no_email_address(planned_csv: PlannedCsv) -> None:
    printed = planned_csv.result.both.lower()
    assert [email for email in SEGMENT_EMAILS if email in printed] == []
    assert "@example." not in printed


def test_plan_writes_a_dry_run_report_with_the_right_counts(planned_csv: PlannedCsv) -> None:
    report = json.loads((planned_csv.out / "report.json").read_text(encoding="utf-8"))
    assert report["status"] == "dry-run"
    assert (report["rows_read"], report["contacts_staged"], report["contacts_uploaded"]) == (5, 2, 0)
    assert report["rejected"] == {"duplicate_email": 1, "invalid_email": 1, "missing_email": 1}
    assert report["api_requests"] == 0
    assert f"rejects file:       {planned_csv.out / 'rejects.csv'}" in planned_csv.result.out


def test_plan_writes_every_rejected_row_with_its_reason(planned_csv: PlannedCsv) -> None:
    rows = read_rejects(planned_csv.out / "rejects.csv")
    assert [(r["row"], r["reason"], r["FirstName"]) for r in rows] == [
        ("2", "invalid_email", "Bob"),
        ("3", "duplicate_email", "Zoé"),
        ("4", "missing_email", "Nobody"),
    ]
    assert all(r["file"] == str(planned_csv.source) for r in rows)


def test_plan_without_out_writes_under_segment_export_out_in_the_current_folder(
    work_in_tmp_path: Path,
) -> None:
    source = work_in_tmp_path / "segment.csv"
    source.write_bytes(SEGMENT_CSV.encode("utf-8"))
    result = run_cli("plan", "--config", str(EXAMPLE_CONFIG), *HIGH_VALUE, "--file", str(source))
    assert result.code == 0, result.err
    match = re.search(
        r"^rejects file: +(segment-export-out/HighValue/HighValueSegment/\S+)$", result.out, re.M
    )
    assert match, result.out
    rejects = work_in_tmp_path / match.group(1)
    assert len(read_rejects(rejects)) == 3
    assert (rejects.parent / "report.json").is_file()


@pytest.mark.parametrize("layout", ["as-in-the-container", "flat-folder"])
def test_plan_of_a_local_model_json_matches_the_generators_counts(tmp_path: Path, layout: str) -> None:
    generated = generate_local(tmp_path / "container", profiles=1500, partitions=3)
    model = tmp_path / "container" / generated.model_json_blob
    if layout == "flat-folder":  # model.json and its partitions copied into one folder by hand
        flat = tmp_path / "flat"
        flat.mkdir()
        for name in (generated.model_json_blob, *generated.partition_blobs):
            shutil.copy(tmp_path / "container" / name, flat / Path(name).name)
        model = flat / "model.json"
    out = tmp_path / "out"
    result = run_cli(
        "plan", "--config", str(EXAMPLE_CONFIG), *HIGH_VALUE, "--file", str(model), "--out", str(out)
    )
    assert result.code == 0, result.err
    assert_counts(json.loads((out / "report.json").read_text(encoding="utf-8")), generated.expected)
    assert f"rows read:          {generated.expected.rows}" in result.out


def test_plan_of_a_model_json_with_a_missing_partition_exits_4_naming_it(tmp_path: Path) -> None:
    generated = generate_local(tmp_path, profiles=200, partitions=2)
    (tmp_path / generated.partition_blobs[1]).unlink()
    model = tmp_path / generated.model_json_blob
    result = run_cli("plan", "--config", str(EXAMPLE_CONFIG), *HIGH_VALUE, "--file", str(model))
    assert result.code == 4
    assert f"partition '{generated.partition_blobs[1]}'" in result.err
    assert no_traceback(result)


def test_plan_of_a_file_without_the_email_column_exits_4_naming_file_and_columns(tmp_path: Path) -> None:
    source = tmp_path / "wrong-columns.csv"
    source.write_text("Id,Mail,FirstName\r\n1,ann@example.com,Ann\r\n", encoding="utf-8")
    result = run_cli("plan", "--config", str(EXAMPLE_CONFIG), *HIGH_VALUE, "--file", str(source))
    assert result.code == 4
    assert f"file '{source}'" in result.err
    assert "'EmailAddress' (email_column)" in result.err
    assert "(columns: Id, Mail, FirstName)" in result.err


def test_plan_of_a_missing_file_exits_4(tmp_path: Path) -> None:
    result = run_cli(
        "plan", "--config", str(EXAMPLE_CONFIG), *HIGH_VALUE, "--file", str(tmp_path / "absent.csv")
    )
    assert result.code == 4
    assert "absent.csv' not found" in result.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--export", "Nope", "--file", "x.csv"],
            "unknown export 'Nope' (configured: HighValue, Newsletter-EMEA)",
        ),
        (["--export", "HighValue", "--file", "x.csv"], "choose one with --segment"),
        ([*HIGH_VALUE, "--file", "x.csv", "--blob", "c/x.csv"], "exactly one of --file PATH or --blob"),
        ([*HIGH_VALUE], "exactly one of --file PATH or --blob"),
        ([*HIGH_VALUE, "--blob", "no-slash", "--connection-string", "x"], "must be CONTAINER/NAME"),
        ([*HIGH_VALUE, "--blob", "c/x.csv"], "--blob needs --connection-string"),
    ],
    ids=["unknown-export", "segment-needed", "file-and-blob", "no-input", "bad-blob", "no-storage"],
)
def test_plan_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = run_cli("plan", "--config", str(EXAMPLE_CONFIG), *args)
    assert result.code == 2
    assert message in result.err


def test_plan_of_a_blob_csv(azurite: Azurite, azurite_container: ContainerClient, tmp_path: Path) -> None:
    azurite_container.upload_blob("dropped/segment.csv", SEGMENT_CSV.encode("utf-8"))
    blob = f"{azurite_container.container_name}/dropped/segment.csv"
    env = base_env(AzureWebJobsStorage=azurite.connection_string)
    out = tmp_path / "out"
    result = run_cli(
        "plan", "--config", str(EXAMPLE_CONFIG), *HIGH_VALUE, "--blob", blob, "--out", str(out), env=env
    )
    assert result.code == 0, result.err
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert (report["rows_read"], report["contacts_staged"]) == (5, 2)
    assert [r["file"] for r in read_rejects(out / "rejects.csv")] == ["dropped/segment.csv"] * 3


def test_plan_of_a_blob_model_json_matches_the_generators_counts(
    azurite: Azurite, azurite_container: ContainerClient, tmp_path: Path
) -> None:
    name = azurite_container.container_name
    generated = generate_run(
        container_writer(azurite_container),
        profiles=1200,
        partitions=2,
        location_base=f"{azurite.blob_endpoint}/{name}",
    )
    out = tmp_path / "out"
    result = run_cli(
        "plan",
        "--config",
        str(EXAMPLE_CONFIG),
        *HIGH_VALUE,
        "--blob",
        f"{name}/{generated.model_json_blob}",
        "--out",
        str(out),
        env=base_env(AzureWebJobsStorage=azurite.connection_string),
    )
    assert result.code == 0, result.err
    assert_counts(json.loads((out / "report.json").read_text(encoding="utf-8")), generated.expected)


def test_plan_reads_blobs_from_the_exports_storage_first(
    azurite: Azurite, azurite_container: ContainerClient
) -> None:
    """Customer Insights writes to EXPORTS_STORAGE when the app has one: that is where --blob looks."""
    azurite_container.upload_blob("dropped/segment.csv", SEGMENT_CSV.encode("utf-8"))
    env = base_env(EXPORTS_STORAGE=azurite.connection_string, AzureWebJobsStorage="UseNothing=true")
    blob = f"{azurite_container.container_name}/dropped/segment.csv"
    result = run_cli("plan", "--config", str(EXAMPLE_CONFIG), *HIGH_VALUE, "--blob", blob, env=env)
    assert result.code == 0, result.err
    assert "rows read:          5" in result.out


def test_plan_of_a_missing_blob_exits_4(azurite: Azurite, azurite_container: ContainerClient) -> None:
    blob = f"{azurite_container.container_name}/dropped/absent.csv"
    env = base_env(AzureWebJobsStorage=azurite.connection_string)
    result = run_cli("plan", "--config", str(EXAMPLE_CONFIG), *HIGH_VALUE, "--blob", blob, env=env)
    assert result.code == 4
    assert f"blob '{blob}' not found" in result.err


def test_plan_of_a_blob_model_json_pointing_into_another_container_exits_4(
    azurite: Azurite, azurite_container: ContainerClient
) -> None:
    generated = generate_run(container_writer(azurite_container), profiles=10, partitions=1)
    blob = f"{azurite_container.container_name}/{generated.model_json_blob}"
    env = base_env(AzureWebJobsStorage=azurite.connection_string)
    result = run_cli("plan", "--config", str(EXAMPLE_CONFIG), *HIGH_VALUE, "--blob", blob, env=env)
    assert result.code == 4
    assert "points into container 'ci-exports'" in result.err
    assert no_traceback(result)


def test_plan_with_a_malformed_connection_string_exits_2_without_echoing_it() -> None:
    secret = "AccountKey=c2VjcmV0LXZhbHVl"
    result = run_cli(
        "plan",
        "--config",
        str(EXAMPLE_CONFIG),
        *HIGH_VALUE,
        "--blob",
        "c/x.csv",
        "--connection-string",
        secret,
    )
    assert result.code == 2
    assert "--connection-string is not a valid storage connection string" in result.err
    assert "c2VjcmV0" not in result.both


# ---------------------------------------------------------------------------------------- export


@pytest.fixture
def segment_file(tmp_path: Path) -> Path:
    path = tmp_path / "segment.csv"
    path.write_bytes(SEGMENT_CSV.encode("utf-8"))
    return path


def export_args(config: Path, source: Path, out: Path, *more: str) -> list[str]:
    return ["export", "--config", str(config), *HIGH_VALUE, "--file", str(source), "--out", str(out), *more]


def test_export_delivers_the_contacts_into_the_segments_list(
    autopilot_server: LocalAutopilot, segment_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = export_args(write_config(tmp_path), segment_file, out, "--key-env", "AP_KEY")
    env = base_env(AP_KEY=autopilot_server.api_key)
    result = run_cli(*args, "--base-url", autopilot_server.base_url, env=env)
    assert result.code == 0, result.err
    list_id = autopilot_server.list_id(LIST_TITLE)
    assert list_id is not None
    assert autopilot_server.members(list_id) == set(SEGMENT_EMAILS)
    with autopilot_server.lock:
        zoe = dict(autopilot_server.contacts["zoe.muller@example.com"])
    assert (zoe["FirstName"], zoe["MailingCity"]) == ("Zoë", "Zürich")
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert (report["status"], report["contacts_uploaded"], report["list_id"]) == ("completed", 2, list_id)
    assert "contacts uploaded:  2" in result.out


def test_export_takes_the_base_url_from_the_environment(
    autopilot_server: LocalAutopilot, segment_file: Path, tmp_path: Path
) -> None:
    args = export_args(write_config(tmp_path), segment_file, tmp_path / "out", "--key-env", "AP_KEY")
    env = base_env(AP_KEY=autopilot_server.api_key, AUTOPILOT_BASE_URL=autopilot_server.base_url)
    result = run_cli(*args, env=env)
    assert result.code == 0, result.err
    assert len(autopilot_server.members(autopilot_server.list_id(LIST_TITLE) or "")) == 2


def test_export_with_a_refused_key_exits_5_naming_the_connection_not_the_key(
    autopilot_server: LocalAutopilot, segment_file: Path, tmp_path: Path
) -> None:
    wrong = "wrong-key-6f1c2d9e8b7a"
    args = export_args(write_config(tmp_path), segment_file, tmp_path / "out", "--key-env", "AP_KEY")
    result = run_cli(*args, "--base-url", autopilot_server.base_url, env=base_env(AP_KEY=wrong))
    assert result.code == 5
    assert "rejected the API key in environment variable AP_KEY for connection 'main'" in result.err
    assert wrong not in result.both
    assert autopilot_server.state()["contacts"] == 0


def test_export_with_an_unset_key_variable_exits_5(segment_file: Path, tmp_path: Path) -> None:
    args = export_args(write_config(tmp_path), segment_file, tmp_path / "out", "--key-env", "AP_KEY")
    result = run_cli(*args, "--base-url", f"http://127.0.0.1:{closed_port()}/v1")
    assert result.code == 5
    assert "environment variable AP_KEY is not set" in result.err


def test_export_without_a_key_source_exits_2(segment_file: Path, tmp_path: Path) -> None:
    result = run_cli(*export_args(write_config(tmp_path), segment_file, tmp_path / "out"))
    assert result.code == 2
    assert "give --key-env VARIABLE or --vault-url" in result.err


def vault_env(vault: LocalVaultStack) -> dict[str, str]:
    """The fixture put the vault's identity settings in this process's environment; pass them on."""
    return base_env(**vault.env)


def test_export_reads_the_key_from_key_vault(
    autopilot_server: LocalAutopilot, local_vault: LocalVaultStack, segment_file: Path, tmp_path: Path
) -> None:
    local_vault.vault.set("autopilot-api-key", autopilot_server.api_key)
    args = export_args(write_config(tmp_path), segment_file, tmp_path / "out", "--vault-url", local_vault.url)
    result = run_cli(*args, "--base-url", autopilot_server.base_url, env=vault_env(local_vault))
    assert result.code == 0, result.err
    assert autopilot_server.members(autopilot_server.list_id(LIST_TITLE) or "") == set(SEGMENT_EMAILS)
    assert local_vault.vault.reads("autopilot-api-key") >= 1


def test_export_with_the_secret_missing_from_key_vault_exits_5_naming_it(
    autopilot_server: LocalAutopilot, local_vault: LocalVaultStack, segment_file: Path, tmp_path: Path
) -> None:
    args = export_args(write_config(tmp_path), segment_file, tmp_path / "out")
    result = run_cli(*args, "--base-url", autopilot_server.base_url, env=vault_env(local_vault))
    assert result.code == 5
    assert "secret 'autopilot-api-key' does not exist" in result.err
    assert autopilot_server.state()["requests"] == 0


@pytest.mark.parametrize(
    ("options", "settings", "attempts"),
    [(["--max-retries", "1"], {}, 2), ([], {"AUTOPILOT_MAX_RETRIES": "0"}, 1)],
    ids=["option", "environment"],
)
def test_export_to_an_unreachable_autopilot_exits_6(
    segment_file: Path, tmp_path: Path, options: list[str], settings: dict[str, str], attempts: int
) -> None:
    args = export_args(write_config(tmp_path), segment_file, tmp_path / "out", "--key-env", "AP_KEY")
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    result = run_cli(*args, *options, "--base-url", base_url, env=base_env(AP_KEY="k", **settings))
    assert result.code == 6
    assert f"failed after {attempts} attempts on connection 'main'" in result.err


def test_a_failed_export_leaves_a_report_of_what_was_delivered_and_no_staged_emails(
    autopilot_server: LocalAutopilot, segment_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = export_args(write_config(tmp_path), segment_file, out, "--key-env", "AP_KEY")
    result = run_cli(*args, "--base-url", autopilot_server.base_url, env=base_env(AP_KEY="not-the-key"))
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert result.code == 5
    assert str(out / "report.json") in result.err
    assert report["status"] == "failed"
    assert report["contacts_uploaded"] == 0
    assert "not-the-key" not in json.dumps(report)
    assert not (out / "staging").exists()


# ---------------------------------------------------------------------------------------- status


@dataclass(frozen=True)
class RunningStack:
    stack: LocalStack
    runner: RunnerProcess
    generated: GeneratedRun
    instance_id: str

    def env(self, **extra: str) -> dict[str, str]:
        return base_env(SEGMENT_EXPORT_URL=self.runner.url, SEGMENT_EXPORT_FUNCTION_KEY=FUNCTION_KEY, **extra)

    def wait_until_done(self, instance_id: str | None = None) -> dict[str, Any]:
        with self.stack.api(self.runner.url) as api:
            return wait_until_done(api, instance_id or self.instance_id, timeout=120)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The local runner with one export run started by its blob trigger (paced so it takes a moment)."""
    with LocalStack(tmp_path_factory.mktemp("status") / "stack", autopilot_rps=25) as stack:
        runner = stack.start_runner()
        container = stack.blob_service.get_container_client(EXPORTS_CONTAINER)
        generated = generate_run(container_writer(container), profiles=2500, partitions=2)
        with stack.api(runner.url) as api:
            [run] = wait_for_runs(api, count=1, timeout=60)
        yield RunningStack(stack, runner, generated, run["instance_id"])


def test_status_watch_follows_a_run_until_it_ends_and_prints_its_report(running: RunningStack) -> None:
    result = run_cli("status", running.instance_id, "--watch", env=running.env())
    assert result.code == 0, result.err
    assert f"run {running.instance_id}: Completed" in result.out
    assert f"contacts uploaded:  {running.generated.expected.unique_valid}" in result.out


def test_status_lists_the_runs(running: RunningStack) -> None:
    running.wait_until_done()
    result = run_cli("status", env=running.env())
    assert result.code == 0
    unique = running.generated.expected.unique_valid
    [line] = [line for line in result.out.splitlines() if running.instance_id in line]
    assert re.search(rf"\bCompleted\b.*uploaded {unique}/{unique}$", line)


def test_status_of_one_run_prints_its_report(running: RunningStack) -> None:
    running.wait_until_done()
    expected = running.generated.expected
    result = run_cli("status", running.instance_id, env=running.env())
    assert result.code == 0
    assert f"rows read:          {expected.rows}" in result.out
    assert f"  invalid_email           {expected.invalid_email}" in result.out
    assert re.search(
        r"rejects file: +segment-export/runs/HighValue/HighValueSegment/.+/rejects\.csv", result.out
    )


def test_status_json_prints_the_apis_answer(running: RunningStack) -> None:
    running.wait_until_done()
    result = run_cli("status", running.instance_id, "--json", env=running.env())
    assert result.code == 0
    body = json.loads(result.out)
    assert body["runtime_status"] == "Completed"
    assert body["output"]["rows_read"] == running.generated.expected.rows


def test_status_of_a_failed_run_exits_6_with_its_error_also_as_json(running: RunningStack) -> None:
    # The Newsletter export maps columns this file lacks: its run fails while planning.
    blob = f"{NEWSLETTER_FOLDER}/NewsletterSubscribers/may.csv"
    running.stack.blob_service.get_blob_client(EXPORTS_CONTAINER, blob).upload_blob(
        b"PrimaryEmail,GivenName\r\nreader@example.org,Ann\r\n", overwrite=True
    )
    with running.stack.api(running.runner.url) as api:
        started = api.post(
            "exports/Newsletter-EMEA/runs", json={"segment": "NewsletterSubscribers", "run": blob}
        )
    instance_id = started.json()["runs"][0]["instance_id"]
    assert running.wait_until_done(instance_id)["runtime_status"] == "Failed"
    text = run_cli("status", instance_id, env=running.env())
    as_json = run_cli("status", instance_id, "--json", env=running.env())
    assert (text.code, as_json.code) == (6, 6)
    assert f"run {instance_id}: Failed" in text.out
    [error] = [line for line in text.out.splitlines() if line.startswith("error: ")]
    assert "has no columns 'Company' (field Company)" in error
    assert json.loads(as_json.out)["runtime_status"] == "Failed"


def test_status_of_an_unknown_run_exits_7(running: RunningStack) -> None:
    result = run_cli("status", "no-such-run", env=running.env())
    assert result.code == 7
    assert "404" in result.err
    assert "no-such-run" in result.err


def test_status_with_a_wrong_function_key_exits_7_saying_so(running: RunningStack) -> None:
    result = run_cli("status", "--code", "not-the-key", env=running.env())
    assert result.code == 7
    assert "the function key was refused" in result.err


def test_status_of_an_unreachable_url_exits_7() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    result = run_cli("status", "--url", url)
    assert result.code == 7
    assert f"cannot reach {url}" in result.err


@pytest.fixture
def html_site(tmp_path: Path) -> Iterator[str]:
    """A web server answering 200 with HTML at /api/runs, like a sign-in page in front of an app."""
    (tmp_path / "site" / "api").mkdir(parents=True)
    (tmp_path / "site" / "api" / "runs").write_text("<html><body>Sign in</body></html>", encoding="utf-8")
    handler = functools.partial(QuietHandler, directory=str(tmp_path / "site"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_status_of_a_url_that_is_not_the_app_exits_7(html_site: str) -> None:
    result = run_cli("status", "--url", html_site)
    assert result.code == 7
    assert "did not answer with the segment-export API's JSON at /api/runs" in result.err
    assert no_traceback(result)
