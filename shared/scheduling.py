"""Which exports are due when the timer fires.

The Functions timer is one fixed NCRONTAB for the whole app; each export's own cron schedule is
evaluated here against the window since the last check, which is persisted, so a late or missed
timer tick still exports a due run once (and a run already exported is skipped by its instance id).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import croniter

from shared.config import ExportConfig

SCHEDULER_STATE = "state/scheduler.json"
MAX_CATCH_UP = timedelta(days=1)


def is_due(schedule: str, since: datetime, now: datetime) -> bool:
    """True when a fire time of ``schedule`` falls in ``(since, now]`` (UTC)."""
    next_fire = croniter(schedule, since.astimezone(UTC)).get_next(datetime)
    return bool(next_fire <= now.astimezone(UTC))


def due_exports(exports: Iterable[ExportConfig], since: datetime | None, now: datetime) -> list[ExportConfig]:
    """Exports with a schedule that fired since the last check (at most a day back, so a long outage
    does not replay a week of schedules: every run is a full snapshot, the latest is what counts)."""
    floor = now - MAX_CATCH_UP
    start = max(since, floor) if since else now - timedelta(minutes=10)
    return [e for e in exports if e.schedule and is_due(e.schedule, start, now)]


def load_last_check(data: bytes | None) -> datetime | None:
    if not data:
        return None
    value: Any = json.loads(data).get("last_check")
    return datetime.fromisoformat(value) if value else None


def dump_last_check(now: datetime) -> bytes:
    return json.dumps({"last_check": now.astimezone(UTC).isoformat()}).encode("utf-8")
