"""The README's first command, ``python -m devtools.demo``, run as a user runs it: a separate process.

It must end with exit 0 only when every generated row is accounted for, say where the rejects file is,
and stop everything it started (Azurite, the local runner), also when run again in the same folder or
stopped with SIGTERM.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from devtools.sample_data import ExpectedCounts, directory_writer, generate_run

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROFILES = 3000
PARTITIONS = 3
DEMO_ARGS = ("--profiles", str(PROFILES), "--partitions", str(PARTITIONS), "--rps", "50")
RUNNER_LINE = re.compile(r"^Local runner: (http://127\.0\.0\.1:(\d+))/api")


@dataclass(frozen=True)
class Child:
    """A process the demo started, as seen while the demo ran."""

    pid: int
    name: str
    created: float

    @classmethod
    def of(cls, process: psutil.Process) -> Child:
        name = process.name()
        return cls(process.pid, "python" if name.startswith("python") else name, process.create_time())

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return process.create_time() == self.created and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False


@dataclass(frozen=True)
class DemoRun:
    """One finished demo: exit code, output, and the processes it had started."""

    code: int
    out: str
    err: str
    children: tuple[Child, ...]
    """The demo's descendants once its stack was up (Azurite, the runner, ...)."""
    survivors: tuple[str, ...]
    """Processes of the demo's session still alive after it exited (should be none)."""
    runner_port: int

    def count(self, label: str) -> int:
        match = re.search(rf"^\s+{re.escape(label)}\s+(\d+)\b", self.out, re.MULTILINE)
        assert match, f"'{label}' not printed:\n{self.out}"
        return int(match.group(1))


def _reap_session(session: int) -> tuple[str, ...]:
    """Every live process still in the demo's session (children that outlived it, at any depth).

    They are named for the assertion, then killed so a failing test leaves nothing behind.
    """
    alive = []
    for process in psutil.process_iter(["name", "status"]):
        try:
            if os.getsid(process.pid) == session and process.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    names = tuple(f"{process.info['name']} (pid {process.pid})" for process in alive)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    return names


def _children(pid: int) -> tuple[Child, ...]:
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # a short-lived helper may be gone already
            found.append(Child.of(child))
    return tuple(found)


def run_demo(state_dir: Path, *extra: str, stop_after: str | None = None) -> DemoRun:
    """Run the demo to its end, noting its children once the runner is up.

    ``stop_after``: send SIGTERM as soon as a line starting with it is printed.
    """
    with tempfile.TemporaryFile() as err:  # progress bars: a file, never a pipe nobody reads meanwhile
        # Its own session: whatever the demo starts can be found afterwards, even if re-parented.
        process = subprocess.Popen(
            [sys.executable, "-m", "devtools.demo", *DEMO_ARGS, "--state-dir", str(state_dir), *extra],
            cwd=PROJECT_ROOT,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            encoding="utf-8",
            start_new_session=True,
        )
        assert process.stdout is not None
        lines: list[str] = []
        children: tuple[Child, ...] = ()
        port = 0
        for line in process.stdout:
            lines.append(line)
            match = RUNNER_LINE.match(line)
            if match:
                port = int(match.group(2))
                children = _children(process.pid)
            if stop_after is not None and line.startswith(stop_after):
                process.send_signal(signal.SIGTERM)
                stop_after = None
        code = process.wait(timeout=120)
        err.seek(0)
        errors = err.read().decode("utf-8", "replace")
    return DemoRun(code, "".join(lines), errors, children, _reap_session(process.pid), port)


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> ExpectedCounts:
    """What the generator says the demo's parameters produce, computed independently of the demo."""
    folder = tmp_path_factory.mktemp("expected")
    return generate_run(directory_writer(folder), profiles=PROFILES, partitions=PARTITIONS).expected


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[DemoRun]:
    """The demo three times in one state folder: fresh, fresh again, then ``--keep``."""
    state_dir = tmp_path_factory.mktemp("demo") / "state"
    return [run_demo(state_dir), run_demo(state_dir), run_demo(state_dir, "--keep")]


def test_the_demo_succeeds(runs: list[DemoRun]) -> None:
    first = runs[0]
    assert first.code == 0, first.err
    assert "the counts match the generator exactly" in first.out


def test_the_printed_report_equals_the_generators_counts(
    runs: list[DemoRun], expected: ExpectedCounts
) -> None:
    first = runs[0]
    printed = {
        "rows": first.count("rows read"),
        "unique_valid": first.count("contacts uploaded"),
        "invalid_email": first.count("invalid_email"),
        "missing_email": first.count("missing_email"),
        "duplicate_email": first.count("duplicate_email"),
    }
    assert printed == {
        "rows": expected.rows,
        "unique_valid": expected.unique_valid,
        "invalid_email": expected.invalid_email,
        "missing_email": expected.missing_email,
        "duplicate_email": expected.duplicate_email,
    }
    assert first.count("rejected") == expected.rows - expected.unique_valid


def test_the_printed_rejects_file_exists_and_holds_every_rejected_row(
    runs: list[DemoRun], expected: ExpectedCounts
) -> None:
    match = re.search(r"^\s+rejects file\s+(\S+)\s+\(copied from blob (\S+)\)", runs[0].out, re.MULTILINE)
    assert match, runs[0].out
    local, blob = Path(match.group(1)), match.group(2)
    assert blob.startswith("segment-export/runs/HighValue/HighValueSegment/")
    assert blob.endswith("/rejects.csv")
    rows = list(csv.DictReader(io.StringIO(local.read_text(encoding="utf-8"), newline="")))
    assert len(rows) == expected.rows - expected.unique_valid


def test_the_demo_stops_every_process_it_started(runs: list[DemoRun]) -> None:
    first = runs[0]
    assert {"node", "python"} <= {child.name for child in first.children}  # Azurite and the runner
    assert [child for child in first.children if child.alive()] == []
    assert first.survivors == ()
    assert port_is_free(first.runner_port)


def test_a_second_run_in_the_same_state_folder_succeeds(
    runs: list[DemoRun], expected: ExpectedCounts
) -> None:
    second = runs[1]
    assert second.code == 0, second.err
    assert second.count("contacts uploaded") == expected.unique_valid
    assert second.survivors == ()


def test_keep_exports_the_kept_run_again_into_the_fresh_autopilot(
    runs: list[DemoRun], expected: ExpectedCounts
) -> None:
    kept = runs[2]
    assert kept.code == 0, kept.err
    assert "re-exported through the HTTP API (--keep)" in kept.out
    assert f"Autopilot server now holds {expected.unique_valid} contacts" in kept.out
    assert kept.survivors == ()


def test_sigterm_stops_the_demo_and_everything_it_started(tmp_path: Path) -> None:
    stopped = run_demo(tmp_path / "state", stop_after="Writing a Customer Insights export")
    assert stopped.code == 128 + signal.SIGTERM
    assert {"node", "python"} <= {child.name for child in stopped.children}
    assert [child for child in stopped.children if child.alive()] == []
    assert stopped.survivors == ()
    assert port_is_free(stopped.runner_port)
