"""Shared fixtures for platform integration tests: a tiny real Meta-World dataset (collected once per
session), the tiny experiment config pointing at it, and subprocess helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY_TASKS = ["reach-v3", "button-press-topdown-v3"]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """MT10 reach + button-press, one expert episode each: real MuJoCo rendering, real Parquet."""
    from evaluation.collect import collect_dataset

    out = tmp_path_factory.mktemp("data") / "metaworld_tiny"
    collect_dataset(suite="mt10", tasks=TINY_TASKS, episodes_per_task=1, out=out, workers=1, seed=0, progress=False)
    return out


def tiny_overrides(tmp: Path, dataset: Path, name: str = "itest", *extra: str) -> list[str]:
    return [
        f"name={name}", f"output_dir={tmp / 'runs'}", f"data.path={dataset}", "data.collect_if_missing=false",
        f"tracking.uri=sqlite:///{tmp / 'mlflow.db'}", "policy.preset=tiny", "policy.m=4", "train.batch_size=4",
        "train.warmup_steps=2", "train.log_every=5", "train.checkpoint_every=5", "eval.actors=1",
        "eval.episodes_per_task=1", "eval.max_keyposes=3", "ray.num_cpus=3", *extra,
    ]


def run_platform(module: str, args: list[str], timeout: float = 600, env: dict | None = None,
                 cwd: Path = ROOT) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": "", "RAY_AUTH_MODE": "disabled", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def start_platform(module: str, args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start a platform command in its own process group (so the whole tree, Ray included, can be killed)."""
    full_env = {**os.environ, "PYTHONPATH": "", "RAY_AUTH_MODE": "disabled", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, env=full_env, start_new_session=True)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the command's process group, then any process (Ray daemons) that recorded its session dir."""
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
