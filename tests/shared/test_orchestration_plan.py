"""The pure parts of the orchestration: windows, rate shares, progress."""

from __future__ import annotations

from shared.orchestration import Tuning, batch_windows, progress, sub_instance_id
from shared.report import UploadTotals


def test_windows_cover_every_batch_once_in_order() -> None:
    windows = batch_windows(250, 100)
    assert windows == [(1, 100), (101, 200), (201, 250)]


def test_no_batches_no_windows() -> None:
    assert batch_windows(0, 100) == []


def test_rate_share_keeps_the_sum_of_in_flight_uploads_at_the_connection_rate() -> None:
    tuning = Tuning(upload_concurrency=4, requests_per_second=10)
    assert tuning.rate_share * tuning.upload_concurrency == 10


def test_tuning_round_trips_and_ignores_unknown_keys() -> None:
    tuning = Tuning(upload_concurrency=3, batches_per_sub=7)
    assert Tuning.from_dict({**tuning.to_dict(), "unknown": 1}) == tuning


def test_sub_instance_ids_are_derived_from_the_parent() -> None:
    assert sub_instance_id("run-1", 3) == "run-1-u0003"


def test_progress_counts_plan_rejects_and_refused_contacts() -> None:
    totals = UploadTotals(batches_done=2, uploaded=150, refused=2)
    status = progress(
        "uploading", {"rows_read": 200, "staged": 180, "batches": 2, "rejected": {"a": 15, "b": 5}}, totals
    )
    assert status["rejected"] == 22
    assert status["contacts_uploaded"] == 150
    assert status["contacts_total"] == 180
