"""``TrainingState``: everything the training loop mutates (policy, AdamW, warmup-cosine schedule, AMP scaler,
EMA, level-1 sampler, counters), with its checkpoint save and exact restore.

State needed for an exact resume lives in the checkpoint (``platform.train.checkpoint`` writes the directory,
``evaluation.checkpoint_format`` names its files): weights, EMA, optimizer, scheduler, AMP scaler, sampler
position, RNG states and counters. Whatever the restart cause (Ray Train fault tolerance after a worker crash,
R1, or the user rerunning the same command, R3), training starts from the newest valid checkpoint of the run
directory (``resume_if_possible``).
"""

from __future__ import annotations

import functools
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.checkpoint_format import (
    EXPERIMENT_FILE,
    INSTRUCTIONS_FILE,
    TRAIN_STATE_FILE,
    Instructions,
    save_instructions,
)
from platform.config import ExperimentConfig, to_yaml
from platform.train.checkpoint import latest_checkpoint, prune_checkpoints, write_checkpoint
from platform.train.dataset import DatasetSubset
from platform.train.sampler import BALANCE_EXPONENTS, Level1Sampler
from platform.train.step import EMA, warmup_cosine
from policies.base import EMA_WEIGHTS_FILE, POLICY_CONFIG_FILE, WEIGHTS_FILE, Policy
from policies.registry import build_policy


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
        weights: np.ndarray | None = None,
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
        exponent = BALANCE_EXPONENTS[cfg.data.balance]  # used only with groups
        self.sampler = Level1Sampler(num_samples, t.batch_size, t.seed, groups, exponent, weights)
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
        dataset_files: Mapping[str, str] | None = None,
    ) -> Path:
        """Checkpoint now. ``dataset_files``: ``{file name: text}`` the dataset's settings kept beside the weights
        (``worker.dataset_files``: the point-cloud config, so that evaluation builds its inputs exactly as the
        training set was built; each task's instruction text and the text encoder's name, for the policy server)."""
        policy = _unwrap(self.policy)
        writers = {
            POLICY_CONFIG_FILE: lambda p: p.write_text(self.cfg.policy.model_dump_json(indent=2)),
            WEIGHTS_FILE: lambda p: torch.save(policy.state_dict(), p),
            TRAIN_STATE_FILE: lambda p: torch.save(self.state_dict(), p),
            EXPERIMENT_FILE: lambda p: p.write_text(to_yaml(self.cfg)),
            INSTRUCTIONS_FILE: lambda p: save_instructions(p, instructions),
        }
        for name, text in (dataset_files or {}).items():
            writers[name] = functools.partial(Path.write_text, data=text)
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


def build_training(
    cfg: ExperimentConfig, dataset: DatasetSubset, device: torch.device, rank: int = 0, world: int = 1
) -> TrainingState:
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed & 0xFFFFFFFF)
    random.seed(cfg.train.seed)
    policy = build_policy(cfg.policy).to(device)
    grouped = cfg.data.balance != "samples" or bool(cfg.data.task_weights)
    groups = np.asarray(dataset.task_index) if grouped else None  # (S,) task of each sample
    weights = task_weights(cfg, dataset.task_names) if cfg.data.task_weights else None
    return TrainingState(
        cfg, policy, len(dataset), device, rank=rank, world=world, groups=groups, weights=weights
    )


def task_weights(cfg: ExperimentConfig, task_names: list[str]) -> np.ndarray:
    """(T,) level-1 weight of each of the dataset's tasks (``data.task_weights``, 1 where unnamed); a named task
    the dataset lacks is an error (preflight names it before a run starts)."""
    unknown = sorted(set(cfg.data.task_weights) - set(task_names))
    if unknown:
        raise ValueError(f"data.task_weights names {unknown}, which the dataset does not have")
    return np.array([cfg.data.task_weights.get(t, 1.0) for t in task_names], np.float64)


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
    dataset_files: Mapping[str, str] | None = None,
) -> Path:
    path = state.save(run_dir, instructions, dataset_files)
    prune_checkpoints(run_dir, state.cfg.train.keep_last)
    return path
