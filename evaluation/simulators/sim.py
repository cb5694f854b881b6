"""The simulator interface shared by every backend (Meta-World, RLBench, the test fake).

Conventions (same as ``policies.batch``): poses are ``[x, y, z, qx, qy, qz, qw, open]``, world frame,
metres. Camera extrinsics are camera-to-world 4x4 in the OpenCV convention (x right, y down, z forward);
depth is planar (distance along the optical axis), metres.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

EpisodeStatus = Literal["ok", "timeout", "sim_error", "planner_error", "oom_killed"]


class SimulatorError(RuntimeError):
    """The simulator failed (crashed, bad state). Episodes end as ``sim_error``."""


class PlannerError(RuntimeError):
    """The keypose could not be planned/reached by the backend's planner (RLBench IK/path errors)."""


class UnknownTaskError(ValueError):
    """A task name the backend does not have."""


@dataclass
class CameraFrame:
    name: str
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32, planar depth in metres
    intrinsics: np.ndarray  # (3, 3) float64, pinhole K
    extrinsics: np.ndarray  # (4, 4) float64, camera-to-world, OpenCV axes


@dataclass
class Observation:
    task: str
    instruction: str
    cameras: list[CameraFrame]
    gripper_pose: np.ndarray  # (8,) [xyz, quat xyzw, open]
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # backend-specific (e.g. object positions)


@dataclass
class KeyposeOutcome:
    success: bool  # the task reports success after this keypose
    reached: bool  # the controller got within tolerance before its step limit
    sim_steps: int  # low-level simulator steps spent
    # The episode's low-level steps when its task first reported success (counted from the reset, so a
    # success after this keypose can be checked against a benchmark's episode length: Meta-World's 500);
    # None before a success, or where a backend does not count low-level steps (RLBench's planner)
    success_step: int | None = None


@dataclass(frozen=True)
class EpisodeResult:
    task: str
    variation: int
    seed: int
    success: bool
    steps: int  # keyposes executed
    status: EpisodeStatus
    message: str = ""
    wall_s: float = 0.0
    node: str = ""  # Ray node id of the actor that ran it ("" outside Ray)
    # low-level simulator steps of the episode, and ``KeyposeOutcome.success_step`` of a success (None: failed,
    # or not counted)
    sim_steps: int = 0
    success_step: int | None = None


class Simulator(ABC):
    """One headless simulator instance (one per process / Ray actor)."""

    @abstractmethod
    def task_names(self) -> list[str]:
        """Every task this backend can run."""

    @abstractmethod
    def reset(self, task: str, variation: int, seed: int) -> Observation:
        """Start an episode of ``task`` in configuration ``variation`` (deterministic given ``seed``)."""

    @abstractmethod
    def observe(self) -> Observation:
        """Render the cameras and read the gripper state now."""

    @abstractmethod
    def step_keypose(self, pose: np.ndarray) -> KeyposeOutcome:
        """Drive the gripper to ``pose`` (8,) with the backend's controller/planner.

        Raises ``PlannerError`` when the backend's planner cannot reach it, ``SimulatorError`` on a crash.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the simulator (GL context, processes)."""

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
