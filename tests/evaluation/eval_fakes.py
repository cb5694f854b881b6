"""Test doubles for the evaluation tests: ``FakeGoalPolicy`` (a ``Policy`` that walks towards the red
block of ``FakeSimulator`` seen in the fused point cloud) and helpers for a per-module local Ray cluster.

Ray workers cannot import test modules by name, so the tests register this module with
``ray.cloudpickle.register_pickle_by_value`` before handing ``FakeGoalPolicy`` factories to actors.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from evaluation.pointcloud import PointCloudConditioner, PointCloudConfig
from policies.base import LossOutput, Policy
from policies.batch import ConditionBatch

TEXT_DIM = 8


class FakeGoalPolicy(Policy):
    """Moves the gripper at most ``max_step`` metres per keypose towards the mean of the red points.

    ``noise`` adds Gaussian noise drawn from the sampler generator(s), so that tests see whether each row
    got its own generator; ``accepts_row_generators`` tells the policy server it may pass one per row.
    """

    accepts_row_generators = True

    def __init__(self, max_step: float = 0.12, noise: float = 0.0) -> None:
        super().__init__()
        self.config = {"type": "fake_goal", "max_step": max_step, "noise": noise}
        self.max_step = max_step
        self.noise = noise
        self.scale = nn.Parameter(torch.ones(()))  # so .to(device) and state_dict behave like a real policy

    def compute_loss(self, batch: ConditionBatch, generator: torch.Generator | None = None) -> LossOutput:
        assert batch.target is not None
        pred = self.predict_action(batch, generator)
        return LossOutput(loss=(pred[:, :3] - batch.target[:, :3]).abs().mean() * self.scale)

    def predict_action(self, obs: ConditionBatch, generator=None) -> Tensor:
        rgb = obs.points[..., 3:6]  # (B, N, 3) in [-1, 1]
        red = obs.point_mask & (rgb[..., 0] > 0.5) & (rgb[..., 1] < -0.5)  # (B, N)
        count = red.sum(dim=1, keepdim=True).clamp(min=1)  # (B, 1)
        goal = (obs.points[..., :3] * red[..., None]).sum(dim=1) / count  # (B, 3)
        here = obs.gripper[:, :3]  # (B, 3)
        delta = torch.where(red.any(dim=1, keepdim=True), goal - here, torch.zeros_like(here))
        norm = delta.norm(dim=1, keepdim=True).clamp(min=1e-9)
        step = delta * torch.clamp(self.max_step / norm, max=1.0) * self.scale  # (B, 3)
        if self.noise:
            step = step + self.noise * _rows_randn(obs.batch_size, generator)
        out = torch.zeros(obs.batch_size, 8)
        out[:, :3] = here + step
        out[:, 6] = 1.0  # identity quaternion (xyzw)
        out[:, 7] = 1.0  # open
        return out


def _rows_randn(batch: int, generator) -> Tensor:
    """(B, 3) noise: row r from ``generator[r]`` when a list is given, else all rows from one generator."""
    if isinstance(generator, list):
        return torch.cat([torch.randn(1, 3, generator=g) for g in generator])
    return torch.randn(batch, 3, generator=generator)


@dataclass(frozen=True)
class FakePolicyFactory:
    """Picklable ``() -> FakeGoalPolicy``."""

    max_step: float = 0.12
    noise: float = 0.0

    def __call__(self) -> FakeGoalPolicy:
        return FakeGoalPolicy(self.max_step, self.noise)


def fake_instructions(tasks) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Deterministic synthetic instruction embeddings: (L=4, D=8) tokens, last token padded."""
    out = {}
    for i, task in enumerate(tasks):
        rng = np.random.default_rng(i)
        mask = np.array([True, True, True, False])
        out[task] = (rng.standard_normal((4, TEXT_DIM)).astype(np.float32), mask)
    return out


def conditioner(max_points: int = 256) -> PointCloudConditioner:
    return PointCloudConditioner(max_points=max_points, config=PointCloudConfig(voxel_size=0.01))


def start_local_ray(num_cpus: int = 4):
    """A fresh local Ray cluster with its own temp dir (never attaches to another session's cluster)."""
    import ray
    from ray import cloudpickle

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    temp = tempfile.mkdtemp(prefix="evr", dir="/tmp")
    ray.init(
        address="local",
        num_cpus=num_cpus,
        include_dashboard=False,
        _temp_dir=temp,
        log_to_driver=False,
        configure_logging=False,
    )
    return ray


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie waiting to be reaped)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return fields[0] in ("Z", "X")


def wait_gone(pids, timeout_s: float = 20.0) -> list[int]:
    """PIDs still alive after ``timeout_s`` (empty when every process exited)."""
    deadline = time.monotonic() + timeout_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if not process_gone(p)]
        if alive:
            time.sleep(0.2)
    return alive


@dataclass(frozen=True)
class BrokenSimFactory:
    """A simulator factory that always fails (an actor that cannot start)."""

    message: str = "cannot open the simulator: fix the backend config"

    def __call__(self):
        raise ValueError(self.message)
