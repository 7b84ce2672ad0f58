"""The local Key Vault and identity endpoint speak the wire protocol the Azure SDK expects.

Raw HTTPS requests check the REST shapes byte for byte (what the SDK parses); a real SecretClient
with a test-owned credential checks the SDK accepts them; the ``python -m`` entry point is run as a
process, the way local runs use it.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from azure.core.credentials import AccessToken
from azure.keyvault.secrets import SecretClient
from azure.keyvault.secrets._shared import http_challenge_cache

from devtools.identity_server import LocalIdentityEndpoint
from devtools.keyvault_server import (
    VAULT_AZURE_NET,
    LocalKeyVault,
    local_vault_environment,
    write_ca_bundle,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
API = "api-version=2026-04-01"


@pytest.fixture
def vault() -> Iterator[LocalKeyVault]:
    http_challenge_cache.clear()
    with LocalKeyVault() as server:
        yield server
    http_challenge_cache.clear()


@pytest.fixture
def token(vault: LocalKeyVault) -> str:
    return vault.issue_token()


def request(
    vault: LocalKeyVault,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: Any = None,
    connection: http.client.HTTPSConnection | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One HTTPS request trusting only the vault's CA; returns (status, headers, parsed JSON)."""
    conn = connection or http.client.HTTPSConnection(
        "127.0.0.1", vault.port, context=ssl.create_default_context(cafile=str(vault.ca_pem_path)), timeout=10
    )
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None if body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    raw = response.read()
    if connection is None:
        conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(raw)


class StaticCredential:
    """A test-owned credential (specs/keyvault-local.md section 4): no azure-identity involved."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(self.token, 2**31 - 1)


def test_unauthenticated_request_gets_the_key_vault_challenge(vault: LocalKeyVault) -> None:
    status, headers, body = request(vault, "GET", f"/secrets/api-key/?{API}")

    assert status == 401
    assert body["error"]["code"] == "Unauthorized"
    assert headers["www-authenticate"] == (
        f'Bearer authorization="https://login.microsoftonline.com/{vault.tenant_id}", '
        f'resource="https://0.0.1:{vault.port}"'
    )


def test_azure_like_challenge_names_vault_azure_net() -> None:
    with LocalKeyVault(resource=VAULT_AZURE_NET) as azure_like:
        _, headers, _ = request(azure_like, "GET", f"/secrets/api-key?{API}")

    assert headers["www-authenticate"].endswith('resource="https://vault.azure.net"')


def test_unknown_token_is_challenged_again(vault: LocalKeyVault) -> None:
    status, headers, _ = request(vault, "GET", f"/secrets/api-key?{API}", token="made-up")

    assert status == 401
    assert "www-authenticate" in headers


@pytest.mark.parametrize("path", ["/secrets/api-key", "/secrets/api-key/"])
def test_latest_version_is_served_with_and_without_trailing_slash(
    vault: LocalKeyVault, token: str, path: str
) -> None:
    vault.set("api-key", "old")
    version = vault.set("api-key", "new")

    status, _, bundle = request(vault, "GET", f"{path}?{API}", token=token)

    assert status == 200
    assert bundle["value"] == "new"
    assert bundle["id"] == f"{vault.url}/secrets/api-key/{version}"
    assert bundle["attributes"]["enabled"] is True


def test_a_given_version_is_served(vault: LocalKeyVault, token: str) -> None:
    first = vault.set("api-key", "old")
    vault.set("api-key", "new")

    _, _, bundle = request(vault, "GET", f"/secrets/api-key/{first}?{API}", token=token)

    assert bundle["value"] == "old"


@pytest.mark.parametrize("api_version", ["7.4", "2025-07-01", "2026-04-01"])
def test_any_api_version_is_accepted(vault: LocalKeyVault, token: str, api_version: str) -> None:
    vault.set("api-key", "k")

    status, _, _ = request(vault, "GET", f"/secrets/api-key?api-version={api_version}", token=token)

    assert status == 200


def test_missing_api_version_is_a_bad_request(vault: LocalKeyVault, token: str) -> None:
    status, _, _ = request(vault, "GET", "/secrets/api-key", token=token)

    assert status == 400


def test_missing_secret_is_404_secret_not_found(vault: LocalKeyVault, token: str) -> None:
    status, _, body = request(vault, "GET", f"/secrets/nothing/?{API}", token=token)

    assert status == 404
    assert body["error"]["code"] == "SecretNotFound"


@pytest.mark.parametrize("inner", ["ForbiddenByRbac", "AccessDenied"])
def test_forbidden_secret_is_403_with_the_inner_code(vault: LocalKeyVault, token: str, inner: str) -> None:
    vault.set("api-key", "k")
    vault.forbid("api-key", code=inner)

    status, _, body = request(vault, "GET", f"/secrets/api-key?{API}", token=token)

    assert status == 403
    assert body["error"]["code"] == "Forbidden"
    assert body["error"]["innererror"]["code"] == inner


def test_deny_all_forbids_every_secret_until_allowed(vault: LocalKeyVault, token: str) -> None:
    vault.set("api-key", "k")
    vault.forbid()
    denied, _, _ = request(vault, "GET", f"/secrets/api-key?{API}", token=token)
    vault.allow()
    allowed, _, _ = request(vault, "GET", f"/secrets/api-key?{API}", token=token)

    assert (denied, allowed) == (403, 200)


def test_keep_alive_serves_several_requests_on_one_connection(vault: LocalKeyVault, token: str) -> None:
    vault.set("api-key", "k")
    conn = http.client.HTTPSConnection(
        "127.0.0.1", vault.port, context=ssl.create_default_context(cafile=str(vault.ca_pem_path)), timeout=10
    )
    sockets = []
    for _ in range(3):
        request(vault, "GET", f"/secrets/api-key?{API}", token=token, connection=conn)
        sockets.append(conn.sock)  # http.client drops the socket when the server ends the connection
    conn.close()

    assert sockets[0] is not None
    assert all(sock is sockets[0] for sock in sockets)


def test_real_secret_client_reads_and_writes_through_the_challenge(vault: LocalKeyVault, token: str) -> None:
    credential = StaticCredential(token)
    client = SecretClient(vault.url, credential, connection_verify=str(vault.ca_pem_path))

    written = client.set_secret("api-key", "from-client", tags={"owner": "tests"})
    read = client.get_secret("api-key")

    assert vault.get("api-key") == "from-client"
    assert (read.value, read.properties.version, read.properties.tags) == (
        "from-client",
        written.properties.version,
        {"owner": "tests"},
    )
    assert credential.scopes[0] == (f"https://0.0.1:{vault.port}/.default",)
    assert [(r.method, r.had_authorization, r.status) for r in vault.requests][:2] == [
        ("PUT", False, 401),
        ("PUT", True, 200),
    ]


def test_admin_endpoints_set_and_forbid_secrets(vault: LocalKeyVault, token: str) -> None:
    status, _, created = request(vault, "POST", "/_admin/secrets/api-key", body={"value": "rotated"})
    assert status == 200
    assert vault.versions("api-key") == [created["version"]]
    request(vault, "POST", "/_admin/forbid", body={})
    denied, _, _ = request(vault, "GET", f"/secrets/api-key?{API}", token=token)
    request(vault, "POST", "/_admin/allow", body={})
    _, _, bundle = request(vault, "GET", f"/secrets/api-key?{API}", token=token)

    assert denied == 403
    assert bundle["value"] == "rotated"


@pytest.fixture
def identity(vault: LocalKeyVault) -> Iterator[LocalIdentityEndpoint]:
    with LocalIdentityEndpoint("shared-header", token_for=vault.issue_token) as endpoint:
        yield endpoint


def ask_identity(
    identity: LocalIdentityEndpoint, header: str, resource: str = "https://vault.azure.net"
) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", identity.port, timeout=10)
    conn.request(
        "GET",
        f"/msi/token?api-version=2019-08-01&resource={resource}",
        headers={"X-IDENTITY-HEADER": header},
    )
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    return response.status, body


def test_identity_endpoint_issues_tokens_the_vault_accepts(
    vault: LocalKeyVault, identity: LocalIdentityEndpoint
) -> None:
    vault.set("api-key", "k")

    status, body = ask_identity(identity, "shared-header", resource="https://0.0.1:1")
    secret_status, _, _ = request(vault, "GET", f"/secrets/api-key?{API}", token=body["access_token"])

    assert status == 200
    assert body["resource"] == "https://0.0.1:1"
    assert body["token_type"] == "Bearer"
    assert int(body["expires_on"]) > 0
    assert secret_status == 200


def test_identity_endpoint_refuses_a_wrong_header(identity: LocalIdentityEndpoint) -> None:
    status, body = ask_identity(identity, "wrong")

    assert status == 400
    assert "access_token" not in body


def test_ca_bundle_holds_the_system_bundle_and_the_local_ca(vault: LocalKeyVault, tmp_path: Path) -> None:
    system = tmp_path / "system.pem"
    system.write_text("-----SYSTEM CERTS-----\n")

    bundle = write_ca_bundle(tmp_path / "bundle.pem", vault.ca_pem_path, base_bundles=[system])

    text = bundle.read_text()
    assert text.startswith("-----SYSTEM CERTS-----\n")
    assert vault.ca_pem_path.read_text().strip() in text


def test_environment_points_the_production_code_at_the_local_servers(
    vault: LocalKeyVault, identity: LocalIdentityEndpoint, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle.pem"

    env = local_vault_environment(vault, identity, bundle)

    assert env["KEY_VAULT_URL"] == vault.url
    assert env["IDENTITY_ENDPOINT"] == identity.endpoint
    assert env["IDENTITY_HEADER"] == "shared-header"
    assert {env[k] for k in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")} == {str(bundle)}
    assert env["AZURE_TOKEN_CREDENTIALS"] == "ManagedIdentityCredential"
    assert env["KEY_VAULT_VERIFY_CHALLENGE_RESOURCE"] == "true"


def _read_environment(process: subprocess.Popen[str], keys: int) -> dict[str, str]:
    """The KEY=VALUE lines the server prints, read on a thread so a silent server cannot hang the test."""
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    env: dict[str, str] = {}
    while len(env) < keys:
        key, _, value = lines.get(timeout=20).strip().partition("=")
        env[key] = value
    return env


def test_runs_as_a_process_printing_its_environment_until_sigterm(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "devtools.keyvault_server", "--secret", "api-key=from-cli"]
    with (tmp_path / "stderr.log").open("w") as stderr:
        process = subprocess.Popen(
            [*command, "--state-dir", str(tmp_path)],
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        )
        try:
            env = _read_environment(process, keys=8)
            bundle = _read_secret_as_the_app_would(env, "api-key")
        finally:
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=20)
            assert process.stdout is not None
            process.stdout.close()

    assert bundle["value"] == "from-cli"
    assert (tmp_path / "keyvault.env").read_text().splitlines()[0] == f"KEY_VAULT_URL={env['KEY_VAULT_URL']}"
    assert returncode == 0


def _read_secret_as_the_app_would(env: dict[str, str], name: str) -> Any:
    """Token from IDENTITY_ENDPOINT, then the secret over TLS trusting only REQUESTS_CA_BUNDLE."""
    identity_url = urlsplit(env["IDENTITY_ENDPOINT"])
    token_conn = http.client.HTTPConnection("127.0.0.1", identity_url.port, timeout=10)
    token_conn.request(
        "GET",
        f"{identity_url.path}?api-version=2019-08-01&resource=https://vault.azure.net",
        headers={"X-IDENTITY-HEADER": env["IDENTITY_HEADER"]},
    )
    access_token = json.loads(token_conn.getresponse().read())["access_token"]
    token_conn.close()
    context = ssl.create_default_context(cafile=env["REQUESTS_CA_BUNDLE"])
    vault_conn = http.client.HTTPSConnection(
        "127.0.0.1", urlsplit(env["KEY_VAULT_URL"]).port, context=context, timeout=10
    )
    vault_conn.request("GET", f"/secrets/{name}?{API}", headers={"Authorization": f"Bearer {access_token}"})
    bundle = json.loads(vault_conn.getresponse().read())
    vault_conn.close()
    return bundle
