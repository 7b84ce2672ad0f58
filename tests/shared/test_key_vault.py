"""The Key Vault key provider, run as in Azure: real SecretClient + DefaultAzureCredential, real TLS.

The local vault and managed-identity endpoint come from ``tests.fixtures.keyvault``; nothing in the
SDK is patched, so these tests also prove the production wiring (environment, challenge, identity).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
from azure.core.exceptions import ServiceRequestError

from devtools.keyvault_server import VAULT_AZURE_NET, LocalKeyVault
from shared.key_vault import (
    EnvironmentKeySource,
    KeyNotSetError,
    KeyVaultAccessError,
    KeyVaultKeySource,
    describe_failure,
    key_source_for,
)
from tests.fixtures import keyvault as keyvault_fixtures
from tests.fixtures.keyvault import LocalVaultStack

# Until the root conftest registers tests.fixtures.keyvault as a plugin.
local_vault = keyvault_fixtures.local_vault

SECRET = "autopilot-key"
KEY_V1 = "ap-key-one-1f3c9a7e5d"
KEY_V2 = "ap-key-two-8b2e4d6f0a"


class FakeClock:
    """Monotonic time the test moves by hand, so TTL behaviour needs no sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def source(local_vault: LocalVaultStack, clock: FakeClock) -> Iterator[KeyVaultKeySource]:
    """A source with a 60 s cache over a vault that holds KEY_V1."""
    local_vault.vault.set(SECRET, KEY_V1)
    key_source = KeyVaultKeySource(local_vault.url, SECRET, cache_seconds=60, clock=clock)
    yield key_source
    key_source.close()


def test_key_is_read_through_the_challenge_flow_with_the_managed_identity(
    local_vault: LocalVaultStack, source: KeyVaultKeySource
) -> None:
    assert source.get_key() == KEY_V1

    probe, authorised = local_vault.vault.requests
    assert (probe.method, probe.had_authorization, probe.status) == ("GET", False, 401)
    assert (authorised.method, authorised.had_authorization, authorised.status) == ("GET", True, 200)
    assert authorised.path.rstrip("/") == f"/secrets/{SECRET}"
    [token_request] = local_vault.identity.requests
    assert token_request.resource == local_vault.vault.challenge_resource


def test_key_is_cached_within_its_ttl(
    local_vault: LocalVaultStack, source: KeyVaultKeySource, clock: FakeClock
) -> None:
    keys = []
    for _ in range(3):
        keys.append(source.get_key())
        clock.advance(19)

    assert keys == [KEY_V1] * 3
    assert local_vault.vault.reads(SECRET) == 1


def test_new_version_is_picked_up_after_the_ttl(
    local_vault: LocalVaultStack, source: KeyVaultKeySource, clock: FakeClock
) -> None:
    source.get_key()
    local_vault.vault.set(SECRET, KEY_V2)
    clock.advance(61)

    assert source.get_key() == KEY_V2
    assert local_vault.vault.reads(SECRET) == 2


def test_refresh_key_reads_the_new_version_at_once_and_caches_it(
    local_vault: LocalVaultStack, source: KeyVaultKeySource
) -> None:
    source.get_key()
    version = local_vault.vault.set(SECRET, KEY_V2)

    assert source.refresh_key() == KEY_V2
    assert source.get_key() == KEY_V2
    assert source.version == version
    assert local_vault.vault.reads(SECRET) == 2


def test_many_threads_asking_at_once_cause_one_read(
    local_vault: LocalVaultStack, source: KeyVaultKeySource
) -> None:
    start = threading.Barrier(8)
    keys: list[str] = []

    def ask() -> None:
        start.wait()
        keys.append(source.get_key())

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert keys == [KEY_V1] * 8
    assert local_vault.vault.reads(SECRET) == 1


def test_missing_secret_names_vault_secret_and_the_az_command(local_vault: LocalVaultStack) -> None:
    source = KeyVaultKeySource(local_vault.url, "no-such-key")

    with pytest.raises(KeyVaultAccessError) as caught:
        source.get_key()

    message = str(caught.value)
    assert local_vault.url in message
    assert "'no-such-key'" in message
    assert "az keyvault secret set --vault-name" in message
    assert "--name no-such-key" in message
    assert caught.value.status_code == 404


def test_forbidden_secret_names_the_role_to_grant(
    local_vault: LocalVaultStack, source: KeyVaultKeySource
) -> None:
    local_vault.vault.forbid(SECRET)

    with pytest.raises(KeyVaultAccessError) as caught:
        source.get_key()

    message = str(caught.value)
    assert '"Key Vault Secrets User"' in message
    assert local_vault.url in message
    assert f"'{SECRET}'" in message
    assert caught.value.status_code == 403


def test_disabled_secret_says_it_is_disabled(local_vault: LocalVaultStack) -> None:
    local_vault.vault.set("disabled-key", KEY_V1, enabled=False)

    with pytest.raises(KeyVaultAccessError, match="is disabled"):
        KeyVaultKeySource(local_vault.url, "disabled-key").get_key()


def test_identity_that_cannot_get_a_token_points_at_the_identity_settings(
    local_vault: LocalVaultStack, source: KeyVaultKeySource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-shared-header")
    fresh = KeyVaultKeySource(local_vault.url, SECRET)

    with pytest.raises(KeyVaultAccessError) as caught:
        fresh.get_key()

    message = str(caught.value)
    assert "managed identity could not get a token" in message
    assert "AZURE_CLIENT_ID" in message
    assert caught.value.status_code == 401


def test_user_assigned_identity_is_asked_for_by_azure_client_id(
    local_vault: LocalVaultStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    local_vault.vault.set(SECRET, KEY_V1)
    monkeypatch.setenv("AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555")

    assert KeyVaultKeySource(local_vault.url, SECRET).get_key() == KEY_V1
    assert [r.client_id for r in local_vault.identity.requests] == ["11111111-2222-3333-4444-555555555555"]


def test_secret_value_never_reaches_logs_or_errors(
    local_vault: LocalVaultStack,
    source: KeyVaultKeySource,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    source.get_key()
    local_vault.vault.set(SECRET, KEY_V2)
    source.refresh_key()
    local_vault.vault.forbid()
    errors = []
    with pytest.raises(KeyVaultAccessError) as forbidden:
        source.refresh_key()
    errors.append(str(forbidden.value))
    local_vault.vault.allow()
    local_vault.vault.accepted_tokens.clear()
    with pytest.raises(KeyVaultAccessError) as rejected:
        source.refresh_key()
    errors.append(str(rejected.value))

    logged = caplog.text + "".join(record.getMessage() for record in caplog.records)
    assert f"version {local_vault.vault.versions(SECRET)[0]}" in logged  # fetches are logged...
    for value in (KEY_V1, KEY_V2):
        assert value not in logged  # ...without the key
        assert all(value not in error for error in errors)


def test_empty_secret_is_an_error_not_an_empty_key(local_vault: LocalVaultStack) -> None:
    local_vault.vault.set("empty-key", "")

    with pytest.raises(KeyVaultAccessError, match="is empty"):
        KeyVaultKeySource(local_vault.url, "empty-key").get_key()


def test_vault_challenging_like_azure_is_refused_unless_verification_is_off(
    local_vault: LocalVaultStack,
) -> None:
    with LocalKeyVault(
        resource=VAULT_AZURE_NET, ca=local_vault.vault.ca, accepted_tokens=local_vault.vault.accepted_tokens
    ) as azure_like:
        azure_like.set(SECRET, KEY_V1)

        with pytest.raises(KeyVaultAccessError, match="KEY_VAULT_VERIFY_CHALLENGE_RESOURCE=false"):
            KeyVaultKeySource(azure_like.url, SECRET).get_key()
        unverified = KeyVaultKeySource(azure_like.url, SECRET, verify_challenge_resource=False)
        assert unverified.get_key() == KEY_V1


def test_key_source_for_shares_one_source_per_vault_and_secret(local_vault: LocalVaultStack) -> None:
    first = key_source_for(local_vault.url, SECRET, cache_seconds=60, verify_challenge_resource=True)
    again = key_source_for(
        local_vault.url + "/", SECRET.upper(), cache_seconds=5, verify_challenge_resource=True
    )
    other = key_source_for(local_vault.url, "other-key", cache_seconds=60, verify_challenge_resource=True)

    assert again is first
    assert other is not first


def test_plain_http_vault_url_is_refused_up_front() -> None:
    with pytest.raises(KeyVaultAccessError, match="must be https"):
        KeyVaultKeySource("http://127.0.0.1:1", SECRET)


def test_unreachable_vault_is_described_as_a_network_problem() -> None:
    error = describe_failure(ServiceRequestError("Connection refused"), "https://kv.vault.azure.net", SECRET)

    assert "Could not reach" in str(error)
    assert "https://kv.vault.azure.net" in str(error)


def test_environment_key_source_reads_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AP_KEY_FOR_TEST", KEY_V1)

    assert EnvironmentKeySource("AP_KEY_FOR_TEST").get_key() == KEY_V1


def test_environment_key_source_names_the_unset_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AP_KEY_FOR_TEST", raising=False)

    with pytest.raises(KeyNotSetError, match="AP_KEY_FOR_TEST is not set"):
        EnvironmentKeySource("AP_KEY_FOR_TEST")


def test_environment_key_source_refuses_an_unresolved_key_vault_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AP_KEY_FOR_TEST", "@Microsoft.KeyVault(VaultName=kv;SecretName=autopilot-key)")

    with pytest.raises(KeyNotSetError, match="unresolved Key Vault reference"):
        EnvironmentKeySource("AP_KEY_FOR_TEST")
