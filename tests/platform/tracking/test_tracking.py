"""MLflow tracking layer: R3 (same run name continues the same run) and R9 (outages lose nothing)."""

from __future__ import annotations

import enum
import json
import logging
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from platform.tracking import (
    RunTracker,
    TrackingBufferError,
    default_artifact_location,
    default_tracking_uri,
    flatten_config,
    plot_loss_curves,
    plot_success_per_task,
    sanitize_key,
    sync_buffer,
)

pytestmark = pytest.mark.unit

UNREACHABLE = "http://127.0.0.1:9"  # discard port: connection refused at once


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One migrated sqlite DB for the module (migrations cost seconds); tests use their own experiment."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()
    return uri


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _log_training(tracker: RunTracker, steps: range) -> None:
    for step in steps:
        tracker.log_metrics(
            {"train/loss": 1.0 / (step + 1), "train/lr": 3e-4, "time/elapsed_s": step * 0.5}, step
        )


def _history_len(uri: str, run_id: str, key: str) -> int:
    return len(_client(uri).get_metric_history(run_id, key))


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_default_uri_is_absolute_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = default_tracking_uri(tmp_path)
    assert uri == f"sqlite:////{str(tmp_path.resolve()).lstrip('/')}/mlflow.db"
    assert default_artifact_location(uri, "my exp") == str(tmp_path.resolve() / "mlartifacts" / "my_exp")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri(tmp_path) == "http://127.0.0.1:5000"
    assert default_artifact_location("http://127.0.0.1:5000", "x") is None
    with pytest.raises(ValueError, match="four slashes"):
        default_artifact_location("sqlite:///relative/mlflow.db", "x")


def test_same_run_name_continues_same_run(sqlite_uri: str, tmp_path: Path) -> None:
    """R3: a relaunched driver (even with a fresh buffer dir) continues the run, status RUNNING again."""
    tags = {"platform.kind": "train", "platform.policy_type": "mini_diffuser"}
    first = RunTracker.open(sqlite_uri, "r3", "md-run", tmp_path / "buf1", tags=tags)
    assert first.run_id is not None
    _log_training(first, range(0, 5))
    assert first.close("KILLED")
    client = _client(sqlite_uri)
    assert client.get_run(first.run_id).info.status == "KILLED"

    second = RunTracker.open(sqlite_uri, "r3", "md-run", tmp_path / "buf2", tags=tags)
    assert second.run_id == first.run_id
    assert client.get_run(second.run_id).info.status == "RUNNING"
    _log_training(second, range(5, 10))
    assert second.close("FINISHED")
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["platform.policy_type"] == "mini_diffuser"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == list(range(10))
    other = RunTracker.open(sqlite_uri, "r3", "another-run", tmp_path / "buf3")
    assert other.run_id != first.run_id
    other.close()


def test_outage_at_open_then_recovery_uploads_exactly_once(
    sqlite_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """R9: MLflow unreachable from the start; a restart against a working URI uploads everything once."""
    caplog.set_level(logging.WARNING)
    buf = tmp_path / "buf"
    down = RunTracker.open(
        UNREACHABLE, "r9", "outage", buf, tags={"platform.kind": "train"}, connect_timeout_s=5
    )
    assert down.run_id is None
    down.log_params({"model.m": 64, "data.tasks": ["a", "b"]})
    _log_training(down, range(30))
    down.log_text("notes", "reports/notes.txt")
    assert down.flush(timeout_s=5) is False
    assert down.close("FAILED", timeout_s=5) is False  # never raises
    unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(unreachable) == 1, "one warning per outage, not one per step"
    assert not _errors(caplog)

    up = RunTracker.open(sqlite_uri, "r9", "outage", buf, tags={"platform.kind": "train"})
    assert up.run_id is not None and up.pending_count == 0
    assert up.close()
    for key in ("train/loss", "train/lr", "time/elapsed_s"):
        assert _history_len(sqlite_uri, up.run_id, key) == 30
    run = _client(sqlite_uri).get_run(up.run_id)
    assert run.data.params == {"model.m": "64", "data.tasks": '["a", "b"]'}
    assert run.info.status == "FINISHED", "the FAILED status of the outage session is superseded"
    assert [a.path for a in _client(sqlite_uri).list_artifacts(up.run_id, "reports")] == ["reports/notes.txt"]

    # A crash between "MLflow stored the batch" and "acknowledgement written": everything is resent.
    state = json.loads((buf / "state.json").read_text())
    state["targets"][sqlite_uri]["acked_seq"] = 0
    (buf / "state.json").write_text(json.dumps(state))
    again = RunTracker.open(sqlite_uri, "r9", "outage", buf)
    assert again.run_id == up.run_id
    assert again.close()
    assert _history_len(sqlite_uri, up.run_id, "train/loss") == 30, "resent records are not duplicated"


class FlakyClientFake:
    """Fake MlflowClient wrapper: ``log_batch`` fails like a dropped server while ``down`` is set."""

    def __init__(self, real) -> None:
        self.real, self.down, self.failures = real, False, 0

    def log_batch(self, *args, **kwargs):
        if self.down:
            self.failures += 1
            raise ConnectionError("fake outage: connection refused")
        return self.real.log_batch(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.real, name)


def test_outage_mid_run_never_raises_and_loses_nothing(
    sqlite_uri: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    tracker = RunTracker.open(sqlite_uri, "r9-mid", "mid", tmp_path / "buf", upload_interval_s=0.01)
    _log_training(tracker, range(10))
    assert tracker.flush()
    fake = FlakyClientFake(tracker._sink.client)
    tracker._sink.client = fake
    fake.down = True
    _log_training(tracker, range(10, 60))
    assert tracker.flush(timeout_s=5) is False
    assert fake.failures >= 1 and tracker.pending_count > 0
    fake.down = False
    assert tracker.close()
    assert _history_len(sqlite_uri, tracker.run_id, "train/loss") == 60
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
    assert len([r for r in caplog.records if "reachable again" in r.getMessage()]) == 1


def test_corrupt_sqlite_file_does_not_raise(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a sqlite database" * 100)
    tracker = RunTracker.open(f"sqlite:///{db}", "corrupt", "c", tmp_path / "buf", connect_timeout_s=10)
    assert tracker.run_id is None
    _log_training(tracker, range(5))
    assert tracker.close(timeout_s=5) is False
    records = (tmp_path / "buf" / "records.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["k"] == "metric" for line in records) == 15
    assert not _errors(caplog)


def test_locked_sqlite_does_not_block_or_raise(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    _client(uri).search_experiments()  # create the schema
    lock = sqlite3.connect(db, timeout=0.1, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        tracker = RunTracker.open(uri, "locked", "l", tmp_path / "buf", connect_timeout_s=1)
        _log_training(tracker, range(5))  # returns at once although the writer thread is blocked
        assert tracker.close(timeout_s=1) is False
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    resumed = RunTracker.open(uri, "locked", "l", tmp_path / "buf", connect_timeout_s=60)
    assert resumed.close(timeout_s=60)
    assert _history_len(uri, resumed.run_id, "train/loss") == 5


def test_changed_param_on_resume_becomes_tag(sqlite_uri: str, tmp_path: Path) -> None:
    tracker = RunTracker.open(sqlite_uri, "params", "p", tmp_path / "buf")
    tracker.log_params({"optim.lr": 3e-4, "model.m": 64})
    assert tracker.close()
    resumed = RunTracker.open(sqlite_uri, "params", "p", tmp_path / "buf")
    resumed.log_params({"optim.lr": 3e-4, "model.m": 128, "model.new": "x"})
    assert resumed.close()
    run = _client(sqlite_uri).get_run(resumed.run_id)
    assert run.data.params == {"optim.lr": "0.0003", "model.m": "64", "model.new": "x"}
    assert run.data.tags["platform.param_changed.model.m"] == "128"


def test_driver_and_worker_trackers_share_one_run(sqlite_uri: str, tmp_path: Path) -> None:
    driver = RunTracker.open(sqlite_uri, "shared", "job", tmp_path / "driver")
    worker = RunTracker.open(sqlite_uri, "shared", "job", tmp_path / "worker")
    assert worker.run_id == driver.run_id
    driver.log_params({"env.hostname": "head"})
    assert driver.flush()
    worker.log_params({"env.hostname": "gpu-node", "train.steps": 10})  # worker connected before that param
    _log_training(worker, range(3))
    assert worker.close() and driver.close()
    run = _client(sqlite_uri).get_run(driver.run_id)
    assert run.data.params == {"env.hostname": "head", "train.steps": "10"}
    assert run.data.tags["platform.param_changed.env.hostname"] == "gpu-node"
    assert not (tmp_path / "worker" / "rejected.jsonl").exists()


def test_concurrently_created_runs_converge_on_the_oldest(sqlite_uri: str, tmp_path: Path) -> None:
    client = _client(sqlite_uri)
    tracker = RunTracker.open(UNREACHABLE, "race", "twin", tmp_path / "buf", connect_timeout_s=2)
    tracker.close(timeout_s=1)
    exp_id = client.create_experiment("race", artifact_location=str(tmp_path / "art"))
    first = client.create_run(exp_id, run_name="twin")  # created by "another process" first
    sink = tracker._sink
    sink.client, sink.tracking_uri, sink.experiment_id = client, sqlite_uri, exp_id
    assert sink._create_run().info.run_id == first.info.run_id
    assert [r.info.run_id for r in client.search_runs([exp_id])] == [first.info.run_id]


def test_sync_uploads_a_left_over_buffer_with_its_status(sqlite_uri: str, tmp_path: Path) -> None:
    down = RunTracker.open(UNREACHABLE, "sync", "s", tmp_path / "buf", connect_timeout_s=5)
    _log_training(down, range(4))
    down.log_dict({"success": 0.5}, "eval/result.json")
    assert down.close("FAILED", timeout_s=2) is False
    assert sync_buffer(tmp_path / "buf", sqlite_uri, timeout_s=60)
    client = _client(sqlite_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("sync").experiment_id])
    assert run.info.status == "FAILED"
    assert _history_len(sqlite_uri, run.info.run_id, "train/loss") == 4
    assert [a.path for a in client.list_artifacts(run.info.run_id, "eval")] == ["eval/result.json"]


def test_buffer_of_another_run_is_refused(tmp_path: Path) -> None:
    tracker = RunTracker.open(UNREACHABLE, "exp", "run-a", tmp_path / "buf", connect_timeout_s=2)
    tracker.close(timeout_s=1)
    with pytest.raises(TrackingBufferError, match="one buffer_dir per run"):
        RunTracker.open(UNREACHABLE, "exp", "run-b", tmp_path / "buf", connect_timeout_s=2)


def test_second_writer_on_a_busy_buffer_uses_a_sibling(sqlite_uri: str, tmp_path: Path) -> None:
    """A restarted worker whose predecessor still holds the buffer never interleaves with it."""
    old = RunTracker.open(sqlite_uri, "busy", "w", tmp_path / "buf")
    new = RunTracker.open(sqlite_uri, "busy", "w", tmp_path / "buf")
    assert new.buffer_dir != old.buffer_dir and new.buffer_dir.name.startswith("buf.pid")
    assert new.run_id == old.run_id
    _log_training(old, range(0, 3))
    _log_training(new, range(3, 6))
    assert old.close() and new.close()
    assert _history_len(sqlite_uri, old.run_id, "train/loss") == 6
    again = RunTracker.open(sqlite_uri, "busy", "w", tmp_path / "buf")  # released by close
    assert again.buffer_dir == (tmp_path / "buf").resolve()
    again.close()


def test_torn_last_record_is_dropped(tmp_path: Path) -> None:
    tracker = RunTracker.open(UNREACHABLE, "exp", "torn", tmp_path / "buf", connect_timeout_s=2)
    _log_training(tracker, range(3))
    tracker.close(timeout_s=1)
    with open(tmp_path / "buf" / "records.jsonl", "a") as f:
        f.write('{"k":"metric","key":"train/lo')  # killed mid-write
    resumed = RunTracker.open(UNREACHABLE, "exp", "torn", tmp_path / "buf", connect_timeout_s=2)
    _log_training(resumed, range(3, 4))
    resumed.close(timeout_s=1)
    steps = [row["step"] for row in resumed.history(("train/loss",))]
    assert steps == [0, 1, 2, 3]


def test_metric_values_must_be_numbers(tmp_path: Path) -> None:
    tracker = RunTracker.open(UNREACHABLE, "exp", "types", tmp_path / "buf", connect_timeout_s=2)
    with pytest.raises(TypeError, match="train/loss"):
        tracker.log_metrics({"train/loss": "high"}, step=0)
    with pytest.raises(ValueError, match="FINISHED"):
        tracker.close("DONE")
    tracker.close(timeout_s=1)
    with pytest.raises(RuntimeError, match="closed"):
        tracker.log_metrics({"train/loss": 1.0}, step=1)


class _Kind(enum.Enum):
    MINI = "mini_diffuser"


class _Optim(BaseModel):
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.98)


class _Cfg(BaseModel):
    optim: _Optim = _Optim()
    name: str | None = None


def test_flatten_config() -> None:
    flat = flatten_config({"model": {"m": 64, "dims": [36, 72], "film": True, "kind": _Kind.MINI}, "x": {}})
    assert flat == {
        "model.m": "64",
        "model.dims": "[36, 72]",
        "model.film": "true",
        "model.kind": "mini_diffuser",
        "x": "{}",
    }
    assert flatten_config(_Cfg()) == {"optim.lr": "0.0003", "optim.betas": "[0.9, 0.98]", "name": "null"}
    assert flatten_config({"a": {"b": 1}}, prefix="cfg") == {"cfg.a.b": "1"}


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=300))
def test_sanitized_keys_are_valid_mlflow_names(key: str) -> None:
    from mlflow.utils.validation import _validate_metric_name, _validate_param_name

    clean = sanitize_key(key)
    _validate_metric_name(clean)
    _validate_param_name(clean)
    assert 0 < len(clean) <= 250


def test_sanitize_keeps_valid_names() -> None:
    for key in ("train/loss/position", "eval/pick-place-v3/success", "eval/close_jar/success", "a:b c.d"):
        assert sanitize_key(key) == key


def test_plots_write_pngs(tmp_path: Path) -> None:
    history = [
        {"step": s, "train/loss": 1 / (s + 1), "train/loss/position": 0.5 / (s + 1)} for s in range(20)
    ]
    history[10]["eval/success"] = 0.3
    history[19]["eval/success"] = 0.6
    for path in (
        plot_loss_curves(history, tmp_path / "loss.png"),
        plot_success_per_task({"close_jar": 0.9, "open_drawer": 0.4}, tmp_path / "tasks.png"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="empty history"):
        plot_loss_curves([], tmp_path / "x.png")


def test_experiment_opens_as_a_training_dashboard_with_the_platform_columns(
    sqlite_uri: str, tmp_path: Path
) -> None:
    """MLflow 3 shows an untagged experiment as a GenAI project; ours carry the training kind and a saved view."""
    from platform.tracking.dashboard import (
        EXPERIMENT_KIND_TAG,
        TRAINING_KIND,
        VIEW_KEY,
        VIEW_TAG,
        experiment_url,
        run_url,
    )

    tracker = RunTracker.open(sqlite_uri, "dash", "run-a", tmp_path / "buf")
    assert tracker.close("FINISHED")
    exp = _client(sqlite_uri).get_experiment_by_name("dash")
    assert exp.tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND
    view = json.loads(exp.tags[VIEW_TAG])
    assert (
        "metrics.`eval/success`" in view["selectedColumns"] and "params.`policy.m`" in view["selectedColumns"]
    )
    assert "metrics.`val/pos_err_cm`" in view["selectedColumns"] and view["runsHiddenMode"] == "SHOW_ALL"
    for key in ("tier_average", "tier_average_ci_low", "easy", "medium", "hard", "very_hard", "per_episode"):
        assert f"metrics.`eval/success/{key}`" in view["selectedColumns"]  # Meta-World tiers beside the mean
    # A user's own choice of kind survives the next run; the saved view is brought up to date.
    _client(sqlite_uri).set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, "finetuning")
    _client(sqlite_uri).set_experiment_tag(exp.experiment_id, VIEW_TAG, "{}")
    assert RunTracker.open(sqlite_uri, "dash", "run-b", tmp_path / "buf2").close("FINISHED")
    tags = _client(sqlite_uri).get_experiment(exp.experiment_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == "finetuning" and json.loads(tags[VIEW_TAG]) == view
    url = experiment_url(sqlite_uri, exp.experiment_id)
    assert url.startswith("http://127.0.0.1:5000/#/experiments/") and f"viewStateShareKey={VIEW_KEY}" in url
    assert run_url("http://mlflow.lab:5000/", "3", "abc") == (
        "http://mlflow.lab:5000/#/experiments/3/runs/abc?workflowType=machine_learning"
    )
