"""The benchmark figures: one row each, with its target, printed as a table and saved as JSON.

Every figure has a fixed row, whether or not its benchmark ran (``--only``), so the table always
has the same shape: a reader (or the smoke test) can find each figure by name, and a figure that
was not measured says so instead of silently missing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class FigureSpec:
    """A figure the benchmarks report: where it belongs, what it means, and its target if any."""

    key: str
    benchmark: str
    label: str
    unit: str
    target: str = ""
    check: Callable[[float], bool] | None = None
    digits: int = 1


def _at_most(limit: float) -> Callable[[float], bool]:
    return lambda value: value <= limit


def _at_least(limit: float) -> Callable[[float], bool]:
    return lambda value: value >= limit


FIGURES: tuple[FigureSpec, ...] = (
    # 1. rate-bound run
    FigureSpec("rate.contacts", "rate", "contacts uploaded", "", digits=0),
    FigureSpec("rate.rps", "rate", "Autopilot limit R", "req/s", digits=0),
    FigureSpec("rate.wall_s", "rate", "wall: first blob written -> run completed", "s"),
    FigureSpec("rate.floor_s", "rate", "floor contacts / (100 x R)", "s"),
    FigureSpec("rate.ratio", "rate", "wall / floor", "", "<= 1.10", _at_most(1.10), 3),
    FigureSpec("rate.requests", "rate", "API requests (bulk + membership checks + lists)", "", digits=0),
    FigureSpec("rate.request_floor_s", "rate", "requests / R (the floor the checks allow)", "s"),
    FigureSpec(
        "rate.to_first_request_s", "rate", "first blob -> first API request (trigger + plan)", "s", digits=2
    ),
    FigureSpec("rate.upload_s", "rate", "first -> last API request", "s"),
    FigureSpec("rate.achieved_rps", "rate", "achieved requests/s while uploading", "req/s", digits=2),
    FigureSpec("rate.tail_s", "rate", "last API request -> run completed", "s", digits=2),
    FigureSpec("rate.throttled", "rate", "429 answers", "", digits=0),
    FigureSpec("rate.max_in_1s", "rate", "busiest second (requests)", "", digits=0),
    # 2. overhead run
    FigureSpec("overhead.contacts", "overhead", "contacts uploaded", "", digits=0),
    FigureSpec("overhead.wall_s", "overhead", "wall: first blob written -> run completed", "s"),
    FigureSpec(
        "overhead.to_first_request_s",
        "overhead",
        "first blob -> first API request (trigger + plan)",
        "s",
        digits=2,
    ),
    FigureSpec(
        "overhead.contacts_per_s",
        "overhead",
        "contacts per second end to end",
        "1/s",
        ">= 5000",
        _at_least(5000),
        0,
    ),
    FigureSpec(
        "overhead.upload_contacts_per_s", "overhead", "contacts per second while uploading", "1/s", digits=0
    ),
    # 3. plan
    FigureSpec("plan.rows", "plan", "rows planned (large)", "", digits=0),
    FigureSpec("plan.mb", "plan", "input size (large)", "MB"),
    FigureSpec("plan.seconds", "plan", "plan activity time (large)", "s", digits=2),
    FigureSpec("plan.mb_per_s", "plan", "throughput (large)", "MB/s", ">= 30", _at_least(30.0)),
    FigureSpec(
        "plan.peak_rss_mb",
        "plan",
        "peak RSS of the planning process (large)",
        "MB",
        "<= 300",
        _at_most(300.0),
    ),
    FigureSpec("plan.small_rows", "plan", "rows planned (small)", "", digits=0),
    FigureSpec("plan.small_mb_per_s", "plan", "throughput (small)", "MB/s"),
    FigureSpec("plan.small_peak_rss_mb", "plan", "peak RSS (small)", "MB"),
    FigureSpec("plan.peak_ratio", "plan", "peak RSS large / small", "", "<= 1.5", _at_most(1.5), 2),
    # 4. orchestration
    FigureSpec("orch.rows", "orchestration", "rows in the run", "", digits=0),
    FigureSpec("orch.batches", "orchestration", "staged batches", "", digits=0),
    FigureSpec("orch.instances", "orchestration", "orchestration instances (parent + subs)", "", digits=0),
    FigureSpec("orch.events_total", "orchestration", "history events stored, all instances", "", digits=0),
    FigureSpec("orch.events_max", "orchestration", "history events, largest instance", "", digits=0),
    FigureSpec("orch.episodes", "orchestration", "episodes (replays)", "", digits=0),
    FigureSpec("orch.events_replayed", "orchestration", "events replayed in total", "", digits=0),
    FigureSpec("orch.replay_s", "orchestration", "replay time in total", "s", digits=2),
    FigureSpec("orch.run_wall_s", "orchestration", "run wall time (unlimited server, 20 ms latency)", "s"),
    FigureSpec(
        "orch.toy_batches", "orchestration", "toy app: batches (1 completion per episode)", "", digits=0
    ),
    FigureSpec("orch.toy_per_sub", "orchestration", "toy app: batches per sub-orchestration", "", digits=0),
    FigureSpec(
        "orch.toy_nested_events_replayed",
        "orchestration",
        "toy, in sub-orchestrations: events replayed",
        "",
        digits=0,
    ),
    FigureSpec(
        "orch.toy_nested_replay_s", "orchestration", "toy, in sub-orchestrations: replay time", "s", digits=2
    ),
    FigureSpec(
        "orch.toy_nested_events_max",
        "orchestration",
        "toy, in sub-orchestrations: largest history",
        "",
        digits=0,
    ),
    FigureSpec(
        "orch.toy_flat_events_replayed",
        "orchestration",
        "toy, one flat orchestration: events replayed",
        "",
        digits=0,
    ),
    FigureSpec(
        "orch.toy_flat_replay_s", "orchestration", "toy, one flat orchestration: replay time", "s", digits=2
    ),
    FigureSpec(
        "orch.toy_flat_events_max",
        "orchestration",
        "toy, one flat orchestration: largest history",
        "",
        digits=0,
    ),
)

BENCHMARKS: tuple[str, ...] = ("rate", "overhead", "plan", "orchestration")


@dataclass
class Results:
    """Measured values by figure key, plus free-form details per benchmark for the JSON file."""

    values: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def put(self, key: str, value: float) -> None:
        if key not in {spec.key for spec in FIGURES}:
            raise KeyError(f"unknown figure {key!r}")
        self.values[key] = value


def _format(spec: FigureSpec, value: float | None) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    text = f"{value:,.{spec.digits}f}"
    return f"{text} {spec.unit}".rstrip() if spec.unit and spec.unit != "1/s" else text


def verdict(spec: FigureSpec, value: float | None) -> str:
    if spec.check is None:
        return ""
    if value is None:
        return "not run"
    return "met" if spec.check(value) else "MISSED"


def table(results: Results, figures: Iterable[FigureSpec] = FIGURES) -> str:
    """A plain-text table, one row per figure (``-`` where its benchmark did not run)."""
    rows = [("benchmark", "figure", "value", "target", "")]
    for spec in figures:
        value = results.values.get(spec.key)
        rows.append((spec.benchmark, spec.label, _format(spec, value), spec.target, verdict(spec, value)))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for number, row in enumerate(rows):
        cells = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            row[2].rjust(widths[2]),
            row[3].ljust(widths[3]),
            row[4],
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    for name, message in results.errors.items():
        lines.append(f"{name}: FAILED: {message}")
    return "\n".join(lines)


def to_json(results: Results) -> dict[str, Any]:
    return {
        "figures": [
            {
                "key": spec.key,
                "benchmark": spec.benchmark,
                "figure": spec.label,
                "value": results.values.get(spec.key),
                "unit": spec.unit,
                "target": spec.target or None,
                "verdict": verdict(spec, results.values.get(spec.key)) or None,
            }
            for spec in FIGURES
        ],
        "details": results.details,
        "errors": results.errors,
    }
