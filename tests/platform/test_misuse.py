"""Reliability under misuse (issue 13): what the driver refuses before Ray starts, in one line; actors capped
to what can run; every (metric, step) once in MLflow; a run's buffers synced with one command; Ctrl-C."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from platform.cli import INTERRUPTED_LINE, run_cli
from platform.config import load_config
from platform.train.command import build_parser, main
from tests.platform.conftest import (
    kill_tree,
    metric_steps,
    mlflow_runs,
    run_platform,
    start_platform,
    tiny_overrides,
    wait_for,
)

UNREACHABLE = "http://127.0.0.1:9"  # discard port: connection refused at once


def refused(capsys, args: list[str], *needles: str, within_s: float = 10.0) -> str:
    """``python -m platform.train args`` in this process: exit status 2 and one error line naming ``needles``."""
    start = time.monotonic()
    assert run_cli(main, build_parser(), args) == 2
    assert time.monotonic() - start < within_s
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def base(tmp_path: Path, *extra: str) -> list[str]:
    """A run whose dataset is absent and never collected: should a check let it through, it stops at once."""
    return [
        "name=misuse",
        f"output_dir={tmp_path / 'runs'}",
        f"data.path={tmp_path / 'no-data'}",
        "data.collect_if_missing=false",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        *extra,
    ]


# ---------------------------------------------------------------- 1. two drivers, one name

HOLDER = """
import fcntl, os, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
f.seek(0); f.truncate(); f.write(f"pid {os.getpid()} on test\\n"); f.flush()
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.process
def test_a_second_driver_under_the_same_name_is_refused_at_once(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "misuse"
    run_dir.mkdir(parents=True)
    (run_dir / "experiment.yaml").write_text("first run's\n")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(run_dir / ".driver.lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        line = refused(
            capsys, base(tmp_path), "'misuse' is already running", f"pid {holder.pid}", "name=", within_s=5
        )
        assert str(run_dir / ".driver.lock") in line
    finally:
        holder.kill()
        holder.wait()
    assert (run_dir / "experiment.yaml").read_text() == "first run's\n"
    assert not (tmp_path / "mlflow.db").exists()
    # the holder is gone: the lock is free again and the run goes on to its next check (the missing dataset)
    refused(capsys, base(tmp_path), "no dataset at")


# ---------------------------------------------------------------- 3. unusable paths


@pytest.mark.unit
def test_output_dir_that_cannot_be_created(tmp_path, capsys):
    refused(
        capsys,
        base(tmp_path, "output_dir=/proc/minidiffuser-runs"),
        "output_dir=/proc/minidiffuser-runs",
        "cannot create",
    )


@pytest.mark.unit
def test_output_dir_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    refused(capsys, base(tmp_path, f"output_dir={blocker}"), f"output_dir={blocker}", "is a file")


@pytest.mark.unit
def test_read_only_output_dir(tmp_path, capsys, monkeypatch):
    out = tmp_path / "read-only"
    out.mkdir()
    if os.geteuid() == 0:  # root writes through permission bits: stand in for a read-only file system

        def read_only(directory):
            raise OSError(errno.EROFS, "Read-only file system", str(directory))

        monkeypatch.setattr("platform.train.preflight._probe_write", read_only)
    else:
        out.chmod(0o555)
    try:
        refused(
            capsys,
            base(tmp_path, f"output_dir={out}"),
            f"output_dir={out}",
            "cannot write in",
            "errno 30" if os.geteuid() == 0 else "errno 13",
        )
    finally:
        out.chmod(0o755)


@pytest.mark.unit
def test_data_path_that_is_a_file(tmp_path, capsys):
    blocker = tmp_path / "data.parquet"
    blocker.write_text("x")
    refused(
        capsys,
        base(tmp_path, f"data.path={blocker}", "data.collect_if_missing=true"),
        f"data.path={blocker}",
        "is a file",
    )
    assert not (tmp_path / "runs").exists(), "nothing is created for a run that cannot start"


# ---------------------------------------------------------------- 4. eval.tasks


@pytest.mark.unit
def test_unknown_eval_task_is_refused_before_training(tmp_path, capsys):
    refused(
        capsys,
        base(tmp_path, "eval.tasks=[reach-v3,no-such-task-v3]"),
        "eval.tasks ['no-such-task-v3']",
        "suite mt10",
        "reach-v3",
    )  # not collected yet: the suite's tasks
    data = tmp_path / "no-data"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"tasks": ["reach-v3", "push-v3"]}))
    refused(
        capsys,
        base(tmp_path, "eval.tasks=[door-open-v3]"),
        "['door-open-v3']",
        f"the dataset at {data}",
        "push-v3",
    )
    refused(
        capsys, base(tmp_path, "data.tasks=[reach-v3]", "eval.tasks=[push-v3]"), "data.tasks has reach-v3"
    )
    assert not (tmp_path / "runs").exists(), "nothing is created for a run that cannot start"


@pytest.mark.unit
@pytest.mark.parametrize(
    "override, named, suggested",
    [
        (
            "eval.max_keyposes_per_task.handle-pull=50",
            "eval.max_keyposes_per_task names ['handle-pull']",
            "handle-pull-v3",
        ),
        ("data.task_weights.stick-pull=2", "data.task_weights names ['stick-pull']", "stick-pull-v3"),
    ],
)
def test_a_setting_for_an_unknown_task_is_refused_before_training(
    tmp_path, capsys, override, named, suggested
):
    refused(capsys, base(tmp_path, override), named, "suite mt10", suggested)  # the -v3 missing
    assert not (tmp_path / "runs").exists(), "nothing is created for a run that cannot start"


@pytest.mark.unit
def test_known_eval_tasks_pass():
    from platform.train.preflight import check_eval_tasks, check_task_weights

    check_eval_tasks(load_config(None, ["eval.tasks=[reach-v3,push-v3]"]).with_absolute_paths())
    check_eval_tasks(load_config(None, ["eval.max_keyposes_per_task.push-v3=40"]).with_absolute_paths())
    check_task_weights(load_config(None, ["data.task_weights.push-v3=2"]).with_absolute_paths())
    check_eval_tasks(
        load_config(None, ["eval.tasks=[nope]", "eval.enabled=false"])
    )  # not evaluated: not checked


# ---------------------------------------------------------------- 2. actors


@pytest.mark.unit
def test_actors_never_exceed_episodes_or_the_cluster(monkeypatch):
    from evaluation.runtime.run import cap_actors
    from platform.evaluate import plan_actors
    from platform.session import joins_cluster, local_cluster_cpus

    assert cap_actors(2, 10, 4) == (2, None)
    n, line = cap_actors(500, 2, None, what="eval.actors")
    assert n == 2 and line == "eval.actors=500 capped to 2 simulator actors: 2 episodes to run"
    n, line = cap_actors(500, 50, 3)
    assert n == 3 and line.endswith("50 episodes to run and the Ray cluster runs 3 at once")
    cfg = load_config(None, ["eval.actors=500", "eval.episodes_per_task=1", "eval.num_seeds=3"])
    capped, line = plan_actors(cfg, num_tasks=2)
    assert capped.eval.actors == 6 and "6 episodes to run" in line
    assert plan_actors(cfg, num_tasks=2, capacity=3)[0].eval.actors == 3
    # a private cluster is sized by the machine: 2 cores -> the train worker + at most 2 actors
    assert local_cluster_cpus(cfg, cores=2) == 3
    assert local_cluster_cpus(load_config(None, ["eval.enabled=false"]), cores=2) == 2
    assert local_cluster_cpus(load_config(None, ["ray.num_cpus=7", "eval.actors=500"]), cores=2) == 7
    # only a private cluster's size caps the actors: a joined one may be grown by an autoscaler
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    assert not joins_cluster(cfg) and joins_cluster(load_config(None, ["ray.address=auto"]))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert joins_cluster(cfg)


# ---------------------------------------------------------------- 5. every (metric, step) once


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory) -> str:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).search_experiments()  # migrations once per module
    return uri


def _history(uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key))


@pytest.mark.unit
def test_replayed_steps_are_not_logged_twice(sqlite_uri, tmp_path):
    from platform.tracking import RunTracker

    first = RunTracker.open(sqlite_uri, "dups", "resumed", tmp_path / "worker")
    for step in range(1, 5):
        first.log_metrics({"train/loss": float(step)}, step)
    first.log_metrics({"train/loss": 99.0}, 4)  # the same step twice in one session
    assert first.close("KILLED")
    # resumed past a corrupt checkpoint: steps 3 and 4 are trained and logged again by a new process
    again = RunTracker.open(sqlite_uri, "dups", "resumed", tmp_path / "worker.2")
    assert again.run_id == first.run_id
    assert again.has_metric("train/loss", 4) and not again.has_metric("train/loss", 5)
    for step in range(3, 7):
        again.log_metrics({"train/loss": 10.0 * step}, step)
    assert again.flush()
    other = RunTracker.open(sqlite_uri, "dups", "resumed", tmp_path / "driver")  # another writer of the run
    other.log_metrics({"eval/success": 0.25}, 6)
    assert other.close() and again.has_metric("eval/success", 6)  # asked of MLflow, not of a stale cache
    again.log_metrics({"eval/success": 0.75}, 6)
    assert again.close()
    assert _history(sqlite_uri, first.run_id, "eval/success") == [(6, 0.25)]
    assert _history(sqlite_uri, first.run_id, "train/loss") == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 4.0),
        (5, 50.0),
        (6, 60.0),
    ]


def _fake_report(success: float) -> str:
    from evaluation.runtime.metrics import EvalReport, TaskSummary

    task = TaskSummary(
        task="reach-v3",
        episodes=2,
        successes=int(2 * success),
        success_rate=success,
        status_counts={"ok": 2},
        mean_steps=3.0,
    )
    return EvalReport(
        tasks={"reach-v3": task},
        episodes=2,
        successes=task.successes,
        mean_success=success,
        status_counts={"ok": 2},
        wall_s=1.0,
        episodes_per_s=2.0,
        time_shares={},
    ).to_json()


@pytest.mark.unit
def test_rerun_of_a_finished_run_reuses_its_evaluation(sqlite_uri, tmp_path, monkeypatch, capsys):
    """The final evaluation of an already evaluated checkpoint is neither run nor logged again; with other
    settings it runs, and MLflow keeps the first values of that step."""
    import platform.evaluate as pe
    from platform.tracking import RunTracker
    from platform.train.checkpoint import write_checkpoint

    run_dir = tmp_path / "runs" / "finished"
    write_checkpoint(run_dir, 20, {"model.pt": lambda p: p.write_bytes(b"weights")})
    calls: list[str] = []

    def fake_evaluate(cfg, checkpoint):
        from evaluation.runtime.metrics import EvalReport

        calls.append(checkpoint)
        return pe.EvalOutcome(report=EvalReport.from_json(_fake_report(0.5 if len(calls) == 1 else 1.0)))

    monkeypatch.setattr(pe, "_evaluate", fake_evaluate)
    monkeypatch.setattr(pe, "_log_plots", lambda *a: None)
    cfg = load_config(None, ["name=finished", f"output_dir={tmp_path / 'runs'}"])
    for _ in range(2):  # the run, then the same command again
        tracker = RunTracker.open(sqlite_uri, "rerun", "finished", run_dir / "mlflow_buffer" / "driver")
        report = pe.final_evaluation(cfg, run_dir, tracker)
        assert tracker.close() and report.mean_success == 0.5
    assert len(calls) == 1 and "reusing" in capsys.readouterr().out
    tracker = RunTracker.open(sqlite_uri, "rerun", "finished", run_dir / "mlflow_buffer" / "driver")
    other = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"episodes_per_task": 7})})
    assert pe.final_evaluation(other, run_dir, tracker).mean_success == 1.0
    assert tracker.close() and len(calls) == 2
    assert "already holds eval/* at step 20" in capsys.readouterr().out
    assert _history(sqlite_uri, tracker.run_id, "eval/success") == [(20, 0.5)]


@pytest.mark.unit
def test_standalone_evaluation_does_not_log_a_step_twice(sqlite_uri, tmp_path):
    from mlflow.tracking import MlflowClient

    from evaluation.runtime.metrics import EvalReport
    from evaluation.runtime.run import log_to_mlflow

    client = MlflowClient(tracking_uri=sqlite_uri)
    experiment = client.create_experiment(
        f"standalone-{tmp_path.name}", artifact_location=(tmp_path / "art").as_uri()
    )
    run_id = client.create_run(experiment).info.run_id
    assert log_to_mlflow(EvalReport.from_json(_fake_report(0.5)), run_id, sqlite_uri, 7, "mt10_seed0")
    assert not log_to_mlflow(EvalReport.from_json(_fake_report(1.0)), run_id, sqlite_uri, 7, "mt10_seed0")
    assert _history(sqlite_uri, run_id, "eval/success") == [(7, 0.5)]


# ---------------------------------------------------------------- 6. one command syncs a run's buffers


@pytest.mark.unit
def test_sync_uploads_every_buffer_of_a_run(sqlite_uri, tmp_path, capsys):
    from platform.tracking import RunTracker, buffer_backlog
    from platform.tracking import main as tracking_main
    from platform.train.command import _close

    run_dir = tmp_path / "runs" / "outage"
    root = run_dir / "mlflow_buffer"
    worker = RunTracker.open(UNREACHABLE, "outage", "outage", root / "worker", connect_timeout_s=1)
    worker.log_metrics({"train/loss": 1.0}, step=10)
    worker.flush(timeout_s=1)  # a train worker flushes, it does not close
    driver = RunTracker.open(UNREACHABLE, "outage", "outage", root / "driver", connect_timeout_s=1)
    driver.log_metrics({"time/fit_wall_s": 1.0}, step=10)
    _close(driver, "FINISHED", run_dir)  # the end of platform.train's run
    worker.close("FINISHED", timeout_s=1)
    hint = capsys.readouterr().err.strip().splitlines()[-1]
    assert hint.endswith(f"upload them with python -m platform.tracking sync {root}"), hint
    assert set(buffer_backlog(root, UNREACHABLE)) == {root / "driver", root / "worker"}
    assert tracking_main(["sync", str(root), "--tracking-uri", sqlite_uri]) == 0
    out = capsys.readouterr().out
    assert out.count("uploaded everything") == 2
    (run,) = mlflow_runs(sqlite_uri, "outage")
    assert run.info.status == "FINISHED"
    assert metric_steps(sqlite_uri, run.info.run_id, "train/loss") == [10]
    assert metric_steps(sqlite_uri, run.info.run_id, "time/fit_wall_s") == [10]
    assert tracking_main(["sync", str(tmp_path / "runs" / "outage" / "nothing-here")]) == 2


# ---------------------------------------------------------------- 7. the MLflow run's status on the way out


@pytest.mark.unit
@pytest.mark.parametrize(
    "failure,code,status", [(KeyboardInterrupt, 130, "KILLED"), ("final-eval", 2, "FAILED")]
)
def test_an_interrupted_or_failed_run_is_not_left_running(
    sqlite_uri, tmp_path, capsys, monkeypatch, failure, code, status
):
    """Ctrl-C -> KILLED, the interrupted line, 130; a failed final evaluation -> FAILED, one error line, 2."""
    import platform.evaluate
    import platform.session
    import platform.train.dataset
    import platform.train.launch
    from platform.cli import UserFacingError

    def fit(cfg, payload, run_dir):
        if failure is KeyboardInterrupt:
            raise KeyboardInterrupt

    def final_evaluation(cfg, run_dir, tracker):
        raise UserFacingError("final evaluation of step_00000010 failed: ValueError: no simulator")

    monkeypatch.setattr(platform.train.dataset, "ensure_dataset", lambda cfg: tmp_path / "data")
    monkeypatch.setattr(platform.session, "connect_ray", lambda cfg: 0.0)
    monkeypatch.setattr(platform.evaluate, "eval_actor_capacity", lambda cfg: None)
    monkeypatch.setattr(platform.train.launch, "fit", fit)
    monkeypatch.setattr(platform.evaluate, "final_evaluation", final_evaluation)
    name = f"exit-{status.lower()}"
    args = [
        f"name={name}",
        f"output_dir={tmp_path / 'runs'}",
        f"data.path={tmp_path / 'data'}",
        "data.tasks=[reach-v3]",
        f"tracking.uri={sqlite_uri}",
        "tracking.experiment=exits",
    ]
    assert run_cli(main, build_parser(), args) == code
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert err[-1] == (
        INTERRUPTED_LINE
        if code == 130
        else "error: final evaluation of step_00000010 failed: ValueError: no simulator"
    )
    (run,) = mlflow_runs(sqlite_uri, name)
    assert run.info.status == status


# ---------------------------------------------------------------- 1 + 7 end to end


@pytest.mark.integration
# Both end-to-end variants are `slow`: the in-driver one (workers=0) twice kept training after SIGINT in full-suite
# runs on a loaded 2-core machine (it passes alone); test_an_interrupted_or_failed_run_is_not_left_running
# covers exit status 130, the last line and the KILLED status in the default suite.
@pytest.mark.parametrize(
    "workers,steps,resume",
    [
        pytest.param(0, 5000, False, marks=pytest.mark.slow),
        pytest.param(1, 300, True, marks=pytest.mark.slow),
    ],
)
def test_ctrl_c_stops_with_130_and_marks_the_run_killed(
    tmp_path, tiny_dataset, ray_cluster, sqlite_uri, workers, steps, resume
):
    """A live run refuses a second driver under its name; Ctrl-C stops it with exit status 130, its checkpoints
    kept and the MLflow run KILLED. workers=0 trains in the driver (default suite); workers=1 goes through Ray
    Train's controller and resumes the run to FINISHED with the same command (slow)."""
    name = f"ctrlc{workers}"
    args = tiny_overrides(
        tmp_path,
        tiny_dataset,
        name,
        f"train.steps={steps}",
        "train.checkpoint_every=5",
        "eval.enabled=false",
        f"ray.num_workers={workers}",
        f"tracking.uri={sqlite_uri}",
    )  # the module's database: migrated once
    env = {"RAY_ADDRESS": ray_cluster.address}
    log = tmp_path / "first.log"
    proc = start_platform("platform.train", args, log, env=env)
    run_dir = tmp_path / "runs" / name
    progress = run_dir / "progress.json"
    uri = sqlite_uri
    try:
        # the first driver holds the run from before Ray and MLflow start: a second one is refused at once
        wait_for(lambda: f"pid {proc.pid} " in _read(run_dir / ".driver.lock"), 60, "the first driver's lock")
        second = run_platform("platform.train", args, env=env, timeout=60)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"'{name}' is already running" in second.stderr and "Traceback" not in second.stderr
        wait_for(
            lambda: progress.is_file() and json.loads(progress.read_text())["step"] >= 5,
            300,
            "the first checkpoint",
            poll=0.1,
        )
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the foreground group
        start = time.monotonic()
        rc = proc.wait(timeout=60)
        stopped_s = time.monotonic() - start
    finally:
        kill_tree(proc)
    text = log.read_text()
    assert rc == 130, text[-3000:]
    assert stopped_s < 20, stopped_s
    assert [ln for ln in text.splitlines() if ln.strip()][-1] == INTERRUPTED_LINE
    (run,) = mlflow_runs(uri, name)
    assert run.info.status == "KILLED"
    assert 5 <= json.loads(progress.read_text())["step"] < steps
    if not resume:
        return
    out = run_platform("platform.train", args, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "resumed from step_" in text and f"MLflow run {run.info.run_id} at" in text
    (after,) = mlflow_runs(uri, name)
    assert after.info.status == "FINISHED"
    steps_logged = metric_steps(uri, run.info.run_id, "train/loss")
    assert steps_logged == sorted(set(steps_logged)) and steps_logged[-1] == steps


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


# ---------------------------------------------------------------- resuming with a changed policy shape (issue 23)


def _finished_run(tmp_path: Path, *extra: str) -> Path:
    """A run directory as a finished tiny run leaves it: one valid checkpoint with its policy.json and
    experiment.yaml (written by the real checkpoint writer; no training needed to refuse a resume of it)."""
    from platform.config import to_yaml
    from platform.train.checkpoint import write_checkpoint

    cfg = load_config(None, [*base(tmp_path, "policy.preset=tiny", *extra)]).with_absolute_paths()
    return write_checkpoint(
        cfg.run_dir,
        40,
        {
            "policy.json": lambda p: p.write_text(cfg.policy.model_dump_json(indent=2)),
            "experiment.yaml": lambda p: p.write_text(to_yaml(cfg)),
        },
    )


@pytest.mark.unit
def test_resuming_with_another_policy_shape_is_refused_before_ray(tmp_path, capsys):
    ckpt = _finished_run(tmp_path)
    before = {p: p.read_bytes() for p in ckpt.iterdir()}
    line = refused(
        capsys,
        base(tmp_path, "policy.preset=laptop"),
        "run 'misuse' would resume from",
        str(ckpt),
        "policy's parameter shapes",
        "policy.d_model: 24 -> 96",
        "another name=",
        "experiment.yaml",
    )
    assert "policy.m" not in line and "policy.preset" not in line, "only the keys that change the shapes"
    refused(
        capsys,
        base(tmp_path, "policy.preset=tiny", "policy.type=one_to_one"),
        "policy.type: mini_diffuser -> one_to_one",
    )
    refused(
        capsys,
        base(tmp_path, "policy.preset=tiny", "data.balance=tasks"),
        "the training set",
        "data.balance: samples -> tasks",
    )
    refused(
        capsys,
        base(tmp_path, "policy.preset=tiny", "data.task_weights.push-v3=2"),
        "the training set",
        'data.task_weights: {} -> {"push-v3": 2.0}',
    )
    refused(
        capsys,
        base(tmp_path, "policy.preset=tiny", "data.observe=replay"),
        "the training set",
        "data.observe: expert -> replay",
    )
    refused(
        capsys,
        base(tmp_path, "policy.preset=tiny", "data.observe=replay", "data.recoveries=1"),
        "the training set",
        "data.recoveries: 0 -> 1",
    )
    refused(
        capsys,
        base(tmp_path, "policy.preset=tiny", "data.aim_goal=true"),
        "the training set",
        "data.aim_goal: False -> True",
    )
    refused(
        capsys,
        base(tmp_path, "policy.preset=tiny", "data.surface_fraction=0.5"),
        "the training set",
        "data.surface_fraction: 0.0 -> 0.5",
    )
    refused(
        capsys,
        base(tmp_path, "policy.preset=tiny", "data.hide_arm=true"),
        "the training set",
        "data.hide_arm: False -> True",
    )
    assert {p: p.read_bytes() for p in ckpt.iterdir()} == before, "the run's checkpoint is untouched"
    assert not (tmp_path / "mlflow.db").exists(), "its MLflow record is untouched: MLflow was never opened"
    assert not (ckpt.parent.parent / "experiment.yaml").exists(), "nor is the run's experiment.yaml rewritten"


@pytest.mark.unit
def test_settings_a_resume_may_change_still_resume(tmp_path):
    from platform.train.preflight import check_resume

    _finished_run(tmp_path)
    for change in (
        ["train.steps=5000", "train.lr=1e-4", "eval.episodes_per_task=7", "policy.m=8"],
        ["train.time_budget_s=60", "policy.diffusion.inference_steps=5", "data.val_episodes_per_task=0"],
    ):
        check_resume(load_config(None, base(tmp_path, "policy.preset=tiny", *change)).with_absolute_paths())
    check_resume(load_config(None, base(tmp_path, "name=other", "policy.preset=paper")).with_absolute_paths())


# ---------------------------------------------------------------- a tracking URI that can never work (issue 23)


@pytest.mark.unit
@pytest.mark.parametrize(
    "uri,needle",
    [
        ("gopher://x", "no tracking store for the scheme 'gopher'"),
        ("http://", "no host"),
        ("http://localhost:50o0", "not a number"),
        ("sqlite://", "no database file"),
    ],
)
def test_an_impossible_tracking_uri_is_refused_at_start(tmp_path, capsys, uri, needle):
    refused(capsys, [*base(tmp_path), f"tracking.uri={uri}"], f"tracking.uri={uri}", needle, "MLflow accepts")
    assert not (tmp_path / "runs").exists(), "nothing is created for a run that cannot start"


@pytest.mark.unit
def test_a_bad_mlflow_tracking_uri_variable_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "gopher://x")
    args = [a for a in base(tmp_path) if not a.startswith("tracking.uri=")]
    refused(capsys, args, "MLFLOW_TRACKING_URI=gopher://x")


@pytest.mark.unit
def test_a_well_formed_uri_of_a_server_that_is_down_is_an_outage_not_an_error(tmp_path):
    from platform.train.preflight import check_tracking

    for uri in (
        UNREACHABLE,
        "https://mlflow.example.org",
        "postgresql+psycopg2://u:p@db/mlflow",
        "databricks",
        f"file://{tmp_path}/mlruns",
        str(tmp_path / "mlruns"),
    ):
        check_tracking(load_config(None, [f"tracking.uri={uri}"]))
    check_tracking(
        load_config(None, ["tracking.uri=gopher://x", "tracking.enabled=false"])
    )  # not used: not checked


# ---------------------------------------------------------------- a checkpoint whose weights are corrupt (issue 23)


def _tiny_checkpoint(tmp_path: Path) -> Path:
    """A real checkpoint as training writes it (policy files, instructions, manifest), of an untrained tiny policy."""
    import numpy as np
    import torch

    from evaluation.checkpoint_format import INSTRUCTIONS_FILE, save_instructions
    from platform.train.checkpoint import write_checkpoint
    from policies.registry import build_policy, parse_policy_config

    policy = build_policy(parse_policy_config({"type": "mini_diffuser", "preset": "tiny"}))
    text = {"reach-v3": (np.ones((3, policy.config.text_dim), np.float32), np.ones(3, bool))}
    return write_checkpoint(
        tmp_path / "run",
        10,
        {
            "policy.json": lambda p: p.write_text(policy.config.model_dump_json()),
            "model.pt": lambda p: torch.save(policy.state_dict(), p),
            "ema.pt": lambda p: torch.save(policy.state_dict(), p),
            INSTRUCTIONS_FILE: lambda p: save_instructions(p, text),
        },
    )


@pytest.mark.unit
@pytest.mark.parametrize("corrupt", ["ema.pt", "model.pt"])
def test_a_corrupt_weights_file_is_named_before_any_actor_starts(tmp_path, capsys, corrupt):
    import ray

    from evaluation.runtime.run import main as evaluation_run

    ckpt = _tiny_checkpoint(tmp_path)
    (ckpt / corrupt).write_bytes(b"not a torch file")
    start = time.monotonic()
    assert evaluation_run(["--checkpoint", str(ckpt), "--tasks", "reach-v3", "--episodes", "1"]) == 2
    assert time.monotonic() - start < 10 and not ray.is_initialized(), (
        "refused before Ray (and any actor) starts"
    )
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert corrupt in lines[0] and "does not match its manifest" in lines[0] and str(ckpt) in lines[0]


@pytest.mark.unit
def test_unloadable_weights_without_a_manifest_are_named(tmp_path):
    from evaluation.checkpoint_format import CheckpointBundle
    from policies.base import CheckpointError

    ckpt = _tiny_checkpoint(tmp_path)
    (ckpt / "manifest.json").unlink()  # e.g. a policy saved by hand: no manifest to check against
    CheckpointBundle.read(ckpt)
    (ckpt / "ema.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=r"ema\.pt cannot be loaded"):
        CheckpointBundle.read(ckpt)


@pytest.mark.unit
def test_a_periodic_evaluation_of_a_corrupt_checkpoint_fails_alone(tmp_path, monkeypatch, capsys):
    import ray

    from platform.evaluate import log_eval_report, submit_evaluation

    class RecordingTracker:  # a fake: records what would go to MLflow
        def __init__(self) -> None:
            self.metrics: list[tuple[dict, int]] = []

        def log_metrics(self, metrics: dict, step: int) -> None:
            self.metrics.append((metrics, step))

    ckpt = _tiny_checkpoint(tmp_path)
    (ckpt / "ema.pt").write_bytes(b"not a torch file")
    monkeypatch.setattr(ray, "put", lambda value: value)  # the failed outcome needs no object store here
    outcome = submit_evaluation(load_config(None, ["eval.every_steps=10"]), ckpt)
    assert outcome.report is None and "ema.pt does not match its manifest" in outcome.error
    tracker = RecordingTracker()
    assert log_eval_report(tracker, ckpt, 10, outcome) is None
    assert tracker.metrics == [({"eval/failed": 1.0}, 10)]
    assert "evaluation of step 10 failed" in capsys.readouterr().out


# ---------------------------------------------------------------- actors that would not fit in memory (issue 23)


@pytest.mark.unit
def test_actors_that_would_not_fit_in_memory_are_capped_with_one_line(monkeypatch, capsys, tmp_path):
    from evaluation.runtime import memory
    from evaluation.runtime.run import cap_actors
    from platform.evaluate import size_eval_actors

    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    4608000 kB\n")
    assert memory.available_memory_mb(meminfo) == 4500.0
    assert memory.memory_actor_capacity("mt50", free_mb=4500.0)[0] == 3
    assert memory.memory_actor_capacity("mt10", free_mb=100.0)[0] == 1, "one actor always runs"
    assert memory.memory_actor_capacity("rlbench", free_mb=100.0) is None, "not measured: not capped"
    n, line = cap_actors(8, 100, 16, memory=memory.memory_actor_capacity("mt50", free_mb=4500.0))
    assert n == 3 and line.endswith("this machine's free memory (4.4 GB) holds 3 at about 1.5 GB each")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.setattr(memory, "available_memory_mb", lambda: 3200.0)
    cfg = load_config(None, ["data.suite=mt50", "eval.actors=12", f"data.path={tmp_path / 'none'}"])
    assert size_eval_actors(cfg, capacity=16).eval.actors == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        "[eval] eval.actors=12 capped to 2 simulator actors: this machine's free memory (3.1 GB) holds 2 "
        "at about 1.5 GB each"
    ]
    joined = load_config(
        None, ["data.suite=mt50", "eval.actors=12", "ray.address=auto", f"data.path={tmp_path / 'none'}"]
    )
    assert size_eval_actors(joined, capacity=None).eval.actors == 12, (
        "a joined cluster's memory is not this machine's"
    )


@pytest.mark.unit
def test_an_out_of_memory_kill_is_told_from_a_crash(tmp_path):
    from evaluation.runtime.memory import OomWatch, oom_kill_count

    vmstat, events = tmp_path / "vmstat", tmp_path / "memory.events"
    vmstat.write_text("pgfault 12\noom_kill 2\n")
    assert oom_kill_count((vmstat, events)) == 2, "a counter file that does not exist counts 0"
    watch = OomWatch((vmstat, events))
    crash = RuntimeError(
        "The actor died unexpectedly before finishing this task. Worker exit type: SYSTEM_ERROR"
    )
    assert not watch.killed_for_memory(crash)
    events.write_text("low 0\nmax 3\noom 1\noom_kill 1\n")  # the container's cgroup killed a process
    assert watch.killed_for_memory(crash) and not watch.killed_for_memory(crash), "each kill is counted once"
    assert watch.killed_for_memory(
        "ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory."
    )


@pytest.mark.unit
def test_more_gpu_workers_than_gpus_is_one_line_naming_the_fix():
    from platform.train.launch import too_few_gpus

    assert too_few_gpus(1, 1) is None and too_few_gpus(2, 4) is None and too_few_gpus(0, 1) is None
    problem = too_few_gpus(2, 1)  # configs/mt50.yaml's two CPU workers on a one-GPU machine
    assert problem is not None and "\n" not in problem
    assert "ray.num_workers=2 trains on 2 GPUs but this machine has 1: set ray.num_workers=1" in problem
    no_gpu = too_few_gpus(1, 0)  # ray.use_gpu=true without a GPU: no worker count can help
    assert no_gpu is not None and no_gpu.endswith("has 0: set ray.use_gpu=false")
