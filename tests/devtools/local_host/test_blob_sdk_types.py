"""SDK-typed blob triggers: recognised, described and built the way the Python worker does it."""

from __future__ import annotations

import json

import azure.functions as func
import azure.storage.blob
import azurefunctions.extensions.bindings.blob as blob
import pytest

from devtools.local_host.blob_sdk_types import (
    DEFAULT_CONNECTION,
    blob_model_binding_data,
    build_sdk_value,
    connection_is_set,
    parameter_type,
    sdk_blob_binding,
)

AZURITE_STYLE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
    "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;"
)


def takes_client(client: blob.BlobClient) -> None: ...


def test_model_binding_data_names_the_setting_container_and_blob() -> None:
    data = blob_model_binding_data("EXPORTS_STORAGE", "exports", "run/part-1.csv")

    assert (data.version, data.source, data.content_type) == ("1.0", "AzureStorageBlobs", "application/json")
    assert json.loads(data.content) == {
        "Connection": "EXPORTS_STORAGE",
        "ContainerName": "exports",
        "BlobName": "run/part-1.csv",
    }


def test_string_annotations_are_resolved_like_the_worker_does() -> None:
    assert parameter_type(takes_client, "client") is blob.BlobClient


def test_input_stream_is_not_an_sdk_binding() -> None:
    assert sdk_blob_binding("f", "blobTrigger", func.InputStream, "X") is None


def test_trigger_without_connection_uses_host_storage() -> None:
    binding = sdk_blob_binding("f", "blobTrigger", blob.BlobClient, None)

    assert binding is not None
    assert binding.connection == DEFAULT_CONNECTION


def test_identity_based_connection_counts_as_set() -> None:
    assert connection_is_set("EXPORTS_STORAGE", {"EXPORTS_STORAGE__blobServiceUri": "https://a.example"})
    assert not connection_is_set("EXPORTS_STORAGE", {"OTHER": "x"})


def test_extension_builds_the_client_from_the_environment_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SDK_TEST_STORAGE", AZURITE_STYLE)
    binding = sdk_blob_binding("f", "blobTrigger", blob.BlobClient, "SDK_TEST_STORAGE")
    assert binding is not None

    client = build_sdk_value(binding, "exports", "run/part-1.csv", {"BlobTrigger": ("exports/x", "string")})

    assert isinstance(client, azure.storage.blob.BlobClient)
    assert (client.account_name, client.container_name, client.blob_name) == (
        "devstoreaccount1",
        "exports",
        "run/part-1.csv",
    )
