from __future__ import annotations

from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient, ContainerClient

from devtools.local_host.azurite import ACCOUNT_NAME, Azurite, AzuriteError
from tests.fixtures.azurite import azurite, azurite_container, azurite_container_name  # noqa: F401


def test_uploaded_blob_is_listed(azurite_container: ContainerClient) -> None:  # noqa: F811
    azurite_container.upload_blob("exports/run-1/part-00001.csv", b"email\na@example.org\n")

    names = [b.name for b in azurite_container.list_blobs()]

    assert names == ["exports/run-1/part-00001.csv"]
    assert (
        azurite_container.download_blob("exports/run-1/part-00001.csv").readall() == b"email\na@example.org\n"
    )


def test_connection_string_names_the_local_port(azurite: Azurite) -> None:  # noqa: F811
    assert f"BlobEndpoint=http://127.0.0.1:{azurite.blob_port}/{ACCOUNT_NAME};" in azurite.connection_string
    assert BlobServiceClient.from_connection_string(azurite.connection_string).account_name == ACCOUNT_NAME


def test_containers_of_different_tests_are_isolated(azurite: Azurite, azurite_container_name: str) -> None:  # noqa: F811
    service = BlobServiceClient.from_connection_string(azurite.connection_string)

    assert azurite_container_name not in [c.name for c in service.list_containers()]


def test_missing_install_says_to_run_npm_ci(tmp_path: Path) -> None:
    with pytest.raises(AzuriteError, match="run `npm ci`"):
        Azurite(project_root=tmp_path).start()


def test_port_is_unavailable_before_start() -> None:
    with pytest.raises(AzuriteError, match="not running"):
        _ = Azurite().blob_port
