"""Blob triggers by polling, with the host's receipts, retries and poison handling.

In Azure the app's blob trigger is fed by Event Grid; locally we list the container instead. The
contract kept from the host: a blob triggers once per version (name + ETag), receipts survive a
restart (they live in ``state_dir`` as the host keeps them in ``azure-webjobs-hosts``), a function
that raises is retried up to 5 times, and then the blob is recorded as poison (the host's
``webjobs-blobtrigger-poison`` queue) and not retried until it changes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import azure.functions as func
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobServiceClient, StorageStreamDownloader

from shared.redact import scrub

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True)
class BlobPath:
    """A resolved trigger path: the container plus a pattern over blob names."""

    container: str
    pattern: re.Pattern[str]
    prefix: str

    def match(self, blob_name: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(blob_name)
        return None if found is None else {k: v for k, v in found.groupdict().items() if v is not None}


def parse_blob_path(path: str) -> BlobPath:
    """``"container/{name}"``, ``"container/in/{stem}.csv"``...; placeholders may span folders."""
    container, sep, rest = path.strip("/").partition("/")
    if not container or "{" in container:
        raise ValueError(f"blob trigger path '{path}' must start with a literal container name")
    if not sep or not rest:
        rest = "{name}"
    regex = ""
    names: set[str] = set()
    last = 0
    for found in _PLACEHOLDER.finditer(rest):
        regex += re.escape(rest[last : found.start()])
        name = found.group(1).strip()
        if name.isidentifier() and name not in names:
            names.add(name)
            regex += f"(?P<{name}>.+?)"
        else:
            regex += ".+?"
        last = found.end()
    regex += re.escape(rest[last:])
    first = rest.find("{")
    prefix = rest if first < 0 else rest[:first]
    return BlobPath(container=container, pattern=re.compile(regex, re.DOTALL), prefix=prefix)


class LazyBlobStream(func.InputStream):
    """A ``func.InputStream`` that downloads only when (and as far as) the function reads."""

    def __init__(
        self,
        blob: BlobClient,
        *,
        name: str,
        length: int,
        properties: dict[str, Any],
        metadata: dict[str, str],
    ):
        super().__init__()
        self._blob = blob
        self._name = name
        self._length = length
        self._properties = properties
        self._metadata = metadata
        self._downloader: StorageStreamDownloader[bytes] | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def length(self) -> int:
        return self._length

    @property
    def uri(self) -> str:
        return str(self._blob.url)

    @property
    def blob_properties(self) -> dict[str, Any]:
        return self._properties

    @property
    def metadata(self) -> dict[str, str]:
        return self._metadata

    def read(self, size: int | None = -1) -> bytes:
        if self._downloader is None:
            self._downloader = self._blob.download_blob()
        if size is None or size < 0:
            return self._downloader.read()
        return self._downloader.read(size)

    read1 = read

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return False


@dataclass(frozen=True)
class BlobEvent:
    """One blob version handed to a function."""

    function: str
    container: str
    blob_name: str
    etag: str
    length: int
    properties: dict[str, Any]
    metadata: dict[str, str]
    path_params: dict[str, str]

    @property
    def full_name(self) -> str:
        """What the host passes as ``InputStream.name``: ``container/blob``."""
        return f"{self.container}/{self.blob_name}"


@dataclass(frozen=True)
class BlobOutcome:
    """What became of one blob version in one poll."""

    function: str
    blob_name: str
    etag: str
    status: Literal["processed", "poisoned"]
    attempts: int
    error: str | None = None


@dataclass(frozen=True)
class BlobTriggerSpec:
    """A blob-trigger function as the poller needs it (the host resolves settings first)."""

    function: str
    path: BlobPath


class BlobTriggerPoller:
    """Lists each trigger's container and invokes ``invoke(event, stream)`` per new blob version."""

    def __init__(
        self,
        triggers: Iterable[BlobTriggerSpec],
        connection_string: str,
        state_dir: Path,
        invoke: Callable[[BlobEvent, LazyBlobStream], None],
        *,
        max_attempts: int = MAX_ATTEMPTS,
        secrets: Iterable[str] = (),
    ) -> None:
        self._triggers = tuple(triggers)
        self._service = BlobServiceClient.from_connection_string(connection_string)
        self._receipts_dir = state_dir / "blob-receipts"
        self._poison_dir = state_dir / "blob-poison"
        self._invoke = invoke
        self._max_attempts = max_attempts
        self._secrets = tuple(secrets)
        self._lock = threading.Lock()

    def poll_once(self) -> list[BlobOutcome]:
        """One scan of every trigger's container; returns what was processed or poisoned."""
        outcomes: list[BlobOutcome] = []
        with self._lock:
            for trigger in self._triggers:
                outcomes.extend(self._poll_trigger(trigger))
        return outcomes

    def _poll_trigger(self, trigger: BlobTriggerSpec) -> list[BlobOutcome]:
        receipts = self._load_receipts(trigger.function)
        container = self._service.get_container_client(trigger.path.container)
        outcomes: list[BlobOutcome] = []
        try:
            listing = list(
                container.list_blobs(name_starts_with=trigger.path.prefix or None, include=["metadata"])
            )
        except ResourceNotFoundError:
            log.debug(
                "blob trigger %s: container '%s' does not exist yet", trigger.function, trigger.path.container
            )
            return outcomes
        for item in listing:
            params = trigger.path.match(item.name)
            if params is None:
                continue
            etag = str(item.etag)
            if receipts["processed"].get(item.name) == etag or receipts["poisoned"].get(item.name) == etag:
                continue
            event = BlobEvent(
                function=trigger.function,
                container=trigger.path.container,
                blob_name=item.name,
                etag=etag,
                length=int(item.size or 0),
                properties=_properties(item),
                metadata=dict(item.metadata or {}),
                path_params=params,
            )
            outcome = self._process(container.get_blob_client(item.name), event)
            receipts[outcome.status][item.name] = etag
            self._save_receipts(trigger.function, receipts)
            if outcome.status == "poisoned":
                self._record_poison(event, outcome)
            outcomes.append(outcome)
        return outcomes

    def _process(self, blob: BlobClient, event: BlobEvent) -> BlobOutcome:
        error = ""
        for attempt in range(1, self._max_attempts + 1):
            stream = LazyBlobStream(
                blob,
                name=event.full_name,
                length=event.length,
                properties=event.properties,
                metadata=event.metadata,
            )
            try:
                self._invoke(event, stream)
            except Exception as exc:  # noqa: BLE001 -- any failure counts as a failed attempt, as in the host
                error = scrub(f"{type(exc).__name__}: {exc}", *self._secrets)
                log.warning(
                    "blob trigger %s failed on '%s' (attempt %d of %d): %s",
                    event.function,
                    event.full_name,
                    attempt,
                    self._max_attempts,
                    error,
                )
                continue
            return BlobOutcome(event.function, event.blob_name, event.etag, "processed", attempt)
        log.error(
            "blob trigger %s gave up on '%s' after %d attempts: recorded as poison",
            event.function,
            event.full_name,
            self._max_attempts,
        )
        return BlobOutcome(event.function, event.blob_name, event.etag, "poisoned", self._max_attempts, error)

    # --- state --------------------------------------------------------------------------------
    def _receipts_file(self, function: str) -> Path:
        return self._receipts_dir / f"{function}.json"

    def _load_receipts(self, function: str) -> dict[str, dict[str, str]]:
        path = self._receipts_file(function)
        empty: dict[str, dict[str, str]] = {"processed": {}, "poisoned": {}}
        if not path.exists():
            return empty
        data = json.loads(path.read_text(encoding="utf-8"))
        return {"processed": dict(data.get("processed", {})), "poisoned": dict(data.get("poisoned", {}))}

    def _save_receipts(self, function: str, receipts: dict[str, dict[str, str]]) -> None:
        self._receipts_dir.mkdir(parents=True, exist_ok=True)
        path = self._receipts_file(function)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(receipts, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temporary, path)

    def poison_file(self, function: str) -> Path:
        return self._poison_dir / f"{function}.jsonl"

    def _record_poison(self, event: BlobEvent, outcome: BlobOutcome) -> None:
        """One line per poisoned blob version, with the host's poison-queue message fields."""
        self._poison_dir.mkdir(parents=True, exist_ok=True)
        entry = {
            "Type": "BlobTrigger",
            "FunctionId": f"Host.Functions.{event.function}",
            "BlobType": "BlockBlob",
            "ContainerName": event.container,
            "BlobName": event.blob_name,
            "ETag": event.etag,
            "attempts": outcome.attempts,
            "error": outcome.error,
            "time": datetime.now(UTC).isoformat(),
        }
        with self.poison_file(event.function).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


def _properties(item: Any) -> dict[str, Any]:
    settings = getattr(item, "content_settings", None)
    last_modified = getattr(item, "last_modified", None)
    return {
        "ContentType": getattr(settings, "content_type", None),
        "ContentMD5": None,
        "ETag": str(item.etag),
        "Length": int(item.size or 0),
        "LastModified": last_modified.isoformat() if last_modified else None,
    }
