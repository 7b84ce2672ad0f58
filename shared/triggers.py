"""What the blob and timer triggers do, outside ``function_app.py`` so tests can drive them directly."""

from __future__ import annotations

import logging
from datetime import datetime

from azure.core.exceptions import AzureError

from shared.activities import AppContext
from shared.blob_store import BlobNotFoundError
from shared.runs import BlobKind, RunNotFoundError, latest_runs, resolve_blob
from shared.scheduling import SCHEDULER_STATE, due_exports, dump_last_check, load_last_check
from shared.starter import DurableClient, StartOutcome, start_run

log = logging.getLogger(__name__)


def split_blob_path(path: str) -> tuple[str, str]:
    """The host passes ``container/name``; Event Grid subjects and URLs are normalised to that first."""
    container, _, name = path.lstrip("/").partition("/")
    return container, name


async def on_blob(ctx: AppContext, client: DurableClient, blob_path: str) -> list[StartOutcome]:
    """Start the runs a new blob completes; files that no export claims are logged and left alone."""
    container, name = split_blob_path(blob_path)
    if container != ctx.settings.exports_container:
        log.info(
            "blob %s is outside the exports container '%s'; ignored",
            blob_path,
            ctx.settings.exports_container,
        )
        return []
    etag = ""
    try:
        properties = ctx.exports.service.get_blob_client(container, name).get_blob_properties()
        etag = str(properties.etag or "")
    except AzureError:
        log.warning("blob %s vanished before it could be read; ignored", blob_path)
        return []
    claim, runs = resolve_blob(ctx.config, ctx.exports, container, name, etag)
    if claim.kind is BlobKind.UNCLAIMED:
        log.info("no export claims blob %s; left alone", blob_path)
        return []
    assert claim.export is not None
    if not claim.export.export_on_arrival:
        log.info("export '%s' runs on its schedule only; blob %s noted", claim.export.name, blob_path)
        return []
    if not runs:
        log.info("blob %s belongs to export '%s' but completes no run yet", blob_path, claim.export.name)
        return []
    outcomes = []
    for run in runs:
        outcome = await start_run(client, run, ctx.config, ctx.settings, trigger="blob")
        log.info("blob %s -> run %s: %s", blob_path, outcome.instance_id, outcome.reason)
        outcomes.append(outcome)
    return outcomes


async def on_timer(ctx: AppContext, client: DurableClient, now: datetime) -> list[StartOutcome]:
    """Export the latest run of every export whose schedule fired since the last tick."""
    container = ctx.settings.results_container
    ctx.results.ensure_container(container)
    try:
        last = load_last_check(ctx.results.read_bytes(container, SCHEDULER_STATE))
    except BlobNotFoundError:
        last = None
    outcomes = []
    for export in due_exports(ctx.config.exports.values(), last, now):
        try:
            runs = latest_runs(ctx.config, ctx.exports, export.name, ctx.settings.exports_container)
        except RunNotFoundError as exc:
            log.warning("scheduled export '%s' has nothing to export: %s", export.name, exc)
            continue
        for run in runs:
            outcome = await start_run(client, run, ctx.config, ctx.settings, trigger="timer")
            log.info("schedule of '%s' -> run %s: %s", export.name, outcome.instance_id, outcome.reason)
            outcomes.append(outcome)
    ctx.results.write_bytes(container, SCHEDULER_STATE, dump_last_check(now), content_type="application/json")
    return outcomes
