"""python -m platform.sweep: a 2-trial sweep over M logs 2 finished MLflow runs (children of a parent run)
with the swept M as a param; an interrupted sweep resumes without re-running finished trials (R10)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.platform.conftest import (
    kill_tree,
    mlflow_runs,
    run_platform,
    start_platform,
    tiny_overrides,
    wait_for,
)

pytestmark = pytest.mark.integration


def trial_progress(sweep_dir: Path) -> dict[str, int]:
    out = {}
    for p in (sweep_dir / "trials").glob("*/progress.json"):
        out[p.parent.name] = json.loads(p.read_text())["step"]
    return out


def test_sweep_over_m_resumes_without_rerunning_finished_trials(tmp_path, tiny_dataset, ray_cluster):
    steps = 10
    args = [
        "--param",
        "policy.m=2,6",
        "--name",
        "msweep",
        *tiny_overrides(tmp_path, tiny_dataset, "base", f"train.steps={steps}", "eval.enabled=false"),
    ]
    env = {"RAY_ADDRESS": ray_cluster.address}
    sweep_dir = tmp_path / "runs" / "msweep"
    proc = start_platform("platform.sweep", args, tmp_path / "first.log", env=env)
    try:  # kill the sweep driver once the first trial has finished and before the second one has
        wait_for(
            lambda: list(trial_progress(sweep_dir).values()).count(steps) >= 1,
            400,
            "the first finished trial",
        )
    finally:
        kill_tree(proc)
    finished = {t for t, s in trial_progress(sweep_dir).items() if s == steps}
    assert len(finished) == 1, trial_progress(sweep_dir)
    (done,) = finished
    marker = sweep_dir / "trials" / done / "checkpoints"
    before = {p.name: p.stat().st_mtime_ns for p in marker.iterdir()}

    out = run_platform("platform.sweep", args, env=env, timeout=900)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "resuming msweep" in text
    assert {p.name: p.stat().st_mtime_ns for p in marker.iterdir()} == before, "a finished trial was re-run"
    progress = trial_progress(sweep_dir)
    assert len(progress) == 2 and set(progress.values()) == {steps}, progress

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = mlflow_runs(uri)
    parent = [r for r in runs if r.data.tags.get("platform.kind") == "sweep_parent"]
    trials = [r for r in runs if r.data.tags.get("platform.kind") == "sweep_trial"]
    assert len(parent) == 1 and len(trials) == 2
    assert {r.data.params["sweep.policy.m"] for r in trials} == {"2", "6"}
    assert {r.data.params["policy.m"] for r in trials} == {"2", "6"}
    assert all(r.info.status == "FINISHED" for r in trials)
    assert all(r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id for r in trials)
    assert os.path.isdir(sweep_dir / "tune")
