"""One process per run directory / tracking buffer: ``evaluation.filelock`` and the train worker's run lock."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaluation.filelock import FileLock, LockBusyError

pytestmark = pytest.mark.process  # lock holders are child processes

HOLDER = """
import fcntl, os, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
f.seek(0); f.truncate(); f.write(f"pid {os.getpid()} on test\\n"); f.flush()
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold(path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding an exclusive flock on ``path`` for ``seconds`` (as a live train worker)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_busy_lock_names_its_holder_and_frees_on_release_or_death(tmp_path):
    path = tmp_path / "run" / ".train.lock"
    path.parent.mkdir()
    proc = hold(path, 60)
    try:
        with pytest.raises(LockBusyError, match=f"pid {proc.pid} on test") as info:
            FileLock(path).acquire(wait_s=0.3)
        assert info.value.waited_s >= 0.3
    finally:
        proc.kill()  # SIGKILL: the kernel drops the flock with the process
        proc.wait()
    lock = FileLock(path).acquire()
    assert lock.held and path.read_text().startswith("pid ")
    with pytest.raises(LockBusyError):
        FileLock(path).acquire()  # also exclusive within one process (another open file description)
    lock.release()
    with FileLock(path) as again:
        assert again.held


def test_waits_for_a_holder_that_exits(tmp_path):
    path = tmp_path / ".train.lock"
    proc = hold(path, 1.0)
    seen: list[str] = []
    start = time.monotonic()
    lock = FileLock(path).acquire(wait_s=30, on_wait=seen.append)
    assert 0.5 < time.monotonic() - start < 25 and seen == [f"pid {proc.pid} on test"]
    lock.release()
    proc.wait()


def _fake_training(tmp_path, monkeypatch):
    import platform.train.worker
    from platform.config import load_config
    from tests.platform.fakes import FakeKeyframeDataset

    cfg = load_config(
        None,
        [
            "policy.preset=tiny",
            "policy.m=2",
            "train.batch_size=2",
            "train.steps=2",
            "train.warmup_steps=0",
            "train.checkpoint_every=2",
            "train.log_every=1",
            "train.device=cpu",
            "eval.enabled=false",
            f"output_dir={tmp_path}",
        ],
    )
    monkeypatch.setattr(platform.train.worker, "open_split", lambda c: (FakeKeyframeDataset(c.policy), None))
    cfg.run_dir.mkdir(parents=True)
    return cfg, {"config": cfg.model_dump(mode="json"), "run_dir": str(cfg.run_dir)}


def test_worker_waits_for_a_previous_worker_then_refuses_a_live_one(tmp_path, monkeypatch, capsys):
    import ray.train  # noqa: F401  # imported by the worker before its lock: seconds on a loaded machine

    import platform.train.worker as worker
    from platform.train.checkpoint import latest_checkpoint

    cfg, payload = _fake_training(tmp_path, monkeypatch)
    lock_path = cfg.run_dir / worker.RUN_LOCK_FILE
    proc = hold(lock_path, 2.0)  # a killed driver's worker, reaped seconds later
    worker.train_loop_per_worker(payload)
    proc.wait()
    assert "still used by a previous training process" in capsys.readouterr().out
    assert latest_checkpoint(cfg.run_dir).step == 2
    FileLock(lock_path).acquire().release()  # released when training ended

    monkeypatch.setattr(worker, "RUN_LOCK_WAIT_S", 0.5)
    proc = hold(lock_path, 60)  # a live run with the same name
    try:
        with pytest.raises(
            worker.RunDirBusyError, match=f"in use by another training process \\(pid {proc.pid}"
        ):
            worker.train_loop_per_worker(payload)
    finally:
        proc.kill()
        proc.wait()
