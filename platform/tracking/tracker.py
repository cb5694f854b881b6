"""``RunTracker``: one buffered, outage-proof MLflow writer per run (the package docstring,
``platform.tracking``, describes the behaviour)."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from platform.tracking.buffer import BufferInUseError, RecordBuffer, sanitize_key
from platform.tracking.params import param_str
from platform.tracking.upload import (
    UPLOAD_THREAD_PREFIX,
    MlflowSink,
    describe_error,
    install_log_filter,
    probe_http,
)

_log = logging.getLogger("platform.tracking")

TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
DEFAULT_EXPERIMENT = "minidiffuser"
MAX_BACKOFF_S = 60.0
# A training run's buffers live side by side under <run dir>/mlflow_buffer/ (driver, worker, worker.pid...).
BUFFER_ROOT = "mlflow_buffer"


def default_tracking_uri(repo_root: Path) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:////<absolute repo root>/mlflow.db``.

    Absolute because every Ray actor has its own working directory.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return env or f"sqlite:///{Path(repo_root).resolve() / 'mlflow.db'}"


def default_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """``<dir of the sqlite file>/mlartifacts/<experiment>`` for a sqlite URI; None (server decides) else."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db_path = Path(tracking_uri.removeprefix("sqlite:///"))
    if not db_path.is_absolute():
        raise ValueError(
            f"tracking URI {tracking_uri!r} is relative: use sqlite:////<absolute path>/mlflow.db (four slashes)"
        )
    return str(db_path.parent / "mlartifacts" / re.sub(r"[^\w.-]", "_", experiment))


def sync_root(buffer_dir: Path) -> Path:
    """What to pass to ``sync`` for this buffer: the run's ``mlflow_buffer`` folder (all its writers' buffers)
    when the buffer lies in one, else the buffer itself."""
    buffer_dir = Path(buffer_dir)
    return buffer_dir.parent if buffer_dir.parent.name == BUFFER_ROOT else buffer_dir


class RunTracker:
    """One MLflow run written through a local buffer and a background upload thread."""

    def __init__(
        self, buffer: RecordBuffer, sink: MlflowSink, upload_interval_s: float, replay: bool
    ) -> None:
        self._buffer, self._sink, self._replay = buffer, sink, replay
        self._interval = upload_interval_s
        self._cv = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._flush_asked = self._flush_done = 0
        self._connected = self._outage = self._closing = self._stopping = self._closed = False
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._renamed: set[str] = set()
        self._thread = threading.Thread(
            target=self._run, name=f"{UPLOAD_THREAD_PREFIX}-{buffer.run_name}", daemon=True
        )

    # ---- construction ----------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        buffer_dir: Path,
        tags: Mapping[str, str] | None = None,
        parent_run_id: str | None = None,
        *,
        artifact_location: str | None = None,
        connect_timeout_s: float = 30.0,
        upload_interval_s: float = 2.0,
    ) -> RunTracker:
        """Continue the run named ``run_name`` in ``experiment`` (or create it); never fails on outages.

        Waits up to ``connect_timeout_s`` for MLflow; after that ``run_id`` may still be None.
        """
        tags = {sanitize_key(k): str(v) for k, v in (tags or {}).items()}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        tracker = cls._build(tracking_uri, experiment, run_name, buffer_dir, tags, artifact_location,
                             upload_interval_s, replay=False, sibling_if_busy=True)  # fmt: skip
        if tags:
            tracker._enqueue([{"k": "tag", "key": k, "value": v} for k, v in tags.items()])
        tracker._thread.start()
        tracker.flush(timeout_s=connect_timeout_s)
        return tracker

    @classmethod
    def _build(cls, tracking_uri: str, experiment: str, run_name: str, buffer_dir: Path,
               tags: dict[str, str], artifact_location: str | None, upload_interval_s: float,
               replay: bool, sibling_if_busy: bool) -> RunTracker:  # fmt: skip
        if not experiment or not run_name:
            raise ValueError(f"experiment and run_name must be non-empty (got {experiment!r}, {run_name!r})")
        if "'" in run_name and '"' in run_name:
            raise ValueError(f"run name {run_name!r} contains both quote characters; MLflow cannot search it")
        install_log_filter()
        try:
            buffer = RecordBuffer(Path(buffer_dir), experiment, run_name)
        except BufferInUseError as e:
            if not sibling_if_busy:
                raise
            # e.g. a restarted train worker while the old one is still shutting down: log to a sibling
            # buffer rather than interleave two writers; nothing is lost, it is uploaded from there.
            sibling = Path(buffer_dir).with_name(f"{Path(buffer_dir).name}.pid{os.getpid()}-{time.time_ns()}")
            _log.warning("%s; this tracker buffers to %s instead (sync it if its process dies)", e, sibling)
            buffer = RecordBuffer(sibling, experiment, run_name)
        location = artifact_location or default_artifact_location(tracking_uri, experiment)
        sink = MlflowSink(tracking_uri, experiment, run_name, buffer, location, tags)
        tracker = cls(buffer, sink, upload_interval_s, replay)
        tracker._pending = tracker._keep(buffer.take_loaded_after(buffer.target(tracking_uri)["acked_seq"]))
        return tracker

    def _keep(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # A terminal status left by an earlier process is obsolete once the run is continued.
        return records if self._replay else [r for r in records if r["k"] != "status"]

    # ---- properties ------------------------------------------------------------------------------------
    @property
    def run_id(self) -> str | None:
        """The MLflow run id, or None while MLflow has not been reached yet."""
        return self._sink.run_id or self._buffer.target(self._sink.tracking_uri).get("run_id")

    @property
    def experiment_id(self) -> str | None:
        return self._sink.experiment_id or self._buffer.target(self._sink.tracking_uri).get("experiment_id")

    @property
    def tracking_uri(self) -> str:
        return self._sink.tracking_uri

    @property
    def run_name(self) -> str:
        return self._buffer.run_name

    @property
    def buffer_dir(self) -> Path:
        return self._buffer.dir

    def has_metric(self, key: str, step: int) -> bool | None:
        """Whether the MLflow run holds metric ``key`` at ``step``, logged by anyone (another writer of the run
        included) in any session: asked of MLflow now, or None when MLflow cannot be reached. A pair the run
        holds is never sent again by this tracker."""
        key = sanitize_key(key)
        run_id = self.run_id
        if run_id is None:
            return None
        try:
            from mlflow.tracking import MlflowClient

            probe_http(self.tracking_uri)  # MLflow's own client retries a dead server for minutes
            history = MlflowClient(tracking_uri=self.tracking_uri).get_metric_history(run_id, key)
        except Exception:  # an outage: what this tracker knows
            return self._sink.has_metric(key, step)
        if any(int(m.step) == int(step) for m in history):
            self._sink.note_logged(key, step)
            return True
        return bool(self._sink.has_metric(key, step))

    @property
    def pending_count(self) -> int:
        """Records written to the buffer but not yet acknowledged by MLflow."""
        with self._cv:
            return len(self._pending)

    # ---- logging (never blocks on MLflow) --------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        self._enqueue([{"k": "param", "key": self._key(k), "value": param_str(v)} for k, v in params.items()])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._enqueue([{"k": "tag", "key": self._key(k), "value": str(v)} for k, v in tags.items()])

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        ts = int(time.time() * 1000)
        records = []
        for key, value in metrics.items():
            try:
                number = float(value)
            except (TypeError, ValueError) as e:
                raise TypeError(
                    f"metric {key!r} must be a number, got {type(value).__name__}: {value!r}"
                ) from e
            records.append(
                {"k": "metric", "key": self._key(key), "value": number, "step": int(step), "ts": ts}
            )
        self._enqueue(records)

    def log_artifact(self, path: Path | str, artifact_path: str | None = None, copy: bool = True) -> None:
        """Upload a file or directory. ``copy`` keeps a copy in the buffer until it is uploaded (pass
        False for big files that stay in place)."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"artifact {path} does not exist")
        local = self._buffer.stage_artifact(path) if copy else str(path.resolve())
        self._enqueue([{"k": "artifact", "local": local, "artifact_path": artifact_path, "key": path.name}])

    def log_text(self, text: str, name: str) -> None:
        """Write ``text`` as artifact ``name`` (may contain folders: ``eval/report.md``)."""
        parent, _, base = name.strip("/").rpartition("/")
        staged = self._buffer.stage_dir() / base
        staged.write_text(text, encoding="utf-8")
        local = staged.relative_to(self._buffer.dir).as_posix()
        self._enqueue([{"k": "artifact", "local": local, "artifact_path": parent or None, "key": base}])

    def log_dict(self, obj: Any, name: str) -> None:
        """Write ``obj`` as JSON (or YAML for ``.yaml``/``.yml`` names) artifact ``name``."""
        if name.endswith((".yaml", ".yml")):
            import yaml

            text = yaml.safe_dump(json.loads(json.dumps(obj, default=str)), sort_keys=False)
        else:
            text = json.dumps(obj, indent=2, default=str)
        self.log_text(text, name)

    def history(self, prefixes: tuple[str, ...] = ("train/loss", "eval/success")) -> list[dict[str, float]]:
        """Metrics whose name starts with one of ``prefixes``, per step, from the whole buffer (all
        sessions of this run): ``[{"step": s, "train/loss": ...}, ...]`` sorted by step."""
        rows: dict[int, dict[str, float]] = {}
        for rec in self._buffer.read_all():
            if rec["k"] == "metric" and rec["key"].startswith(prefixes):
                rows.setdefault(rec["step"], {"step": rec["step"]})[rec["key"]] = rec["value"]
        return [rows[s] for s in sorted(rows)]

    def _key(self, key: str) -> str:
        clean = sanitize_key(key)
        if clean != key and key not in self._renamed:
            self._renamed.add(key)
            _log.warning(
                "MLflow key %r is logged as %r (allowed characters: letters, digits, _-. :/)", key, clean
            )
        return clean

    def _enqueue(self, records: list[dict[str, Any]]) -> None:
        if self._closed:
            raise RuntimeError(f"RunTracker for run {self.run_name!r} is closed; open a new one to log more")
        if not records:
            return
        self._buffer.append(records)
        with self._cv:
            self._pending.extend(records)
            self._cv.notify_all()  # the thread recomputes when the next upload is due

    # ---- flushing ----------------------------------------------------------------------------------------
    def flush(self, timeout_s: float = 30.0) -> bool:
        """Try to upload everything now. True when MLflow has acknowledged every record."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            if self._thread.is_alive():
                self._flush_asked += 1
                target = self._flush_asked
                self._cv.notify_all()
                while self._flush_done < target and (left := deadline - time.monotonic()) > 0:
                    self._cv.wait(timeout=left)
            return self._connected and not self._pending

    def close(self, status: str = "FINISHED", timeout_s: float = 30.0) -> bool:
        """Mark the run ``status`` (FINISHED, FAILED or KILLED), upload what is pending, stop the thread.

        Returns True when everything reached MLflow; otherwise the rest stays in ``buffer_dir`` for the
        next ``open`` with the same buffer or ``python -m platform.tracking sync``. Never raises on outages.
        """
        if status not in TERMINAL_STATUSES:
            raise ValueError(f"close status must be one of {TERMINAL_STATUSES}, got {status!r}")
        if self._closed:
            return not self.pending_count
        self._closing = True
        self._enqueue([{"k": "status", "status": status, "ts": int(time.time() * 1000), "key": "status"}])
        ok = self.flush(timeout_s)
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join(timeout=1.0)
        self._closed = True
        self._buffer.close()
        if not ok:
            _log.warning(
                "MLflow run %r: %d records not uploaded to %s; they are kept in %s and sent by the next "
                "RunTracker.open with this buffer_dir or `python -m platform.tracking sync %s`",
                self.run_name, self.pending_count, self.tracking_uri, self.buffer_dir,
                sync_root(self.buffer_dir),
            )  # fmt: skip
        return ok

    def __enter__(self) -> RunTracker:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.close("FINISHED")
        else:
            self.close("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED")

    # ---- upload thread -----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while self._flush_done >= self._flush_asked:
                    if self._stopping:
                        return
                    wait = self._seconds_until_due()
                    if wait is not None and wait <= 0:
                        break
                    self._cv.wait(timeout=wait)
                generation = self._flush_asked
            self._attempt()
            with self._cv:
                self._flush_done = max(self._flush_done, generation)
                self._cv.notify_all()

    def _seconds_until_due(self) -> float | None:
        if self._connected and not self._pending:
            return None  # idle until notified
        if not self._outage and len(self._pending) >= 500:
            return 0.0
        return self._next_attempt - time.monotonic()

    def _attempt(self) -> None:
        try:
            if not self._connected:
                acked = self._buffer.target(self.tracking_uri)["acked_seq"]
                created = self._sink.connect(set_running=not (self._replay or self._closing))
                if created and acked > 0:
                    _log.warning(
                        "MLflow run %r was recreated; uploading its whole buffer again", self.run_name
                    )
                    self._buffer.save_target(self.tracking_uri, acked_seq=0)
                    with self._cv:
                        self._pending = self._keep(self._buffer.read_all())
                self._connected = True
            with self._cv:
                snapshot = list(self._pending)
            sent = len(snapshot)
            if snapshot:
                self._sink.upload(snapshot, self._ack)
        except Exception as e:  # any failure of MLflow is an outage: keep buffering, retry later
            self._connected = False
            self._backoff = min(MAX_BACKOFF_S, max(1.0, self._backoff * 2))
            self._next_attempt = time.monotonic() + self._backoff
            if not self._outage:
                self._outage = True
                _log.warning(
                    "MLflow unreachable at %s (%s); buffering to %s and retrying with backoff",
                    self.tracking_uri, describe_error(e), self.buffer_dir,
                )  # fmt: skip
            else:
                _log.debug("MLflow still unreachable: %s", describe_error(e))
            return
        if self._outage:
            self._outage = False
            _log.warning(
                "MLflow reachable again at %s; uploaded %d buffered records", self.tracking_uri, sent
            )
        self._backoff = 0.0
        self._next_attempt = time.monotonic() + self._interval

    def _ack(self, seq: int) -> None:
        with self._cv:
            n = 0
            while n < len(self._pending) and self._pending[n]["seq"] <= seq:
                n += 1
            del self._pending[:n]
            if self._closed:  # a late upload after close(): the buffer may belong to a new tracker now
                return
        self._buffer.save_target(self.tracking_uri, acked_seq=seq)
