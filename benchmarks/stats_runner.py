"""The local runner, unchanged, plus a file with its durable engine's replay statistics.

``python -m benchmarks.stats_runner --stats-file F [local runner options]`` runs
``devtools.local_runner.main`` (the same process ``LocalStack.start_runner()`` starts) and writes
``DurableEngine.stats()`` to ``F`` as JSON every half second and once more after it stopped. The
engine lives in the runner's process; this is how a benchmark reads the replay cost of a real run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

import devtools.local_runner as local_runner
from devtools.local_host.durable_engine import DurableEngine
from devtools.local_stack import PROJECT_ROOT, LocalStack, RunnerProcess

_engines: list[DurableEngine] = []


class _RecordingEngine(DurableEngine):
    """The runner's engine, remembered so its statistics can be read from outside ``main``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _engines.append(self)


def _write(path: Path) -> None:
    if _engines:
        data = asdict(_engines[0].stats())
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--stats-file", type=Path, required=True)
    args, rest = parser.parse_known_args(argv)
    local_runner.DurableEngine = _RecordingEngine  # type: ignore[attr-defined]
    stop = threading.Event()

    def keep_writing() -> None:
        while not stop.wait(0.5):
            _write(args.stats_file)

    writer = threading.Thread(target=keep_writing, name="engine-stats", daemon=True)
    writer.start()
    try:
        return local_runner.main(rest)
    finally:
        stop.set()
        _write(args.stats_file)


class StatsRunnerProcess(RunnerProcess):
    """:class:`devtools.local_stack.RunnerProcess`, started through this module."""

    def __init__(self, stack: LocalStack, stats_file: Path) -> None:
        self.log_path = stack.root / "runner.log"
        self.stats_file = stats_file
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.stats_runner",
                "--stats-file",
                str(stats_file),
                "--state-dir",
                str(stack.root / "runner"),
                "--port",
                "0",
                "--poll-interval",
                "0.5",
            ],
            cwd=PROJECT_ROOT,
            env=stack.env,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self.url = self._wait_ready()

    def stats(self) -> dict[str, Any]:
        """The last statistics written (all zero before the engine's first report)."""
        try:
            data: dict[str, Any] = json.loads(self.stats_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {"episodes": 0, "events_replayed": 0, "replay_seconds": 0.0}
        return data


def start_stats_runner(stack: LocalStack) -> StatsRunnerProcess:
    """Start the runner for ``stack`` (it stops with the stack) and return it."""
    runner = StatsRunnerProcess(stack, stack.root / "engine-stats.json")
    stack.runner = runner
    return runner


if __name__ == "__main__":
    sys.exit(main())
