"""A local Key Vault-compatible HTTPS server that the unchanged ``SecretClient`` talks to.

No Key Vault emulator is installable here (specs/keyvault-local.md, section 7), and the production
code must be exercised as it runs in Azure: ``SecretClient`` + ``DefaultAzureCredential``, the
challenge flow, TLS. So this serves the secrets REST shapes over real TLS (a throwaway ``trustme``
CA), answers unauthenticated requests with the Key Vault bearer challenge, and accepts exactly the
tokens the local managed-identity endpoint (``devtools.identity_server``) issued.

The challenge names ``resource="https://0.0.1:<port>"`` by default: a literal suffix of the request
authority ``127.0.0.1:<port>``, which is all the SDK's ``verify_challenge_resource`` check asks for,
so the client needs no special options. ``resource=VAULT_AZURE_NET`` mimics Azure instead and then
needs ``verify_challenge_resource=False`` (``KEY_VAULT_VERIFY_CHALLENGE_RESOURCE=false``).

In-process (tests): ``LocalKeyVault`` and ``LocalIdentityEndpoint``; ``set``/``forbid`` directly.
As a process (local runs): ``python -m devtools.keyvault_server --secret NAME=VALUE --state-dir DIR``
prints the environment the app needs and serves until SIGTERM; ``POST /_admin/...`` changes state.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import secrets
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trustme

from devtools.identity_server import LocalIdentityEndpoint
from shared.settings import KEY_VAULT_URL, KEY_VAULT_VERIFY_CHALLENGE_RESOURCE

log = logging.getLogger(__name__)

VAULT_AZURE_NET = "https://vault.azure.net"
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
LOGIN_AUTHORITY = "https://login.microsoftonline.com"
_SECRET_NAME = re.compile(r"[0-9A-Za-z-]{1,127}")
_SECRET_ROUTE = re.compile(r"/secrets/([^/]+)(?:/([^/]*))?/?")
_ADMIN_SECRET_ROUTE = re.compile(r"/_admin/secrets/([^/]+)/?")

# Variables that would make DefaultAzureCredential pick something other than the local managed
# identity (EnvironmentCredential, workload identity, other managed-identity flavours).
CONFLICTING_IDENTITY_VARIABLES: tuple[str, ...] = (
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZURE_FEDERATED_TOKEN_FILE",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "IMDS_ENDPOINT",
    "IDENTITY_SERVER_THUMBPRINT",
)


class TokenSet:
    """Bearer tokens the vault accepts; shared with the identity endpoint that issues them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: set[str] = set()

    def issue(self, resource: str = "") -> str:
        """A fresh opaque token, accepted from now on (``resource`` is accepted for ``token_for``)."""
        token = f"local-{secrets.token_urlsafe(24)}"
        self.add(token)
        return token

    def add(self, token: str) -> None:
        with self._lock:
            self._tokens.add(token)

    def discard(self, token: str) -> None:
        with self._lock:
            self._tokens.discard(token)

    def clear(self) -> None:
        """Revoke every token: the next request gets 401 twice, i.e. ``ClientAuthenticationError``."""
        with self._lock:
            self._tokens.clear()

    def __contains__(self, token: object) -> bool:
        with self._lock:
            return token in self._tokens

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)


@dataclass(frozen=True)
class VaultRequest:
    """One request to the vault as it arrived; ``path`` excludes the query string."""

    method: str
    path: str
    had_authorization: bool
    token: str | None
    status: int


@dataclass
class _Version:
    version: str
    value: str
    created: int
    content_type: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    enabled: bool = True


def _error(code: str, message: str, inner: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if inner:
        body["innererror"] = {"code": inner}
    return {"error": body}


class _Server(ThreadingHTTPServer):
    """Threaded HTTPS server that can drop its open keep-alive connections on stop."""

    daemon_threads = True
    vault: LocalKeyVault

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext) -> None:
        super().__init__(address, _Handler)
        # Handshake lazily in the connection's own thread, so one stuck client cannot block accept().
        self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)

    def close_connections(self) -> None:
        with self._open_lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("local vault: connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("local vault: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _reply(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        vault = self.server.vault
        if url.path.startswith("/_admin/"):
            status, body = vault._admin(self.command, url.path, raw)
            self._reply(status, body)
            return
        authorization = self.headers.get("Authorization")
        token = None
        if authorization and authorization[:7].lower() == "bearer ":
            token = authorization[7:].strip()
        status, body, headers = vault._serve(self.command, url.path, parse_qs(url.query), token, raw)
        vault._record(VaultRequest(self.command, url.path, authorization is not None, token, status))
        self._reply(status, body, headers)


class LocalKeyVault:
    """``with LocalKeyVault() as vault: vault.set("api-key", "k1"); SecretClient(vault.url, ...)``.

    ``resource``: what the challenge names; default ``https://0.0.1:<port>`` (passes the SDK's default
    verification), or ``VAULT_AZURE_NET`` to look like Azure. ``state_dir``: where ``ca.pem`` goes
    (a private temporary directory if omitted).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        resource: str | None = None,
        tenant_id: str | None = None,
        ca: trustme.CA | None = None,
        state_dir: Path | None = None,
        accepted_tokens: TokenSet | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._resource = resource
        self.tenant_id = tenant_id or str(uuid.uuid4())
        self._ca = ca
        self._state_dir = state_dir
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self.accepted_tokens = accepted_tokens if accepted_tokens is not None else TokenSet()
        self._lock = threading.Lock()
        self._secrets: dict[str, tuple[str, list[_Version]]] = {}
        self._forbidden: dict[str, str] = {}
        self._forbid_all: str | None = None
        self._requests: list[VaultRequest] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ca_pem_path: Path | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> LocalKeyVault:
        if self._server is not None:
            return self
        ca = self.ca
        if self._state_dir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="local-keyvault-")
            state_dir = Path(self._tempdir.name)
        else:
            state_dir = self._state_dir
            state_dir.mkdir(parents=True, exist_ok=True)
        self._ca_pem_path = state_dir / "ca.pem"
        ca.cert_pem.write_to_path(str(self._ca_pem_path))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(self._host, "localhost").configure_cert(context)
        server = _Server((self._host, self._port), context)
        server.vault = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="local-keyvault", daemon=True
        )
        self._thread.start()
        log.info("local Key Vault listening on %s (challenge resource %s)", self.url, self.challenge_resource)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.close_connections()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> LocalKeyVault:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- addresses -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the local vault is not running: call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The vault URL, exactly as it appears in secret ids (the SDK parses names out of them)."""
        return f"https://{self._host}:{self.port}"

    @property
    def ca(self) -> trustme.CA:
        """The CA that signs this vault's certificate; pass it to a second vault to share one trust file."""
        if self._ca is None:
            self._ca = trustme.CA()
        return self._ca

    @property
    def ca_pem_path(self) -> Path:
        if self._ca_pem_path is None:
            raise RuntimeError("the local vault is not running: call start() first")
        return self._ca_pem_path

    @property
    def challenge_resource(self) -> str:
        if self._resource is not None:
            return self._resource
        # "0.0.1:<port>" is a dot-suffix of "127.0.0.1:<port>": the SDK's check is a plain endswith.
        suffix = self._host.split(".", 1)[1] if "." in self._host else self._host
        return f"https://{suffix}:{self.port}"

    @property
    def passes_default_verification(self) -> bool:
        """Whether an unchanged client (``verify_challenge_resource=True``) accepts our challenge."""
        authority = f"{self._host}:{self.port}".lower()
        resource = urlsplit(self.challenge_resource).netloc.lower()
        return authority == resource or authority.endswith("." + resource)

    @property
    def challenge(self) -> str:
        return (
            f'Bearer authorization="{LOGIN_AUTHORITY}/{self.tenant_id}", resource="{self.challenge_resource}"'
        )

    # --- state, for tests ------------------------------------------------------------------------

    def issue_token(self, resource: str = "") -> str:
        """A token this vault accepts; pass as ``LocalIdentityEndpoint(token_for=vault.issue_token)``."""
        return self.accepted_tokens.issue(resource)

    def set(self, name: str, value: str, *, content_type: str | None = None, enabled: bool = True) -> str:
        """Add a new version of ``name`` (creating it) and return the version id."""
        if not _SECRET_NAME.fullmatch(name):
            raise ValueError(f"invalid Key Vault secret name {name!r}")
        version = _Version(uuid.uuid4().hex, value, int(time.time()), content_type, {}, enabled)
        with self._lock:
            stored_name, versions = self._secrets.get(name.lower(), (name, []))
            versions.append(version)
            self._secrets[name.lower()] = (stored_name, versions)
        return version.version

    def get(self, name: str) -> str | None:
        """The latest value of ``name`` (None if absent), e.g. to check what a client PUT."""
        with self._lock:
            entry = self._secrets.get(name.lower())
            return entry[1][-1].value if entry else None

    def versions(self, name: str) -> list[str]:
        with self._lock:
            entry = self._secrets.get(name.lower())
            return [v.version for v in entry[1]] if entry else []

    def delete(self, name: str) -> None:
        with self._lock:
            self._secrets.pop(name.lower(), None)

    def forbid(self, name: str | None = None, *, code: str = "ForbiddenByRbac") -> None:
        """Answer 403 for ``name`` (or, with no name, for every secret) to authenticated callers.

        ``code`` is the inner error: ``ForbiddenByRbac`` (RBAC vaults) or ``AccessDenied`` (access policies).
        """
        with self._lock:
            if name is None:
                self._forbid_all = code
            else:
                self._forbidden[name.lower()] = code

    def allow(self) -> None:
        """Undo every :meth:`forbid`."""
        with self._lock:
            self._forbidden.clear()
            self._forbid_all = None

    @property
    def requests(self) -> list[VaultRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def reads(self, name: str) -> int:
        """How many authenticated GETs of ``name`` returned a value: what a cache should keep low."""
        return sum(
            1
            for r in self.requests
            if r.method == "GET" and r.status == 200 and _secret_of(r.path) == name.lower()
        )

    # --- request handling (called from server threads) -------------------------------------------

    def _record(self, request: VaultRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _bundle(self, name: str, version: _Version) -> dict[str, Any]:
        bundle: dict[str, Any] = {
            "value": version.value,
            "id": f"{self.url}/secrets/{name}/{version.version}",
            "attributes": {
                "enabled": version.enabled,
                "created": version.created,
                "updated": version.created,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
            "tags": dict(version.tags),
        }
        if version.content_type is not None:
            bundle["contentType"] = version.content_type
        return bundle

    def _serve(
        self, method: str, path: str, query: Mapping[str, list[str]], token: str | None, raw: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        match = _SECRET_ROUTE.fullmatch(path)
        if match is None:
            return 404, _error("NotFound", f"No route for {method} {path}"), {}
        if not query.get("api-version"):
            return 400, _error("BadParameter", "The 'api-version' query parameter is missing."), {}
        if token is None or token not in self.accepted_tokens:
            return (
                401,
                _error("Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."),
                {"WWW-Authenticate": self.challenge},
            )
        name, version = match.group(1), match.group(2) or None
        if not _SECRET_NAME.fullmatch(name):
            return 400, _error("BadParameter", "The secret name is invalid."), {}
        with self._lock:
            denied = self._forbidden.get(name.lower(), self._forbid_all)
        if denied is not None:
            message = (
                "Caller is not authorized to perform action on resource. "
                f"Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action' ({denied})"
            )
            return 403, _error("Forbidden", message, denied), {}
        if method == "GET":
            return self._get(name, version)
        if method == "PUT" and version is None:
            return self._put(name, raw)
        return 405, _error("BadParameter", f"{method} is not supported on {path}"), {}

    def _get(self, name: str, version: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            entry = self._secrets.get(name.lower())
            found = None
            if entry is not None:
                candidates = entry[1] if version is None else [v for v in entry[1] if v.version == version]
                found = candidates[-1] if candidates else None
        if entry is None or found is None:
            shown = name if version is None else f"{name}/{version}"
            message = f"A secret with (name/id) {shown} was not found in this key vault."
            return 404, _error("SecretNotFound", message), {}
        if not found.enabled:
            message = "Operation get is not allowed on a disabled secret."
            return 403, _error("Forbidden", message, "SecretDisabled"), {}
        return 200, self._bundle(entry[0], found), {}

    def _put(self, name: str, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str]]:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return 400, _error("BadParameter", "The request body is not JSON."), {}
        if not isinstance(body, dict) or not isinstance(body.get("value"), str):
            return 400, _error("BadParameter", "Property 'value' is required."), {}
        enabled = bool((body.get("attributes") or {}).get("enabled", True))
        version_id = self.set(name, body["value"], content_type=body.get("contentType"), enabled=enabled)
        with self._lock:
            stored_name, versions = self._secrets[name.lower()]
            version = next(v for v in versions if v.version == version_id)
            version.tags = {str(k): str(v) for k, v in (body.get("tags") or {}).items()}
        return 200, self._bundle(stored_name, version), {}

    def _admin(self, method: str, path: str, raw: bytes) -> tuple[int, Any]:
        """State changes for a vault running as its own process (tests call the methods directly)."""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return 400, {"error": "body is not JSON"}
        if not isinstance(body, dict):
            return 400, {"error": "body must be a JSON object"}
        secret = _ADMIN_SECRET_ROUTE.fullmatch(path)
        if method == "POST" and secret is not None:
            value = body.get("value")
            if not isinstance(value, str):
                return 400, {"error": "body needs a string 'value'"}
            try:
                version = self.set(secret.group(1), value, enabled=bool(body.get("enabled", True)))
            except ValueError as exc:
                return 400, {"error": str(exc)}
            return 200, {"name": secret.group(1), "version": version}
        if method == "POST" and path.rstrip("/") == "/_admin/forbid":
            name = body.get("name")
            self.forbid(
                name if isinstance(name, str) else None, code=str(body.get("code", "ForbiddenByRbac"))
            )
            return 200, {"forbidden": name or "*"}
        if method == "POST" and path.rstrip("/") == "/_admin/allow":
            self.allow()
            return 200, {"forbidden": None}
        if method == "GET" and path.rstrip("/") == "/_admin/requests":
            return 200, [
                {
                    "method": r.method,
                    "path": r.path,
                    "had_authorization": r.had_authorization,
                    "status": r.status,
                }
                for r in self.requests
            ]
        return 404, {"error": f"no admin route {method} {path}"}


def _secret_of(path: str) -> str | None:
    match = _SECRET_ROUTE.fullmatch(path)
    return match.group(1).lower() if match else None


# --- wiring the production code to the local servers -------------------------------------------------


def system_ca_bundles() -> list[Path]:
    """The trust stores real HTTPS calls rely on here: the OS bundle and certifi's (deduplicated)."""
    candidates = [SYSTEM_CA_BUNDLE]
    try:
        import certifi

        candidates.append(Path(certifi.where()))
    except ImportError:  # pragma: no cover - certifi comes with requests
        pass
    seen: set[Path] = set()
    bundles: list[Path] = []
    for path in candidates:
        if path.is_file() and path.resolve() not in seen:
            seen.add(path.resolve())
            bundles.append(path)
    return bundles


def write_ca_bundle(path: Path, local_ca_pem: Path, *, base_bundles: Sequence[Path] | None = None) -> Path:
    """Write the system trust store plus the local CA to ``path``.

    ``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE`` *replace* the trust store, so pointing them at the local
    CA alone would break every real HTTPS call in the same process.
    """
    parts = [
        p.read_text(encoding="utf-8") for p in (system_ca_bundles() if base_bundles is None else base_bundles)
    ]
    parts.append(local_ca_pem.read_text(encoding="utf-8"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(part.rstrip("\n") for part in parts) + "\n", encoding="utf-8")
    return path


def local_vault_environment(
    vault: LocalKeyVault, identity: LocalIdentityEndpoint, bundle_path: Path
) -> dict[str, str]:
    """The environment under which the production code reaches the local vault without any change.

    Also unset :data:`CONFLICTING_IDENTITY_VARIABLES`, or another credential may win first.
    """
    bundle = str(bundle_path)
    return {
        KEY_VAULT_URL: vault.url,
        "IDENTITY_ENDPOINT": identity.endpoint,
        "IDENTITY_HEADER": identity.header_secret,
        "REQUESTS_CA_BUNDLE": bundle,
        "SSL_CERT_FILE": bundle,
        "CURL_CA_BUNDLE": bundle,
        "AZURE_TOKEN_CREDENTIALS": "ManagedIdentityCredential",
        KEY_VAULT_VERIFY_CHALLENGE_RESOURCE: "true" if vault.passes_default_verification else "false",
    }


def _parse_secret(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not _SECRET_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE with a valid secret name, got {name!r}")
    return name, value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.keyvault_server",
        description="Serve a local Key Vault and managed-identity endpoint; print the app's environment.",
    )
    parser.add_argument("--secret", action="append", default=[], type=_parse_secret, metavar="NAME=VALUE")
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="Where ca.pem, ca-bundle.pem and keyvault.env go."
    )
    parser.add_argument("--port", type=int, default=0, help="Vault port (default: a free one).")
    parser.add_argument("--identity-port", type=int, default=0)
    parser.add_argument(
        "--azure-resource",
        action="store_true",
        help=f"Challenge with {VAULT_AZURE_NET} (needs {KEY_VAULT_VERIFY_CHALLENGE_RESOURCE}=false).",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    state_dir: Path = args.state_dir
    vault = LocalKeyVault(
        port=args.port, resource=VAULT_AZURE_NET if args.azure_resource else None, state_dir=state_dir
    )
    identity = LocalIdentityEndpoint(
        secrets.token_urlsafe(16), token_for=vault.issue_token, port=args.identity_port
    )
    with vault, identity:
        for name, value in args.secret:
            vault.set(name, value)
        bundle = write_ca_bundle(state_dir / "ca-bundle.pem", vault.ca_pem_path)
        env = local_vault_environment(vault, identity, bundle)
        lines = [f"{key}={value}" for key, value in env.items()]
        (state_dir / "keyvault.env").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print("\n".join(lines), flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
