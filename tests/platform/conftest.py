"""Shared fixtures for platform integration tests: a tiny real Meta-World dataset (collected once per
session), the tiny experiment config pointing at it, and subprocess helpers."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import REPO_ROOT

TINY_TASKS = ["reach-v3", "button-press-topdown-v3"]
# The last line of every platform.train that evaluated (the README promises it).
FINAL_LINE = re.compile(
    r"^mean success: (\d+\.\d)% over (\d+) episodes \(MLflow run (\w+), tracking URI (\S+)\)$"
)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """MT10 reach + button-press, one expert episode each: real MuJoCo rendering, real Parquet. Collected once
    per test session: pytest-xdist's workers share it (the first collects it, the others wait for its manifest,
    written last); tests only read it."""
    from evaluation.datasets.collect import collect_dataset
    from evaluation.datasets.dataset import MANIFEST
    from evaluation.filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    # the session's directory, above each worker's
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = root / "metaworld_tiny"
    with FileLock(root / "metaworld_tiny.lock").acquire(wait_s=600):
        if not (out / MANIFEST).is_file():
            collect_dataset("mt10", TINY_TASKS, 1, out, workers=1, seed=0, progress=False)
    return out


def tiny_overrides(tmp: Path, dataset: Path, name: str = "itest", *extra: str) -> list[str]:
    return [
        f"name={name}",
        f"output_dir={tmp / 'runs'}",
        f"data.path={dataset}",
        "data.collect_if_missing=false",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}",
        "policy.preset=tiny",
        "policy.m=4",
        "train.batch_size=4",
        "train.warmup_steps=2",
        "train.log_every=5",
        "train.checkpoint_every=5",
        "eval.actors=1",
        "eval.episodes_per_task=1",
        "eval.max_keyposes=3",
        "ray.num_cpus=3",
        *extra,
    ]


def run_platform(
    module: str, args: list[str], timeout: float = 600, env: dict | None = None, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args`` from the repo root; pass ``RAY_ADDRESS`` in ``env`` to join a cluster."""
    full_env = {**os.environ, "PYTHONPATH": "", "RAY_AUTH_MODE": "disabled", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def start_platform(module: str, args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start a platform command in its own process group (so the whole tree, Ray included, can be killed)."""
    full_env = {**os.environ, "PYTHONPATH": "", "RAY_AUTH_MODE": "disabled", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        env=full_env,
        start_new_session=True,
    )


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the command's whole process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_for(predicate, timeout: float, what: str, poll: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def mlflow_runs(uri: str, name: str | None = None) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exps = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in exps], max_results=1000)
    return [r for r in runs if name is None or r.info.run_name == name]


def metric_steps(uri: str, run_id: str, key: str) -> list[int]:
    from mlflow.tracking import MlflowClient

    return sorted(m.step for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))


def assert_videos(run_dir: Path, checkpoint: str, uri: str, run_id: str) -> None:
    """Rollout videos of every evaluated task (TINY_TASKS), bounded in size, also as MLflow artifacts."""
    from mlflow.tracking import MlflowClient

    from evaluation.runtime.video import MAX_VIDEO_BYTES

    videos = sorted((run_dir / "eval" / "videos" / checkpoint).glob("*.gif"))
    assert {v.name.rsplit("_", 1)[0] for v in videos} == set(TINY_TASKS), videos
    assert all(0 < v.stat().st_size <= MAX_VIDEO_BYTES for v in videos)
    logged = [a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(run_id, f"videos/{checkpoint}")]
    assert sorted(p.rsplit("/", 1)[-1] for p in logged) == [v.name for v in videos]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    def __init__(self, address: str, dashboard: str, temp_dir: str, env: dict) -> None:
        self.address, self.dashboard, self.temp_dir, self.env = address, dashboard, temp_dir, env

    def pids(self) -> list[int]:
        """Processes of this cluster: the Ray daemons carry its temp dir on their command line, and those that
        do not (the Ray client server, the agents, which rename themselves) run in it (``ray start`` is started
        there): without the second test they outlived the suite."""
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if self.temp_dir.encode() in (entry / "cmdline").read_bytes() or os.readlink(
                        entry / "cwd"
                    ).startswith(self.temp_dir):
                        out.append(int(entry.name))
                except OSError:
                    continue
        return out

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, every process of this cluster (never ``ray stop``: it stops every Ray here)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            time.sleep(2)


@pytest.fixture(scope="session")
def ray_cluster():
    """A `ray start --head` cluster reached at 127.0.0.1 (with the dashboard, for `ray job submit`), shared by the
    integration tests and stopped by PID afterwards (never `ray stop`, which would kill every Ray on the host)."""
    import tempfile

    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dash, agent = _free_port(), _free_port(), _free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "PYTHONPATH": "",
        "PATH": venv_bin + os.pathsep + os.environ["PATH"],
        "RAY_USAGE_STATS_ENABLED": "0",
        "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [
        str(Path(venv_bin) / "ray"),
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=4",
        f"--temp-dir={temp_dir}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--dashboard-agent-listen-port={agent}",  # the job agent's HTTP port
        "--node-ip-address=127.0.0.1",
        "--disable-usage-stats",
    ]
    started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=temp_dir)
    cluster = RayCluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", temp_dir, env)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield cluster
    finally:
        cluster.stop()
