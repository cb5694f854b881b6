"""Periodic evaluation during training (``eval.every_steps``): rank 0 submits each due checkpoint to the
evaluation actors as a Ray task and goes on training; each report is logged against its checkpoint's step
when it arrives (``platform.evaluate``), and the last ones are waited for before the run ends.
"""

from __future__ import annotations

from pathlib import Path

import ray

from platform.config import ExperimentConfig
from platform.evaluate import log_eval_report, submit_evaluation
from platform.tracking import RunTracker


class PeriodicEval:
    """Submits checkpoint evaluations to the evaluation actors without blocking training."""

    def __init__(self, cfg: ExperimentConfig, tracker: RunTracker | None) -> None:
        self.cfg = cfg
        self.tracker = tracker
        self.pending: list[tuple[int, Path, ray.ObjectRef]] = []  # (step, checkpoint, its evaluation)
        self.last_submitted = 0

    def maybe_submit(self, ckpt: Path, step: int) -> None:
        every = self.cfg.eval.every_steps
        if every <= 0 or step >= self.cfg.train.steps or step - self.last_submitted < every:
            return  # the final checkpoint is evaluated by the driver once training has finished
        if self.tracker is not None and self.tracker.has_metric("eval/success", step) is True:
            self.last_submitted = step  # a step replayed after a resume, already evaluated
            return
        self.pending.append((step, ckpt, submit_evaluation(self.cfg, ckpt)))
        self.last_submitted = step

    def poll(self, timeout: float = 0.0) -> None:
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
