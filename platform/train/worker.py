"""``train_loop_per_worker``: what each Ray Train worker runs (rank 0 is the run's one MLflow writer), given
a ``WorkerPayload``.

Wires: dataset (``platform.train.dataset``) -> ``TrainingState`` (``state``: resumed from the newest valid
checkpoint) -> ``run_steps`` (``loop``) in chunks of ``train.checkpoint_every`` -> atomic checkpoint
(``state`` -> ``checkpoint``) -> metrics of the checkpointed steps to ``ray.train.report`` and MLflow
(``metrics``). Periodic evaluation of checkpoints (``periodic_eval``) goes on beside the training;
training-time marks keep their checkpoints (``marks``).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from evaluation.checkpoint_format import (
    INSTRUCTION_TEXTS_FILE,
    POINTCLOUD_FILE,
    RENDER_FILE,
    Instructions,
)
from evaluation.filelock import FileLock, LockBusyError
from evaluation.files import atomic_write_json
from evaluation.raysession import quiet_train_logger
from platform.cli import UserFacingError
from platform.config import ExperimentConfig
from platform.tracking import BUFFER_ROOT, RunTracker, flatten_config
from platform.train.dataset import DatasetSubset, open_split
from platform.train.loop import run_steps, time_is_up
from platform.train.marks import TimeMarks
from platform.train.metrics import MetricLog
from platform.train.periodic_eval import PeriodicEval
from platform.train.state import TrainingState, build_training, checkpoint_and_prune, resume_if_possible
from platform.train.validation import ValidationSet

PROGRESS_FILE = "progress.json"


@dataclass(frozen=True)
class WorkerPayload:
    """What every Ray Train worker of a run receives (Ray Train passes it on as a plain dict)."""

    config: dict[str, Any]  # ExperimentConfig.model_dump(mode="json")
    run_dir: str
    run_name: str = ""
    experiment: str = ""
    tracking_uri: str | None = None  # None: no MLflow from the workers
    tags: dict[str, str] = field(default_factory=dict)
    periodic_eval: bool = False
    params: dict[str, str] = field(
        default_factory=dict
    )  # sweep trials: extra MLflow params (the worker logs them)
    close_run: bool = False  # sweep trials: the worker owns the MLflow run and closes it
    fault_crash_at_step: str | None = None  # reliability tests only (R1), see platform.train.worker

    @classmethod
    def for_run(
        cls,
        cfg: ExperimentConfig,
        run_dir: Path,
        tracking_uri: str | None,
        tags: dict[str, str],
        **extra: Any,
    ) -> WorkerPayload:
        return cls(
            config=cfg.model_dump(mode="json"),
            run_dir=str(run_dir),
            run_name=cfg.name,
            experiment=cfg.tracking.experiment,
            tracking_uri=tracking_uri,
            tags=tags,
            periodic_eval=cfg.eval.enabled and cfg.eval.every_steps > 0,
            **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | WorkerPayload) -> WorkerPayload:
        return data if isinstance(data, WorkerPayload) else cls(**data)


# data.balance as the start line says it (Level1Sampler)
_BALANCE_WORDS = {"tasks": "task (every task equally)", "sqrt": "the square root of each task's samples"}


def _weights_words(weights: dict[str, float]) -> str:
    """data.task_weights for the start line: tasks grouped by weight, "x2: stick-pull-v3, ..."."""
    by_weight: dict[float, list[str]] = {}
    for task, w in weights.items():
        by_weight.setdefault(w, []).append(task)
    return "; ".join(f"x{w:g}: {', '.join(sorted(ts))}" for w, ts in sorted(by_weight.items()))


def _ray_context() -> tuple[int, int, ModuleType | None]:
    """(rank, world size, ray.train module or None when running outside Ray Train)."""
    try:
        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_world_size(), ray.train
    except Exception:  # not inside a Ray Train worker (num_workers=0 driver mode, unit tests)
        return 0, 1, None


def cpu_threads(cfg: ExperimentConfig, world: int) -> int:
    """Intra-op threads of a CPU training worker (``train.cpu_threads``; see its comment in the config)."""
    if cfg.train.cpu_threads is not None:
        return cfg.train.cpu_threads
    if cfg.eval.enabled and cfg.eval.every_steps > 0:  # simulator actors run beside the training
        return max(1, int(cfg.ray.cpus_per_worker))
    return max(1, (os.cpu_count() or 1) // max(1, world))


def _device(cfg: ExperimentConfig, in_ray: bool) -> torch.device:
    if cfg.train.device == "cpu":
        return torch.device("cpu")
    if in_ray and cfg.train.device == "auto":
        return ray.train.torch.get_device()
    if cfg.train.device == "cuda" or torch.cuda.is_available():
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is visible to this worker")
        return torch.device("cuda")
    return torch.device("cpu")


RUN_LOCK_FILE = ".train.lock"
RUN_LOCK_WAIT_S = 120.0


class RunDirBusyError(UserFacingError):
    """Another live process is training in this run directory."""


def train_loop_per_worker(payload_dict: dict[str, Any]) -> None:
    """Entry point for ``TorchTrainer(train_loop_per_worker=...)``: a ``WorkerPayload`` as dict."""
    payload = WorkerPayload.from_dict(payload_dict)
    cfg = ExperimentConfig.model_validate(payload.config)
    rank, world, train_mod = _ray_context()
    if train_mod is not None:
        quiet_train_logger()
    device = _device(cfg, train_mod is not None)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(cfg, world))
    run_dir = Path(payload.run_dir)
    run_lock = _lock_run_dir(run_dir, rank, world)
    try:
        dataset, val_dataset = open_split(cfg)
        state = build_training(cfg, dataset, device, rank=rank, world=world)
        val = _validation_set(cfg, val_dataset) if rank == 0 else None
        _train(cfg, payload, run_dir, dataset, state, device, rank, world, train_mod, val)
    finally:
        if run_lock is not None:
            run_lock.release()


def _validation_set(cfg: ExperimentConfig, val_dataset: DatasetSubset | None) -> ValidationSet | None:
    """The collated validation episodes, or None (with a line saying why) when there are none."""
    if cfg.train.val_every <= 0 or cfg.data.val_episodes_per_task <= 0:
        off = "train.val_every=0" if cfg.train.val_every <= 0 else "data.val_episodes_per_task=0"
        print(f"[val] validation is off ({off}): no val/* metrics in this run", flush=True)
        return None
    if val_dataset is None:
        print(
            f"[val] no validation episodes in {cfg.data.path} beyond the {cfg.data.episodes_per_task} training "
            "episodes per task: validation is off (collect more, or set data.val_episodes_per_task=0)",
            flush=True,
        )
        return None
    val = ValidationSet.from_dataset(
        val_dataset, cfg.policy.max_points, cfg.train.val_per_task, history=cfg.policy.history
    )
    cap = f", at most {cfg.train.val_per_task} per task" if cfg.train.val_per_task else ""
    print(
        f"[val] {val.size} held-out keyframes ({cfg.data.val_episodes_per_task} episodes per task{cap}) validated "
        f"every {cfg.train.val_every} steps",
        flush=True,
    )
    return val


def _lock_run_dir(run_dir: Path, rank: int, world: int) -> FileLock | None:
    """Rank 0 holds ``<run_dir>/.train.lock`` while it trains, and every rank resumes only after it has it:
    a relaunch waits for a previous worker that is still alive (a killed driver's worker lives until Ray
    reaps it) instead of training beside it on the same checkpoints."""
    lock = None
    if rank == 0:

        def waiting(holder: str) -> None:
            print(
                f"[train] {run_dir} is still used by a previous training process ({holder}); waiting up to "
                f"{RUN_LOCK_WAIT_S:.0f} s for it to exit before resuming",
                flush=True,
            )

        try:
            lock = FileLock(run_dir / RUN_LOCK_FILE).acquire(wait_s=RUN_LOCK_WAIT_S, on_wait=waiting)
        except LockBusyError as exc:
            raise RunDirBusyError(
                f"run directory {run_dir} is in use by another training process ({exc.holder}) after waiting "
                f"{exc.waited_s:.0f} s: stop that run, or start this one under another name="
            ) from None
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # other ranks read the checkpoints only once rank 0 owns the run dir
    return lock


def dataset_files(dataset: Any) -> dict[str, str]:
    """The dataset's settings every checkpoint keeps beside the weights (``{file name: text}``): how its point
    clouds were built (``pointcloud.json``), each task's instruction text and the text encoder's name
    (``instruction_texts.json``, for the policy server) and, for a Meta-World collection, how its cameras rendered
    (``render.json``: evaluation renders the same images). Fakes in tests may have none of them."""
    files = {}
    pc_cfg = getattr(dataset, "pointcloud_config", None)
    if pc_cfg is not None:
        files[POINTCLOUD_FILE] = pc_cfg.model_dump_json()
    task_texts = getattr(dataset, "instruction_texts", None)
    if task_texts:
        files[INSTRUCTION_TEXTS_FILE] = json.dumps(
            {"encoder": getattr(dataset, "text_encoder", None), "tasks": task_texts}, indent=2
        )
    manifest = getattr(dataset, "manifest", None) or {}
    if manifest.get("suite") in ("mt10", "mt50") and "render" in manifest:
        files[RENDER_FILE] = json.dumps(manifest["render"], indent=2)
    return files


def _train(
    cfg: ExperimentConfig,
    payload: WorkerPayload,
    run_dir: Path,
    dataset: DatasetSubset,
    state: TrainingState,
    device: torch.device,
    rank: int,
    world: int,
    train_mod: ModuleType | None,
    val: ValidationSet | None = None,
) -> None:
    instructions = Instructions(
        tasks={t: dataset.instruction_embedding(t) for t in dataset.task_names},
        texts=getattr(dataset, "variation_instructions", dict)(),  # RLBench: one per variation's text
    )
    files = dataset_files(dataset)
    resumed = resume_if_possible(state, run_dir)
    if world > 1:
        state.policy = ray.train.torch.prepare_model(state.policy)
    tracker = _open_tracker(payload, run_dir) if rank == 0 else None
    evals = PeriodicEval(cfg, tracker) if rank == 0 and payload.periodic_eval else None
    if rank == 0:
        print(
            f"[train] {'resumed from ' + resumed.name if resumed else 'starting'} at step {state.step}/"
            f"{cfg.train.steps} on {device}; {len(dataset)} keyframe samples, B={cfg.train.batch_size}, "
            f"M={cfg.policy.m} ({cfg.policy.type})"
            + (f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else "")
            + (
                f", level 1 balanced by {_BALANCE_WORDS[cfg.data.balance]}"
                if cfg.data.balance != "samples"
                else ""
            )
            + (
                f", {len(cfg.data.task_weights)} tasks weighted ({_weights_words(cfg.data.task_weights)})"
                if cfg.data.task_weights
                else ""
            ),
            flush=True,
        )
    deadline = None
    if cfg.train.time_budget_s is not None:
        deadline = time.monotonic() + max(0.0, cfg.train.time_budget_s - state.train_time_s)
    log = MetricLog(
        cfg,
        rank,
        tracker,
        train_mod,
        fault=(run_dir, payload.fault_crash_at_step),
        val=val,
        start_step=state.step,
    )
    marks = TimeMarks(cfg.train.time_marks_s, run_dir)
    try:
        while (
            state.step < cfg.train.steps and not time_is_up(deadline, state.device) and not marks.all_reached
        ):
            target = min(
                cfg.train.steps, (state.step // cfg.train.checkpoint_every + 1) * cfg.train.checkpoint_every
            )
            run_steps(
                state, dataset, target, on_log=log.window, deadline=deadline, until_time_s=marks.next_s()
            )
            at_mark = marks.due(state.train_time_s)
            val_metrics = log.validate_step(state) if at_mark and rank == 0 else {}
            if rank == 0:
                ckpt = checkpoint_and_prune(state, run_dir, instructions, files)
                atomic_write_json(
                    run_dir / PROGRESS_FILE,
                    {
                        "step": state.step,
                        "checkpoint": str(ckpt),
                        "train_time_s": state.train_time_s,
                        "node": _node_id(),
                    },
                    indent=2,
                )
                if at_mark:
                    rec = marks.record(ckpt, state.step, state.train_time_s, val_metrics)
                    print(
                        f"[train] time mark {rec.index} ({rec.mark_s:g} s of training) at step {state.step}: "
                        f"kept {run_dir / rec.checkpoint}",
                        flush=True,
                    )
            elif at_mark:
                marks.advance()
            log.commit(
                state.step, state
            )  # metrics of checkpointed steps only: a restart never logs a step twice
            if evals is not None:
                evals.maybe_submit(ckpt, state.step)
                evals.poll()
        if evals is not None:
            evals.wait_all()
        done = state.step >= cfg.train.steps or marks.all_reached or time_is_up(deadline, state.device)
        if tracker is not None and payload.close_run and done:
            tracker.close("FINISHED")  # sweep trials: nobody else owns their MLflow run
            tracker = None
    finally:
        if tracker is not None:
            tracker.flush()


def _node_id() -> str:
    """The Ray node this worker runs on ("" outside Ray): where the checkpoints are written."""
    try:
        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - informational only
        return ""


def _open_tracker(payload: WorkerPayload, run_dir: Path) -> RunTracker | None:
    if not payload.tracking_uri:
        return None
    tracker = RunTracker.open(
        payload.tracking_uri,
        payload.experiment,
        payload.run_name,
        buffer_dir=run_dir / BUFFER_ROOT / "worker",
        tags=payload.tags,
    )
    if payload.params:  # sweep trials: the driver never sees their run, so the worker logs the config
        tracker.log_params({**flatten_config(payload.config), **payload.params})
    return tracker
