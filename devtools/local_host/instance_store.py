"""Files of the local task hub: one folder per instance, crash-safe without a database.

Per instance:
* ``meta.json`` -- status, pending work, inbox and the committed length of the history; replaced
  atomically (tmp + ``os.replace``). It is the commit point: whatever it does not count is ignored.
* ``history-<gen>.jsonl`` -- DTFx events, append-only, so an episode writes only its new events
  (a 10k-event history is not rewritten every episode). Bytes beyond ``history_bytes`` are the
  remains of an episode killed before its commit and are cut off on resume.
* ``inbox-<gen>.jsonl`` -- events that arrived since the last commit (activity results, fired
  timers, raised events), one line each, so a finished activity is recorded in microseconds instead
  of rewriting the metadata; the next commit folds them into ``meta.json`` and starts a new file.

A SIGKILL loses nothing that was written (the page cache survives the process); there is no fsync,
so a power cut may lose the last moments -- acceptable for a development host.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

META = "meta.json"


def _folder_name(instance_id: str) -> str:
    readable = re.sub(r"[^A-Za-z0-9._-]", "_", instance_id)[:60]
    digest = hashlib.sha256(instance_id.encode("utf-8")).hexdigest()[:16]
    return f"{readable}-{digest}"


class InstanceStore:
    """Reads and writes instance files under ``<state_dir>/instances``; no locking of its own."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "instances"

    def folder(self, instance_id: str) -> Path:
        return self.root / _folder_name(instance_id)

    def _history(self, instance_id: str, gen: int) -> Path:
        return self.folder(instance_id) / f"history-{gen}.jsonl"

    def _journal(self, instance_id: str, gen: int) -> Path:
        return self.folder(instance_id) / f"inbox-{gen}.jsonl"

    # --- writing -----------------------------------------------------------------------------
    def commit(self, meta: dict[str, Any]) -> None:
        folder = self.folder(meta["instance_id"])
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / META
        tmp = folder / f"{META}.tmp"
        tmp.write_text(json.dumps(meta, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, target)

    def append_history(self, instance_id: str, gen: int, lines: list[str]) -> int:
        """Append lines; returns the number of bytes written."""
        if not lines:
            return 0
        data = ("\n".join(lines) + "\n").encode("utf-8")
        path = self._history(instance_id, gen)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as handle:
            handle.write(data)
        return len(data)

    def append_journal(self, instance_id: str, gen: int, event: dict[str, Any]) -> None:
        path = self._journal(instance_id, gen)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as handle:
            handle.write((json.dumps(event, separators=(",", ":")) + "\n").encode("utf-8"))

    def truncate_history(self, instance_id: str, gen: int, nbytes: int) -> None:
        """Cut off events an interrupted episode appended after the last commit."""
        path = self._history(instance_id, gen)
        if path.exists() and path.stat().st_size > nbytes:
            os.truncate(path, nbytes)

    def drop_other_files(self, instance_id: str, history_gen: int, journal_gen: int) -> None:
        """Remove history/inbox files of older generations (left by a crash or a rotation)."""
        folder = self.folder(instance_id)
        keep = {f"history-{history_gen}.jsonl", f"inbox-{journal_gen}.jsonl", META}
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            if path.name not in keep and (path.suffix == ".jsonl" or path.name.endswith(".tmp")):
                path.unlink(missing_ok=True)

    def delete(self, instance_id: str) -> None:
        shutil.rmtree(self.folder(instance_id), ignore_errors=True)

    # --- reading -----------------------------------------------------------------------------
    def load_metas(self) -> list[dict[str, Any]]:
        metas: list[dict[str, Any]] = []
        if not self.root.is_dir():
            return metas
        for folder in sorted(self.root.iterdir()):
            path = folder / META
            try:
                metas.append(json.loads(path.read_text(encoding="utf-8")))
            except FileNotFoundError:
                continue  # a folder whose first commit never happened
        return metas

    def read_history(self, instance_id: str, gen: int, nbytes: int) -> list[str]:
        """The committed history lines (bytes after ``nbytes`` are ignored, never trusted)."""
        if nbytes <= 0:
            return []
        with self._history(instance_id, gen).open("rb") as handle:
            data = handle.read(nbytes)
        if len(data) != nbytes:
            raise OSError(f"history of {instance_id!r} is shorter than its committed length")
        return data.decode("utf-8").splitlines()

    def read_journal(self, instance_id: str, gen: int) -> list[dict[str, Any]]:
        """Events recorded since the last commit; a line torn by a kill is dropped (at-least-once)."""
        path = self._journal(instance_id, gen)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return []
        events: list[dict[str, Any]] = []
        for raw in data.split(b"\n"):
            if not raw.strip():
                continue
            try:
                events.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
        return events
