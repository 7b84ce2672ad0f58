"""The product's orchestrators over trivial activities: replay cost alone, at any number of batches.

``export_run`` and ``upload_batches`` are ``shared.orchestration``'s own generators, registered
under the names the product uses; the activities only return results of the right shape, so a run
of a thousand batches takes seconds and what is measured is the durable replay the orchestrators
cause. ``plan_run`` reads the batch count from the run input's ``toy_batches``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from shared import orchestration

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

CONTACTS_PER_BATCH = 1000


@app.orchestration_trigger(context_name="context")
def export_run(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    return (yield from orchestration.export_run(context))


@app.orchestration_trigger(context_name="context")
def upload_batches(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    return (yield from orchestration.upload_batches(context))


@app.activity_trigger(input_name="payload")
def plan_run(payload: dict[str, Any]) -> dict[str, Any]:
    batches = int(payload["toy_batches"])
    return {
        "rows_read": batches * CONTACTS_PER_BATCH,
        "staged": batches * CONTACTS_PER_BATCH,
        "batches": batches,
        "rejected": {},
        "files": [],
        "columns": [],
        "staging_prefix": f"staging/{payload['instance_id']}",
    }


@app.activity_trigger(input_name="payload")
def ensure_list(payload: dict[str, Any]) -> dict[str, Any]:
    return {"list_id": "contactlist_toy"}


@app.activity_trigger(input_name="payload")
def upload_batch(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "batch": payload["batch"],
        "batches_done": 1,
        "uploaded": CONTACTS_PER_BATCH,
        "refused": 0,
        "membership_added": 0,
        "requests": 10,
        "retries": 0,
        "throttled": 0,
        "server_errors": 0,
        "transport_errors": 0,
        "bisections": 0,
    }


@app.activity_trigger(input_name="payload")
def write_report(payload: dict[str, Any]) -> dict[str, Any]:
    return {"status": payload["status"], "totals": payload["totals"]}
