"""The plan activity over an export in Azurite, in a process of its own so its peak RSS is its own.

The child runs exactly what the ``plan_run`` activity runs - ``shared.activities.plan`` with an
``AppContext`` built from the same settings the runner reads - so it streams the partitions from
Azurite through ``BlobStore.open_read`` and stages the batches with ``BlobStaging``. Only the
activity's time is measured (not the imports), and the peak RSS is the process's ``ru_maxrss``.

    python -m benchmarks.plan --connection-string S --config exports.json --export E
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from devtools.local_host.azurite import Azurite
from devtools.local_stack import EXPORTS_CONTAINER, PROJECT_ROOT, RESULTS_CONTAINER, example_config
from devtools.sample_data import GeneratedRun

EXPORT = "HighValue"


def _rss_mb() -> float:
    """This process's peak resident set (MB): ``VmHWM``, which starts afresh at exec.

    ``ru_maxrss`` would not do: Linux carries it across exec, so a child started by a big parent
    reports the parent's size at fork time as its own peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def child(connection_string: str, config: str, export: str) -> dict[str, Any]:
    """Runs in the measured process: resolve the latest run as a trigger would, then plan it."""
    from shared.activities import build_context, plan
    from shared.runs import latest_runs
    from shared.settings import Settings
    from shared.starter import orchestration_input

    settings = Settings(
        storage_connection_string=connection_string,
        exports_container=EXPORTS_CONTAINER,
        results_container=RESULTS_CONTAINER,
        exports_config=config,
    )
    ctx = build_context(settings)
    (run,) = latest_runs(ctx.config, ctx.exports, export, settings.exports_container)
    run_input = orchestration_input(run, ctx.config, settings, trigger="benchmark")["run"]
    baseline = _rss_mb()
    cpu = time.process_time()
    started = time.perf_counter()
    result = plan(ctx, run_input)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": _rss_mb(),
        "result": result,
    }


def _azurite_process(psutil: Any, location: Path) -> Any:
    """Azurite's node process (a child of this one), to read the CPU time it spends serving the plan."""
    for process in psutil.Process().children(recursive=True):
        try:
            if str(location) in " ".join(process.cmdline()):
                return process
        except psutil.Error:
            continue
    return None


def measure(work: Path, generated: GeneratedRun, export_folder: Path) -> dict[str, Any]:
    """Upload the export into a fresh Azurite, plan it in a child process, check the counts."""
    import psutil

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    config_path = work / "exports.json"
    config_path.write_text(json.dumps(example_config(5.0)), encoding="utf-8")
    names = (*generated.partition_blobs, generated.model_json_blob)
    size = sum((export_folder / name).stat().st_size for name in generated.partition_blobs)
    with Azurite(work / "azurite") as azurite:
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        for container in (EXPORTS_CONTAINER, RESULTS_CONTAINER):
            service.create_container(container)
        exports = service.get_container_client(EXPORTS_CONTAINER)
        for name in names:
            with (export_folder / name).open("rb") as handle:
                exports.upload_blob(name, handle, overwrite=True, max_concurrency=2)
        node = _azurite_process(psutil, work / "azurite")
        azurite_cpu = sum(node.cpu_times()[:2]) if node else 0.0
        completed = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.plan",
                "--connection-string",
                azurite.connection_string,
                "--config",
                str(config_path),
                "--export",
                EXPORT,
            ],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=1800,
            check=False,
        )
        azurite_cpu = (sum(node.cpu_times()[:2]) - azurite_cpu) if node else float("nan")
    if completed.returncode != 0:
        raise RuntimeError(f"plan child failed: {completed.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    result = data["result"]
    expected = generated.expected
    problems = []
    if result.get("error"):
        problems.append(f"plan failed: {result['error']}")
    want = {
        "rows_read": expected.rows,
        "staged": expected.unique_valid,
        "invalid_email": expected.invalid_email,
        "missing_email": expected.missing_email,
        "duplicate_email": expected.duplicate_email,
    }
    got = {
        "rows_read": result.get("rows_read"),
        "staged": result.get("staged"),
        **{
            k: result.get("rejected", {}).get(k, 0)
            for k in ("invalid_email", "missing_email", "duplicate_email")
        },
    }
    problems += [f"{k}: planned {got[k]}, generated {v}" for k, v in want.items() if got[k] != v]
    data.update(
        {
            "rows": expected.rows,
            "bytes": size,
            "mb_per_s": size / 1e6 / data["seconds"],
            "azurite_cpu_seconds": azurite_cpu,
            "problems": problems,
        }
    )
    data["result"] = {k: v for k, v in result.items() if k != "files"}
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--connection-string", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--export", default=EXPORT)
    args = parser.parse_args(argv)
    print(json.dumps(child(args.connection_string, args.config, args.export)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
