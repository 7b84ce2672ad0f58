"""Blob-trigger parameters typed as SDK clients (``azurefunctions-extensions-bindings-blob``).

When a function annotates its blob trigger as ``blob.BlobClient`` (or ``ContainerClient``,
``StorageStreamDownloader``), the Python worker marks the binding ``SupportsDeferredBinding`` and
the host stops sending the blob's content: it sends a ``ModelBindingData`` message whose JSON
content names the connection setting, the container and the blob. The worker then hands that
message to the converter the extension registered for ``blobTrigger``, which builds the
``azure.storage.blob`` client from the connection setting in the process environment.

We reproduce exactly that hand-off, so the extension's own code builds the client: the same
registry lookup the worker does (``azure_functions_worker.bindings.meta``), the same message
fields the host sends (``BlobsExtensionConfigProvider.CreateParameterBindingData``), and no
download of the blob here, which is the point of the binding.
"""

from __future__ import annotations

import inspect
import json
import os
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MODEL_BINDING_DATA = "model_binding_data"
BLOB_SOURCE = "AzureStorageBlobs"
CONTENT_TYPE = "application/json"
VERSION = "1.0"
# The host resolves an empty ``connection`` to the host storage account, and sends that name.
DEFAULT_CONNECTION = "AzureWebJobsStorage"


@dataclass(frozen=True)
class ModelBindingData:
    """The fields of the RPC message ``ModelBindingData`` (``bytes content``, UTF-8 JSON)."""

    version: str
    source: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class SdkBlobBinding:
    """How to build one function's SDK-typed trigger value: the converter and the requested type."""

    converter: Any
    pytype: Any
    connection: str


def blob_model_binding_data(connection: str, container: str, blob_name: str) -> ModelBindingData:
    """What the host sends instead of the content: the setting NAME, never the connection string."""
    content = {"Connection": connection, "ContainerName": container, "BlobName": blob_name}
    return ModelBindingData(VERSION, BLOB_SOURCE, CONTENT_TYPE, json.dumps(content).encode("utf-8"))


def parameter_type(function: Callable[..., Any], param: str) -> Any:
    """The parameter's annotation resolved as the worker does (``typing.get_type_hints``).

    Resolving matters: under ``from __future__ import annotations`` every annotation is a string.
    A hint that cannot be resolved falls back to the raw annotation, which then matches no SDK type.
    """
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 -- an unresolvable hint on another parameter must not hide this one
        hints = {}
    if param in hints:
        return hints[param]
    parameter = inspect.signature(function).parameters.get(param)
    return None if parameter is None else parameter.annotation


def _registry() -> Any:
    """The extension base's converter registry, or None when no extension is installed (as the worker)."""
    try:
        from azurefunctions.extensions.base import get_binding_registry
    except ImportError:
        return None
    return get_binding_registry()


def sdk_blob_binding(
    function_name: str, binding_type: str, pytype: Any, connection: str | None
) -> SdkBlobBinding | None:
    """The SDK binding for this trigger parameter, or None when its type is not an SDK type.

    Mirrors the worker's ``check_deferred_bindings_enabled``: an annotation the extension base
    recognises as an ``SdkType`` is a deferred binding, decoded by the converter registered for
    the binding's type. An SDK type with no converter for the type fails here, at indexing.
    """
    registry = _registry()
    if registry is None or not registry.check_supported_type(pytype):
        return None
    converter = registry.get(binding_type)
    if converter is None or not converter.check_input_type_annotation(pytype):
        raise TypeError(
            f"function '{function_name}': no installed extension binds a {binding_type} to "
            f"{getattr(pytype, '__name__', pytype)!s}"
        )
    return SdkBlobBinding(converter=converter, pytype=pytype, connection=connection or DEFAULT_CONNECTION)


def connection_is_set(connection: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the extension will find the connection (its lookup order in ``utils.py``).

    The extension reads the process environment, where the worker finds app settings: a setting
    only given to the local host as ``app_settings`` is invisible to it.
    """
    if any(f"{connection}{suffix}" in environ for suffix in ("", "__serviceUri", "__blobServiceUri")):
        return True
    return connection == DEFAULT_CONNECTION and f"{connection}__accountName" in environ


def build_sdk_value(
    binding: SdkBlobBinding,
    container: str,
    blob_name: str,
    trigger_metadata: Mapping[str, tuple[Any, str]],
) -> Any:
    """The client the function receives, built by the extension's converter from model binding data.

    ``trigger_metadata`` maps names to ``(value, datum type)``; the worker passes them as ``Datum``.
    """
    from azurefunctions.extensions.base import Datum

    data = blob_model_binding_data(binding.connection, container, blob_name)
    metadata = {name: Datum(value, kind) for name, (value, kind) in trigger_metadata.items()}
    return binding.converter.decode(
        Datum(data, MODEL_BINDING_DATA), trigger_metadata=metadata, pytype=binding.pytype
    )
