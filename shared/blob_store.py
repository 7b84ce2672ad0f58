"""Blob Storage at the edge: streaming reads, small writes, listings.

Everything else in the package takes plain streams and bytes; this is the one module that knows the
azure-storage-blob SDK, so the same logic runs over Azurite, Azure, or a local folder.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator
from typing import IO, Any, BinaryIO

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

from shared.settings import Settings

log = logging.getLogger(__name__)

_CHUNK = 4 * 1024 * 1024


class BlobNotFoundError(FileNotFoundError):
    """A blob the run needs is absent; names container and blob so the user knows what to look for."""

    def __init__(self, container: str, name: str) -> None:
        super().__init__(f"blob '{name}' not found in container '{container}'")
        self.container = container
        self.name = name


class _ChunkReader(io.RawIOBase):
    """A read-only binary stream over an iterator of byte chunks, so CSV parsing never holds a whole blob."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


class BlobStore:
    """One storage account: the operations the export pipeline needs, nothing more."""

    def __init__(self, service: BlobServiceClient) -> None:
        self._service = service

    @classmethod
    def from_connection_string(cls, connection_string: str) -> BlobStore:
        return cls(
            BlobServiceClient.from_connection_string(
                connection_string, max_single_get_size=_CHUNK, max_chunk_get_size=_CHUNK
            )
        )

    @classmethod
    def for_results(cls, settings: Settings) -> BlobStore:
        """The app's own account (staging, reports): ``AzureWebJobsStorage`` in either of its forms."""
        return cls._build(
            settings.storage_connection_string,
            settings.storage_blob_service_uri
            or (
                f"https://{settings.storage_account_name}.blob.core.windows.net"
                if settings.storage_account_name
                else None
            ),
            settings.storage_client_id,
            "AzureWebJobsStorage",
        )

    @classmethod
    def for_exports(cls, settings: Settings) -> BlobStore:
        """The account Customer Insights writes to: the app's own unless ``EXPORTS_STORAGE`` is set."""
        if settings.exports_storage_connection_string or settings.exports_storage_blob_service_uri:
            return cls._build(
                settings.exports_storage_connection_string,
                settings.exports_storage_blob_service_uri,
                settings.storage_client_id,
                "EXPORTS_STORAGE",
            )
        return cls.for_results(settings)

    @classmethod
    def _build(
        cls, connection_string: str | None, account_url: str | None, client_id: str | None, name: str
    ) -> BlobStore:
        if connection_string:
            return cls.from_connection_string(connection_string)
        if account_url:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential(managed_identity_client_id=client_id)
            return cls(
                BlobServiceClient(
                    account_url, credential=credential, max_single_get_size=_CHUNK, max_chunk_get_size=_CHUNK
                )
            )
        raise ValueError(
            f"no storage configured: set {name} (a connection string) or {name}__blobServiceUri "
            "(identity-based access)"
        )

    @property
    def service(self) -> BlobServiceClient:
        return self._service

    def ensure_container(self, container: str) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._service.create_container(container)

    def open_read(self, container: str, name: str) -> BinaryIO:
        """A streaming reader: memory stays at one chunk however large the blob is."""
        try:
            downloader = self._service.get_blob_client(container, name).download_blob()
        except ResourceNotFoundError:
            raise BlobNotFoundError(container, name) from None
        return io.BufferedReader(_ChunkReader(iter(downloader.chunks())), buffer_size=1024 * 1024)

    def read_bytes(self, container: str, name: str) -> bytes:
        try:
            return bytes(self._service.get_blob_client(container, name).download_blob().readall())
        except ResourceNotFoundError:
            raise BlobNotFoundError(container, name) from None

    def write_bytes(self, container: str, name: str, data: bytes, *, content_type: str | None = None) -> None:
        from azure.storage.blob import ContentSettings

        settings = ContentSettings(content_type=content_type) if content_type else None
        self._service.get_blob_client(container, name).upload_blob(
            data, overwrite=True, content_settings=settings
        )

    def write_stream(
        self, container: str, name: str, stream: IO[bytes], *, content_type: str | None = None
    ) -> None:
        """Upload from a file object in blocks, so large reports never sit in memory whole."""
        from azure.storage.blob import ContentSettings

        settings = ContentSettings(content_type=content_type) if content_type else None
        self._service.get_blob_client(container, name).upload_blob(
            stream, overwrite=True, content_settings=settings, max_concurrency=2
        )

    def exists(self, container: str, name: str) -> bool:
        return bool(self._service.get_blob_client(container, name).exists())

    def list_names(self, container: str, prefix: str = "") -> Iterator[str]:
        for item in self._service.get_container_client(container).list_blobs(name_starts_with=prefix or None):
            yield str(item.name)

    def delete_prefix(self, container: str, prefix: str, *, suffix: str = "") -> int:
        """Remove staged files of a finished run (those ending in ``suffix``); returns how many.

        A blob already gone is fine: the report activity may run twice (at-least-once delivery).
        """
        client = self._service.get_container_client(container)
        count = 0
        for name in [n for n in self.list_names(container, prefix) if n.endswith(suffix)]:
            try:
                client.delete_blob(name)
                count += 1
            except ResourceNotFoundError:
                continue
        return count
