"""Azurite's blob service, started from the project's own npm install, for tests and the local runner.

Azurite is the storage the local stack talks to instead of Azure: it listens on 127.0.0.1 only, on a
port the OS picks (``--blobPort 0``; the real port is read back from its start-up line, so two test
workers never race for one port), and keeps its files in a directory we own.
"""

from __future__ import annotations

import http.client
import logging
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT_NAME = "devstoreaccount1"
# Azurite's documented, public development key: not a secret, but still never logged with the URL.
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
_LISTENING = re.compile(r"successfully listens on https?://[^:\s]+:(\d+)")


class AzuriteError(RuntimeError):
    """Azurite could not be started (not installed, crashed, or never answered)."""


def connection_string(blob_port: int, host: str = "127.0.0.1") -> str:
    """The connection string the storage SDK and the Functions host accept for a local Azurite."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{ACCOUNT_NAME};"
    )


class Azurite:
    """One Azurite blob service process; ``with Azurite() as az: az.connection_string``."""

    def __init__(
        self,
        location: Path | None = None,
        *,
        project_root: Path = PROJECT_ROOT,
        startup_timeout: float = 30.0,
    ) -> None:
        self._project_root = project_root
        self._location = location
        self._startup_timeout = startup_timeout
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[str] | None = None
        self._output: deque[str] = deque(maxlen=50)
        self._port: int | None = None
        self._port_seen = threading.Event()
        self._drainer: threading.Thread | None = None

    @property
    def executable(self) -> Path:
        return self._project_root / "node_modules" / ".bin" / "azurite-blob"

    @property
    def blob_port(self) -> int:
        if self._port is None:
            raise AzuriteError("Azurite is not running: call start() first")
        return self._port

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.blob_port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port)

    def start(self) -> Azurite:
        if self._process is not None:
            return self
        executable = self.executable
        if not executable.exists():
            raise AzuriteError(
                f"Azurite is not installed ({executable} is missing): run `npm ci` in {self._project_root}"
            )
        if shutil.which("node") is None:
            raise AzuriteError("Azurite needs Node.js, and `node` is not on PATH")
        location = self._location
        if location is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="azurite-")
            location = Path(self._tempdir.name)
        location.mkdir(parents=True, exist_ok=True)
        command = [
            str(executable),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            "0",
            "--location",
            str(location),
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
            "--disableTelemetry",
        ]
        self._process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=str(location),
        )
        self._drainer = threading.Thread(
            target=self._drain, args=(self._process,), name="azurite-output", daemon=True
        )
        self._drainer.start()
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        log.info("Azurite blob service listening on 127.0.0.1:%s", self._port)
        return self

    def _drain(self, process: subprocess.Popen[str]) -> None:
        """Keep reading Azurite's output: it tells us the port, and a full pipe would block it."""
        if process.stdout is None:
            return
        for line in process.stdout:
            self._output.append(line.rstrip())
            match = _LISTENING.search(line)
            if match and self._port is None:
                self._port = int(match.group(1))
                self._port_seen.set()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        process = self._process
        assert process is not None
        while not self._port_seen.wait(0.05):
            if process.poll() is not None:
                raise AzuriteError(f"Azurite exited with code {process.returncode}: {self._recent_output()}")
            if time.monotonic() > deadline:
                raise AzuriteError(
                    f"Azurite did not start within {self._startup_timeout:.0f}s: {self._recent_output()}"
                )
        while not self._answers():
            if process.poll() is not None:
                raise AzuriteError(f"Azurite exited with code {process.returncode}: {self._recent_output()}")
            if time.monotonic() > deadline:
                raise AzuriteError(f"Azurite did not answer within {self._startup_timeout:.0f}s")
            time.sleep(0.05)

    def _answers(self) -> bool:
        """Any HTTP answer (even 403 to an unsigned request) means the service is up."""
        connection = http.client.HTTPConnection("127.0.0.1", self.blob_port, timeout=2)
        try:
            connection.request("GET", f"/{ACCOUNT_NAME}?comp=list")
            connection.getresponse().read()
            return True
        except OSError:
            return False
        finally:
            connection.close()

    def _recent_output(self) -> str:
        return " | ".join(self._output) or "(no output)"

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        drainer, self._drainer = self._drainer, None
        if drainer is not None:
            drainer.join(timeout=5)
        if process is not None and process.stdout is not None and not (drainer and drainer.is_alive()):
            process.stdout.close()
        self._port = None
        self._port_seen.clear()
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
