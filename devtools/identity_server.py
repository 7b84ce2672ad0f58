"""A local App Service managed-identity endpoint, so ``DefaultAzureCredential`` runs unchanged in tests.

Setting ``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER`` makes azure-identity (and MSAL) believe they run in
App Service / Functions and ask this endpoint for tokens, exactly as they ask the platform in Azure.
The tokens it hands out come from ``token_for`` (normally ``LocalKeyVault.issue_token``), so the local
vault accepts exactly the tokens the production credential obtained. Plain HTTP on 127.0.0.1: the
real endpoint is plain HTTP on the sandbox's loopback too.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger(__name__)

TOKEN_PATH = "/msi/token"
TOKEN_LIFETIME_SECONDS = 3600


@dataclass(frozen=True)
class TokenRequest:
    """One call to the endpoint, for tests that assert who asked for what (never the token itself)."""

    resource: str
    client_id: str | None
    header_ok: bool
    status: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    endpoint: LocalIdentityEndpoint

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("identity endpoint: connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("identity endpoint: " + format, *args)

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def do_GET(self) -> None:
        self._drain()
        endpoint = self.server.endpoint
        url = urlsplit(self.path)
        if url.path.rstrip("/") != TOKEN_PATH:
            self._reply(404, {"statusCode": 404, "message": f"No route for {url.path}"})
            return
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        resource = query.get("resource", "")
        client_id = query.get("client_id")
        header_ok = self.headers.get("X-IDENTITY-HEADER") == endpoint.header_secret
        if not header_ok:
            status, body = 400, {"statusCode": 400, "message": "X-IDENTITY-HEADER is missing or wrong"}
        elif not query.get("api-version"):
            status, body = 400, {"statusCode": 400, "message": "api-version is required"}
        elif not resource:
            status, body = 400, {"statusCode": 400, "message": "resource is required"}
        elif (
            endpoint.client_ids is not None and client_id is not None and client_id not in endpoint.client_ids
        ):
            status, body = 400, {"statusCode": 400, "message": f"No identity with client_id {client_id}"}
        else:
            status = 200
            body = {
                "access_token": endpoint.token_for(resource),
                "expires_on": str(int(time.time()) + TOKEN_LIFETIME_SECONDS),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": client_id or endpoint.default_client_id,
            }
        endpoint._record(TokenRequest(resource, client_id, header_ok, status))
        self._reply(status, body)


class LocalIdentityEndpoint:
    """``with LocalIdentityEndpoint("shared-header", token_for=vault.issue_token) as mi: mi.endpoint``.

    ``client_ids``: if given, a request naming another ``client_id`` (a user-assigned identity the app
    does not have) is refused with 400, as App Service does.
    """

    def __init__(
        self,
        header_secret: str,
        *,
        token_for: Callable[[str], str],
        host: str = "127.0.0.1",
        port: int = 0,
        client_ids: set[str] | None = None,
        default_client_id: str = "00000000-0000-0000-0000-00000000c11d",
    ) -> None:
        self.header_secret = header_secret
        self.token_for = token_for
        self.client_ids = client_ids
        self.default_client_id = default_client_id
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the identity endpoint is not running: call start() first")
        return int(self._server.server_address[1])

    @property
    def endpoint(self) -> str:
        """The ``IDENTITY_ENDPOINT`` value."""
        return f"http://{self._host}:{self.port}{TOKEN_PATH}"

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def start(self) -> LocalIdentityEndpoint:
        if self._server is None:
            server = _Server((self._host, self._port), _Handler)
            server.endpoint = self
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="identity-endpoint",
                daemon=True,
            )
            self._thread.start()
            log.info("local identity endpoint listening on %s", self.endpoint)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalIdentityEndpoint:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
