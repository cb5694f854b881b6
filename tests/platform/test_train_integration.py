"""The platform end to end on a tiny real Meta-World dataset with a local Ray cluster:
python -m platform.train (collect -> train -> parallel eval -> MLflow), R1 worker crash, R3 driver kill,
ray job submit (periodic evaluation: tests/platform/test_cluster.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from evaluation.checkpoint_format import RENDER_FILE
from evaluation.filelock import FileLock
from platform.train.checkpoint import list_checkpoints, verify_checkpoint
from platform.train.worker import RUN_LOCK_FILE
from tests import REPO_ROOT
from tests.platform.conftest import (
    FINAL_LINE,
    assert_videos,
    kill_tree,
    metric_steps,
    mlflow_runs,
    run_platform,
    start_platform,
    tiny_overrides,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_train_survives_a_worker_crash_and_logs_each_step_once(tmp_path, tiny_dataset, ray_cluster):
    """R1: the worker dies between checkpoints; Ray Train restarts it from the last valid checkpoint,
    no step is logged twice, and the run finishes with its evaluation and the final summary line."""
    args = tiny_overrides(
        tmp_path, tiny_dataset, "crash", "train.steps=20", "train.checkpoint_every=10", "ray.max_failures=1"
    )
    out = run_platform(
        "platform.train",
        args,
        env={"MINIDIFFUSER_FAULT_CRASH_AT_STEP": "15", "RAY_ADDRESS": ray_cluster.address},
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "injecting a crash at step 15" in text and "resumed from step_00000010 at step 10" in text
    last = [ln for ln in out.stdout.splitlines() if ln.strip()][-1]
    m = FINAL_LINE.match(last)
    assert m, last
    assert int(m.group(2)) == 2  # two tasks x one episode, full denominator
    uri, run_id = m.group(4), m.group(3)
    assert metric_steps(uri, run_id, "train/loss") == [5, 10, 15, 20]
    assert metric_steps(uri, run_id, "eval/success") == [20]
    ckpts = list_checkpoints(tmp_path / "runs" / "crash")
    assert [c.step for c in ckpts][-1] == 20
    for c in ckpts:
        verify_checkpoint(c.path)
    # the dataset's render settings travel with the checkpoint: its evaluation renders the same images
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    assert json.loads((ckpts[-1].path / RENDER_FILE).read_text()) == manifest["render"]
    report = json.loads((tmp_path / "runs" / "crash" / "eval" / "step_00000020.json").read_text())
    assert report["episodes"] == 2 and set(report["tasks"]) == {"reach-v3", "button-press-topdown-v3"}
    assert_videos(tmp_path / "runs" / "crash", "step_00000020", uri, run_id)
    assert re.search(r"\[train\] dashboard: http://127\.0\.0\.1:5000/#/experiments/\d+/runs/" + run_id, text)

    # platform.compare builds its side-by-side table from this tiny run, under its suite (the --suite filter
    # itself: test_compare.test_suite_filter_keeps_one_benchmark)
    cmp = run_platform("platform.compare", ["--tracking-uri", uri, "--out", str(tmp_path / "cmp")])
    assert cmp.returncode == 0, (cmp.stdout + cmp.stderr)[-3000:]
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert f"crash (`{run_id[:8]}`) | mt10 |" in table and "diffuser_actor_3dda | 81.3" in table


def test_driver_killed_and_relaunched_continues_the_same_run(tmp_path, tiny_dataset, ray_cluster):
    """R3: SIGKILL the whole driver process tree mid-training; the same command resumes from the newest
    valid checkpoint and continues the same MLflow run."""
    args = tiny_overrides(
        tmp_path,
        tiny_dataset,
        "relaunch",
        "train.steps=100",
        "train.checkpoint_every=10",
        "eval.enabled=false",
    )
    log = tmp_path / "first.log"
    env = {"RAY_ADDRESS": ray_cluster.address}
    proc = start_platform("platform.train", args, log, env=env)
    progress = tmp_path / "runs" / "relaunch" / "progress.json"
    try:
        wait_for(
            lambda: progress.is_file() and json.loads(progress.read_text())["step"] >= 10,
            300,
            "the first checkpoint",
        )
    finally:
        kill_tree(proc)
    first_id = re.search(r"MLflow run (\w+) at", log.read_text()).group(1)
    # The cluster outlives the driver: it reaps the dead driver's train worker within seconds, which may
    # still finish a checkpoint meanwhile. The worker holds the run directory's lock until it is gone (the
    # relaunch waits for it the same way); then the checkpoints no longer change.
    run_dir = tmp_path / "runs" / "relaunch"
    FileLock(run_dir / RUN_LOCK_FILE).acquire(wait_s=180).release()
    killed_at = list_checkpoints(run_dir)[-1].step
    assert killed_at < 100
    out = run_platform("platform.train", args, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert f"resumed from step_{killed_at:08d}" in text
    assert f"MLflow run {first_id} at" in text
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = mlflow_runs(uri, "relaunch")
    assert [r.info.run_id for r in runs] == [first_id]
    assert runs[0].info.status == "FINISHED"
    assert "Traceback" not in text and "\x1b[" not in text, text[-4000:]  # a normal run: no crash-like noise
    steps = metric_steps(uri, first_id, "train/loss")
    assert steps == sorted(set(steps)) and steps[-1] == 100


def test_ray_job_submit_runs_the_main_job(tmp_path, tiny_dataset, ray_cluster):
    """The README's cluster command, unchanged: ray job submit --working-dir . -- python -m platform.train."""
    args = tiny_overrides(tmp_path, tiny_dataset, "job", "train.steps=10", "eval.enabled=false")
    ray_bin = str(Path(ray_cluster.env["PATH"].split(os.pathsep)[0]) / "ray")
    for _ in range(30):  # the dashboard's job agent can take a while to come up on a busy machine
        out = subprocess.run(
            [
                ray_bin,
                "job",
                "submit",
                "--address",
                ray_cluster.dashboard,
                "--working-dir",
                ".",
                "--",
                "python",
                "-m",
                "platform.train",
                *args,
            ],
            cwd=REPO_ROOT,
            env=ray_cluster.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        text = out.stdout + out.stderr
        if "No available agent to submit job" not in text:
            break
        time.sleep(2)
    assert out.returncode == 0, text[-4000:]
    assert "succeeded" in text and "[train] done" in text
    # The platform's environment variables reach the job's workers too (Ray Train's print patch off): each
    # line of the train worker once, not twice.
    started = [ln for ln in text.splitlines() if "[train] starting at step 0/10" in ln]
    assert len(started) == 1, started
    assert [c.step for c in list_checkpoints(tmp_path / "runs" / "job")][-1] == 10
