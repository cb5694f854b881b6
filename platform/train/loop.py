"""The one training loop for every policy type; runs inside a Ray Train worker (or the driver when
``ray.num_workers=0``). It only wires data, ``train_step``, checkpoints, reports and tracking.

State needed for an exact resume lives in the checkpoint (``platform.train.checkpoint``): weights, EMA,
optimizer, scheduler, AMP scaler, sampler position, RNG states and counters. Per-step randomness is drawn
from generators seeded by ``(seed, step)``, so a resumed run is bitwise identical to an uninterrupted one
on CPU (R2). Whatever the restart cause (Ray Train fault tolerance after a worker crash, R1, or the user
rerunning the same command, R3), the loop starts from the newest valid checkpoint of the run directory.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.checkpoint_format import (
    INSTRUCTION_TEXTS_FILE,
    INSTRUCTIONS_FILE,
    POINTCLOUD_FILE,
    Instructions,
    save_instructions,
)
from platform.config import ExperimentConfig, to_yaml
from platform.train.checkpoint import latest_checkpoint, prune_checkpoints, write_checkpoint
from platform.train.dataset import Level1Sampler, step_seed
from platform.train.step import EMA, StepMetrics, all_ranks_agree, train_step, warmup_cosine
from policies.base import EMA_WEIGHTS_FILE, POLICY_CONFIG_FILE, WEIGHTS_FILE, Policy
from policies.registry import build_policy

TRAIN_STATE_FILE = "train_state.pt"


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient (R7)."""


class TrainingState:
    """Everything the loop mutates, with save/restore."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        policy: Policy,
        num_samples: int,
        device: torch.device,
        rank: int = 0,
        world: int = 1,
        groups: np.ndarray | None = None,
    ) -> None:
        t = cfg.train
        if world > t.batch_size:
            raise ValueError(
                f"train.batch_size ({t.batch_size}) must be at least the number of workers ({world})"
            )
        self.cfg = cfg
        self.rank, self.world = rank, world
        self.policy = policy
        self.device = device
        decay, no_decay = [], []
        for name, p in policy.named_parameters():
            (no_decay if p.ndim < 2 or name.endswith(".bias") else decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=t.lr,
            betas=t.betas,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, t.warmup_steps, t.steps, t.min_lr_ratio)
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=(t.amp == "fp16" and device.type == "cuda"))
        self.ema = EMA(policy, t.ema_decay, warmup=t.ema_warmup) if t.ema_decay > 0 else None
        self.sampler = Level1Sampler(num_samples, t.batch_size, t.seed, groups)  # groups: data.balance=tasks
        self.step = 0
        self.consecutive_nonfinite = 0
        self.skipped_total = 0
        self.train_time_s = 0.0  # training time summed over restarts (time budgets, time-to-success)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "consecutive_nonfinite": self.consecutive_nonfinite,
            "skipped_total": self.skipped_total,
            "train_time_s": self.train_time_s,
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }

    def save(
        self,
        run_dir: Path,
        instructions: Instructions | dict[str, tuple[np.ndarray, np.ndarray]],
        pointcloud_json: str | None = None,
        instruction_texts_json: str | None = None,
    ) -> Path:
        """Checkpoint now. ``pointcloud_json``: the dataset's point-cloud config, so that evaluation builds
        its inputs exactly as the training set was built; ``instruction_texts_json``: each task's instruction
        text and the text encoder's name (``INSTRUCTION_TEXTS_FILE``, for the policy server)."""
        policy = _unwrap(self.policy)
        writers = {
            POLICY_CONFIG_FILE: lambda p: p.write_text(self.cfg.policy.model_dump_json(indent=2)),
            WEIGHTS_FILE: lambda p: torch.save(policy.state_dict(), p),
            TRAIN_STATE_FILE: lambda p: torch.save(self.state_dict(), p),
            "experiment.yaml": lambda p: p.write_text(to_yaml(self.cfg)),
            INSTRUCTIONS_FILE: lambda p: save_instructions(p, instructions),
        }
        if pointcloud_json is not None:
            writers[POINTCLOUD_FILE] = lambda p: p.write_text(pointcloud_json)
        if instruction_texts_json is not None:
            writers[INSTRUCTION_TEXTS_FILE] = lambda p: p.write_text(instruction_texts_json)
        if self.ema is not None:
            writers[EMA_WEIGHTS_FILE] = lambda p: torch.save(self.ema.state_dict(), p)
        return write_checkpoint(run_dir, self.step, writers)

    def restore(self, ckpt: Path) -> None:
        policy = _unwrap(self.policy)
        policy.load_state_dict(torch.load(ckpt / WEIGHTS_FILE, map_location=self.device, weights_only=True))
        if self.ema is not None and (ckpt / EMA_WEIGHTS_FILE).is_file():
            self.ema.load_state_dict(
                torch.load(ckpt / EMA_WEIGHTS_FILE, map_location=self.device, weights_only=True)
            )
        state = torch.load(ckpt / TRAIN_STATE_FILE, map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.sampler.load_state_dict(state["sampler"])
        self.step = state["step"]
        self.consecutive_nonfinite = state["consecutive_nonfinite"]
        self.skipped_total = state["skipped_total"]
        self.train_time_s = state["train_time_s"]
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])


def _unwrap(model: torch.nn.Module) -> Policy:
    return getattr(model, "module", model)  # DDP wraps the policy


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
    dataset: Any,
    until_step: int,
    on_log: Any = None,
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
        batch = dataset.batch(indices, max_points=max_points, generator=np_rng).to(state.device)
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


def build_training(
    cfg: ExperimentConfig, dataset: Any, device: torch.device, rank: int = 0, world: int = 1
) -> TrainingState:
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed & 0xFFFFFFFF)
    random.seed(cfg.train.seed)
    policy = build_policy(cfg.policy).to(device)
    groups = (
        np.asarray(dataset.task_index) if cfg.data.balance == "tasks" else None
    )  # (S,) task of each sample
    return TrainingState(cfg, policy, len(dataset), device, rank=rank, world=world, groups=groups)


def resume_if_possible(state: TrainingState, run_dir: Path) -> Path | None:
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        state.restore(ckpt.path)
        return ckpt.path
    return None


def checkpoint_and_prune(
    state: TrainingState,
    run_dir: Path,
    instructions: Instructions | dict,
    pointcloud_json: str | None = None,
    instruction_texts_json: str | None = None,
) -> Path:
    path = state.save(run_dir, instructions, pointcloud_json, instruction_texts_json)
    prune_checkpoints(run_dir, state.cfg.train.keep_last)
    return path
