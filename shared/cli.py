"""``segment-export``: the command line for people who run exports by hand.

Exit codes are part of the interface, so scripts can branch on them:
0 success, 2 usage error, 3 configuration error, 4 input file error, 5 Autopilot key or access
error, 6 the export failed (Autopilot unreachable, a batch could not be delivered), 7 the status API
could not be reached or answered an error.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn, TextIO

import click

from shared.config import ConfigError, ExportConfig, ExportsConfig, load_config
from shared.redact import mask_email, scrub
from shared.runs import ExportRun, manual_run, runs_from_model
from shared.segment_file import SegmentFileError
from shared.settings import (
    DEFAULT_AUTOPILOT_BASE_URL,
    EXPORTS_STORAGE_CONNECTION,
    HTTP_TIMEOUT_SECONDS,
    MAX_RETRIES,
    STORAGE_CONNECTION,
    Settings,
)

if TYPE_CHECKING:
    from shared.blob_store import BlobStore

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_CONFIG = 3
EXIT_INPUT = 4
EXIT_KEY = 5
EXIT_EXPORT = 6
EXIT_STATUS = 7

ENDED_UNSUCCESSFULLY = frozenset({"Failed", "Terminated", "Canceled"})


def _note_partial_report(out: Path) -> None:
    """A failed export still wrote what it delivered: say where, before the error."""
    report = out / "report.json"
    if report.exists():
        click.echo(f"report of what was delivered before the failure: {report}", err=True)


def _fail(code: int, message: str) -> NoReturn:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def _storage(connection_string: str, what: str) -> BlobStore:
    """A blob store, or exit 2: the SDK's own error for a bad string is a bare ValueError traceback."""
    from shared.blob_store import BlobStore

    try:
        return BlobStore.from_connection_string(connection_string)
    except ValueError:
        # Never echo the string: it carries the account key.
        _fail(EXIT_USAGE, f"{what} is not a valid storage connection string")


def _read_config_blob(container: str, name: str) -> bytes:
    """``EXPORTS_CONFIG=blob:...`` names the app's storage, as in the Function App's settings."""
    connection_string = os.environ.get(STORAGE_CONNECTION, "").strip()
    if not connection_string:
        raise ConfigError(
            f"exports config 'blob:{container}/{name}': set {STORAGE_CONNECTION} to the storage "
            "connection string to read it from this machine (or pass --config with a local copy)"
        )
    return _storage(connection_string, STORAGE_CONNECTION).read_bytes(container, name)


def _load(config_path: str) -> ExportsConfig:
    from azure.core.exceptions import AzureError

    try:
        return load_config(config_path, read_blob=_read_config_blob)
    except ConfigError as exc:
        _fail(EXIT_CONFIG, str(exc))
    except FileNotFoundError:
        _fail(EXIT_CONFIG, f"configuration file '{config_path}' not found (set --config or EXPORTS_CONFIG)")
    except OSError as exc:
        # A folder, or a file this user may not read: not a traceback.
        _fail(EXIT_CONFIG, f"cannot read configuration file '{config_path}': {exc.strerror or exc}")
    except AzureError as exc:
        _fail(EXIT_CONFIG, f"cannot read configuration '{config_path}' from blob storage: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    """SDK errors run to many lines (headers, request ids); one, with no address or key, is enough."""
    text = str(getattr(exc, "message", None) or exc).strip()
    return scrub(text.splitlines()[0] if text else type(exc).__name__)


def _export(config: ExportsConfig, name: str) -> ExportConfig:
    try:
        return config.export(name)
    except KeyError:
        known = ", ".join(sorted(config.exports)) or "none"
        _fail(EXIT_USAGE, f"unknown export '{name}' (configured: {known})")


def _segment_name(export: ExportConfig, segment: str | None) -> str:
    if segment is None:
        if len(export.segments) == 1:
            return export.segments[0].name
        names = ", ".join(s.name for s in export.segments)
        _fail(EXIT_USAGE, f"export '{export.name}' has several segments; choose one with --segment ({names})")
    found = export.segment(segment)
    if found is None:
        names = ", ".join(s.name for s in export.segments)
        _fail(EXIT_USAGE, f"export '{export.name}' has no segment '{segment}' (configured: {names})")
    return found.name


@contextmanager
def _reading_input() -> Iterator[None]:
    """Whatever goes wrong reading the input (a file, a blob, the storage account) is exit 4."""
    from azure.core.exceptions import AzureError

    try:
        yield
    except (SegmentFileError, FileNotFoundError) as exc:
        _fail(EXIT_INPUT, str(exc))
    except AzureError as exc:
        _fail(EXIT_INPUT, f"cannot read the input from blob storage: {_first_line(exc)}")


class _Source:
    """A run's files from a local path or a blob, behind one ``open_file``."""

    def __init__(self, run: ExportRun, open_file: Callable[[str], BinaryIO]) -> None:
        self.run = run
        self.open_file = open_file


def _resolve_source(
    export: ExportConfig, segment: str, file: str | None, blob: str | None, connection_string: str | None
) -> _Source:
    from shared.cdm_model import parse_model_json

    if (file is None) == (blob is None):
        _fail(EXIT_USAGE, "give exactly one of --file PATH or --blob CONTAINER/NAME")
    if file is not None:
        path = Path(file)
        if not path.is_file():
            _fail(EXIT_INPUT, f"input file '{file}' not found")
        if path.name == "model.json":
            root = path.parent
            try:
                model = parse_model_json(path.read_bytes(), source=str(path), container="")
            except (ValueError, SegmentFileError) as exc:
                _fail(EXIT_INPUT, str(exc))
            runs = [r for r in runs_from_model(export, model, "") if r.segment == segment]
            if not runs:
                _fail(EXIT_INPUT, f"{file} describes no partitions of segment '{segment}'")

            def open_local(name: str) -> BinaryIO:
                return _local_partition(root, name, file).open("rb")

            return _Source(runs[0], open_local)
        run = manual_run(export, segment, "", str(path))
        return _Source(run, lambda name: Path(name).open("rb"))
    assert blob is not None
    if not connection_string:
        _fail(
            EXIT_USAGE,
            f"--blob needs --connection-string or the {EXPORTS_STORAGE_CONNECTION} or "
            f"{STORAGE_CONNECTION} environment variable",
        )
    container, _, name = blob.partition("/")
    if not name:
        _fail(EXIT_USAGE, f"--blob must be CONTAINER/NAME, got '{blob}'")
    store = _storage(connection_string, "--connection-string")
    if name.endswith("model.json"):
        try:
            model = parse_model_json(store.read_bytes(container, name), source=blob, container=container)
        except FileNotFoundError:
            _fail(EXIT_INPUT, f"blob '{blob}' not found")
        except (ValueError, SegmentFileError) as exc:
            _fail(EXIT_INPUT, str(exc))
        runs = [r for r in runs_from_model(export, model, container) if r.segment == segment]
        if not runs:
            _fail(EXIT_INPUT, f"{blob} describes no partitions of segment '{segment}'")
        return _Source(runs[0], lambda n: store.open_read(container, n))
    if not store.exists(container, name):
        _fail(EXIT_INPUT, f"blob '{blob}' not found")
    return _Source(manual_run(export, segment, container, name), lambda n: store.open_read(container, n))


def _local_partition(root: Path, name: str, model_file: str) -> Path:
    """Where a partition of a local ``model.json`` is on disk.

    Its location is a blob name (``<export folder>/<segment>/<run>/<file>.csv``) while the copy on
    disk may sit under any folder: the longest tail of that name found next to ``model.json`` wins,
    so a whole container copied out, the export's folder alone or a flat folder all work.
    """
    parts = PurePosixPath(name).parts
    for start in range(len(parts)):
        candidate = root.joinpath(*parts[start:])
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"partition '{name}' listed in {model_file} was not found under {root}")


def _default_out(run: ExportRun) -> Path:
    return Path("segment-export-out") / run.export / run.segment / run.label


def _print_report(report: dict[str, Any], rejects: Path, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"status:             {report['status']}")
    click.echo(f"rows read:          {report['rows_read']}")
    click.echo(f"contacts uploaded:  {report['contacts_uploaded']}")
    click.echo(f"contacts staged:    {report['contacts_staged']}")
    rejected = report.get("rejected", {})
    click.echo(f"rejected:           {sum(rejected.values())}")
    for reason, count in sorted(rejected.items()):
        click.echo(f"  {reason:<24}{count}")
    click.echo(
        f"API requests:       {report['api_requests']} (retries {report['retries']}, "
        f"throttled {report['throttled']})"
    )
    click.echo(f"duration:           {report['duration_seconds']:.1f} s")
    click.echo(f"rejects file:       {rejects}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="segment-export")
def main() -> None:
    """Export Customer Insights segments into Autopilot lists.

    Configuration comes from --config or the EXPORTS_CONFIG environment variable (default
    exports.json). Exit codes: 0 ok, 2 usage, 3 configuration, 4 input file, 5 Autopilot key or
    access, 6 export failed, 7 status API error.
    """


config_option = click.option(
    "--config",
    "config_path",
    default=lambda: os.environ.get("EXPORTS_CONFIG", "exports.json"),
    show_default="EXPORTS_CONFIG or exports.json",
    help="Export configuration (JSON file).",
)


@main.command()
@config_option
def validate(config_path: str) -> None:
    """Check an export configuration and summarise it."""
    config = _load(config_path)
    click.echo(
        f"{config_path}: OK — {len(config.connections)} connection(s), {len(config.exports)} export(s)"
    )
    for export in config.exports.values():
        connection = config.connection_for(export)
        schedule = f", schedule '{export.schedule}'" if export.schedule else ""
        click.echo(
            f"  export {export.name}: connection {connection.name} "
            f"({connection.requests_per_second:g} req/s){schedule}"
        )
        for segment in export.segments:
            click.echo(f"    segment {segment.name} -> list '{segment.list_title}'")


def _input_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        config_option,
        click.option("--export", "export_name", required=True, help="Export name from the configuration."),
        click.option("--segment", help="Segment name (optional when the export has one)."),
        click.option("--file", type=click.Path(dir_okay=False), help="A local CSV, or a local model.json."),
        click.option("--blob", help="CONTAINER/NAME of a CSV or model.json blob."),
        click.option(
            "--connection-string",
            envvar=[EXPORTS_STORAGE_CONNECTION, STORAGE_CONNECTION],
            help=f"Storage connection string for --blob (default: {EXPORTS_STORAGE_CONNECTION}, "
            f"else {STORAGE_CONNECTION}).",
        ),
        click.option(
            "--out", "out_dir", type=click.Path(file_okay=False), help="Where the report and rejects go."
        ),
        click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 100_000)),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command()
@_input_options
@click.option(
    "--show", default=3, show_default=True, type=click.IntRange(0, 100), help="Contacts to preview."
)
def plan(
    config_path: str,
    export_name: str,
    segment: str | None,
    file: str | None,
    blob: str | None,
    connection_string: str | None,
    out_dir: str | None,
    batch_size: int,
    as_json: bool,
    show: int,
) -> None:
    """Dry run: read and validate a file or blob; print what would be sent and what is rejected."""
    from shared.local_export import export_locally

    config = _load(config_path)
    export = _export(config, export_name)
    segment_name = _segment_name(export, segment)
    list_title = export.segment(segment_name).list_title  # type: ignore[union-attr]
    with _reading_input():
        source = _resolve_source(export, segment_name, file, blob, connection_string)
        out = Path(out_dir) if out_dir else _default_out(source.run)
        result = export_locally(
            source.run, export, list_title, source.open_file, out, client=None, batch_size=batch_size
        )
    if not as_json:
        click.echo(f"dry run of {export.name}/{segment_name} -> Autopilot list '{list_title}' (nothing sent)")
        for item in result.sample[:show]:
            contact = dict(item.contact)
            contact["Email"] = mask_email(contact["Email"])
            click.echo(f"  would send (row {item.row}): {json.dumps(contact, ensure_ascii=False)}")
    _print_report(result.report.to_dict(), result.rejects_path, as_json)


@main.command()
@_input_options
@click.option("--key-env", help="Read the Autopilot API key from this environment variable (one-off use).")
@click.option("--vault-url", envvar="KEY_VAULT_URL", help="Key Vault holding the connection's key secret.")
@click.option(
    "--base-url", envvar="AUTOPILOT_BASE_URL", default=DEFAULT_AUTOPILOT_BASE_URL, show_default=True
)
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(1, 32))
@click.option(
    "--max-retries",
    envvar=MAX_RETRIES,
    default=8,
    show_default=True,
    type=click.IntRange(0, 100),
    help=f"Retries per Autopilot request (429, 5xx, no answer); env {MAX_RETRIES}.",
)
@click.option(
    "--timeout",
    envvar=HTTP_TIMEOUT_SECONDS,
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help=f"Seconds per Autopilot request; env {HTTP_TIMEOUT_SECONDS}.",
)
def export(
    config_path: str,
    export_name: str,
    segment: str | None,
    file: str | None,
    blob: str | None,
    connection_string: str | None,
    out_dir: str | None,
    batch_size: int,
    as_json: bool,
    key_env: str | None,
    vault_url: str | None,
    base_url: str,
    concurrency: int,
    max_retries: int,
    timeout: float,
) -> None:
    """Export a file or blob into Autopilot now, from this machine."""
    from shared.autopilot_client import AutopilotAuthError, AutopilotClient, AutopilotError, ClientStats
    from shared.key_vault import EnvironmentKeySource, KeyVaultAccessError, key_source_for
    from shared.local_export import export_locally

    config = _load(config_path)
    export_config = _export(config, export_name)
    segment_name = _segment_name(export_config, segment)
    connection = config.connection_for(export_config)
    with _reading_input():
        source = _resolve_source(export_config, segment_name, file, blob, connection_string)
    out = Path(out_dir) if out_dir else _default_out(source.run)
    try:
        if key_env:
            key_source: Any = EnvironmentKeySource(key_env)
        elif vault_url:
            key_source = key_source_for(
                vault_url,
                connection.key_secret_name,
                cache_seconds=600,
                verify_challenge_resource=Settings.from_env().key_vault_verify_challenge_resource,
            )
        else:
            _fail(EXIT_USAGE, "give --key-env VARIABLE or --vault-url (or set KEY_VAULT_URL)")
        key_source.get_key()
    except (KeyVaultAccessError, KeyError, ValueError) as exc:
        _fail(EXIT_KEY, str(exc))
    stats = ClientStats()
    list_title = export_config.segment(segment_name).list_title  # type: ignore[union-attr]
    with ExitStack() as stack:
        client = stack.enter_context(
            AutopilotClient(
                base_url,
                key_source,
                connection_name=connection.name,
                requests_per_second=connection.requests_per_second,
                timeout=timeout,
                max_retries=max_retries,
                stats=stats,
            )
        )
        bar: Any = None

        def on_batch(done: int, total: int) -> None:
            nonlocal bar
            if bar is None:
                bar = stack.enter_context(
                    click.progressbar(length=total, label="uploading batches", file=sys.stderr)
                )
            bar.update(1)

        try:
            with _reading_input():
                result = export_locally(
                    source.run,
                    export_config,
                    list_title,
                    source.open_file,
                    out,
                    client=client,
                    batch_size=batch_size,
                    concurrency=concurrency,
                    on_batch=on_batch,
                    stats=stats.snapshot,
                )
        except AutopilotAuthError as exc:
            _note_partial_report(out)
            if key_env:
                # The client's advice (fix the Key Vault secret) does not apply to a key given here.
                _fail(
                    EXIT_KEY,
                    f"Autopilot rejected the API key in environment variable {key_env} for connection "
                    f"'{connection.name}' (HTTP {exc.status_code}). Check the key in Autopilot: it may "
                    "have been regenerated.",
                )
            _fail(EXIT_KEY, str(exc))
        except AutopilotError as exc:
            _note_partial_report(out)
            _fail(EXIT_EXPORT, str(exc))
        except KeyVaultAccessError as exc:
            _note_partial_report(out)
            _fail(EXIT_KEY, str(exc))
    _print_report(result.report.to_dict(), result.rejects_path, as_json)


@main.command()
@click.argument("instance_id", required=False)
@click.option(
    "--url",
    envvar="SEGMENT_EXPORT_URL",
    default="http://127.0.0.1:7071",
    show_default=True,
    help="The Function App (or local runner) base URL.",
)
@click.option("--code", envvar="SEGMENT_EXPORT_FUNCTION_KEY", help="Function key for the HTTP API.")
@click.option("--export", "export_name", help="Only runs of this export (when listing).")
@click.option("--watch", is_flag=True, help="Follow one run with a progress bar until it ends.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON.")
def status(
    instance_id: str | None, url: str, code: str | None, export_name: str | None, watch: bool, as_json: bool
) -> None:
    """Show recent runs, or one run (INSTANCE_ID) with its progress and report."""
    import httpx

    headers = {"x-functions-key": code} if code else {}
    base = url.rstrip("/") + "/api"

    def get(path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            response = httpx.get(f"{base}/{path}", params=params, headers=headers, timeout=30)
        except httpx.HTTPError as exc:
            _fail(EXIT_STATUS, f"cannot reach {url}: {exc}")
        if response.status_code in (401, 403):
            # The Functions host answers these with an empty body: say what is wrong instead.
            given = "was refused" if code else "is missing"
            _fail(
                EXIT_STATUS,
                f"{response.status_code} from {url}: the function key {given} "
                "(give --code or set SEGMENT_EXPORT_FUNCTION_KEY)",
            )
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            error = body.get("error", body) if isinstance(body, dict) else response.text[:200]
            _fail(EXIT_STATUS, f"{response.status_code} from {url}: {error or response.reason_phrase}")
        if not isinstance(body, dict):
            _fail(
                EXIT_STATUS,
                f"{url} did not answer with the segment-export API's JSON at /api/{path} "
                "(is --url the Function App's base URL?)",
            )
        return body

    if instance_id is None:
        params = {"export": export_name} if export_name else {}
        runs = get("runs", params).get("runs")
        if not isinstance(runs, list):
            _fail(
                EXIT_STATUS, f"{url} answered /api/runs without a list of runs (is --url the Function App?)"
            )
        if as_json:
            click.echo(json.dumps(runs, indent=2))
            return
        if not runs:
            click.echo("no runs")
        for run in runs:
            custom = run.get("custom_status") or {}
            click.echo(
                f"{run['instance_id']:<60} {run['runtime_status']:<11} {run.get('created_time', '')}  "
                f"uploaded {custom.get('contacts_uploaded', 0)}/{custom.get('contacts_total', 0)}"
            )
        return
    body = get(f"runs/{instance_id}")
    if watch:
        body = watch_run(lambda: get(f"runs/{instance_id}"), sys.stderr)
    if as_json:
        click.echo(json.dumps(body, indent=2))
    else:
        click.echo(f"run {body['instance_id']}: {body['runtime_status']}")
        output = body.get("output")
        if isinstance(output, dict):
            _print_report(output, Path(str(output.get("rejects_blob"))), False)
        else:
            if body.get("custom_status"):
                click.echo(json.dumps(body["custom_status"], indent=2))
            if isinstance(output, str) and output:
                click.echo(f"error: {output}")
    # A script following a run (``status ID --watch && next-step``) must not go on after one that
    # did not complete, whatever the output format.
    if body["runtime_status"] in ENDED_UNSUCCESSFULLY:
        sys.exit(EXIT_EXPORT)


def watch_run(fetch: Callable[[], dict[str, Any]], stream: TextIO, interval: float = 1.0) -> dict[str, Any]:
    """Poll a run until it leaves the running states, drawing a progress bar of contacts uploaded."""
    running = {"Pending", "Running", "ContinuedAsNew", "Suspended"}
    body = fetch()
    with click.progressbar(length=1, label="starting", file=stream, show_pos=True) as bar:
        while body.get("runtime_status") in running:
            custom = body.get("custom_status") or {}
            total = int(custom.get("contacts_total") or 0)
            done = int(custom.get("contacts_uploaded") or 0)
            if total:
                bar.length = total
                bar.label = str(custom.get("stage", "uploading"))
                bar.update(done - bar.pos)
            time.sleep(interval)
            body = fetch()
        custom = body.get("custom_status") or {}
        if bar.length and custom.get("contacts_uploaded") is not None:
            bar.update(int(custom["contacts_uploaded"]) - bar.pos)
    return body


if __name__ == "__main__":
    main()
