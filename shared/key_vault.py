"""The Autopilot API key, read from Key Vault at run time and cached in memory for a while.

Reading the secret at run time (rather than through a platform ``@Microsoft.KeyVault(...)`` reference)
is what lets a rotated key take effect at once: the Autopilot client calls :meth:`refresh_key` after a
401 and retries once with the latest version. Between rotations the key is cached per process so each
upload does not cost a Key Vault round trip (every ``get_secret`` is a network call; the SDK never
caches values).

Authentication is ``DefaultAzureCredential``: the Function App's managed identity in Azure
(``AZURE_CLIENT_ID`` selects a user-assigned one), the developer's ``az login`` locally, or the local
identity endpoint of ``devtools.keyvault_server`` in tests. No error or log line carries the key.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.keyvault.secrets import SecretClient

from shared.redact import scrub
from shared.settings import AZURE_CLIENT_ID, KEY_VAULT_VERIFY_CHALLENGE_RESOURCE

log = logging.getLogger(__name__)

SECRETS_USER_ROLE = "Key Vault Secrets User"
KEY_VAULT_REFERENCE_PREFIX = "@Microsoft.KeyVault("
_MAX_DETAIL = 300


class KeyVaultAccessError(Exception):
    """The key could not be read from Key Vault; the message says which vault, which secret and what to do.

    It never contains the secret's value: it ends up in activity failures and logs.
    """

    def __init__(
        self, message: str, *, vault_url: str, secret_name: str, status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.vault_url = vault_url
        self.secret_name = secret_name
        self.status_code = status_code


class KeyNotSetError(ValueError):
    """The environment variable meant to hold the key is unset, empty or an unresolved Key Vault reference."""


def _vault_name(vault_url: str) -> str:
    """The vault's name for ``az`` commands (``https://myvault.vault.azure.net`` -> ``myvault``)."""
    host = urlsplit(vault_url).hostname or ""
    name, _, domain = host.partition(".")
    # Every Azure cloud's vault domain starts with "vault." (vault.azure.net, vault.azure.cn, ...).
    return name if domain.startswith("vault.") else "<vault name>"


def _detail(exc: BaseException, *secrets: str) -> str:
    """A one-line, bounded summary of an SDK error: credential errors run to dozens of lines."""
    text = str(getattr(exc, "message", None) or exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    first = scrub(first, *secrets)
    return first if len(first) <= _MAX_DETAIL else first[: _MAX_DETAIL - 3] + "..."


def _inner_error_code(exc: HttpResponseError) -> str | None:
    """Key Vault puts the useful reason (ForbiddenByRbac, AccessDenied, SecretDisabled) one level down."""
    error = getattr(exc, "error", None)
    inner = getattr(error, "innererror", None)
    if isinstance(inner, dict):
        code = inner.get("code")
        return str(code) if code else None
    return None


def describe_failure(exc: BaseException, vault_url: str, secret_name: str) -> KeyVaultAccessError:
    """Turn an SDK/credential exception into an error a person can act on.

    Pure (no IO) so every branch is cheap to reason about; the caller chains the original exception.
    """
    where = f"Key Vault {vault_url} secret '{secret_name}'"
    vault = _vault_name(vault_url)

    def error(message: str, status: int | None = None) -> KeyVaultAccessError:
        return KeyVaultAccessError(message, vault_url=vault_url, secret_name=secret_name, status_code=status)

    if isinstance(exc, ResourceNotFoundError):
        return error(
            f"{where} does not exist. Set it with: az keyvault secret set --vault-name {vault} "
            f"--name {secret_name} --value <the Autopilot API key>",
            404,
        )
    if isinstance(exc, ClientAuthenticationError):
        # Both "no credential could get a token" and "the vault rejected our token" land here.
        client_id = os.environ.get(AZURE_CLIENT_ID, "").strip()
        identity = (
            f"the user-assigned identity {AZURE_CLIENT_ID}={client_id}"
            if client_id
            else f"the system-assigned identity ({AZURE_CLIENT_ID} is not set; set it to the client id "
            "of a user-assigned identity if the app uses one)"
        )
        return error(
            f"Could not authenticate to {where}: the managed identity could not get a token the vault "
            f"accepts. Using {identity}. In Azure, check the Function App has that managed identity "
            "enabled; locally, run 'az login' (or point IDENTITY_ENDPOINT/IDENTITY_HEADER at the local "
            f"identity endpoint). Cause: {_detail(exc)}",
            401,
        )
    if isinstance(exc, HttpResponseError) and exc.status_code == 403:
        inner = _inner_error_code(exc)
        if inner == "SecretDisabled":
            return error(
                f"{where} is disabled. Enable it (az keyvault secret set-attributes --vault-name {vault} "
                f"--name {secret_name} --enabled true) or set a new version.",
                403,
            )
        return error(
            f"Access to {where} is denied ({inner or 'Forbidden'}): grant the Function App's managed "
            f'identity the "{SECRETS_USER_ROLE}" role on the vault (az role assignment create --role '
            f'"{SECRETS_USER_ROLE}" --assignee <principal id> --scope <vault resource id>); on a vault '
            "that uses access policies, give it the secret 'get' permission instead.",
            403,
        )
    if isinstance(exc, HttpResponseError):
        return error(f"Reading {where} failed with HTTP {exc.status_code}: {_detail(exc)}", exc.status_code)
    if isinstance(exc, ServiceRequestError):
        return error(
            f"Could not reach {where}: {_detail(exc)}. Check KEY_VAULT_URL, the network path to the vault "
            "(firewall, private endpoint) and, locally, REQUESTS_CA_BUNDLE.",
        )
    if isinstance(exc, ValueError) and "challenge resource" in str(exc):
        return error(
            f"{where}: the vault's authentication challenge names a resource that does not match the vault "
            f"URL ({_detail(exc)}). For a local vault set {KEY_VAULT_VERIFY_CHALLENGE_RESOURCE}=false; never "
            "in Azure.",
        )
    return error(f"Reading {where} failed: {type(exc).__name__}: {_detail(exc)}")


class KeyVaultKeySource:
    """One Key Vault secret holding an Autopilot key; satisfies ``shared.autopilot_client.ApiKeySource``.

    Cached for ``cache_seconds`` so a busy worker reads the vault a few times an hour, not per request;
    one lock serialises fetches so a crowd of threads asking at expiry causes one read, not one each.
    """

    def __init__(
        self,
        vault_url: str,
        secret_name: str,
        *,
        credential: TokenCredential | None = None,
        cache_seconds: float = 600.0,
        verify_challenge_resource: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.vault_url = vault_url.rstrip("/")
        self.secret_name = secret_name
        if urlsplit(self.vault_url).scheme != "https" or not urlsplit(self.vault_url).hostname:
            # The SDK would only refuse at the first read, with a message about bearer tokens.
            raise KeyVaultAccessError(
                f"Key Vault URL {vault_url!r} (secret '{secret_name}') must be https://<vault>.vault.azure.net",
                vault_url=vault_url,
                secret_name=secret_name,
            )
        self._credential = credential
        self._owns_credential = credential is None
        self._cache_seconds = cache_seconds
        self._verify_challenge_resource = verify_challenge_resource
        self._clock = clock
        self._lock = threading.Lock()
        self._client: SecretClient | None = None
        self._value: str | None = None
        self._version: str | None = None
        self._expires_at = 0.0
        self._generation = 0

    @property
    def version(self) -> str | None:
        """The version id of the cached key (None before the first read), for logs and tests."""
        return self._version

    def get_key(self) -> str:
        """The cached key, or the latest version if the cache is empty or older than ``cache_seconds``."""
        with self._lock:
            if self._value is not None and self._clock() < self._expires_at:
                return self._value
            return self._fetch("fetched" if self._value is None else "re-read after cache expiry")

    def refresh_key(self) -> str:
        """Re-read the latest version now (the API rejected the cached key: it was probably rotated).

        Threads that all saw the same 401 share one read: whoever waited on the lock while another
        refresh completed gets that fresh value instead of reading again.
        """
        seen = self._generation
        with self._lock:
            if self._generation != seen and self._value is not None:
                return self._value
            return self._fetch("refreshed")

    def invalidate(self) -> None:
        """Forget the cached key; the next :meth:`get_key` reads the vault."""
        with self._lock:
            self._expires_at = 0.0

    def close(self) -> None:
        """Release the HTTP session (and the credential, if this source created it)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()
        if self._owns_credential and self._credential is not None:
            close = getattr(self._credential, "close", None)
            if callable(close):
                close()
            self._credential = None

    def _secret_client(self) -> SecretClient:
        """Built on first use: constructing the credential must not fail app start-up or import."""
        if self._client is None:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            self._client = SecretClient(
                self.vault_url,
                self._credential,
                verify_challenge_resource=self._verify_challenge_resource,
            )
        return self._client

    def _fetch(self, reason: str) -> str:
        """Read the latest version (caller holds the lock); errors are translated, values never logged."""
        try:
            secret = self._secret_client().get_secret(self.secret_name)
        except Exception as exc:
            raise describe_failure(exc, self.vault_url, self.secret_name) from exc
        value: str | None = secret.value
        version: str | None = secret.properties.version
        if not value:
            raise KeyVaultAccessError(
                f"Key Vault {self.vault_url} secret '{self.secret_name}' (version {version}) is empty. "
                f"Set it with: az keyvault secret set --vault-name {_vault_name(self.vault_url)} "
                f"--name {self.secret_name} --value <the Autopilot API key>",
                vault_url=self.vault_url,
                secret_name=self.secret_name,
            )
        if self._version is not None and version != self._version:
            log.info(
                "Autopilot key %s from Key Vault secret '%s': new version %s (was %s)",
                reason,
                self.secret_name,
                version,
                self._version,
            )
        else:
            log.info(
                "Autopilot key %s from Key Vault secret '%s' version %s", reason, self.secret_name, version
            )
        self._value = value
        self._version = version
        self._expires_at = self._clock() + self._cache_seconds
        self._generation += 1
        return value


class EnvironmentKeySource:
    """The key from an environment variable, for the CLI's one-off runs from a developer's machine."""

    def __init__(self, variable: str) -> None:
        self.variable = variable
        self._value = self._read()

    def _read(self) -> str:
        value = os.environ.get(self.variable, "").strip()
        if not value:
            raise KeyNotSetError(
                f"environment variable {self.variable} is not set (it should hold the API key)"
            )
        if value.startswith(KEY_VAULT_REFERENCE_PREFIX):
            # The platform leaves the literal reference when it cannot resolve it.
            raise KeyNotSetError(
                f"environment variable {self.variable} holds an unresolved Key Vault reference: the platform "
                f'could not read the secret (grant the app\'s identity "{SECRETS_USER_ROLE}" on the vault)'
            )
        return value

    def get_key(self) -> str:
        return self._value

    def refresh_key(self) -> str:
        """Re-read the variable: nothing else can change it, but a re-exported value is picked up."""
        self._value = self._read()
        return self._value


_registry: dict[tuple[str, str], KeyVaultKeySource] = {}
_registry_lock = threading.Lock()


def key_source_for(
    vault_url: str, secret_name: str, *, cache_seconds: float, verify_challenge_resource: bool
) -> KeyVaultKeySource:
    """The process's one source for a (vault, secret): every activity shares its cache and its token.

    Key Vault names are case-insensitive, so the key is normalised; the first caller's options win.
    """
    key = (vault_url.rstrip("/").lower(), secret_name.lower())
    with _registry_lock:
        source = _registry.get(key)
        if source is None:
            source = KeyVaultKeySource(
                vault_url,
                secret_name,
                cache_seconds=cache_seconds,
                verify_challenge_resource=verify_challenge_resource,
            )
            _registry[key] = source
        return source


def reset_key_sources() -> None:
    """Close and forget every registered source (tests: the next call builds a fresh credential)."""
    with _registry_lock:
        sources = list(_registry.values())
        _registry.clear()
    for source in sources:
        source.close()
