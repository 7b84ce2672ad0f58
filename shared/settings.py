"""Process-wide settings, read once from the environment (app settings in Azure).

Every environment variable the product reads is named here and nowhere else, so the Bicep in
``infra/`` can be cross-checked against one list (``SETTING_NAMES``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_AUTOPILOT_BASE_URL = "https://api2.autopilothq.com/v1"

# Environment variable names (app settings). Keep in step with infra/main.bicep.
STORAGE_CONNECTION = "AzureWebJobsStorage"
STORAGE_ACCOUNT_NAME = "AzureWebJobsStorage__accountName"
STORAGE_BLOB_SERVICE_URI = "AzureWebJobsStorage__blobServiceUri"
STORAGE_CLIENT_ID = "AzureWebJobsStorage__clientId"
EXPORTS_STORAGE_CONNECTION = "EXPORTS_STORAGE"
EXPORTS_STORAGE_BLOB_SERVICE_URI = "EXPORTS_STORAGE__blobServiceUri"
EXPORTS_CONTAINER = "EXPORTS_CONTAINER"
RESULTS_CONTAINER = "RESULTS_CONTAINER"
KEY_VAULT_URL = "KEY_VAULT_URL"
AUTOPILOT_BASE_URL = "AUTOPILOT_BASE_URL"
EXPORTS_CONFIG = "EXPORTS_CONFIG"
STAGED_BATCH_SIZE = "STAGED_BATCH_SIZE"
UPLOAD_CONCURRENCY = "UPLOAD_CONCURRENCY"
BATCHES_PER_SUB_ORCHESTRATION = "BATCHES_PER_SUB_ORCHESTRATION"
KEY_CACHE_SECONDS = "KEY_CACHE_SECONDS"
HTTP_TIMEOUT_SECONDS = "HTTP_TIMEOUT_SECONDS"
MAX_RETRIES = "AUTOPILOT_MAX_RETRIES"
KEY_VAULT_VERIFY_CHALLENGE_RESOURCE = "KEY_VAULT_VERIFY_CHALLENGE_RESOURCE"
AZURE_CLIENT_ID = "AZURE_CLIENT_ID"

SETTING_NAMES: tuple[str, ...] = (
    STORAGE_CONNECTION,
    STORAGE_ACCOUNT_NAME,
    STORAGE_BLOB_SERVICE_URI,
    STORAGE_CLIENT_ID,
    EXPORTS_STORAGE_CONNECTION,
    EXPORTS_STORAGE_BLOB_SERVICE_URI,
    EXPORTS_CONTAINER,
    RESULTS_CONTAINER,
    KEY_VAULT_URL,
    AUTOPILOT_BASE_URL,
    EXPORTS_CONFIG,
    STAGED_BATCH_SIZE,
    UPLOAD_CONCURRENCY,
    BATCHES_PER_SUB_ORCHESTRATION,
    KEY_CACHE_SECONDS,
    HTTP_TIMEOUT_SECONDS,
    MAX_RETRIES,
    KEY_VAULT_VERIFY_CHALLENGE_RESOURCE,
    AZURE_CLIENT_ID,
)
"""Every app setting the code reads. Tuning knobs have defaults; the Bicep must define the rest."""

REQUIRED_IN_AZURE: tuple[str, ...] = (EXPORTS_CONTAINER, KEY_VAULT_URL, EXPORTS_CONFIG)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything tunable about a deployment; built once per process by :func:`get_settings`."""

    storage_connection_string: str | None = None
    storage_account_name: str | None = None
    storage_blob_service_uri: str | None = None
    storage_client_id: str | None = None
    exports_storage_connection_string: str | None = None
    exports_storage_blob_service_uri: str | None = None
    exports_container: str = "ci-exports"
    results_container: str = "segment-export"
    key_vault_url: str | None = None
    autopilot_base_url: str = DEFAULT_AUTOPILOT_BASE_URL
    exports_config: str = "exports.json"
    staged_batch_size: int = 1000
    upload_concurrency: int = 4
    batches_per_sub_orchestration: int = 100
    key_cache_seconds: float = 600.0
    http_timeout_seconds: float = 30.0
    max_retries: int = 8
    key_vault_verify_challenge_resource: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings; a malformed number or flag fails here, naming its variable."""
        env = os.environ if env is None else env
        defaults = cls()

        def text(name: str, default: str | None) -> str | None:
            value = env.get(name, "").strip()
            return value or default

        def number(name: str, default: float, *, minimum: float, integer: bool) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw) if integer else float(raw)
            except ValueError:
                kind = "a whole number" if integer else "a number"
                raise SettingsError(f"{name} must be {kind}, got {raw!r}") from None
            if value < minimum:
                raise SettingsError(f"{name} must be at least {minimum}, got {raw!r}")
            return value

        def flag(name: str, default: bool) -> bool:
            raw = env.get(name, "").strip().lower()
            if not raw:
                return default
            if raw in {"1", "true", "yes", "on"}:
                return True
            if raw in {"0", "false", "no", "off"}:
                return False
            raise SettingsError(f"{name} must be true or false, got {raw!r}")

        return cls(
            storage_connection_string=text(STORAGE_CONNECTION, None),
            storage_account_name=text(STORAGE_ACCOUNT_NAME, None),
            storage_blob_service_uri=text(STORAGE_BLOB_SERVICE_URI, None),
            storage_client_id=text(STORAGE_CLIENT_ID, None),
            exports_storage_connection_string=text(EXPORTS_STORAGE_CONNECTION, None),
            exports_storage_blob_service_uri=text(EXPORTS_STORAGE_BLOB_SERVICE_URI, None),
            exports_container=text(EXPORTS_CONTAINER, defaults.exports_container) or "",
            results_container=text(RESULTS_CONTAINER, defaults.results_container) or "",
            key_vault_url=text(KEY_VAULT_URL, None),
            autopilot_base_url=(text(AUTOPILOT_BASE_URL, defaults.autopilot_base_url) or "").rstrip("/"),
            exports_config=text(EXPORTS_CONFIG, defaults.exports_config) or "",
            staged_batch_size=int(
                number(STAGED_BATCH_SIZE, defaults.staged_batch_size, minimum=1, integer=True)
            ),
            upload_concurrency=int(
                number(UPLOAD_CONCURRENCY, defaults.upload_concurrency, minimum=1, integer=True)
            ),
            batches_per_sub_orchestration=int(
                number(
                    BATCHES_PER_SUB_ORCHESTRATION,
                    defaults.batches_per_sub_orchestration,
                    minimum=1,
                    integer=True,
                )
            ),
            key_cache_seconds=number(KEY_CACHE_SECONDS, defaults.key_cache_seconds, minimum=0, integer=False),
            http_timeout_seconds=number(
                HTTP_TIMEOUT_SECONDS, defaults.http_timeout_seconds, minimum=0.1, integer=False
            ),
            max_retries=int(number(MAX_RETRIES, defaults.max_retries, minimum=0, integer=True)),
            key_vault_verify_challenge_resource=flag(
                KEY_VAULT_VERIFY_CHALLENGE_RESOURCE, defaults.key_vault_verify_challenge_resource
            ),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read on first use (tests call ``get_settings.cache_clear()``)."""
    return Settings.from_env()
