"""Append-only local buffer of tracking records: nothing logged is lost while MLflow is unreachable.

Every ``RunTracker`` call becomes one or more *records* appended to ``<buffer_dir>/records.jsonl``
(one JSON object per line, fsync'd per call) before anything is sent to MLflow. Each record has a
monotonically increasing ``seq``. ``<buffer_dir>/state.json`` (replaced atomically) stores, per
tracking URI, the run id found or created there and ``acked_seq``: every record with ``seq <= acked_seq``
has been acknowledged by that MLflow backend. A restarted process with the same ``buffer_dir`` reloads
the records after ``acked_seq`` and sends them; a batch that was sent but not yet acknowledged when the
process died is sent again, which MLflow deduplicates (metrics are keyed by key, value, step and the
original timestamp stored in the record; identical params and tags are no-ops; artifacts overwrite).

Record kinds (field ``k``): ``metric`` (key, value, step, ts), ``param`` (key, value), ``tag`` (key,
value), ``artifact`` (local path relative to the buffer or absolute, artifact_path), ``status``
(terminal status and end time, written by ``close``).
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from evaluation.filelock import FileLock, LockBusyError
from evaluation.files import atomic_write_json

_log = logging.getLogger(__name__)

RECORDS_FILE = "records.jsonl"
STATE_FILE = "state.json"
LOCK_FILE = ".lock"
REJECTED_FILE = "rejected.jsonl"
STAGED_DIR = "staged"
STATE_VERSION = 1

# MLflow 3.17 limits (mlflow/utils/validation.py).
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000

_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


class TrackingBufferError(RuntimeError):
    """The buffer directory belongs to another run or cannot be read/written."""


class BufferInUseError(TrackingBufferError):
    """Another live tracker (this process or another) holds the buffer directory's lock."""


def sanitize_key(key: str) -> str:
    """Map any string to a valid MLflow metric/param/tag key.

    Allowed characters are alphanumerics, ``_ - . : /`` and space; anything else becomes ``_``.
    Keys must also survive ``posixpath.normpath`` unchanged (no empty, ``.`` or ``..`` segments, no
    leading or trailing slash) and be at most 250 characters long.
    """
    cleaned = _BAD_KEY_CHARS.sub("_", str(key).strip())
    parts = []
    for part in cleaned.split("/"):
        if part in ("", "."):
            continue
        parts.append("__" if part == ".." else part)
    out = "/".join(parts) or "_"
    if out.startswith(".."):
        out = "__" + out[2:]
    out = out[:MAX_KEY_LENGTH]
    # Truncation may leave a trailing "/" or "/." segment: normalise again.
    while out != posixpath.normpath(out):
        out = out.rstrip("/.") or "_"
    return out


def _atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj, indent=1, sort_keys=True)


class RecordBuffer:
    """The on-disk buffer of one run (see the module docstring). Thread-safe appends."""

    def __init__(self, buffer_dir: Path, experiment: str, run_name: str) -> None:
        self.dir = Path(buffer_dir).resolve()
        self.experiment = experiment
        self.run_name = run_name
        self._lock = threading.Lock()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / STAGED_DIR).mkdir(exist_ok=True)
        except OSError as e:
            raise TrackingBufferError(
                f"cannot create the tracking buffer directory {self.dir}: {e}; pass a writable buffer_dir"
            ) from e
        self._lock_file = self._acquire_lock()
        self.records_path = self.dir / RECORDS_FILE
        self.state_path = self.dir / STATE_FILE
        try:
            self.state = self._load_state()
            self._records = self._load_records()
        except BaseException:
            self._lock_file.release()
            raise
        self.next_seq = (self._records[-1]["seq"] + 1) if self._records else 1
        self._file = open(self.records_path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def _acquire_lock(self) -> FileLock:
        """An exclusive flock on ``.lock``: one writer per buffer (released by close or process death)."""
        try:
            return FileLock(self.dir / LOCK_FILE).acquire()
        except LockBusyError as e:
            raise BufferInUseError(
                f"tracking buffer {self.dir} is in use by another tracker ({e.holder})"
            ) from e

    # ---- state -------------------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        if not self.state_path.exists():
            state = {
                "version": STATE_VERSION,
                "experiment": self.experiment,
                "run_name": self.run_name,
                "created_ms": int(time.time() * 1000),
                "targets": {},
            }
            _atomic_write_json(self.state_path, state)
            return state
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise TrackingBufferError(
                f"unreadable tracking buffer state {self.state_path}: {e}; "
                f"delete {self.dir} only if its records were uploaded"
            ) from e
        if (state.get("experiment"), state.get("run_name")) != (self.experiment, self.run_name):
            raise TrackingBufferError(
                f"tracking buffer {self.dir} belongs to experiment {state.get('experiment')!r} run "
                f"{state.get('run_name')!r}, not {self.experiment!r} / {self.run_name!r}: use one buffer_dir per run"
            )
        return state

    def target(self, tracking_uri: str) -> dict[str, Any]:
        """Per-URI progress: ``{"run_id": str | None, "experiment_id": str | None, "acked_seq": int}``."""
        targets = self.state.setdefault("targets", {})
        return targets.setdefault(tracking_uri, {"run_id": None, "experiment_id": None, "acked_seq": 0})

    def save_target(self, tracking_uri: str, **fields: Any) -> None:
        with self._lock:
            self.target(tracking_uri).update(fields)
            _atomic_write_json(self.state_path, self.state)

    # ---- records -----------------------------------------------------------------------------------
    def _load_records(self) -> list[dict[str, Any]]:
        if not self.records_path.exists():
            return []
        raw = self.records_path.read_bytes()
        end = raw.rfind(b"\n") + 1
        if end < len(raw):
            # A process died mid-append: the torn tail was never acknowledged by fsync; drop it so
            # the next append starts on a fresh line.
            _log.warning(
                "tracking buffer %s: dropping a torn last record (%d bytes)",
                self.records_path,
                len(raw) - end,
            )
            with open(self.records_path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        return self._parse(raw[:end])

    def _parse(self, raw: bytes) -> list[dict[str, Any]]:
        records = []
        for lineno, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as e:
                raise TrackingBufferError(
                    f"corrupt record at {self.records_path}:{lineno}: {e}; fix or remove that line"
                ) from e
        return records

    def read_all(self) -> list[dict[str, Any]]:
        """Every complete record in the file, including those appended by this process."""
        with self._lock:
            raw = self.records_path.read_bytes() if self.records_path.exists() else b""
        return self._parse(raw[: raw.rfind(b"\n") + 1])

    def take_loaded_after(self, seq: int) -> list[dict[str, Any]]:
        """Records after ``seq`` among those on disk when the buffer was opened (once; frees them)."""
        records, self._records = self._records, []
        return [r for r in records if r["seq"] > seq]

    def append(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Assign sequence numbers, append and fsync. Returns the records with their ``seq``."""
        with self._lock:
            lines = []
            for rec in records:
                rec["seq"] = self.next_seq
                self.next_seq += 1
                lines.append(json.dumps(rec, separators=(",", ":"), allow_nan=True))
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        return records

    def stage_dir(self) -> Path:
        """A fresh directory inside the buffer for a copy of an artifact."""
        d = self.dir / STAGED_DIR / f"{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:8]}"
        d.mkdir(parents=True)
        return d

    def stage_artifact(self, path: Path) -> str:
        """Copy a file or directory into the buffer; returns its path relative to the buffer dir."""
        dest = self.stage_dir() / path.name
        if path.is_dir():
            shutil.copytree(path, dest)
        else:
            shutil.copy2(path, dest)
        return dest.relative_to(self.dir).as_posix()

    def resolve_local(self, local: str) -> Path:
        p = Path(local)
        return p if p.is_absolute() else self.dir / p

    def reject(self, record: dict[str, Any], reason: str) -> None:
        """Keep a record that MLflow refused permanently (invalid value) beside the buffer."""
        with self._lock, open(self.dir / REJECTED_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps({"record": record, "reason": reason[:2000]}) + "\n")

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()
            self._lock_file.release()
