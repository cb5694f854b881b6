"""The platform end to end on a tiny real Meta-World dataset with a local Ray cluster:
python -m platform.train (collect -> train -> parallel eval -> MLflow), R1 worker crash, R3 driver kill."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from platform.checkpoint import list_checkpoints, verify_checkpoint
from tests.platform.conftest import (
    kill_tree,
    metric_steps,
    mlflow_runs,
    run_platform,
    start_platform,
    tiny_overrides,
    wait_for,
)

pytestmark = pytest.mark.integration
FINAL_LINE = re.compile(r"^mean success: (\d+\.\d)% over (\d+) episodes \(MLflow run (\w+), tracking URI (\S+)\)$")


def test_train_survives_a_worker_crash_and_logs_each_step_once(tmp_path, tiny_dataset, ray_cluster):
    """R1: the worker dies between checkpoints; Ray Train restarts it from the last valid checkpoint,
    no step is logged twice, and the run finishes with its evaluation and the final summary line."""
    args = tiny_overrides(tmp_path, tiny_dataset, "crash", "train.steps=20", "train.checkpoint_every=10",
                          "ray.max_failures=1")
    out = run_platform("platform.train", args,
                       env={"MINIDIFFUSER_FAULT_CRASH_AT_STEP": "15", "RAY_ADDRESS": ray_cluster.address})
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
    report = json.loads((tmp_path / "runs" / "crash" / "eval" / "step_00000020.json").read_text())
    assert report["episodes"] == 2 and set(report["tasks"]) == {"reach-v3", "button-press-topdown-v3"}
    _assert_videos(tmp_path / "runs" / "crash", "step_00000020", uri, run_id)
    assert re.search(r"\[train\] dashboard: http://127\.0\.0\.1:5000/#/experiments/\d+/runs/" + run_id, text)

    # platform.compare builds its side-by-side table from this tiny run
    cmp = run_platform("platform.compare", ["--tracking-uri", uri, "--out", str(tmp_path / "cmp")])
    assert cmp.returncode == 0, (cmp.stdout + cmp.stderr)[-3000:]
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert f"crash (`{run_id[:8]}`) | mt10 |" in table and "diffuser_actor_3dda | 81.3" in table
    rl = run_platform("platform.compare", ["--tracking-uri", uri, "--out", str(tmp_path / "cmp_rl"), "--no-log",
                                           "--suite", "rlbench"])
    assert rl.returncode == 0 and "crash (" not in (tmp_path / "cmp_rl" / "comparison.md").read_text()


def test_driver_killed_and_relaunched_continues_the_same_run(tmp_path, tiny_dataset, ray_cluster):
    """R3: SIGKILL the whole driver process tree mid-training; the same command resumes from the newest
    valid checkpoint and continues the same MLflow run."""
    args = tiny_overrides(tmp_path, tiny_dataset, "relaunch", "train.steps=40", "train.checkpoint_every=10",
                          "eval.enabled=false")
    log = tmp_path / "first.log"
    env = {"RAY_ADDRESS": ray_cluster.address}
    proc = start_platform("platform.train", args, log, env=env)
    progress = tmp_path / "runs" / "relaunch" / "progress.json"
    try:
        wait_for(lambda: progress.is_file() and json.loads(progress.read_text())["step"] >= 10, 300,
                 "the first checkpoint")
    finally:
        kill_tree(proc)
    first_id = re.search(r"MLflow run (\w+) at", log.read_text()).group(1)
    # The cluster outlives the driver: it reaps the dead driver's train worker within seconds, which may
    # still finish a checkpoint meanwhile. Wait until the checkpoints stop changing, then take the newest.
    run_dir = tmp_path / "runs" / "relaunch"
    seen: list = []

    def settled() -> bool:
        seen.append([c.step for c in list_checkpoints(run_dir)])
        return len(seen) >= 8 and all(x == seen[-1] for x in seen[-8:])

    wait_for(settled, 180, "the killed run's worker to be reaped", poll=2.0)
    killed_at = seen[-1][-1]
    assert killed_at < 40
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
    assert steps == sorted(set(steps)) and steps[-1] == 40


def test_ray_job_submit_runs_the_main_job(tmp_path, tiny_dataset, ray_cluster):
    """The README's cluster command, unchanged: ray job submit --working-dir . -- python -m platform.train."""
    args = tiny_overrides(tmp_path, tiny_dataset, "job", "train.steps=10", "eval.enabled=false")
    ray_bin = str(Path(ray_cluster.env["PATH"].split(os.pathsep)[0]) / "ray")
    for _ in range(30):  # the dashboard's job agent can take a while to come up on a busy machine
        out = subprocess.run([ray_bin, "job", "submit", "--address", ray_cluster.dashboard, "--working-dir", ".",
                              "--", "python", "-m", "platform.train", *args],
                             cwd=Path(__file__).resolve().parents[2], env=ray_cluster.env, capture_output=True,
                             text=True, timeout=600)
        text = out.stdout + out.stderr
        if "No available agent to submit job" not in text:
            break
        time.sleep(2)
    assert out.returncode == 0, text[-4000:]
    assert "succeeded" in text and "[train] done" in text
    assert [c.step for c in list_checkpoints(tmp_path / "runs" / "job")][-1] == 10


def test_periodic_evaluation_runs_while_training_goes_on(tmp_path, tiny_dataset, ray_cluster):
    """eval.every_steps: checkpoints are evaluated in the background and logged at their training step."""
    args = tiny_overrides(tmp_path, tiny_dataset, "periodic", "train.steps=10", "eval.every_steps=5",
                          "ray.num_workers=0")  # the loop in the driver: no Ray Train start-up cost
    out = run_platform("platform.train", args, env={"RAY_ADDRESS": ray_cluster.address})
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    m = FINAL_LINE.match([ln for ln in out.stdout.splitlines() if ln.strip()][-1])
    assert m, text[-2000:]
    assert metric_steps(m.group(4), m.group(3), "eval/success") == [5, 10]
    assert (tmp_path / "runs" / "periodic" / "eval" / "step_00000005.json").is_file()
    _assert_videos(tmp_path / "runs" / "periodic", "step_00000005", m.group(4), m.group(3))
    assert "Traceback" not in text, text[-4000:]


def _assert_videos(run_dir: Path, checkpoint: str, uri: str, run_id: str) -> None:
    """One rollout video per evaluated task (1 episode each here), bounded in size, also in MLflow."""
    from mlflow.tracking import MlflowClient

    from evaluation.runtime.video import MAX_VIDEO_BYTES

    videos = sorted((run_dir / "eval" / "videos" / checkpoint).glob("*.gif"))
    assert {v.name.rsplit("_", 1)[0] for v in videos} == {"reach-v3", "button-press-topdown-v3"}, videos
    assert all(0 < v.stat().st_size <= MAX_VIDEO_BYTES for v in videos)
    logged = [a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(run_id, f"videos/{checkpoint}")]
    assert sorted(p.rsplit("/", 1)[-1] for p in logged) == [v.name for v in videos]
