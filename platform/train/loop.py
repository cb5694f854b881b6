"""The one training loop for every policy type: ``run_steps`` trains from the state's step to a target step,
a deadline or a training-time mark, drawing each step's B conditions from the level-1 sampler, its batch from
the dataset and its randomness from generators seeded by ``(seed, step)``, so a resumed run is bitwise
identical to an uninterrupted one on CPU (R2). It runs inside a Ray Train worker (or the driver when
``ray.num_workers=0``); ``platform.train.worker`` calls it between checkpoints.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from evaluation.datasets.dataset import KeyframeDataset
from platform.train.dataset import DatasetSubset
from platform.train.sampler import step_seed
from platform.train.state import TrainingState
from platform.train.step import StepMetrics, all_ranks_agree, train_step


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient (R7)."""


def step_generator(seed: int, step: int, device: torch.device, rank: int = 0) -> torch.Generator:
    """The step's generator (timesteps, noise, augmentation); each DDP rank draws its own."""
    g = torch.Generator(device=device)
    g.manual_seed(step_seed(seed, step, stream=1, rank=rank))
    return g


def time_is_up(deadline: float | None, device: torch.device) -> bool:
    """Whether ``train.time_budget_s`` is spent. Under DDP it is up for every rank as soon as it is up for
    one, so all ranks stop at the same step (every rank calls this at the same points of the loop)."""
    if deadline is None:
        return False
    return not all_ranks_agree(time.monotonic() < deadline, device)


def training_time_reached(state: TrainingState, until_time_s: float | None) -> bool:
    """Whether ``state.train_time_s`` reached ``until_time_s`` (a time mark); agreed by every DDP rank."""
    if until_time_s is None:
        return False
    return not all_ranks_agree(state.train_time_s < until_time_s, state.device)


def run_steps(
    state: TrainingState,
    dataset: DatasetSubset | KeyframeDataset,
    until_step: int,
    on_log: Callable[[TrainingState, list[StepMetrics]], None] | None = None,
    deadline: float | None = None,
    until_time_s: float | None = None,
) -> list[StepMetrics]:
    """Train from ``state.step`` to ``until_step`` (exclusive), the deadline, or until the summed training
    time reaches ``until_time_s``; returns per-step metrics.

    ``on_log(state, metrics_window)`` is called every ``train.log_every`` steps.
    """
    cfg = state.cfg
    max_points = cfg.policy.max_points
    history: list[StepMetrics] = []
    window: list[StepMetrics] = []
    while (
        state.step < until_step
        and not time_is_up(deadline, state.device)
        and not training_time_reached(state, until_time_s)
    ):
        t0 = time.perf_counter()
        indices = state.sampler.next_indices()[
            state.rank :: state.world
        ]  # this worker's share of the B conditions
        np_rng = np.random.default_rng(step_seed(cfg.train.seed, state.step, stream=0, rank=state.rank))
        batch = dataset.batch(
            indices, max_points=max_points, generator=np_rng, history=cfg.policy.history
        ).to(state.device)
        m = train_step(
            state.policy,
            batch,
            state.optimizer,
            state.scheduler,
            state.scaler,
            state.ema,
            grad_clip=cfg.train.grad_clip,
            amp=cfg.train.amp,
            device=state.device,
            generator=step_generator(cfg.train.seed, state.step, state.device, state.rank),
        )
        if m.skipped:
            state.consecutive_nonfinite += 1
            state.skipped_total += 1
            if state.consecutive_nonfinite >= cfg.train.max_consecutive_nonfinite:
                raise NonFiniteLossError(
                    f"{state.consecutive_nonfinite} consecutive steps had a non-finite loss or gradient "
                    f"(last at step {state.step}); lower train.lr or check the dataset"
                )
        else:
            state.consecutive_nonfinite = 0
        state.step += 1
        state.train_time_s += time.perf_counter() - t0
        history.append(m)
        window.append(m)
        if on_log is not None and (state.step % cfg.train.log_every == 0 or state.step == until_step):
            on_log(state, window)
            window = []
    return history
