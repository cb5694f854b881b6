"""The driver of ``python -m platform.train``: the main job (collect if missing -> train -> parallel eval -> MLflow).

    python -m platform.train                              # the embedded default: Meta-World MT10, laptop preset
    python -m platform.train --config configs/tiny.yaml   # a YAML experiment
    python -m platform.train policy.m=64 train.steps=2000 # dotted overrides, each validated
    python -m platform.train policy.type=one_to_one name=mt10-one2one   # the 3DDA-style one-to-one baseline
    python -m platform.train --print-config               # the resolved config
    ray job submit --working-dir . -- python -m platform.train   # on a cluster (see cluster.yaml)

Rerunning the same command (same ``name``) resumes the run from its newest valid checkpoint and continues
the same MLflow run; a new ``name`` starts fresh. The last line printed is
``mean success: <percent>% over <N> episodes (MLflow run <id>, tracking URI <uri>)``.

Before Ray starts, the driver checks the paths, ``eval.tasks`` and that no other live driver runs under the
same ``name`` (``platform.train.preflight``); each problem is one line (exit status 2). Ctrl-C stops training
(checkpoints are kept), marks the MLflow run KILLED, prints ``interrupted: rerun the same command to resume``
and exits 130; an error marks it FAILED.
"""

from __future__ import annotations

# The stages are imported in the functions that run them, not here: `--help`, `--print-config` and a bad
# override answer in about 0.6 s instead of the 4 s that torch, Ray Train and the simulators take to import.
import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from evaluation.files import atomic_write_text
from platform.cli import add_config_arguments
from platform.config import FAULT_ENV, ExperimentConfig, to_yaml

if TYPE_CHECKING:  # type-only: importing them here would slow --help (see above)
    from evaluation.runtime.metrics import EvalReport
    from platform.tracking import RunTracker


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m platform.train",
        description="Train a multi-task keyframe diffusion policy with Ray Train (Mini-Diffuser two-level "
        "mini-batches by default), evaluate it with parallel simulator actors, log everything to MLflow.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n  python -m platform.train\n  python -m platform.train --config configs/tiny.yaml\n"
        "  python -m platform.train policy.m=64 train.steps=2000\n"
        "  python -m platform.train policy.type=one_to_one name=mt10-one2one\n"
        "  python -m platform.train --print-config",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--no-eval", action="store_true", help="skip the final evaluation (same as eval.enabled=false)"
    )
    return parser


def main(args: argparse.Namespace, cfg: ExperimentConfig) -> int:
    t_start = time.perf_counter()
    if args.no_eval:
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"enabled": False})})
    cfg = cfg.with_absolute_paths()
    from platform.train.preflight import (
        check_data_path,
        check_eval_tasks,
        check_output_dir,
        check_resume,
        check_task_weights,
        check_tracking,
        driver_lock,
    )

    check_data_path(cfg)  # before anything is created or started: one line naming the path or key
    check_eval_tasks(cfg)
    check_task_weights(cfg)
    check_tracking(cfg)
    check_output_dir(cfg)  # creates the run directory, where the driver lock lives
    with driver_lock(cfg.run_dir, cfg.name):  # one driver per run, for the driver's whole life
        check_resume(cfg)  # under the lock: no other driver writes a checkpoint meanwhile
        return _run(cfg, t_start)


def _run(cfg: ExperimentConfig, t_start: float) -> int:
    from evaluation.checkpoint_format import EXPERIMENT_FILE
    from platform.train.dataset import ensure_dataset

    dataset_dir = ensure_dataset(cfg)
    run_dir = cfg.run_dir
    from platform.evaluate import eval_actor_capacity, size_eval_actors
    from platform.session import connect_ray

    sized = size_eval_actors(cfg, capacity=None, announce=False)  # the episodes to run size a local cluster
    ray_s = connect_ray(sized)
    cfg = size_eval_actors(
        cfg, capacity=eval_actor_capacity(sized)
    )  # and what a private cluster runs at once
    atomic_write_text(run_dir / EXPERIMENT_FILE, to_yaml(cfg))
    tracking = _open_run(cfg, run_dir)
    try:
        report = _train_and_evaluate(cfg, run_dir, tracking, dataset_dir, ray_s)
    except KeyboardInterrupt:
        _close(tracking, "KILLED", run_dir)
        raise
    except BaseException:
        _close(tracking, "FAILED", run_dir)
        raise
    _close(tracking, "FINISHED", run_dir)
    if report is None:
        print(
            f"[train] done in {time.perf_counter() - t_start:.0f} s (evaluation disabled); checkpoints in "
            f"{run_dir / 'checkpoints'}"
        )
        return 0
    uri = tracking.tracking_uri if tracking else "disabled"
    run_id = tracking.run_id if tracking else "none"
    print(f"[train] finished in {time.perf_counter() - t_start:.0f} s")
    _print_where_to_look(cfg, run_dir, tracking, report)
    print(
        f"mean success: {100 * report.mean_success:.1f}% over {report.episodes} episodes "
        f"(MLflow run {run_id}, tracking URI {uri})"
    )
    return 0


def _print_where_to_look(
    cfg: ExperimentConfig, run_dir: Path, tracking: RunTracker | None, report: EvalReport
) -> None:
    """Where the results are: the run's dashboard page, the videos and plots on disk."""
    from platform.evaluate import EVAL_DIR

    eval_dir = run_dir / EVAL_DIR
    videos = report.meta.get("video_dir")
    print(
        f"[train] results: reports and plots in {eval_dir}"
        + (f", rollout videos in {videos}" if videos else "")
    )
    if tracking is None:
        return
    from platform.tracking.dashboard import run_url, ui_command

    experiment_id = tracking.experiment_id
    start = ui_command(tracking.tracking_uri)
    if experiment_id is not None:
        print(
            f"[train] dashboard: {run_url(tracking.tracking_uri, experiment_id, tracking.run_id)}"
            + (f"  (start it with: {start})" if start else "")
        )


def _train_and_evaluate(
    cfg: ExperimentConfig, run_dir: Path, tracking: RunTracker | None, dataset_dir: Path, ray_s: float
) -> EvalReport | None:
    """Train (resuming), then evaluate the final checkpoint; the report, or None with evaluation disabled."""
    from platform.train.launch import fit
    from platform.train.worker import WorkerPayload

    payload = WorkerPayload.for_run(
        cfg,
        run_dir,
        tracking.tracking_uri if tracking else None,
        _tags(cfg),
        fault_crash_at_step=os.environ.get(FAULT_ENV),
    )  # FAULT_ENV: tests only (R1)
    print(
        f"[train] run {cfg.name!r}: dataset {dataset_dir}, checkpoints {run_dir / 'checkpoints'}, "
        f"Ray ready in {ray_s:.1f} s",
        flush=True,
    )
    if tracking is not None:
        print(
            f"[train] MLflow run {tracking.run_id} at {tracking.tracking_uri} (experiment "
            f"{cfg.tracking.experiment!r})",
            flush=True,
        )
    t_fit = time.perf_counter()
    fit(cfg, payload, run_dir)
    fit_s = time.perf_counter() - t_fit
    if tracking is not None:  # a rerun of a finished run keeps the first values (one value per step)
        tracking.log_metrics({"time/ray_start_s": ray_s, "time/fit_wall_s": fit_s}, step=cfg.train.steps)
    if not cfg.eval.enabled:
        return None
    from platform.evaluate import final_evaluation

    return final_evaluation(cfg, run_dir, tracking)


def _open_run(cfg: ExperimentConfig, run_dir: Path) -> RunTracker | None:
    if not cfg.tracking.enabled:
        return None
    from evaluation.checkpoint_format import EXPERIMENT_FILE
    from platform.config import data_root
    from platform.tracking import (
        BUFFER_ROOT,
        RunTracker,
        flatten_config,
        resolve_tracking_uri,
        run_environment_params,
    )

    uri = resolve_tracking_uri(cfg.tracking.uri, data_root())
    tracker = RunTracker.open(
        uri, cfg.tracking.experiment, cfg.name, buffer_dir=run_dir / BUFFER_ROOT / "driver", tags=_tags(cfg)
    )
    tracker.log_params(flatten_config(cfg.model_dump(mode="json")))
    # Versions, git commit, host: tags, since they may legitimately change when a run is resumed.
    tracker.set_tags({k: str(v) for k, v in run_environment_params().items()})
    tracker.log_text(to_yaml(cfg), EXPERIMENT_FILE)
    return tracker


def _tags(cfg: ExperimentConfig) -> dict[str, str]:
    from platform.train.launch import use_gpu

    gpus = max(1, cfg.ray.num_workers) if use_gpu(cfg) else 0
    from platform.tracking import TAG_KIND, TAG_NUM_GPUS, TAG_POLICY_TYPE, TAG_SUITE

    return {
        TAG_KIND: "train",
        TAG_POLICY_TYPE: cfg.policy.type,
        TAG_NUM_GPUS: str(gpus),
        TAG_SUITE: cfg.data.suite,
    }


def _close(tracker: RunTracker | None, status: str, run_dir: Path) -> None:
    """Mark the MLflow run ``status``; when MLflow could not take every record (of the driver or the train
    worker), one line naming the command that uploads them all."""
    if tracker is None:
        return
    tracker.close(status, timeout_s=30.0 if status == "FINISHED" else 10.0)  # Ctrl-C: do not linger
    from platform.tracking import BUFFER_ROOT, buffer_backlog

    root = run_dir / BUFFER_ROOT
    waiting = sum(buffer_backlog(root, tracker.tracking_uri).values())
    if waiting:
        print(
            f"[train] MLflow ({tracker.tracking_uri}) has not received {waiting} records yet; they wait in {root}: "
            f"upload them with python -m platform.tracking sync {root}",
            file=sys.stderr,
            flush=True,
        )
