"""The README's first command: a real export of a generated Customer Insights segment, end to end.

Starts the local stack (Azurite, local Key Vault and Autopilot servers, the local runner hosting
``function_app.py``), writes a realistic export into the exports container exactly as Customer
Insights would (partitions first, ``model.json`` last), follows the run through the HTTP API with a
progress bar, prints the report, checks it against what the generator knows it wrote, and stops
everything it started. Exit code 0 only when the counts match exactly.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click

from devtools.local_stack import EXPORTS_CONTAINER, LocalStack, wait_for_runs, wait_until_done
from devtools.sample_data import ExpectedCounts, container_writer, generate_run
from shared.cli import watch_run


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def check_report(
    report: dict[str, Any], expected: ExpectedCounts, list_members: int | None = None
) -> list[str]:
    """Differences between the run's report and the generator's ground truth (empty when exact).

    ``list_members`` is what the Autopilot server's list holds: a report alone could describe an
    earlier run, so the demo only calls itself a success when the contacts actually arrived.
    """
    rejected = report.get("rejected", {})
    pairs = {
        "rows read": (report.get("rows_read"), expected.rows),
        "contacts uploaded": (report.get("contacts_uploaded"), expected.unique_valid),
        "invalid emails": (rejected.get("invalid_email", 0), expected.invalid_email),
        "missing emails": (rejected.get("missing_email", 0), expected.missing_email),
        "duplicate emails": (rejected.get("duplicate_email", 0), expected.duplicate_email),
    }
    if list_members is not None:
        pairs["contacts in the Autopilot list"] = (list_members, expected.unique_valid)
    problems = [
        f"{name}: report says {got}, generated {want}" for name, (got, want) in pairs.items() if got != want
    ]
    other = {
        k: v for k, v in rejected.items() if k not in {"invalid_email", "missing_email", "duplicate_email"}
    }
    if other:
        problems.append(f"unexpected rejects: {other}")
    return problems


def print_report(
    report: dict[str, Any], autopilot_state: dict[str, Any], saved: dict[str, Path] | None = None
) -> None:
    rejected = report.get("rejected", {})
    saved = saved or {}
    echo = click.echo
    echo("")
    echo(click.style(f"Run {report['instance_id']}: {report['status']}", bold=True))
    echo(f"  rows read             {report['rows_read']:>8}")
    echo(
        f"  contacts uploaded     {report['contacts_uploaded']:>8}   into list '{report['list_title']}' "
        f"({report['list_id']})"
    )
    echo(f"  rejected              {sum(rejected.values()):>8}")
    for reason, count in sorted(rejected.items()):
        echo(f"    {reason:<20}{count:>8}")
    echo(
        f"  API requests          {report['api_requests']:>8}   retries {report['retries']}, "
        f"throttled {report['throttled']}"
    )
    echo(f"  duration              {report['duration_seconds']:>8.1f} s")
    for label, key in (("report", "report_blob"), ("rejects file", "rejects_blob")):
        local = saved.get(key)
        # The blob lives in the demo's Azurite, which stops with the demo: point at the local copy.
        where = f"{local}  (copied from blob {report[key]})" if local else str(report[key])
        echo(f"  {label:<22}{where}")
    echo(
        f"  Autopilot server now holds {autopilot_state.get('contacts')} contacts; "
        f"busiest second {autopilot_state.get('max_requests_in_1s')} requests "
        f"(limit {autopilot_state.get('requests_per_second')})"
    )


def save_results(stack: LocalStack, report: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Copy the run's report and rejects file out of Azurite, which stops with the demo."""
    folder.mkdir(parents=True, exist_ok=True)
    saved: dict[str, Path] = {}
    for key in ("report_blob", "rejects_blob"):
        container, _, name = str(report.get(key) or "").partition("/")
        if not name:
            continue
        target = folder / name.rsplit("/", 1)[-1]
        data = stack.blob_service.get_blob_client(container, name).download_blob().readall()
        target.write_bytes(bytes(data))
        saved[key] = target.resolve()
    return saved


def _export_name(config_path: str, folder: str) -> str:
    from shared.config import load_config

    config = load_config(config_path)
    return next(e.name for e in config.exports.values() if e.folder.strip("/") == folder.strip("/"))


def _stop_on_sigterm() -> None:
    """``kill``, a CI cancel or ``timeout`` send SIGTERM: unwind like Ctrl-C, so the stack is stopped
    (Python's default would end the process at once and leave Azurite and the runner running)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rps", type=float, default=10.0, help="the local Autopilot server's rate limit")
    parser.add_argument("--state-dir", type=Path, default=Path(".local/demo"))
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the previous demo's state folder (storage, runner history) and export its run again",
    )
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)
    _stop_on_sigterm()

    if not args.keep:
        shutil.rmtree(args.state_dir, ignore_errors=True)
    port = 7071 if _free(7071) else 0
    click.echo(
        f"Starting the local stack in {args.state_dir} (Azurite, Key Vault, Autopilot at "
        f"{args.rps:g} requests/s, local runner) ..."
    )
    with LocalStack(args.state_dir, autopilot_rps=args.rps) as stack:
        try:
            runner = stack.start_runner(port=port)
        except RuntimeError:
            if port == 0:
                raise
            runner = stack.start_runner(port=0)  # 7071 was taken between the check and the bind
        click.echo(
            f"Local runner: {runner.url}/api  (function key: local-function-key; log: {runner.log_path})"
        )
        container = stack.blob_service.get_container_client(EXPORTS_CONTAINER)
        with stack.api() as api:
            kept_runs = api.get("runs").json()["runs"]
        click.echo(
            f"Writing a Customer Insights export of {args.profiles:,} profiles in {args.partitions} "
            "header-less partitions ..."
        )
        generated = generate_run(
            container_writer(container), profiles=args.profiles, partitions=args.partitions
        )
        click.echo(f"  {generated.model_json_blob} and {len(generated.partition_blobs)} partitions written")
        with stack.api() as api:
            if kept_runs:
                # The kept state has exported this run before, so the blob trigger would rightly leave
                # it alone; this fresh Autopilot server needs it again: re-export it as a user would.
                export = _export_name(stack.env["EXPORTS_CONFIG"], generated.export_folder)
                started = api.post(
                    f"exports/{export}/runs", json={"segment": generated.segment, "force": True}
                )
                started.raise_for_status()
                instance_id = started.json()["runs"][0]["instance_id"]
                click.echo(f"Run {instance_id} re-exported through the HTTP API (--keep); following it:")
            else:
                runs = wait_for_runs(api, count=1, timeout=60)
                if not runs:
                    click.secho("No run started: see the runner log.", fg="red", err=True)
                    return 1
                instance_id = runs[0]["instance_id"]
                click.echo(f"Run {instance_id} started by the blob trigger; following it:")
            started_at = time.monotonic()
            watch_run(lambda: api.get(f"runs/{instance_id}").json(), sys.stderr, interval=0.5)
            body = wait_until_done(
                api, instance_id, timeout=max(1.0, args.timeout - (time.monotonic() - started_at))
            )
        report = body.get("output")
        if body.get("runtime_status") != "Completed" or not isinstance(report, dict):
            click.secho(
                f"The run ended {body.get('runtime_status')}: {body.get('output')}", fg="red", err=True
            )
            return 1
        saved = save_results(stack, report, args.state_dir / "results")
        print_report(report, stack.autopilot.state(), saved)
        members = len(stack.autopilot.members(str(report.get("list_id"))))
        problems = check_report(report, generated.expected, members)
    if problems:
        for problem in problems:
            click.secho(f"MISMATCH {problem}", fg="red", err=True)
        return 1
    click.secho("Every generated row is accounted for: the counts match the generator exactly.", fg="green")
    click.echo("All processes stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
