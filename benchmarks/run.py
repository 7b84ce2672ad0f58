"""Issue 5's benchmarks: "as fast as Autopilot allows, flat memory at a million rows".

    .venv/bin/python -m benchmarks.run [--quick] [--only NAME ...] [--rps R]

1. ``rate``: an export of 100,000 profiles through the local runner against the local Autopilot
   server limited to R requests/s (default 10): wall time against the floor ``contacts / (100 R)``.
2. ``overhead``: the same with the server unlimited and 20 ms latency per request: contacts/s.
3. ``plan``: the plan activity over a 1,000,000-row header-less export in Azurite: MB/s and the
   planning process's peak RSS, against the same at 100,000 rows.
4. ``orchestration``: history events and replay cost of a 1,000,000-row run (1,000 batches in 10
   sub-orchestrations), and the same orchestrator code as one flat orchestration (toy activities).

``--quick`` runs each at a tenth or less (a smoke test in well under two minutes). The table is
printed and saved with the details to ``.local/benchmarks/results.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import e2e, orchestration, plan
from benchmarks.results import BENCHMARKS, Results, table, to_json
from devtools.local_stack import PROJECT_ROOT
from devtools.sample_data import GeneratedRun

DEFAULT_OUT = PROJECT_ROOT / ".local" / "benchmarks"


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark runs: the issue's sizes, or a tenth or less for ``--quick``."""

    rate_contacts: int
    overhead_contacts: int
    plan_rows: int
    plan_small_rows: int
    orchestration_rows: int
    toy_batches: int
    toy_per_sub: int


FULL = Sizes(100_000, 100_000, 1_000_000, 100_000, 1_000_000, 1_000, 100)
QUICK = Sizes(10_000, 10_000, 100_000, 10_000, 10_000, 100, 10)
PARTITIONS = 4
OVERHEAD_LATENCY = 0.020
UNLIMITED_CONFIG_RPS = 1000.0


@dataclass
class Context:
    """What every benchmark needs: its sizes, a work folder, and the exports generated so far
    (the plan and the orchestration benchmarks share the million-row one)."""

    sizes: Sizes
    work: Path
    rps: float
    plan_rows: int | None = None
    generated: dict[int, tuple[Path, GeneratedRun]] = field(default_factory=dict)

    def export(self, profiles: int) -> tuple[Path, GeneratedRun]:
        """A generated export of ``profiles`` rows as files: made once per size and invocation."""
        if profiles not in self.generated:
            folder = self.work / "exports" / f"{profiles}"
            self.generated[profiles] = (
                folder,
                e2e.generate(folder, profiles=profiles, partitions=PARTITIONS),
            )
        return self.generated[profiles]


def bench_rate(ctx: Context, results: Results) -> None:
    """Rate-bound: the pace the connection allows is the only thing that should show."""
    contacts = ctx.sizes.rate_contacts
    folder, generated = ctx.export(_profiles_for(contacts))
    run = e2e.export_run(
        ctx.work / "rate",
        generated,
        folder,
        autopilot_rps=ctx.rps,
        config_rps=ctx.rps,
        timeout=3 * contacts / (100 * ctx.rps) + 300,
    )
    floor = run.contacts / (100 * ctx.rps)
    results.put("rate.contacts", run.contacts)
    results.put("rate.rps", ctx.rps)
    results.put("rate.wall_s", run.wall_s)
    results.put("rate.floor_s", floor)
    results.put("rate.ratio", run.wall_s / floor if floor else float("inf"))
    results.put("rate.requests", run.api_requests)
    results.put("rate.request_floor_s", run.api_requests / ctx.rps)
    results.put("rate.to_first_request_s", run.to_first_request_s)
    upload = run.last_request_s - run.to_first_request_s
    results.put("rate.upload_s", upload)
    results.put("rate.achieved_rps", (run.api_requests - 1) / upload if upload > 0 else 0.0)
    results.put("rate.tail_s", run.wall_s - run.last_request_s)
    results.put("rate.throttled", run.throttled)
    results.put("rate.max_in_1s", run.max_in_1s)
    results.details["rate"] = run.to_dict()
    if run.problems:
        results.errors["rate"] = "; ".join(run.problems)


def bench_overhead(ctx: Context, results: Results) -> None:
    """Unlimited server, 20 ms per request: what the pipeline itself costs per contact."""
    contacts = ctx.sizes.overhead_contacts
    folder, generated = ctx.export(_profiles_for(contacts))
    run = e2e.export_run(
        ctx.work / "overhead",
        generated,
        folder,
        autopilot_rps=None,
        config_rps=UNLIMITED_CONFIG_RPS,
        latency=OVERHEAD_LATENCY,
        timeout=contacts / 500 + 300,
    )
    results.put("overhead.contacts", run.contacts)
    results.put("overhead.wall_s", run.wall_s)
    results.put("overhead.to_first_request_s", run.to_first_request_s)
    results.put("overhead.contacts_per_s", run.contacts / run.wall_s)
    upload = run.last_request_s - run.to_first_request_s
    results.put("overhead.upload_contacts_per_s", run.contacts / upload if upload > 0 else 0.0)
    results.details["overhead"] = run.to_dict()
    if run.problems:
        results.errors["overhead"] = "; ".join(run.problems)


def bench_plan(ctx: Context, results: Results) -> None:
    """The plan activity over Azurite at two sizes: throughput, and whether memory stays flat."""
    large_rows = ctx.plan_rows or ctx.sizes.plan_rows
    small_rows = max(1000, ctx.plan_rows // 10) if ctx.plan_rows else ctx.sizes.plan_small_rows
    measured = {}
    for label, rows in (("small", small_rows), ("large", large_rows)):
        folder, generated = ctx.export(rows)
        measured[label] = plan.measure(ctx.work / "plan", generated, folder)
    small, large = measured["small"], measured["large"]
    results.put("plan.rows", large["rows"])
    results.put("plan.mb", large["bytes"] / 1e6)
    results.put("plan.seconds", large["seconds"])
    results.put("plan.mb_per_s", large["mb_per_s"])
    results.put("plan.peak_rss_mb", large["peak_rss_mb"])
    results.put("plan.small_rows", small["rows"])
    results.put("plan.small_mb_per_s", small["mb_per_s"])
    results.put("plan.small_peak_rss_mb", small["peak_rss_mb"])
    results.put("plan.peak_ratio", large["peak_rss_mb"] / small["peak_rss_mb"])
    results.details["plan"] = measured
    problems = small["problems"] + large["problems"]
    if problems:
        results.errors["plan"] = "; ".join(problems)


def bench_orchestration(ctx: Context, results: Results) -> None:
    """A real run of the large export (histories, engine statistics), then nested vs flat (toy)."""
    rows = ctx.sizes.orchestration_rows
    folder, generated = ctx.export(rows)
    run = e2e.export_run(
        ctx.work / "orchestration",
        generated,
        folder,
        autopilot_rps=None,
        config_rps=UNLIMITED_CONFIG_RPS,
        latency=OVERHEAD_LATENCY,
        timeout=rows / 500 + 600,
    )
    real = orchestration.summarize_real(run)
    results.put("orch.rows", run.rows)
    results.put("orch.batches", int(run.report.get("batches", 0)))
    results.put("orch.instances", real["instances"])
    results.put("orch.events_total", real["events_total"])
    results.put("orch.events_max", real["events_max"])
    results.put("orch.episodes", real["episodes"])
    results.put("orch.events_replayed", real["events_replayed"])
    results.put("orch.replay_s", real["replay_seconds"])
    results.put("orch.run_wall_s", run.wall_s)
    batches, per_sub = ctx.sizes.toy_batches, ctx.sizes.toy_per_sub
    nested = orchestration.toy_run(ctx.work / "toy-nested", batches=batches, per_sub=per_sub)
    flat = orchestration.toy_run(ctx.work / "toy-flat", batches=batches, per_sub=batches)
    results.put("orch.toy_batches", batches)
    results.put("orch.toy_per_sub", per_sub)
    results.put("orch.toy_nested_events_replayed", nested["events_replayed"])
    results.put("orch.toy_nested_replay_s", nested["replay_seconds"])
    results.put("orch.toy_nested_events_max", nested["events_max"])
    results.put("orch.toy_flat_events_replayed", flat["events_replayed"])
    results.put("orch.toy_flat_replay_s", flat["replay_seconds"])
    results.put("orch.toy_flat_events_max", flat["events_max"])
    results.details["orchestration"] = {
        "real": real,
        "run": run.to_dict(),
        "toy_nested": nested,
        "toy_flat": flat,
    }
    if run.problems:
        results.errors["orchestration"] = "; ".join(run.problems)


def _profiles_for(contacts: int) -> int:
    """Rows to generate so that about ``contacts`` unique valid profiles result (4% are rejected)."""
    return round(contacts / 0.96 / 1000) * 1000


RUNNERS: dict[str, Callable[[Context, Results], None]] = {
    "rate": bench_rate,
    "overhead": bench_overhead,
    "plan": bench_plan,
    "orchestration": bench_orchestration,
}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
    }
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover - psutil is a dev dependency
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument(
        "--only", action="append", choices=BENCHMARKS, help="run only this benchmark (repeatable)"
    )
    parser.add_argument("--rps", type=float, default=10.0, help="the local Autopilot limit of the rate run")
    parser.add_argument("--plan-rows", type=int, help="rows of the large plan (the small one is a tenth)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="folder for results.json and work files"
    )
    args = parser.parse_args(argv)

    sizes = QUICK if args.quick else FULL
    work = args.out / ("work-quick" if args.quick else "work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ctx = Context(sizes=sizes, work=work, rps=args.rps, plan_rows=args.plan_rows)
    selected = args.only or list(BENCHMARKS)
    results = Results()
    started = time.monotonic()
    for name in BENCHMARKS:
        if name not in selected or name not in RUNNERS:
            continue
        print(f"running {name} ...", file=sys.stderr, flush=True)
        began = time.monotonic()
        try:
            RUNNERS[name](ctx, results)
        except Exception as exc:  # noqa: BLE001 - one failure must not hide the other figures
            traceback.print_exc()
            results.errors[name] = f"{type(exc).__name__}: {exc}"
        print(f"  {name} took {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
    text = table(results)
    print(text)
    data = to_json(results)
    data.update(
        {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(
                [".venv/bin/python -m benchmarks.run", *map(shlex.quote, argv or sys.argv[1:])]
            ),
            "quick": args.quick,
            "sizes": asdict(sizes),
            "machine": machine(),
            "seconds": round(time.monotonic() - started, 1),
        }
    )
    (args.out / "results.json").write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    # Keep the runners' logs and task hubs for a look afterwards; drop the bulky data.
    for bulky in (work / "exports", work / "plan", *work.glob("*/azurite")):
        shutil.rmtree(bulky, ignore_errors=True)
    return 1 if results.errors else 0


if __name__ == "__main__":
    sys.exit(main())
