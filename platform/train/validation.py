"""Validation keypose error: the cheap quality signal between simulator evaluations.

Every ``train.val_every`` steps (and at the last step) the policy that evaluation would use (the EMA weights
when there are any) samples the next keypose of every held-out validation sample (``data.val_episodes_per_task``
episodes per task: train-set variations the training set does not use) with its full inference sampler, and
the prediction is compared with the demonstration's keypose:

- ``val/pos_err_cm``: Euclidean position error, centimetres;
- ``val/rot_err_deg``: rotation error (geodesic angle between the quaternions), degrees;
- ``val/gripper_acc``: fraction of keyposes whose open/closed state is right;
- ``val/within_2cm``: fraction of keyposes within 2 cm with the right gripper state (a proxy of a reachable
  keypose: Meta-World's controller treats a keypose as reached within 4 mm, its tasks tolerate a few cm);
- the same per task as ``val/<task>/<metric>``; the un-prefixed names are the mean over tasks (each task
  weighted equally, like the success rate).

The inputs are fixed (deterministic point subset, fixed sampling seed), so two validations of the same
weights give the same numbers, and a resumed run logs what an uninterrupted one logs.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from evaluation.checkpoint_format import EXPERIMENT_FILE
from evaluation.files import atomic_write_json
from platform.cli import UserFacingError
from platform.config import ConfigError, load_config
from platform.train.dataset import DatasetSubset, open_split
from policies.base import CheckpointError, Policy
from policies.batch import ConditionBatch
from policies.config import parse_policy_settings
from policies.registry import load_checkpoint
from policies.rotation import quat_angle_deg

METRICS = ("pos_err_cm", "rot_err_deg", "gripper_acc", "within_2cm")
WITHIN_M = 0.02
CHUNK = 64  # conditions per sampling batch (bounded memory on any device)


@dataclass(frozen=True)
class ValidationSet:
    """Held-out conditions, collated once. ``batches``: chunks of at most ``CHUNK`` conditions with their
    targets; ``task_names[k]`` is the name of task index ``k`` of ``batch.task_index``."""

    batches: tuple[ConditionBatch, ...]
    task_names: tuple[str, ...]
    size: int

    @classmethod
    def from_dataset(
        cls, dataset: DatasetSubset, max_points: int, per_task: int | None = None, history: int = 0
    ) -> ValidationSet:
        """The samples of ``dataset`` (a validation subset), points chosen by the evaluation rule; with
        ``per_task``, at most that many per task, evenly spaced over the task's samples (so every episode
        and every stage of it stays represented) - the same ones at every validation."""
        rows = cap_per_task(np.asarray(dataset.task_index), per_task)  # (N,) sample indices into dataset
        n = len(rows)
        if n == 0:
            raise ValueError("the validation set is empty")
        batches = tuple(
            dataset.batch(rows[i : i + CHUNK], max_points=max_points, generator=None, history=history)
            for i in range(0, n, CHUNK)
        )
        names = getattr(dataset, "full_task_names", None) or list(dataset.task_names)
        return cls(batches=batches, task_names=tuple(names), size=n)


def cap_per_task(task_index: np.ndarray, per_task: int | None) -> np.ndarray:
    """Indices of ``task_index`` (S,) keeping at most ``per_task`` per task, evenly spaced, in order."""
    if per_task is None:
        return np.arange(len(task_index))
    kept = []
    for task in np.unique(task_index):
        rows = np.flatnonzero(task_index == task)
        if len(rows) > per_task:
            rows = rows[np.linspace(0, len(rows) - 1, per_task).round().astype(np.int64)]
        kept.append(rows)
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)


def keypose_errors(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """pred, target: (N, 8) keyposes [xyz, quat xyzw, open] -> per-sample metrics, each (N,)."""
    pos = (pred[:, :3] - target[:, :3]).norm(dim=-1)  # (N,) metres
    grip = ((pred[:, 7] > 0.5) == (target[:, 7] > 0.5)).float()  # (N,)
    return {
        "pos_err_cm": pos * 100,
        "rot_err_deg": quat_angle_deg(pred[:, 3:7], target[:, 3:7]),
        "gripper_acc": grip,
        "within_2cm": ((pos <= WITHIN_M).float() * grip),
    }


@torch.no_grad()
def validate(policy: Policy, val: ValidationSet, device: torch.device, seed: int = 0) -> dict[str, float]:
    """``val/*`` metrics (see the module docstring) of ``policy`` on ``val``; plus ``val/time_s``."""
    t0 = time.perf_counter()
    was_training = policy.training
    policy.eval()
    per_sample: dict[str, list[Tensor]] = {k: [] for k in METRICS}
    tasks: list[Tensor] = []
    try:
        for i, batch in enumerate(val.batches):
            gen = torch.Generator(device=device)
            gen.manual_seed(seed * 1_000_003 + i)
            pred = policy.predict_action(batch.to(device), generator=gen).float().cpu()  # (n, 8)
            for key, value in keypose_errors(pred, batch.target.float()).items():
                per_sample[key].append(value)
            tasks.append(batch.task_index)
    finally:
        policy.train(was_training)
    task_index = torch.cat(tasks)  # (N,)
    out = summarize({k: torch.cat(v) for k, v in per_sample.items()}, task_index, val.task_names)
    out["val/time_s"] = time.perf_counter() - t0
    return out


def summarize(
    per_sample: dict[str, Tensor], task_index: Tensor, task_names: Sequence[str]
) -> dict[str, float]:
    """Per-task means (``val/<task>/<metric>``) and their mean over tasks (``val/<metric>``)."""
    out: dict[str, float] = {}
    present = sorted(set(task_index.tolist()))
    for key, values in per_sample.items():
        means = []
        for k in present:
            mean = float(values[task_index == k].mean())
            out[f"val/{task_names[k]}/{key}"] = mean
            means.append(mean)
        out[f"val/{key}"] = float(np.mean(means))
    return out


def format_line(step: int, metrics: dict[str, float]) -> str:
    """The progress line of one validation."""
    return (
        f"[val] step {step}: position error {metrics['val/pos_err_cm']:.2f} cm, rotation "
        f"{metrics['val/rot_err_deg']:.1f} deg, gripper {100 * metrics['val/gripper_acc']:.0f} %, "
        f"within 2 cm {100 * metrics['val/within_2cm']:.0f} % ({metrics['val/time_s']:.1f} s)"
    )


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m platform.validation --checkpoint DIR [--set diffusion.sampler=ddpm ...] [--json PATH]``:
    the validation keypose error of a checkpoint, optionally with other inference settings."""
    parser = argparse.ArgumentParser(prog="python -m platform.validation", description=main.__doc__)
    parser.add_argument(
        "--checkpoint", required=True, help="a checkpoint directory (runs/<name>/checkpoints/step_*)"
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="policy inference settings to change, e.g. diffusion.sampler=ddpm diffusion.inference_steps=100 "
        "diffusion.inference_samples=8",
    )
    parser.add_argument(
        "--weights", choices=["ema", "raw"], default="ema", help="EMA weights (what evaluation uses) or raw"
    )
    parser.add_argument(
        "--split",
        choices=["val", "train"],
        default="val",
        help="the held-out validation episodes, or the training episodes (how well the policy fits what it was "
        "trained on, beside the held-out error)",
    )
    parser.add_argument(
        "--per-task",
        type=int,
        default=None,
        help="at most this many keyframes per task, evenly spaced (default: all; train.val_per_task's rule)",
    )
    parser.add_argument("--json", help="also write the metrics to this JSON file")
    args = parser.parse_args(argv)
    if args.per_task is not None and args.per_task < 1:
        parser.error(f"--per-task must be at least 1, got {args.per_task}")

    def run() -> int:
        ckpt = Path(args.checkpoint)
        exp = ckpt / EXPERIMENT_FILE
        if not exp.is_file():
            raise UserFacingError(
                f"{exp} is missing: --checkpoint must be a checkpoint directory of platform.train"
            )
        cfg = load_config(exp)
        try:
            updates = parse_policy_settings(args.set)
            policy = load_checkpoint(ckpt, prefer_ema=args.weights == "ema", config_updates=updates)
        except (CheckpointError, ValueError) as exc:
            raise UserFacingError(str(exc)) from None
        train_dataset, val_dataset = open_split(cfg)
        scored = train_dataset if args.split == "train" else val_dataset
        if scored is None:
            raise UserFacingError(
                f"{cfg.data.path} has no episodes beyond the {cfg.data.episodes_per_task} training "
                "episodes per task: nothing to validate on"
            )
        val = ValidationSet.from_dataset(
            scored,
            cfg.policy.max_points,
            per_task=args.per_task,
            history=policy.config.history,  # type: ignore[attr-defined]
        )
        metrics = validate(policy, val, torch.device("cpu"), seed=cfg.train.seed)
        what = "training" if args.split == "train" else "validation"
        print(
            f"{val.size} {what} keyframes, {policy.config.diffusion.sampler} with "  # type: ignore[attr-defined]
            f"{policy.config.diffusion.inference_steps} steps"
        )  # type: ignore[attr-defined]
        for task in val.task_names:
            if f"val/{task}/pos_err_cm" in metrics:
                print(f"  {task:<28} " + "  ".join(f"{k} {metrics[f'val/{task}/{k}']:.3f}" for k in METRICS))
        print(format_line(int(ckpt.name.split("_")[-1]) if ckpt.name.startswith("step_") else 0, metrics))
        if args.json:
            atomic_write_json(Path(args.json), {"checkpoint": str(ckpt), "set": args.set, **metrics})
        return 0

    try:
        return run()
    except (UserFacingError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
