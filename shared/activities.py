"""The activity bodies: the only place the orchestration touches storage, Key Vault and Autopilot.

Each takes and returns small JSON-safe dicts (the durable payload limit is ~45 KB) and is idempotent,
because the Durable runtime delivers activities at least once: a re-run overwrites the same staged
names and upserts the same contacts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from shared.autopilot_client import ApiKeySource, AutopilotAuthError, AutopilotClient, ClientStats
from shared.blob_store import BlobNotFoundError, BlobStore
from shared.config import ExportsConfig, load_config
from shared.key_vault import KeyVaultAccessError, key_source_for
from shared.rate_limit import PacerChain, RateLimiter, connection_limiter
from shared.report import UploadTotals, build_report, merge_rejects
from shared.runs import ExportRun
from shared.segment_file import SegmentFileError
from shared.settings import Settings, get_settings
from shared.staging import PLAN_REJECTS, BlobStaging, plan_run, refused_rejects_csv, staging_prefix

log = logging.getLogger(__name__)

UPLOAD_REJECTS_PREFIX = "upload-rejects-"


PERMANENT_ERRORS = (AutopilotAuthError, KeyVaultAccessError)
"""Failures a retry cannot fix (a refused or unreadable key): returned as results, so the run stops
at once with the error instead of retrying for minutes."""


class PartitionMissingError(RuntimeError):
    """``model.json`` lists a file that is not there yet; the orchestrator's retry waits for it."""


@dataclass
class AppContext:
    """Settings, configuration and clients, built once per process (the worker reuses it across calls)."""

    settings: Settings
    config: ExportsConfig
    exports: BlobStore
    results: BlobStore
    key_source_factory: Callable[[str], ApiKeySource] | None = None
    _key_sources: dict[str, ApiKeySource] = field(default_factory=dict)

    def key_source(self, connection_name: str) -> ApiKeySource:
        """The Autopilot key of a connection: Key Vault in Azure, or an override (the CLI's one-off key)."""
        if self.key_source_factory is not None:
            if connection_name not in self._key_sources:
                self._key_sources[connection_name] = self.key_source_factory(connection_name)
            return self._key_sources[connection_name]
        connection = self.config.connections[connection_name]
        if not self.settings.key_vault_url:
            raise RuntimeError(
                f"KEY_VAULT_URL is not set: connection '{connection_name}' reads its Autopilot key from "
                f"Key Vault secret '{connection.key_secret_name}'"
            )
        return key_source_for(
            self.settings.key_vault_url,
            connection.key_secret_name,
            cache_seconds=self.settings.key_cache_seconds,
            verify_challenge_resource=self.settings.key_vault_verify_challenge_resource,
        )

    def autopilot(
        self, connection_name: str, requests_per_second: float, stats: ClientStats
    ) -> AutopilotClient:
        """A client paced at ``requests_per_second`` (a run's share) and, together with every other
        client of this process, at the connection's configured rate."""
        connection = self.config.connections[connection_name]
        pacer = PacerChain(
            RateLimiter(requests_per_second),
            connection_limiter(connection_name, connection.requests_per_second),
        )
        return AutopilotClient(
            self.settings.autopilot_base_url,
            self.key_source(connection_name),
            connection_name=connection_name,
            rate_limiter=pacer,
            timeout=self.settings.http_timeout_seconds,
            max_retries=self.settings.max_retries,
            stats=stats,
        )


@lru_cache(maxsize=1)
def app_context() -> AppContext:
    """The process's context, from the environment; tests and the CLI build their own instead."""
    return build_context(get_settings())


APP_ROOT = Path(__file__).resolve().parent.parent


def config_location(location: str) -> str:
    """A relative ``EXPORTS_CONFIG`` path is the app's file: Azure does not promise the working
    directory is the app root, so look beside ``function_app.py`` when it is not found as given."""
    text = location.strip()
    if text.startswith(("{", "blob:")) or Path(text).is_absolute() or Path(text).exists():
        return location
    beside_app = APP_ROOT / text
    return str(beside_app) if beside_app.exists() else location


def build_context(settings: Settings, **overrides: Any) -> AppContext:
    results = BlobStore.for_results(settings)
    config = load_config(config_location(settings.exports_config), read_blob=results.read_bytes)
    return AppContext(
        settings=settings,
        config=config,
        exports=BlobStore.for_exports(settings),
        results=results,
        **overrides,
    )


def plan(ctx: AppContext, run_input: dict[str, Any]) -> dict[str, Any]:
    """Stage the run. A bad file is a result (``error``), not an exception: retrying cannot fix it."""
    run = ExportRun.from_input(run_input)
    export = ctx.config.export(run.export)
    for name in run.files:
        if not ctx.exports.exists(run.container, name):
            raise PartitionMissingError(
                f"run '{run.run_folder}' of export '{run.export}': file '{name}' is not in container "
                f"'{run.container}' yet"
            )
    prefix = staging_prefix(run_input["instance_id"])
    sink = BlobStaging(ctx.results, ctx.settings.results_container, prefix)
    ctx.results.ensure_container(ctx.settings.results_container)
    try:
        summary = plan_run(
            run,
            export,
            lambda name: ctx.exports.open_read(run.container, name),
            sink,
            batch_size=ctx.settings.staged_batch_size,
        )
    except (SegmentFileError, BlobNotFoundError) as exc:
        log.error("plan of %s failed: %s", run_input["instance_id"], exc)
        return {"error": str(exc), "rows_read": 0, "staged": 0, "batches": 0, "rejected": {}, "files": []}
    result = summary.to_dict()
    result["staging_prefix"] = prefix
    log.info(
        "planned %s: %d rows, %d staged in %d batches, rejected %s",
        run_input["instance_id"],
        summary.rows_read,
        summary.staged,
        summary.batches,
        summary.rejected,
    )
    return result


def ensure_list(ctx: AppContext, payload: dict[str, Any]) -> dict[str, Any]:
    """``{"list_id"}``, or ``{"error"}`` when the key is refused or unreadable: retrying cannot fix that."""
    export = ctx.config.export(payload["export"])
    segment = export.segment(payload["segment"])
    if segment is None:
        raise KeyError(f"export '{export.name}' has no segment '{payload['segment']}'")
    connection = ctx.config.connection_for(export)
    try:
        with ctx.autopilot(connection.name, connection.requests_per_second, ClientStats()) as client:
            list_id = client.find_or_create_list(segment.list_title)
    except PERMANENT_ERRORS as exc:
        log.error("cannot prepare the Autopilot list of %s/%s: %s", export.name, segment.name, exc)
        return {"error": str(exc)}
    log.info("Autopilot list for %s/%s: %s", export.name, segment.name, list_id)
    return {"list_id": list_id}


def upload_batch(ctx: AppContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Upsert one staged batch into the list; refused contacts go to this batch's rejects file."""
    export = ctx.config.export(payload["export"])
    connection = ctx.config.connection_for(export)
    sink = BlobStaging(ctx.results, ctx.settings.results_container, staging_prefix(payload["instance_id"]))
    batch_index = int(payload["batch"])
    items = sink.read_batch(batch_index)
    stats = ClientStats()
    rate = float(payload.get("requests_per_second") or connection.requests_per_second)
    try:
        with ctx.autopilot(connection.name, rate, stats) as client:
            outcome = client.upsert_contacts([item.contact for item in items], payload.get("list_id"))
    except PERMANENT_ERRORS as exc:
        log.error("batch %d of %s cannot be uploaded: %s", batch_index, payload["instance_id"], exc)
        return {"batch": batch_index, "error": str(exc), **stats.snapshot()}
    if outcome.rejected:
        ctx.results.write_bytes(
            ctx.settings.results_container,
            f"{sink.prefix}/{UPLOAD_REJECTS_PREFIX}{batch_index:06d}.csv",
            refused_rejects_csv(outcome.rejected, items),
            content_type="text/csv",
        )
    result = {
        "batch": batch_index,
        "batches_done": 1,
        "uploaded": outcome.uploaded,
        "refused": len(outcome.rejected),
        "membership_added": outcome.membership_added,
        **stats.snapshot(),
    }
    log.info("uploaded batch %d of %s: %s", batch_index, payload["instance_id"], result)
    return result


def write_report(ctx: AppContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Merge the rejects, write ``report.json`` and ``rejects.csv`` under the run's report folder."""
    run = payload["run"]
    container = ctx.settings.results_container
    prefix = staging_prefix(run["instance_id"])
    report_prefix = run["report_prefix"]
    totals = UploadTotals.from_dict(payload.get("totals", {}))
    started = datetime.fromisoformat(payload["started_at"])
    finished = datetime.fromisoformat(payload["finished_at"])
    report = build_report(
        run=run,
        plan=payload.get("plan", {}),
        totals=totals,
        list_title=payload.get("list_title", ""),
        list_id=payload.get("list_id"),
        status=payload["status"],
        started_at=payload["started_at"],
        finished_at=payload["finished_at"],
        duration_seconds=(finished - started).total_seconds(),
        error=payload.get("error"),
    )
    ctx.results.ensure_container(container)
    names = sorted(n for n in ctx.results.list_names(container, f"{prefix}/") if n.endswith(".csv"))
    parts = [n for n in names if n.endswith("/" + PLAN_REJECTS)] + [
        n for n in names if n.rsplit("/", 1)[-1].startswith(UPLOAD_REJECTS_PREFIX)
    ]
    if parts:
        merged = merge_rejects(ctx.results.open_read(container, n) for n in parts)
        ctx.results.write_stream(container, f"{report_prefix}/rejects.csv", merged, content_type="text/csv")
        report.rejects_blob = f"{container}/{report_prefix}/rejects.csv"
    report.report_blob = f"{container}/{report_prefix}/report.json"
    ctx.results.write_bytes(
        container,
        f"{report_prefix}/report.json",
        json.dumps(report.to_dict(), indent=2).encode("utf-8"),
        content_type="application/json",
    )
    if not report.accounted:
        log.error(
            "run %s does not add up: %d rows read, %d uploaded, %d rejected; staged batches are kept",
            report.instance_id,
            report.rows_read,
            report.contacts_uploaded,
            report.rejected_total,
        )
    elif report.status == "completed":
        ctx.results.delete_prefix(container, f"{prefix}/", suffix=".jsonl")
    log.info(
        "run %s %s: %d read, %d uploaded, rejected %s",
        report.instance_id,
        report.status,
        report.rows_read,
        report.contacts_uploaded,
        report.rejected,
    )
    return report.to_dict()
