"""Timer-trigger schedules as the Functions host reads them: NCRONTAB or a constant TimeSpan.

NCRONTAB puts SECONDS first (``"0 */5 * * * *"`` = every five minutes); a 5-field expression is
read as classic cron without seconds, as the host does. ``"hh:mm:ss"`` / ``"d.hh:mm:ss"`` is a
constant interval (App Service plans only in Azure, accepted here). Times are UTC, the host's
default when ``WEBSITE_TIME_ZONE`` is not set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import croniter

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; ``next_after(t)`` is the first occurrence strictly after ``t``."""

    expression: str
    interval: timedelta | None = None

    def next_after(self, when: datetime) -> datetime:
        when = when.astimezone(UTC) if when.tzinfo else when.replace(tzinfo=UTC)
        if self.interval is not None:
            return when + self.interval
        six = len(self.expression.split()) == 6
        nxt: datetime = croniter(self.expression, when, second_at_beginning=six).get_next(datetime)
        return nxt.astimezone(UTC)

    def __str__(self) -> str:
        return self.expression


def parse_schedule(expression: str) -> Schedule:
    """Parse a timer schedule; ``ValueError`` names the expression when it is not valid."""
    text = " ".join(expression.split())
    span = _TIMESPAN.match(text)
    if span:
        days, hours, minutes, seconds = (int(g) if g else 0 for g in span.groups())
        interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if interval <= timedelta(0):
            raise ValueError(f"timer schedule '{expression}' is a zero interval")
        return Schedule(text, interval)
    fields = text.split(" ")
    if len(fields) not in (5, 6) or not croniter.is_valid(text, second_at_beginning=len(fields) == 6):
        raise ValueError(
            f"timer schedule '{expression}' is not a valid NCRONTAB expression "
            "('{second} {minute} {hour} {day} {month} {day-of-week}') or TimeSpan ('hh:mm:ss')"
        )
    return Schedule(text)
