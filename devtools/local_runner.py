"""Host ``function_app.py`` on this machine, where Core Tools (``func``) cannot be installed.

The app's own functions run unchanged: HTTP routes on 127.0.0.1:7071 under ``/api``, the timer,
the blob trigger fed by polling the exports container, and the orchestrations replayed by
azure-functions-durable's own engine over a history persisted in ``--state-dir``, so a killed
runner resumes its runs on restart. Settings come from the environment, as app settings would.

    python -m devtools.local_runner --state-dir .local/runner [--port 7071]

prints ``LOCAL_RUNNER_URL=http://127.0.0.1:<port>`` once it serves, and runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from devtools.local_host.durable_engine import DurableEngine
from devtools.local_host.functions_host import LocalFunctionsHost

log = logging.getLogger("devtools.local_runner")

DEFAULT_FUNCTION_KEY = "local-function-key"


class LocalRunner:
    """The engine and the Functions host around one app module, started and stopped together."""

    def __init__(
        self,
        state_dir: Path,
        *,
        app_module: str = "function_app",
        http_port: int = 7071,
        poll_interval: float = 2.0,
        activity_workers: int = 8,
        function_key: str = DEFAULT_FUNCTION_KEY,
        run_timers: bool = True,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        env = dict(os.environ if environ is None else environ)
        connection = env.get("EXPORTS_STORAGE") or env.get("AzureWebJobsStorage")
        if not connection:
            raise RuntimeError(
                "set AzureWebJobsStorage (e.g. Azurite's connection string) before starting the runner"
            )
        self.module: ModuleType = importlib.import_module(app_module)
        app: Any = self.module.app
        state_dir.mkdir(parents=True, exist_ok=True)
        self.engine = DurableEngine(app, state_dir / "durable", activity_workers=activity_workers)
        settings = {k: v for k, v in env.items() if isinstance(v, str)}
        settings.setdefault("EXPORTS_CONTAINER", "ci-exports")
        self.host = LocalFunctionsHost(
            app,
            self.engine,
            blob_connection_string=connection,
            state_dir=state_dir / "host",
            http_port=http_port,
            poll_interval=poll_interval,
            function_key=function_key,
            app_settings=settings,
            run_timers=run_timers,
        )

    @property
    def url(self) -> str:
        return str(self.host.url)

    def start(self) -> None:
        self.engine.start()
        self.host.start()

    def stop(self) -> None:
        self.host.stop()
        self.engine.stop()

    def __enter__(self) -> LocalRunner:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.local_runner", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--state-dir", type=Path, default=Path(".local/runner"))
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--activity-workers", type=int, default=8)
    parser.add_argument("--function-key", default=DEFAULT_FUNCTION_KEY)
    parser.add_argument("--no-timers", action="store_true", help="do not fire timer triggers")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("azure", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sys.path.insert(0, str(Path.cwd()))
    runner = LocalRunner(
        args.state_dir,
        http_port=args.port,
        poll_interval=args.poll_interval,
        activity_workers=args.activity_workers,
        function_key=args.function_key,
        run_timers=not args.no_timers,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runner.start()
    print(f"LOCAL_RUNNER_URL={runner.url}", flush=True)
    try:
        stop.wait()
    finally:
        runner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
