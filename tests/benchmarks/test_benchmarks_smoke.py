"""Smoke test of ``python -m benchmarks.run``: its smallest piece runs and reports every figure.

No timing is asserted (the figures depend on the machine); what is checked is that the quick plan
benchmark completes with the exact counts the generator expects, and that the table and the JSON
file have a row for every figure of every benchmark, measured or not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.results import FIGURES
from benchmarks.run import main


def test_quick_plan_benchmark_reports_every_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--quick", "--only", "plan", "--plan-rows", "20000", "--out", str(tmp_path)])

    table = capsys.readouterr().out
    rows = table.splitlines()
    missing = [
        f"{spec.benchmark}: {spec.label}"
        for spec in FIGURES
        if not any(row.startswith(spec.benchmark) and spec.label in row for row in rows)
    ]
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert (code, missing) == (0, [])
    assert [figure["key"] for figure in saved["figures"]] == [spec.key for spec in FIGURES]
    assert saved["figures"][[spec.key for spec in FIGURES].index("plan.rows")]["value"] == 20000
