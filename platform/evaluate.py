"""Glue between training and the evaluation actors: periodic (asynchronous) and final evaluation of a
run's checkpoints, logged to the run's MLflow run against the checkpoint's training step.

Failures of evaluation are reported, recorded and never kill the training run: a periodic evaluation
that raises is logged as ``eval/failed`` and training goes on.

Never more simulator actors than episodes or than the cluster runs at once (``plan_actors``). The final
evaluation of a checkpoint already evaluated with the same settings reuses its report
(``runs/<name>/eval/step_<N>.json``) instead of running it again, and a step whose ``eval/*`` the MLflow run
already holds is not logged again.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from evaluation.checkpoint_format import INSTRUCTIONS_FILE, MANIFEST, CheckpointBundle, load_instructions
from evaluation.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from evaluation.runtime.coordinator import PoolConfig
from evaluation.runtime.evaluate import evaluate_checkpoint
from evaluation.runtime.memory import memory_actor_capacity
from evaluation.runtime.metrics import EvalReport
from evaluation.runtime.run import cap_actors, cluster_actor_capacity, seeds_for
from evaluation.simulators.rlbench_backend import RLBenchConfig
from evaluation.simulators.rlbench_protocol import protocol_kwargs
from evaluation.simulators.rlbench_tasks import EPISODES_PER_TASK, EVAL_SEEDS, MAX_KEYPOSES
from platform.cli import UserFacingError
from platform.config import ExperimentConfig
from platform.session import joins_cluster
from platform.tracking import RunTracker, plot_success_per_task
from platform.train.checkpoint import best_checkpoint, latest_checkpoint, set_checkpoint_metric
from platform.train.preflight import eval_task_count
from policies.base import CheckpointError

EVAL_DIR = "eval"
SETTINGS_SUFFIX = ".settings.json"  # beside step_<N>.json: what the final evaluation was run with
# Settings that change how fast an evaluation runs, not its episodes or their outcome.
_NOT_RESULT_SETTINGS = {
    "enabled",
    "every_steps",
    "actors",
    "policy_server",
    "checkpoint",
    "episode_timeout_s",
    "videos",
    "video_camera",
}
VIDEO_DIR = "videos"  # under EVAL_DIR: one folder per evaluated checkpoint


def eval_seeds(cfg: ExperimentConfig) -> int | list[int]:
    """``eval.seed``, or ``eval.num_seeds`` consecutive seeds from it (default 3 for RLBench's protocol)."""

    return seeds_for(cfg.eval.seed, cfg.eval.num_seeds, cfg.data.suite)


def protocol_note(cfg: ExperimentConfig) -> str | None:
    """Why an RLBench evaluation is not the published protocol (None when it is, or for Meta-World)."""
    if cfg.data.suite != "rlbench":
        return None

    seeds = eval_seeds(cfg)
    n_seeds = len(seeds) if isinstance(seeds, list) else 1
    got = (cfg.eval.episodes_per_task, n_seeds, cfg.eval.max_keyposes)
    want = (EPISODES_PER_TASK, len(EVAL_SEEDS), MAX_KEYPOSES)
    if got == want:
        return None
    return (
        f"{got[0]} episodes per task x {got[1]} seeds, <= {got[2]} keyposes is not the PerAct/3DDA protocol "
        f"({want[0]} x {want[1]} seeds, <= {want[2]}); these numbers are not directly comparable with the "
        "published ones (configs/rlbench18.yaml has the protocol)"
    )


def eval_episodes(cfg: ExperimentConfig, num_tasks: int) -> int:
    """Episodes one evaluation of ``num_tasks`` tasks runs (every seed runs episodes_per_task per task)."""
    seeds = eval_seeds(cfg)
    return num_tasks * cfg.eval.episodes_per_task * (len(seeds) if isinstance(seeds, list) else 1)


def plan_actors(
    cfg: ExperimentConfig, num_tasks: int, capacity: int | None = None, memory: tuple[int, str] | None = None
) -> tuple[ExperimentConfig, str | None]:
    """``cfg`` with ``eval.actors`` capped to the episodes of one evaluation, to ``capacity`` (actors the
    cluster runs at once; None: unknown) and to ``memory`` (``evaluation.runtime.memory.memory_actor_capacity``
    of a private local cluster), and the one line saying so when it was capped."""

    n, note = cap_actors(
        cfg.eval.actors, eval_episodes(cfg, num_tasks), capacity, what="eval.actors", memory=memory
    )
    if n == cfg.eval.actors:
        return cfg, None
    return cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"actors": n})}), note


@dataclass(frozen=True)
class EvalRequest:
    """One evaluation of a checkpoint as the experiment asks for it: ``evaluate_checkpoint``'s arguments, typed.

    Built from the config by ``eval_request``; ``run`` evaluates a checkpoint directory or a ``CheckpointBundle``."""

    tasks: tuple[str, ...]
    episodes_per_task: int
    seed: (
        int | tuple[int, ...]
    )  # several seeds: RLBench's protocol, every seed runs episodes_per_task per task
    suite: str
    pool: PoolConfig  # its num_actors is the number of simulator actors
    video_dir: Path | None
    variations: tuple[int, ...] | None = None  # None: the suite's test variations
    sim_factory: Any = None  # None: the Meta-World backend; RLBench: its protocol's factory

    def run(self, checkpoint: Path | CheckpointBundle, video_dir: Path | None = None) -> EvalReport:
        """Evaluate ``checkpoint`` (a directory or a ``CheckpointBundle``); videos to ``video_dir`` if given."""

        return evaluate_checkpoint(
            checkpoint,
            tasks=list(self.tasks),
            episodes_per_task=self.episodes_per_task,
            num_actors=self.pool.num_actors,
            seed=list(self.seed) if isinstance(self.seed, tuple) else self.seed,
            suite=self.suite,
            sim_factory=self.sim_factory,
            variations=self.variations,
            pool=self.pool,
            video_dir=video_dir or self.video_dir,
        )


@dataclass(frozen=True)
class EvalOutcome:
    """What one evaluation gives back to whoever submitted it: the report, or the error that stopped it.

    ``videos`` holds the rollout videos as bytes when the evaluation ran on another node (``submit_evaluation``);
    ``log_eval_report`` writes them beside the checkpoint."""

    report: EvalReport | None = None
    error: str | None = None
    traceback: str = ""
    videos: dict[str, bytes] = field(default_factory=dict)


def eval_request(
    cfg: ExperimentConfig, checkpoint: Path, bundle: CheckpointBundle | None = None
) -> EvalRequest:
    """The evaluation ``cfg.eval`` asks for of ``checkpoint`` (``bundle``: the checkpoint already read,
    ``evaluation.checkpoint_format.CheckpointBundle``; else its instructions are read here for the task list)."""

    e = cfg.eval
    if e.tasks:
        tasks = tuple(e.tasks)
    else:
        tasks = tuple(
            sorted(
                (
                    bundle.instructions
                    if bundle is not None
                    else load_instructions(checkpoint / INSTRUCTIONS_FILE)
                ).tasks
            )
        )
    actors, _ = cap_actors(e.actors, eval_episodes(cfg, len(tasks)))  # no idle simulators
    pool = PoolConfig(
        num_actors=actors,
        max_keyposes=e.max_keyposes,
        max_keyposes_per_task=dict(e.max_keyposes_per_task),
        episode_timeout_s=e.episode_timeout_s,
        max_attempts=e.retries + 1,
        policy_server=e.policy_server,
        videos=e.videos,
        video_camera=e.video_camera,
    )
    seeds = eval_seeds(cfg)
    request = EvalRequest(
        tasks=tasks,
        episodes_per_task=e.episodes_per_task,
        seed=tuple(seeds) if isinstance(seeds, list) else seeds,
        suite=cfg.data.suite,
        pool=pool,
        video_dir=video_dir(checkpoint),
    )
    if cfg.data.suite != "rlbench":
        return request
    # PerAct's test demos restored with reset_to_demo; PerAct's or 3DDA's rules

    if e.rlbench_demo_root is None:
        raise UserFacingError(
            "data.suite=rlbench evaluates on the PerAct test split: set "
            "eval.rlbench_demo_root=<dir> (or eval.enabled=false)"
        )
    proto = protocol_kwargs(
        RLBenchConfig(tasks=tasks, demo_root=str(cfg.resolve_path(e.rlbench_demo_root))),
        episodes_per_task=e.episodes_per_task,
        protocol=e.rlbench_protocol,
    )
    return dataclasses.replace(
        request,
        variations=proto["variations"],
        sim_factory=proto["sim_factory"],
        pool=pool.model_copy(update={"on_planner_error": proto["pool"].on_planner_error}),
    )


def video_dir(checkpoint: Path) -> Path:
    """Where the rollout videos of ``checkpoint`` (``<run>/checkpoints/step_N``) go: ``<run>/eval/videos/step_N``."""
    return checkpoint.parent.parent / EVAL_DIR / VIDEO_DIR / checkpoint.name


def _evaluate(cfg: ExperimentConfig, checkpoint: Path, bundle: CheckpointBundle | None = None) -> EvalOutcome:
    """Run one evaluation; the outcome holds its report or its error (never raises).

    Without ``bundle`` it reads the checkpoint here and writes its videos beside it. With a ``bundle`` (read
    by the submitter, where the checkpoint lives) it may run on any node: it opens no checkpoint path and
    returns the videos as bytes for ``log_eval_report`` to write."""
    try:
        if bundle is None:
            bundle = CheckpointBundle.read(checkpoint)
            return EvalOutcome(report=eval_request(cfg, checkpoint, bundle).run(bundle))
        with tempfile.TemporaryDirectory(prefix="eval_videos_") as tmp:
            report = eval_request(cfg, checkpoint, bundle).run(bundle, video_dir=Path(tmp))
            videos = {name: (Path(tmp) / name).read_bytes() for name in report.meta.get("videos", [])}
        return EvalOutcome(report=report, videos=videos)
    except Exception as exc:  # reported to the caller, which logs it
        return EvalOutcome(error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=5))


def submit_evaluation(cfg: ExperimentConfig, checkpoint: Path) -> ray.ObjectRef:
    """Start evaluating ``checkpoint`` in the background (a zero-CPU Ray task driving the actor pool; its
    result is an ``EvalOutcome``). The checkpoint is read and checked here (where it was written) and travels
    by value: the task may run on any node. A checkpoint that fails its check gives a failed outcome at once."""

    try:
        bundle = CheckpointBundle.read(checkpoint)
    except (
        CheckpointError
    ) as exc:  # a corrupt checkpoint fails this evaluation (eval/failed), not the training
        return ray.put(EvalOutcome(error=f"{type(exc).__name__}: {exc}", traceback=""))
    remote = ray.remote(num_cpus=0, max_retries=0)(_evaluate)
    return remote.remote(cfg, checkpoint, ray.put(bundle))


def log_eval_report(
    tracker: RunTracker | None, checkpoint: Path, step: int, outcome: EvalOutcome
) -> EvalReport | None:
    """Record an evaluation's outcome: its report as JSON beside the checkpoints (or its error), metrics at
    ``step`` (``EvalReport.mlflow_metrics``: per task, the means, Meta-World's tiers and tier average), the
    keep-best metric; returns the report (None when the evaluation failed)."""
    run_dir = checkpoint.parent.parent
    out_dir = run_dir / EVAL_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    report = outcome.report
    if report is None:
        atomic_write_text(out_dir / f"step_{step:08d}.error.txt", f"{outcome.error}\n{outcome.traceback}")
        print(f"[eval] evaluation of step {step} failed: {outcome.error}", flush=True)
        if tracker is not None:
            tracker.log_metrics({"eval/failed": 1.0}, step=step)
        return None
    if outcome.videos:  # evaluated elsewhere: its videos came back as bytes
        folder = video_dir(checkpoint)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in outcome.videos.items():
            atomic_write_bytes(folder / name, data)
        report = report.model_copy(update={"meta": {**report.meta, "video_dir": str(folder)}})
    text = report.to_json()
    atomic_write_text(out_dir / f"step_{step:08d}.json", text)
    if checkpoint.is_dir():
        set_checkpoint_metric(checkpoint, report.mean_success)
    if tracker is not None:
        tracker.log_metrics(report.mlflow_metrics("eval"), step=step)
        tracker.log_dict(json.loads(text), f"eval/step_{step:08d}.json")
        _log_videos(tracker, report, checkpoint)
    tiers = "" if report.tier_average is None else f" (tier average {100 * report.tier_average:.1f}%)"
    print(
        f"[eval] step {step}: mean success {100 * report.mean_success:.1f}% over {report.episodes} episodes"
        f"{tiers}",
        flush=True,
    )
    return report


def final_evaluation(cfg: ExperimentConfig, run_dir: Path, tracker: RunTracker | None) -> EvalReport:
    """Evaluate the run's last (or best) checkpoint in the driver, print the table, log and return the report.

    A checkpoint already evaluated with the same settings (a rerun of a finished run) is not evaluated again:
    its report is reused. MLflow gets ``eval/*`` at the checkpoint's step only if it does not hold them yet."""
    ckpt = best_checkpoint(run_dir) if cfg.eval.checkpoint == "best" else None
    ckpt = ckpt or latest_checkpoint(run_dir)
    if ckpt is None:
        raise UserFacingError(f"no valid checkpoint in {run_dir / 'checkpoints'} to evaluate")
    settings = eval_settings(cfg, ckpt.path)
    report_path = run_dir / EVAL_DIR / f"step_{ckpt.step:08d}.json"
    logged = tracker is not None and tracker.has_metric("eval/success", ckpt.step) is True
    previous = _previous_report(report_path, settings)
    if previous is not None:
        print(
            f"[eval] {ckpt.path.name} was already evaluated with these settings: reusing {report_path}",
            flush=True,
        )
        outcome = EvalOutcome(report=previous)
    else:
        if logged:
            print(
                f"[eval] note: the MLflow run already holds eval/* at step {ckpt.step} from an evaluation with "
                f"other settings; this one is kept in {report_path} only",
                flush=True,
            )
        outcome = _run_final(cfg, ckpt.path)
    report = log_eval_report(None if logged else tracker, ckpt.path, ckpt.step, outcome)
    if report is None:
        raise UserFacingError(
            f"final evaluation of {ckpt.path} failed: {outcome.error} (details in {run_dir / EVAL_DIR})"
        )
    atomic_write_json(report_path.with_name(report_path.stem + SETTINGS_SUFFIX), settings)
    print(report.table(), flush=True)
    if tracker is not None and not logged:
        _log_plots(tracker, report, run_dir)
    return report


def _run_final(cfg: ExperimentConfig, checkpoint: Path) -> EvalOutcome:
    seeds = eval_seeds(cfg)
    seeds_text = f" x {len(seeds)} seeds" if isinstance(seeds, list) else ""
    print(
        f"[eval] evaluating {checkpoint.name} with {cfg.eval.actors} simulator actors "
        f"({cfg.eval.episodes_per_task} episodes per task{seeds_text})",
        flush=True,
    )
    note = protocol_note(cfg)
    if note:
        print(f"[eval] note: {note}", flush=True)
    return _evaluate(cfg, checkpoint)


def eval_settings(cfg: ExperimentConfig, checkpoint: Path) -> dict[str, Any]:
    """What decides an evaluation's episodes and outcome: the checkpoint's files (manifest hashes), the
    suite and the ``eval.*`` settings (not the number of actors, a timeout or where the policy runs)."""

    try:
        files = json.loads((checkpoint / MANIFEST).read_text())["files"]
        hashes = {name: meta["sha256"] for name, meta in sorted(files.items())}
    except (OSError, ValueError, KeyError, TypeError):
        hashes = {}
    return {
        "checkpoint": str(checkpoint),
        "files": hashes,
        "suite": cfg.data.suite,
        "seeds": eval_seeds(cfg),
        "eval": cfg.eval.model_dump(mode="json", exclude=_NOT_RESULT_SETTINGS),
    }


def _previous_report(report_path: Path, settings: dict[str, Any]) -> EvalReport | None:
    """The report of an earlier final evaluation with exactly ``settings``, if there is one."""
    try:
        saved = json.loads(report_path.with_name(report_path.stem + SETTINGS_SUFFIX).read_text())
        report = EvalReport.from_json(report_path.read_text())
    except (OSError, ValueError):
        return None
    return report if saved == json.loads(json.dumps(settings)) and settings["files"] else None


def _log_videos(tracker: RunTracker, report: EvalReport, checkpoint: Path) -> None:
    """The evaluation's rollout videos as MLflow artifacts ``videos/<checkpoint>/<task>_<outcome>.gif``."""
    folder = report.meta.get("video_dir")
    for name in report.meta.get("videos", []):
        path = Path(folder) / name
        if path.is_file():  # written on this machine (a remote evaluation's files stay on its node)
            tracker.log_artifact(path, f"{VIDEO_DIR}/{checkpoint.name}", copy=False)


def _log_plots(tracker: RunTracker, report: EvalReport, run_dir: Path) -> None:
    try:
        path = run_dir / EVAL_DIR / "success_per_task.png"
        plot_success_per_task({t: s.success_rate for t, s in report.tasks.items()}, path)
        tracker.log_artifact(path, "plots")
    except Exception as exc:  # a plot must never fail the run
        print(f"[eval] could not plot success per task: {exc}", flush=True)


def size_eval_actors(cfg: ExperimentConfig, capacity: int | None, announce: bool = True) -> ExperimentConfig:
    """``eval.actors`` capped to the episodes of one evaluation, to ``capacity`` (actors the cluster runs at
    once; None: unknown) and, on a private local cluster, to what this machine's free memory holds; one
    printed line when capped and ``announce``."""
    if not cfg.eval.enabled:
        return cfg

    tasks = eval_task_count(cfg)
    if tasks is None:
        return cfg
    memory = (
        None if joins_cluster(cfg) else memory_actor_capacity(cfg.data.suite)
    )  # this machine's, when private
    capped, note = plan_actors(cfg, tasks, capacity, memory)
    if note and announce:
        print(f"[eval] {note}", flush=True)
    return capped


def eval_actor_capacity(cfg: ExperimentConfig) -> int | None:
    """Evaluation actors a private local cluster runs at once (the final evaluation has it to itself). None
    for a joined cluster, which an autoscaler may grow by evaluation time (its size now is only noted; the
    evaluation pool refuses what the cluster cannot place then)."""
    if not cfg.eval.enabled:
        return None

    capacity = cluster_actor_capacity()
    if not joins_cluster(cfg):
        return capacity
    if capacity is not None and cfg.eval.actors > capacity:
        print(
            f"[eval] note: eval.actors={cfg.eval.actors} is more than the Ray cluster runs at once now "
            f"({capacity}); the final evaluation fails unless the cluster grows by then: lower eval.actors",
            flush=True,
        )
    return None
