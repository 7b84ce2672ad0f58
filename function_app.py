"""Azure Functions entry point: thin wiring from triggers to the ``shared`` package.

Three doors (blob, HTTP, timer) resolve to export runs and start one durable orchestration per
segment run; the orchestrators and activities only delegate to ``shared.orchestration`` and
``shared.activities``. Nothing here holds logic worth testing on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob

from shared import activities, http_api, orchestration, triggers

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
log = logging.getLogger("segment_export")

# Every five minutes; each export's own cron schedule is evaluated in shared.scheduling.
SCHEDULER_TICK = "0 */5 * * * *"


def _json(response: http_api.ApiResponse) -> func.HttpResponse:
    return func.HttpResponse(response.json(), status_code=response.status, mimetype="application/json")


def _base_url(req: func.HttpRequest) -> str:
    url = str(req.url)
    marker = url.find("/api/")
    return url[:marker] if marker >= 0 else url


# --- blob door ---------------------------------------------------------------------------------
# Typed as the SDK's BlobClient, the host sends only the blob's name (a partition CSV can be
# gigabytes, and the door needs nothing else); the binding extension builds the client from the
# EXPORTS_STORAGE connection settings.
@app.blob_trigger(
    arg_name="blob_client",
    path="%EXPORTS_CONTAINER%/{name}",
    connection="EXPORTS_STORAGE",
    source=func.BlobSource.EVENT_GRID,
)
@app.durable_client_input(client_name="client")
async def segment_blob_trigger(blob_client: blob.BlobClient, client: df.DurableOrchestrationClient) -> None:
    blob_path = f"{blob_client.container_name}/{blob_client.blob_name}"
    await triggers.on_blob(activities.app_context(), client, blob_path)


# --- timer door ----------------------------------------------------------------------------------
@app.timer_trigger(arg_name="timer", schedule=SCHEDULER_TICK, run_on_startup=False, use_monitor=True)
@app.durable_client_input(client_name="client")
async def scheduled_exports(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    if timer.past_due:
        log.warning("scheduler tick is late; due exports are caught up from the last check")
    await triggers.on_timer(activities.app_context(), client, datetime.now(UTC))


# --- HTTP door -------------------------------------------------------------------------------------
@app.route(route="exports", methods=["GET"])
async def list_exports(req: func.HttpRequest) -> func.HttpResponse:
    return _json(http_api.list_exports(activities.app_context()))


@app.route(route="exports/{export}/runs", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start_export(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return _json(
        await http_api.start_export(
            activities.app_context(),
            client,
            req.route_params.get("export", ""),
            req.get_body(),
            _base_url(req),
        )
    )


@app.route(route="runs", methods=["GET"])
@app.durable_client_input(client_name="client")
async def list_runs(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return _json(await http_api.list_runs(client, dict(req.params)))


@app.route(route="runs/{instance_id}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def run_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return _json(await http_api.run_status(client, req.route_params.get("instance_id", "")))


@app.route(route="runs/{instance_id}/cancel", methods=["POST"])
@app.durable_client_input(client_name="client")
async def cancel_run(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return _json(await http_api.cancel_run(client, req.route_params.get("instance_id", "")))


# --- orchestrators -------------------------------------------------------------------------------
@app.orchestration_trigger(context_name="context")
def export_run(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    return (yield from orchestration.export_run(context))


@app.orchestration_trigger(context_name="context")
def upload_batches(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    return (yield from orchestration.upload_batches(context))


# --- activities ----------------------------------------------------------------------------------
@app.activity_trigger(input_name="payload")
def plan_run(payload: dict[str, Any]) -> dict[str, Any]:
    return activities.plan(activities.app_context(), payload)


@app.activity_trigger(input_name="payload")
def ensure_list(payload: dict[str, Any]) -> dict[str, Any]:
    return activities.ensure_list(activities.app_context(), payload)


@app.activity_trigger(input_name="payload")
def upload_batch(payload: dict[str, Any]) -> dict[str, Any]:
    return activities.upload_batch(activities.app_context(), payload)


@app.activity_trigger(input_name="payload")
def write_report(payload: dict[str, Any]) -> dict[str, Any]:
    return activities.write_report(activities.app_context(), payload)
