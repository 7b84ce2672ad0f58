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
import socket
import sys
import time
from pathlib import Path
from typing import Any

import click

from devtools.local_stack import EXPORTS_CONTAINER, LocalStack, wait_for_runs, wait_until_done
from devtools.sample_data import ExpectedCounts, container_writer, generate_run
from shared.cli import watch_run


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def check_report(report: dict[str, Any], expected: ExpectedCounts) -> list[str]:
    """Differences between the run's report and the generator's ground truth (empty when exact)."""
    rejected = report.get("rejected", {})
    pairs = {
        "rows read": (report.get("rows_read"), expected.rows),
        "contacts uploaded": (report.get("contacts_uploaded"), expected.unique_valid),
        "invalid emails": (rejected.get("invalid_email", 0), expected.invalid_email),
        "missing emails": (rejected.get("missing_email", 0), expected.missing_email),
        "duplicate emails": (rejected.get("duplicate_email", 0), expected.duplicate_email),
    }
    problems = [
        f"{name}: report says {got}, generated {want}" for name, (got, want) in pairs.items() if got != want
    ]
    other = {
        k: v for k, v in rejected.items() if k not in {"invalid_email", "missing_email", "duplicate_email"}
    }
    if other:
        problems.append(f"unexpected rejects: {other}")
    return problems


def print_report(report: dict[str, Any], expected: ExpectedCounts, autopilot_state: dict[str, Any]) -> None:
    rejected = report.get("rejected", {})
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
    echo(f"  report                {report['report_blob']}")
    echo(f"  rejects file          {report['rejects_blob']}")
    echo(
        f"  Autopilot server now holds {autopilot_state.get('contacts')} contacts; "
        f"busiest second {autopilot_state.get('max_requests_in_1s')} requests "
        f"(limit {autopilot_state.get('requests_per_second')})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profiles", type=int, default=50_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rps", type=float, default=10.0, help="the local Autopilot server's rate limit")
    parser.add_argument("--state-dir", type=Path, default=Path(".local/demo"))
    parser.add_argument("--keep", action="store_true", help="keep the state folder of the previous run")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args(argv)

    if not args.keep:
        shutil.rmtree(args.state_dir, ignore_errors=True)
    port = 7071 if _free(7071) else 0
    click.echo(
        f"Starting the local stack in {args.state_dir} (Azurite, Key Vault, Autopilot at "
        f"{args.rps:g} requests/s, local runner) ..."
    )
    with LocalStack(args.state_dir, autopilot_rps=args.rps) as stack:
        runner = stack.start_runner(port=port)
        click.echo(
            f"Local runner: {runner.url}/api  (function key: local-function-key; log: {runner.log_path})"
        )
        container = stack.blob_service.get_container_client(EXPORTS_CONTAINER)
        click.echo(
            f"Writing a Customer Insights export of {args.profiles:,} profiles in {args.partitions} "
            "header-less partitions ..."
        )
        generated = generate_run(
            container_writer(container), profiles=args.profiles, partitions=args.partitions
        )
        click.echo(f"  {generated.model_json_blob} and {len(generated.partition_blobs)} partitions written")
        with stack.api() as api:
            runs = wait_for_runs(api, count=1, timeout=60)
            if not runs:
                click.secho("No run started: see the runner log.", fg="red", err=True)
                return 1
            instance_id = runs[0]["instance_id"]
            click.echo(f"Run {instance_id} started by the blob trigger; following it:")
            started = time.monotonic()
            watch_run(lambda: api.get(f"runs/{instance_id}").json(), sys.stderr, interval=0.5)
            body = wait_until_done(
                api, instance_id, timeout=max(1.0, args.timeout - (time.monotonic() - started))
            )
        report = body.get("output")
        if body.get("runtime_status") != "Completed" or not isinstance(report, dict):
            click.secho(
                f"The run ended {body.get('runtime_status')}: {body.get('output')}", fg="red", err=True
            )
            return 1
        print_report(report, generated.expected, stack.autopilot.state())
        problems = check_report(report, generated.expected)
    if problems:
        for problem in problems:
            click.secho(f"MISMATCH {problem}", fg="red", err=True)
        return 1
    click.secho("Every generated row is accounted for: the counts match the generator exactly.", fg="green")
    click.echo("All processes stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
