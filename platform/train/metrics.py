"""Training metrics: each logging window's mean loss, gradient norm, learning rate and throughput
(``summarize_window``), printed at once as a ``[train]`` line with its ETA, and logged (MLflow, ``ray.train.report``)
only when their steps are checkpointed (``MetricLog.commit``), so a restart never logs a step twice (R1).
Validation runs here too, every ``train.val_every`` steps (``platform.train.validation``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from evaluation.progress import format_duration
from platform.config import FAULT_ENV, ExperimentConfig
from platform.tracking import RunTracker
from platform.train.state import TrainingState
from platform.train.step import StepMetrics
from platform.train.validation import ValidationSet, format_line, validate


def summarize_window(state: TrainingState, window: list[StepMetrics], step_time_s: float) -> dict[str, float]:
    """Mean metrics over the last logging window, with throughput in noised samples per second."""
    ok = [m for m in window if not m.skipped] or window
    b, m_ = state.cfg.train.batch_size, state.cfg.policy.m
    out = {
        "train/loss": float(np.mean([m.loss for m in ok])),
        "train/grad_norm": float(np.mean([m.grad_norm for m in ok])),
        "train/lr": window[-1].lr,
        "train/skipped_steps": float(state.skipped_total),
        "time/elapsed_s": state.train_time_s,
    }
    for key in ok[0].parts:
        out[f"train/{key}" if not key.startswith("train/") else key] = float(
            np.mean([m.parts.get(key, np.nan) for m in ok])
        )
    if step_time_s > 0:
        out["train/conditions_per_s"] = len(window) * b / step_time_s
        out["train/samples_per_s"] = len(window) * b * m_ / step_time_s
    if state.device.type == "cuda":
        out["train/peak_mem_bytes"] = float(torch.cuda.max_memory_allocated(state.device))
    return out


class MetricLog:
    """Per-window metrics, printed at once but logged (MLflow, Ray report) when their steps are checkpointed.

    After a crash, training resumes from the last checkpoint and replays the steps after it; holding their
    metrics back until the next checkpoint means no step is ever logged or reported twice (R1).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        rank: int,
        tracker: RunTracker | None,
        train_mod: ModuleType | None,  # ray.train, None outside Ray Train
        fault: tuple[Path, str | None] = (Path("."), None),
        val: ValidationSet | None = None,
        start_step: int = 0,
    ) -> None:
        self.cfg, self.rank, self.tracker, self.train_mod = cfg, rank, tracker, train_mod
        self.fault = fault
        self.val = val  # rank 0 only
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

    def window(self, st: TrainingState, window: list[StepMetrics]) -> None:
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
    marker = run_dir / ".fault_injected"
    if step >= int(at) and not marker.exists():
        marker.write_text(str(step))
        print(f"[train] injecting a crash at step {step} ({FAULT_ENV})", flush=True)
        os._exit(17)
