"""The MLflow side of a ``RunTracker``: find or create the run, send buffered records in batches.

``MlflowSink`` is used only from the tracker's upload thread. It talks to MLflow through an explicit
``MlflowClient(tracking_uri=...)`` and explicit run ids (never the fluent ``mlflow.start_run`` state),
so several trackers can live in one process. Any exception it raises means "try again later"; records
that MLflow refuses permanently (an invalid value) are moved to ``rejected.jsonl`` and skipped, so one
bad record can never block the upload of everything after it.

**Every (metric, step) once.** When it connects, the sink reads the run's metric history once and keeps
the set of (key, step) pairs already stored; a metric record whose pair is in it (a step replayed after a
resume from an older checkpoint, a re-evaluation of a finished run's last step, a re-sent batch) is
acknowledged without being sent, so the value first logged at a step is the one MLflow keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from platform.tracking.buffer import MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH, RecordBuffer

if TYPE_CHECKING:  # type-only: MLflow's client is imported where it is used
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

_log = logging.getLogger("platform.tracking")

UPLOAD_THREAD_PREFIX = "mlflow-tracking-upload"
PARAM_CHANGED_TAG_PREFIX = "platform.param_changed."
# One chunk is one log_batch request within every MLflow limit (mlflow.utils.validation's MAX_METRICS_PER_BATCH,
# MAX_PARAMS_TAGS_PER_BATCH, MAX_ENTITIES_PER_BATCH; not imported, to keep mlflow out of import time), so
# acknowledging a chunk is exact. MlflowClient.log_batch's own splitting is not used: it sends an oversized
# batch as several requests, so a failure half-way leaves an unknown part logged, and it does not bound a
# request's size.
_MAX_METRICS, _MAX_PARAMS_OR_TAGS, _MAX_ENTITIES = 1000, 100, 1000
_MAX_BATCH_CHARS = 500_000  # the REST API refuses log_batch requests above 1 MB
# MLflow and urllib3 log a traceback or a retry line per failed call; during an outage the tracker
# prints one warning of its own instead, so records from its upload threads are dropped here.
_NOISY_LOGGERS = (
    "mlflow.store.db.utils",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.utils.rest_utils",
    "mlflow.tracking._tracking_service.client",
    "urllib3.connectionpool",
    "alembic.runtime.migration",
)


class _UploadThreadFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.threadName.startswith(UPLOAD_THREAD_PREFIX) or record.levelno >= logging.CRITICAL


_FILTER = _UploadThreadFilter()


def install_log_filter() -> None:
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def is_permanent_error(exc: BaseException) -> bool:
    """True when MLflow refused the request's content (retrying the same request cannot succeed)."""
    return getattr(exc, "error_code", None) == "INVALID_PARAMETER_VALUE"


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def probe_http(tracking_uri: str, timeout_s: float = 3.0) -> None:
    """Fail fast when an http(s) tracking server is down (MLflow's own client retries for minutes)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import requests

    resp = requests.get(tracking_uri.rstrip("/") + "/health", timeout=timeout_s)
    if resp.status_code >= 500:
        raise ConnectionError(f"MLflow server {tracking_uri} answered /health with HTTP {resp.status_code}")


@dataclass
class _Chunk:
    """Consecutive metric/param/tag records that go into one ``log_batch`` call."""

    records: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[Any] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    chars: int = 0
    metric_steps: set[tuple[str, int]] = field(default_factory=set)  # (key, step) pairs in this chunk
    skipped: int = 0  # metric records dropped because their (key, step) was already logged

    def full(self) -> bool:
        return (
            len(self.metrics) >= _MAX_METRICS
            or len(self.params) >= _MAX_PARAMS_OR_TAGS
            or len(self.tags) >= _MAX_PARAMS_OR_TAGS
            or len(self.metrics) + len(self.params) + len(self.tags) >= _MAX_ENTITIES
            or self.chars >= _MAX_BATCH_CHARS
        )


class MlflowSink:
    """One run in one MLflow backend, resolved by experiment name and run name."""

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        run_name: str,
        buffer: RecordBuffer,
        artifact_location: str | None,
        tags: dict[str, str],
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.buffer = buffer
        self.artifact_location = artifact_location
        self.initial_tags = tags
        self.client: MlflowClient | None = None
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.remote_params: dict[str, str] = {}
        # (key, step) pairs already stored in the run (read at connect) or sent since; None until connected.
        self.logged_steps: set[tuple[str, int]] | None = None
        self._history_run: str | None = None
        self._warned_changed: set[str] = set()

    # ---- run resolution --------------------------------------------------------------------------------
    def connect(self, set_running: bool) -> bool:
        """Resolve (find by name or create) the run. Returns True when the run was newly created."""
        probe_http(self.tracking_uri)
        if self.client is None:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=self.tracking_uri)
        run = self._stored_run()
        created = False
        if run is None:
            self.experiment_id = self._experiment_id()
            runs = self._find_by_name()
            if runs:
                run = runs[0]
            else:
                run, created = self._create_run(), True
        self.run_id, self.experiment_id = run.info.run_id, run.info.experiment_id
        if set_running and run.info.status != "RUNNING":
            self.client.update_run(self.run_id, status="RUNNING")
        self.remote_params = dict(run.data.params)
        if self._history_run != self.run_id:  # once per run: reconnecting after an outage keeps the set
            self.logged_steps = set() if created else self._read_logged_steps(run)
            self._history_run = self.run_id
        self.buffer.save_target(self.tracking_uri, run_id=self.run_id, experiment_id=self.experiment_id)
        return created

    def _read_logged_steps(self, run: Run) -> set[tuple[str, int]]:
        """The (key, step) pairs of every metric value the run already holds (one history call per key)."""
        pairs: set[tuple[str, int]] = set()
        for key in run.data.metrics:
            pairs.update((key, int(m.step)) for m in self.client.get_metric_history(self.run_id, key))
        return pairs

    def has_metric(self, key: str, step: int) -> bool | None:
        """Whether the run holds ``key`` at ``step`` as far as this sink knows (None before it connected)."""
        known = self.logged_steps
        return None if known is None else (key, int(step)) in known

    def note_logged(self, key: str, step: int) -> None:
        """Another writer logged ``key`` at ``step`` since this sink read the history: never send it."""
        if self.logged_steps is not None:
            self.logged_steps.add((key, int(step)))  # atomic under the GIL; the upload thread only tests

    def _create_run(self) -> Run:
        """Create the run; if another process created one with the same name concurrently, both keep the
        oldest (start times are creation times) and the newer, still empty run is deleted."""
        run = self.client.create_run(self.experiment_id, tags=self.initial_tags, run_name=self.run_name)
        found = self._find_by_name()
        oldest = found[0] if found else run
        if oldest.info.run_id != run.info.run_id:
            _log.warning(
                "MLflow run %r was created concurrently; using %s", self.run_name, oldest.info.run_id
            )
            self.client.delete_run(run.info.run_id)
            return oldest
        return run

    def _stored_run(self) -> Run | None:
        run_id = self.buffer.target(self.tracking_uri).get("run_id")
        if not run_id:
            return None
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException as e:
            if getattr(e, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
                raise
            run = None
        if run is None or run.info.lifecycle_stage != "active":
            _log.warning(
                "MLflow run %s of %r was deleted; creating or finding another one", run_id, self.run_name
            )
            return None
        return run

    def _experiment_id(self) -> str:
        from platform.tracking.dashboard import ensure_experiment_view

        experiment_id = self._find_or_create_experiment()
        ensure_experiment_view(
            self.client, experiment_id
        )  # opens as a training dashboard (platform.tracking.dashboard)
        return experiment_id

    def _find_or_create_experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            if exp.lifecycle_stage != "active":
                raise MlflowException(
                    f"MLflow experiment {self.experiment!r} is deleted: restore it in the UI "
                    f"(or `mlflow experiments restore`) or use another experiment name"
                )
            return exp.experiment_id
        try:
            return self.client.create_experiment(self.experiment, artifact_location=self.artifact_location)
        except MlflowException as e:  # another process created it first
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                raise
            _log.debug("experiment %s created concurrently: %s", self.experiment, e)
            return exp.experiment_id

    def _find_by_name(self) -> list[Any]:
        """Active runs named ``run_name``, oldest first (ties broken by run id)."""
        quote = '"' if "'" in self.run_name else "'"
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"attributes.run_name = {quote}{self.run_name}{quote}",
            max_results=50,
        )
        runs = sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))
        if len(runs) > 1:
            _log.warning(
                "%d MLflow runs are named %r in experiment %r; continuing the oldest (%s)",
                len(runs), self.run_name, self.experiment, runs[0].info.run_id,
            )  # fmt: skip
        return runs

    # ---- sending ---------------------------------------------------------------------------------------
    def upload(self, records: list[dict[str, Any]], ack: Callable[[int], None]) -> None:
        """Send ``records`` in order, calling ``ack(seq)`` after each acknowledged prefix.

        Raises on a transient failure (the caller retries later from the first unacknowledged record).
        """
        i = 0
        while i < len(records):
            rec = records[i]
            if rec["k"] in ("metric", "param", "tag"):
                chunk = _Chunk()
                while i < len(records) and records[i]["k"] in ("metric", "param", "tag") and not chunk.full():
                    self._add(chunk, records[i])
                    i += 1
                self._send_chunk(chunk, ack)
            else:
                self._send_single(rec)
                ack(rec["seq"])
                i += 1

    def _add(self, chunk: _Chunk, rec: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        chunk.records.append(rec)
        kind, key = rec["k"], rec["key"]
        if kind == "metric":
            pair = (key, int(rec["step"]))
            if pair in chunk.metric_steps or (self.logged_steps is not None and pair in self.logged_steps):
                chunk.skipped += 1  # this step of this metric is in the run already: the first value stays
                return
            chunk.metric_steps.add(pair)
            chunk.metrics.append(Metric(key, float(rec["value"]), int(rec["ts"]), pair[1]))
            return
        value = str(rec["value"])
        chunk.chars += len(key) + len(value)
        if kind == "tag":
            chunk.tags[key] = value[:MAX_TAG_VALUE_LENGTH]
            return
        value = value[:MAX_PARAM_VALUE_LENGTH]
        known = chunk.params.get(key, self.remote_params.get(key))
        if known is None:
            chunk.params[key] = value
        elif known != value:
            # MLflow params are immutable: keep the new value visible as a tag instead of failing.
            chunk.tags[PARAM_CHANGED_TAG_PREFIX + key] = value[:MAX_TAG_VALUE_LENGTH]
            if key not in self._warned_changed:
                self._warned_changed.add(key)
                _log.warning(
                    "param %r of MLflow run %s changed from %r to %r on resume; MLflow params are immutable, "
                    "the new value is recorded as tag %r",
                    key, self.run_id, known[:80], value[:80], PARAM_CHANGED_TAG_PREFIX + key,
                )  # fmt: skip

    def _send_chunk(self, chunk: _Chunk, ack: Callable[[int], None]) -> None:
        try:
            self._send_chunk_strict(chunk)
        except Exception as e:
            if not is_permanent_error(e):
                raise
            # Most likely a param that another writer of this run (driver / worker) logged meanwhile
            # with another value: refresh the run's params, rebuild the batch, then go record by record.
            self.remote_params = dict(self.client.get_run(self.run_id).data.params)
            retry = _Chunk()
            for rec in chunk.records:
                self._add(retry, rec)
            try:
                self._send_chunk_strict(retry)
            except Exception as e2:
                if not is_permanent_error(e2):
                    raise
                self._send_one_by_one(chunk.records, ack)
                return
        ack(chunk.records[-1]["seq"])

    def _send_one_by_one(self, records: list[dict[str, Any]], ack: Callable[[int], None]) -> None:
        for rec in records:
            chunk = _Chunk()
            self._add(chunk, rec)
            try:
                self._send_chunk_strict(chunk)
            except Exception as e:
                if not is_permanent_error(e):
                    raise
                _log.warning(
                    "MLflow refused %s %r: %s (kept in rejected.jsonl)",
                    rec["k"],
                    rec["key"],
                    describe_error(e),
                )
                self.buffer.reject(rec, describe_error(e))
            ack(rec["seq"])

    def _send_chunk_strict(self, chunk: _Chunk) -> None:
        from mlflow.entities import Param, RunTag

        params = [Param(k, v) for k, v in chunk.params.items()]
        tags = [RunTag(k, v) for k, v in chunk.tags.items()]
        if chunk.metrics or params or tags:
            self.client.log_batch(self.run_id, metrics=chunk.metrics, params=params, tags=tags)
        self.remote_params.update(chunk.params)
        if self.logged_steps is not None:
            self.logged_steps.update(chunk.metric_steps)
        if chunk.skipped:
            _log.debug(
                "MLflow run %s: %d metric values at already logged steps skipped", self.run_id, chunk.skipped
            )

    def _send_single(self, rec: dict[str, Any]) -> None:
        if rec["k"] == "status":
            self.client.set_terminated(self.run_id, status=rec["status"], end_time=int(rec["ts"]))
            return
        if rec["k"] != "artifact":
            raise ValueError(f"unknown tracking record kind {rec['k']!r} in {self.buffer.records_path}")
        local = self.buffer.resolve_local(rec["local"])
        if not local.exists():
            _log.warning("artifact %s vanished before upload; skipped (kept in rejected.jsonl)", local)
            self.buffer.reject(rec, f"local file {local} does not exist")
            return
        self.client.log_artifact(self.run_id, str(local), rec.get("artifact_path"))
