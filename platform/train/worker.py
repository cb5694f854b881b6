"""``train_loop_per_worker``: what each Ray Train worker runs (rank 0 is the run's one MLflow writer).

Wires: dataset -> ``TrainingState`` (resumed from the newest valid checkpoint) -> ``run_steps`` in chunks
of ``train.checkpoint_every`` -> atomic checkpoint -> ``ray.train.report`` -> MLflow. Periodic evaluation
of checkpoints is submitted to the evaluation actors asynchronously (training goes on) and its per-task
success is logged against the checkpoint's training step when it arrives.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from evaluation.checkpoint_format import Instructions
from evaluation.filelock import FileLock, LockBusyError
from evaluation.files import atomic_write_json
from evaluation.progress import format_duration
from platform.cli import UserFacingError
from platform.config import FAULT_ENV, ExperimentConfig
from platform.train.loop import (
    TrainingState,
    build_training,
    checkpoint_and_prune,
    resume_if_possible,
    run_steps,
    summarize_window,
    time_is_up,
)
from platform.train.marks import TimeMarks

PROGRESS_FILE = "progress.json"


def _ray_context() -> tuple[int, int, Any]:
    """(rank, world size, ray.train module or None when running outside Ray Train)."""
    try:
        import ray.train

        ctx = ray.train.get_context()
        return ctx.get_world_rank(), ctx.get_world_size(), ray.train
    except Exception:  # not inside a Ray Train worker (num_workers=0 driver mode, unit tests)
        return 0, 1, None


def cpu_threads(cfg: ExperimentConfig, world: int) -> int:
    """Intra-op threads of a CPU training worker (``train.cpu_threads``; see its comment in the config)."""
    import os

    if cfg.train.cpu_threads is not None:
        return cfg.train.cpu_threads
    if cfg.eval.enabled and cfg.eval.every_steps > 0:  # simulator actors run beside the training
        return max(1, int(cfg.ray.cpus_per_worker))
    return max(1, (os.cpu_count() or 1) // max(1, world))


def _device(cfg: ExperimentConfig, in_ray: bool) -> torch.device:
    if cfg.train.device == "cpu":
        return torch.device("cpu")
    if in_ray and cfg.train.device == "auto":
        import ray.train.torch

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
    """Entry point for ``TorchTrainer(train_loop_per_worker=...)``: a ``platform.train.launch.WorkerPayload`` as dict."""
    from platform.train.launch import WorkerPayload

    payload = WorkerPayload.from_dict(payload_dict)
    from platform.train.dataset import open_split

    cfg = ExperimentConfig.model_validate(payload.config)
    rank, world, train_mod = _ray_context()
    if train_mod is not None:
        from evaluation.raysession import quiet_train_logger

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


def _validation_set(cfg: ExperimentConfig, val_dataset: Any) -> Any:
    """The collated validation episodes, or None (with a line saying why) when there are none."""
    from platform.train.validation import ValidationSet

    if cfg.train.val_every <= 0 or cfg.data.val_episodes_per_task <= 0:
        return None
    if val_dataset is None:
        print(
            f"[val] no validation episodes in {cfg.data.path} beyond the {cfg.data.episodes_per_task} training "
            "episodes per task: validation is off (collect more, or set data.val_episodes_per_task=0)",
            flush=True,
        )
        return None
    val = ValidationSet.from_dataset(val_dataset, cfg.policy.max_points, cfg.train.val_per_task)
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


def _train(
    cfg: ExperimentConfig,
    payload: Any,
    run_dir: Path,
    dataset: Any,
    state: TrainingState,
    device: torch.device,
    rank: int,
    world: int,
    train_mod: Any,
    val: Any = None,
) -> None:
    instructions = Instructions(
        tasks={t: dataset.instruction_embedding(t) for t in dataset.task_names},
        texts=getattr(dataset, "variation_instructions", dict)(),  # RLBench: one per variation's text
    )
    pc_cfg = getattr(dataset, "pointcloud_config", None)
    pointcloud_json = pc_cfg.model_dump_json() if pc_cfg is not None else None
    task_texts = getattr(dataset, "instruction_texts", None)  # fakes in tests may have none
    texts_json = (
        json.dumps({"encoder": getattr(dataset, "text_encoder", None), "tasks": task_texts}, indent=2)
        if task_texts
        else None
    )
    resumed = resume_if_possible(state, run_dir)
    if world > 1:
        from ray.train.torch import prepare_model

        state.policy = prepare_model(state.policy)
    tracker = _open_tracker(payload, run_dir) if rank == 0 else None
    evals = _PeriodicEval(cfg, tracker) if rank == 0 and payload.periodic_eval else None
    if rank == 0:
        print(
            f"[train] {'resumed from ' + resumed.name if resumed else 'starting'} at step {state.step}/"
            f"{cfg.train.steps} on {device}; {len(dataset)} keyframe samples, B={cfg.train.batch_size}, "
            f"M={cfg.policy.m} ({cfg.policy.type})"
            + (f", {torch.get_num_threads()} CPU threads" if device.type == "cpu" else ""),
            flush=True,
        )
    deadline = None
    if cfg.train.time_budget_s is not None:
        deadline = time.monotonic() + max(0.0, cfg.train.time_budget_s - state.train_time_s)
    log = _MetricLog(
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
                ckpt = checkpoint_and_prune(state, run_dir, instructions, pointcloud_json, texts_json)
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
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - informational only
        return ""


class _MetricLog:
    """Per-window metrics, printed at once but logged (MLflow, Ray report) when their steps are checkpointed.

    After a crash, training resumes from the last checkpoint and replays the steps after it; holding their
    metrics back until the next checkpoint means no step is ever logged or reported twice (R1).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        rank: int,
        tracker: Any,
        train_mod: Any,
        fault: tuple[Path, str | None] = (Path("."), None),
        val: Any = None,
        start_step: int = 0,
    ) -> None:
        self.cfg, self.rank, self.tracker, self.train_mod = cfg, rank, tracker, train_mod
        self.fault = fault
        self.val = val  # platform.train.validation.ValidationSet (rank 0) or None
        self.last_val: dict[str, float] = {}  # the newest mean validation metrics, carried into every report
        self.pending: list[tuple[int, dict[str, float]]] = []
        self.last = self.t0 = time.perf_counter()
        self.start_step = start_step

    def eta_s(self, st: TrainingState) -> float | None:
        """Seconds to the end of the run at this process's pace so far (validation and checkpoints included);
        with training-time marks or a time budget, the training time left (validation excluded)."""
        t = self.cfg.train
        if t.time_marks_s or t.time_budget_s is not None:
            ends = [
                x for x in (t.time_marks_s[-1] if t.time_marks_s else None, t.time_budget_s) if x is not None
            ]
            return max(0.0, min(ends) - st.train_time_s)
        done = st.step - self.start_step
        if done <= 0:
            return None
        return (time.perf_counter() - self.t0) / done * max(0, t.steps - st.step)

    def window(self, st: TrainingState, window: list) -> None:
        now = time.perf_counter()
        metrics = summarize_window(st, window, now - self.last)
        self.last = now
        self.pending.append((st.step, metrics))
        if self.rank == 0:
            eta = self.eta_s(st)
            total = (
                ""
                if self.cfg.train.time_marks_s or self.cfg.train.time_budget_s
                else f"/{self.cfg.train.steps}"
            )
            print(
                f"[train] step {st.step:>6}{total}  loss {metrics['train/loss']:.4f}  "
                f"lr {metrics['train/lr']:.2e}  {metrics.get('train/samples_per_s', 0):,.0f} samples/s"
                + ("" if eta is None else f"  ETA {format_duration(eta)}"),
                flush=True,
            )
        if self.val is not None and self._validate_now(st.step, len(window)):
            metrics.update(self._validate(st))
        if self.fault[1] is not None:
            _maybe_inject_fault(self.fault[0], st.step, self.fault[1])

    def validate_step(self, st: TrainingState) -> dict[str, float]:
        """Validate now (a time mark) and log the metrics at this step with its window's (if any)."""
        if self.val is None:
            return {}
        if self.pending and self.pending[-1][0] == st.step and "val/pos_err_cm" in self.pending[-1][1]:
            return {k: v for k, v in self.pending[-1][1].items() if k.startswith("val/")}
        metrics = self._validate(st)
        if self.pending and self.pending[-1][0] == st.step:
            self.pending[-1][1].update(metrics)
        else:
            self.pending.append((st.step, {**metrics, "time/elapsed_s": st.train_time_s}))
        return metrics

    def _validate(self, st: TrainingState) -> dict[str, float]:
        from platform.train.validation import format_line, validate

        model = st.ema.shadow if st.ema is not None else getattr(st.policy, "module", st.policy)
        metrics = validate(model, self.val, st.device, seed=self.cfg.train.seed)
        print(format_line(st.step, metrics), flush=True)
        self.last = time.perf_counter()  # validation time is not training throughput
        return metrics

    def _validate_now(self, step: int, window_len: int) -> bool:
        """At the window that crosses a multiple of ``train.val_every``, and at the last step."""
        every = self.cfg.train.val_every
        return every > 0 and (step // every > (step - window_len) // every or step == self.cfg.train.steps)

    def commit(self, checkpoint_step: int, st: TrainingState | None = None) -> None:
        if (
            st is not None
            and self.val is not None
            and not self.last_val
            and self.pending
            and not any("val/pos_err_cm" in m for _, m in self.pending)
        ):
            self.validate_step(st)  # the first report carries a validation (sweeps rank trials by it)
        if self.tracker is not None:
            for step, metrics in self.pending:
                self.tracker.log_metrics(metrics, step=step)
        for _, metrics in self.pending:
            if "val/pos_err_cm" in metrics:
                self.last_val = {
                    k: v for k, v in metrics.items() if k.startswith("val/") and k.count("/") == 1
                }
        if self.train_mod is not None and self.pending:
            # One Ray report per checkpoint: Ray Train hands reports to its controller one per poll
            # (platform.session.TRAIN_POLL_S, 0.5 s), so reporting every window would stall training. Tune (ASHA) sees the newest window, and the
            # newest validation (sweeps rank trials by it).
            step, metrics = self.pending[-1]
            report = {**self.last_val, **metrics}
            self.train_mod.report({"step": step, **{k.replace("/", "_"): v for k, v in report.items()}})
        self.pending = []
        self.last = time.perf_counter()  # checkpoint/report time is not training throughput


def _maybe_inject_fault(run_dir: Path, step: int, at: str | None) -> None:
    """Fault injection for the reliability tests (R1): ``MINIDIFFUSER_FAULT_CRASH_AT_STEP=<n>`` in the
    driver's environment kills the worker process once, at the first logging step >= n, i.e. between two
    checkpoints, with metrics printed but not yet committed (a marker file makes it happen once)."""
    import os

    marker = run_dir / ".fault_injected"
    if step >= int(at) and not marker.exists():
        marker.write_text(str(step))
        print(f"[train] injecting a crash at step {step} ({FAULT_ENV})", flush=True)
        os._exit(17)


def _open_tracker(payload: Any, run_dir: Path) -> Any:
    if not payload.tracking_uri:
        return None
    from platform.tracking import BUFFER_ROOT, RunTracker, flatten_config

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


class _PeriodicEval:
    """Submits checkpoint evaluations to the evaluation actors without blocking training."""

    def __init__(self, cfg: ExperimentConfig, tracker: Any) -> None:
        self.cfg = cfg
        self.tracker = tracker
        self.pending: list[tuple[int, Path, Any]] = []
        self.last_submitted = 0

    def maybe_submit(self, ckpt: Path, step: int) -> None:
        every = self.cfg.eval.every_steps
        if every <= 0 or step >= self.cfg.train.steps or step - self.last_submitted < every:
            return  # the final checkpoint is evaluated by the driver once training has finished
        if self.tracker is not None and self.tracker.has_metric("eval/success", step) is True:
            self.last_submitted = step  # a step replayed after a resume, already evaluated
            return
        from platform.evaluate import submit_evaluation

        self.pending.append((step, ckpt, submit_evaluation(self.cfg, ckpt)))
        self.last_submitted = step

    def poll(self, timeout: float = 0.0) -> None:
        import ray

        from platform.evaluate import log_eval_report

        still = []
        for step, ckpt, ref in self.pending:
            done, _ = ray.wait([ref], timeout=timeout)
            if done:
                log_eval_report(self.tracker, ckpt, step, ray.get(ref))
            else:
                still.append((step, ckpt, ref))
        self.pending = still

    def wait_all(self) -> None:
        self.poll(timeout=self.cfg.eval.episode_timeout_s * 4)
