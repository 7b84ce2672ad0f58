"""The whole local stack in one object: Azurite, a local Key Vault (HTTPS) with its managed-identity
token endpoint, a local Autopilot-compatible server, and the local runner hosting ``function_app.py``.

The demo, the end-to-end tests and the benchmarks all start the stack this way, so they exercise
the same wiring a user's `func start` or Azure deployment would: production code reading its
settings from the environment, the real SDK clients talking to real sockets.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from azure.storage.blob import BlobServiceClient

from devtools.autopilot_server import LocalAutopilot
from devtools.identity_server import LocalIdentityEndpoint
from devtools.keyvault_server import (
    CONFLICTING_IDENTITY_VARIABLES,
    LocalKeyVault,
    local_vault_environment,
    write_ca_bundle,
)
from devtools.local_host.azurite import Azurite

PROJECT_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = PROJECT_ROOT / "examples" / "exports.json"
EXPORTS_CONTAINER = "ci-exports"
RESULTS_CONTAINER = "segment-export"
FUNCTION_KEY = "local-function-key"


def example_config(requests_per_second: float) -> dict[str, Any]:
    """The shipped example configuration, with every connection paced at the local server's limit."""
    config: dict[str, Any] = json.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    for connection in config["connections"].values():
        connection["requests_per_second"] = requests_per_second
    return config


class RunnerProcess:
    """``python -m devtools.local_runner`` as a child process (so a test can kill it mid-run)."""

    def __init__(
        self,
        env: dict[str, str],
        state_dir: Path,
        *,
        port: int,
        log_path: Path,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devtools.local_runner",
                "--state-dir",
                str(state_dir),
                "--port",
                str(port),
                "--poll-interval",
                "0.5",
                *extra_args,
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self.url = self._wait_ready()

    def _wait_ready(self, timeout: float = 60.0) -> str:
        assert self.process.stdout is not None
        found: list[str] = []

        def read() -> None:
            assert self.process.stdout is not None
            for raw in self.process.stdout:
                line = raw.decode("utf-8", "replace").strip()
                if line.startswith("LOCAL_RUNNER_URL="):
                    found.append(line.split("=", 1)[1])
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not found:
            self.kill()
            raise RuntimeError(f"local runner did not start; see {self.log_path}")
        return found[0]

    def kill(self) -> None:
        """SIGKILL: what a crash looks like to the persisted state."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()


class LocalStack:
    """Start with ``with LocalStack(root) as stack:``; ``stack.env`` is what the app needs."""

    def __init__(
        self,
        root: Path,
        *,
        autopilot_rps: float | None = 10.0,
        config: dict[str, Any] | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.autopilot_rps = autopilot_rps
        self.api_key = secrets.token_urlsafe(24)
        self._config = config if config is not None else example_config(autopilot_rps or 50.0)
        self._settings = settings or {}
        self._stack = ExitStack()
        self.env: dict[str, str] = {}
        self.azurite: Azurite
        self.vault: LocalKeyVault
        self.identity: LocalIdentityEndpoint
        self.autopilot: LocalAutopilot
        self.runner: RunnerProcess | None = None

    def start(self) -> LocalStack:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.azurite = self._stack.enter_context(Azurite(self.root / "azurite"))
            self.vault = self._stack.enter_context(LocalKeyVault(state_dir=self.root / "keyvault"))
            self.identity = self._stack.enter_context(
                LocalIdentityEndpoint(secrets.token_urlsafe(16), token_for=self.vault.issue_token)
            )
            self.autopilot = self._stack.enter_context(
                LocalAutopilot(self.api_key, requests_per_second=self.autopilot_rps)
            )
            for connection in self._config["connections"].values():
                self.vault.set(connection["key_secret_name"], self.api_key)
            config_path = self.root / "exports.json"
            config_path.write_text(json.dumps(self._config, indent=2), encoding="utf-8")
            bundle = write_ca_bundle(self.root / "keyvault" / "ca-bundle.pem", self.vault.ca_pem_path)
            env = {k: v for k, v in os.environ.items() if k not in CONFLICTING_IDENTITY_VARIABLES}
            env.update(local_vault_environment(self.vault, self.identity, bundle))
            env.update(
                {
                    "AzureWebJobsStorage": self.azurite.connection_string,
                    "EXPORTS_STORAGE": self.azurite.connection_string,
                    "EXPORTS_CONTAINER": EXPORTS_CONTAINER,
                    "RESULTS_CONTAINER": RESULTS_CONTAINER,
                    "EXPORTS_CONFIG": str(config_path),
                    "AUTOPILOT_BASE_URL": self.autopilot.base_url,
                    "PYTHONPATH": str(PROJECT_ROOT),
                }
            )
            env.update(self._settings)
            self.env = env
            service = BlobServiceClient.from_connection_string(self.azurite.connection_string)
            for container in (EXPORTS_CONTAINER, RESULTS_CONTAINER):
                if not service.get_container_client(container).exists():
                    service.create_container(container)
        except BaseException:
            self._stack.close()
            raise
        return self

    def start_runner(self, *, port: int = 0, extra_args: tuple[str, ...] = ()) -> RunnerProcess:
        self.runner = RunnerProcess(
            self.env,
            self.root / "runner",
            port=port,
            log_path=self.root / "runner.log",
            extra_args=extra_args,
        )
        return self.runner

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
        self._stack.close()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def blob_service(self) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.azurite.connection_string)

    def api(self, runner_url: str | None = None) -> httpx.Client:
        url = runner_url or (self.runner.url if self.runner else "")
        return httpx.Client(base_url=f"{url}/api", headers={"x-functions-key": FUNCTION_KEY}, timeout=30)


def wait_for_runs(
    api: httpx.Client, *, count: int, timeout: float, export: str | None = None
) -> list[dict[str, Any]]:
    """Poll the runs list until ``count`` runs exist (blob polling starts them asynchronously)."""
    deadline = time.monotonic() + timeout
    params = {"export": export} if export else {}
    while True:
        runs: list[dict[str, Any]] = api.get("runs", params=params).json()["runs"]
        if len(runs) >= count or time.monotonic() > deadline:
            return runs
        time.sleep(0.3)


def wait_until_done(
    api: httpx.Client, instance_id: str, *, timeout: float, interval: float = 0.3
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = api.get(f"runs/{instance_id}").json()
        if body.get("runtime_status") not in {"Pending", "Running", "ContinuedAsNew", None}:
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"run {instance_id} still {body.get('runtime_status')} after {timeout}s: {body}"
            )
        time.sleep(interval)


def iter_container(service: BlobServiceClient, container: str, prefix: str = "") -> Iterator[str]:
    for blob in service.get_container_client(container).list_blobs(name_starts_with=prefix or None):
        yield str(blob.name)
