"""Which exports the timer finds due: cron windows since the last check."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from shared.config import ExportConfig, SegmentConfig
from shared.scheduling import due_exports, dump_last_check, is_due, load_last_check

NOW = datetime(2026, 11, 30, 5, 32, tzinfo=UTC)  # a Monday


def export(name: str, schedule: str | None) -> ExportConfig:
    return ExportConfig(
        name=name,
        connection="main",
        folder=name,
        segments=(SegmentConfig("S", "S"),),
        email_column="Email",
        first_name_column=None,
        last_name_column=None,
        fields=(),
        schedule=schedule,
    )


def test_a_fire_time_inside_the_window_is_due() -> None:
    assert is_due("30 5 * * 1-5", NOW - timedelta(minutes=5), NOW)


def test_a_fire_time_before_the_window_is_not_due_again() -> None:
    assert not is_due("30 5 * * 1-5", NOW - timedelta(minutes=1), NOW)


def test_only_exports_with_a_schedule_that_fired_are_due() -> None:
    exports = [export("weekday", "30 5 * * 1-5"), export("weekend", "30 5 * * 0,6"), export("manual", None)]
    assert [e.name for e in due_exports(exports, NOW - timedelta(minutes=5), NOW)] == ["weekday"]


def test_a_late_tick_catches_up_from_the_last_check() -> None:
    exports = [export("weekday", "30 5 * * 1-5")]
    assert due_exports(exports, NOW - timedelta(hours=3), NOW + timedelta(hours=2)) == exports


def test_a_long_outage_catches_up_at_most_one_day() -> None:
    hourly = export("hourly", "0 * * * *")
    assert due_exports([hourly], NOW - timedelta(days=30), NOW) == [hourly]
    weekly = replace(hourly, name="weekly", schedule="0 0 * * 0")  # Sunday 00:00, 29.5 hours before NOW
    assert due_exports([weekly], NOW - timedelta(days=30), NOW) == []


def test_last_check_round_trips() -> None:
    assert load_last_check(dump_last_check(NOW)) == NOW
    assert load_last_check(None) is None
