"""A fake simulator for tests and for exercising the evaluation machinery without MuJoCo.

It is a real ``Simulator`` (``evaluation.simulators.sim``): a flat table (z = 0) with one red goal block whose
top face is ``BLOCK_HEIGHT`` above the table, seen by a few small pinhole cameras. The camera frames are
ray-cast analytically (RGB + planar depth + intrinsics + camera-to-world extrinsics, OpenCV axes), so the
real point-cloud path (``evaluation.pointcloud``) runs on them. The goal position is drawn from
``(task, variation, seed)``; a keypose within ``goal_tolerance`` of the block's top centre succeeds.

Fault knobs (each counted in keyposes within an episode, 0-based):
  ``crash_at``    the k-th ``step_keypose`` crashes: ``crash_mode="exit"`` kills the process (what a
                  segfaulting MuJoCo does to its Ray actor), ``"raise"`` raises ``SimulatorError``.
  ``hang_at``     the k-th ``step_keypose`` blocks for ``hang_s`` seconds (a real blocking sleep).
  ``succeed_at``  the k-th keypose succeeds whatever the pose (``None``: only the goal rule).
  ``step_delay_s`` seconds each ``step_keypose`` sleeps (simulated physics cost).
Crashes hit every episode unless ``crash_seeds`` lists the episode seeds to hit; hangs likewise with
``hang_seeds``. With ``fault_attempts`` and ``state_dir``, an episode is faulty only on its first
``fault_attempts`` resets, counted in marker files (a transient fault that a retry on a fresh actor
survives).
"""

from __future__ import annotations

import os
import time
import zlib
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from evaluation.simulators.sim import (
    CameraFrame,
    KeyposeOutcome,
    Observation,
    Simulator,
    SimulatorError,
    UnknownTaskError,
)
from policies.config import FrozenModel

BLOCK_HEIGHT = 0.05  # metres above the table
BLOCK_HALF = 0.05  # half side of the square goal block, metres
FAR_DEPTH = 3.0  # depth of background pixels (rays that miss the table), metres
START_XYZ = (0.0, 0.55, 0.25)  # gripper start position
GRID = 0.02  # table checker size, metres (gives the table some texture)


class FakeSimConfig(FrozenModel):
    """Knobs of ``FakeSimulator`` (frozen, picklable: Ray actors build their simulator from it)."""

    tasks: tuple[str, ...] = ("fake-reach", "fake-push", "fake-pick")
    cameras: int = Field(2, ge=1, le=4)
    image_size: int = Field(24, ge=4, le=256)
    goal_tolerance: float = Field(0.03, gt=0)
    succeed_at: int | None = Field(None, ge=0)
    crash_at: int | None = Field(None, ge=0)
    crash_mode: Literal["exit", "raise"] = "exit"
    crash_seeds: tuple[int, ...] | None = None  # None: every episode
    hang_at: int | None = Field(None, ge=0)
    hang_s: float = Field(3600.0, gt=0)
    hang_seeds: tuple[int, ...] | None = None  # None: every episode
    step_delay_s: float = Field(0.0, ge=0)
    fault_attempts: int | None = Field(None, ge=1)
    state_dir: str | None = None

    def build(self) -> FakeSimulator:
        """Picklable factory: ``FakeSimConfig(...).build`` can be handed to evaluation actors."""
        return FakeSimulator(self)


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world 4x4 (OpenCV axes: x right, y down, z forward) of a camera at ``eye`` facing ``target``."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)  # points down in the image
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, y, z], axis=1)  # (3, 3) columns are the camera axes in the world
    pose[:3, 3] = eye
    return pose


_CAMERA_EYES = (
    np.array([0.0, 0.1, 0.7]),
    np.array([0.6, 0.65, 0.6]),
    np.array([-0.6, 0.65, 0.6]),
    np.array([0.0, 1.2, 0.7]),
)
_CAMERA_TARGET = np.array([0.0, 0.65, 0.0])


class FakeSimulator(Simulator):
    """Deterministic analytic scene; see the module docstring for the fault knobs."""

    def __init__(self, config: FakeSimConfig | None = None) -> None:
        self.config = config or FakeSimConfig()
        self._episode: tuple[str, int, int] | None = None
        self._goal = np.zeros(3)
        self._gripper = np.zeros(8)
        self._keyposes = 0
        self._crashes = self._hangs = False
        size = self.config.image_size
        fovy = np.deg2rad(40.0)
        f = (size / 2) / np.tan(fovy / 2)
        self._intrinsics = np.array([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])
        self._extrinsics = [_look_at(eye, _CAMERA_TARGET) for eye in _CAMERA_EYES[: self.config.cameras]]
        v, u = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5  # pixel centres, (H, W) each
        rays = np.stack([(u - size / 2) / f, (v - size / 2) / f, np.ones_like(u)], axis=-1)
        self._rays_cam = rays.reshape(-1, 3)  # (H*W, 3), z = 1 so the ray parameter is the planar depth

    # -- Simulator interface -------------------------------------------------------------------------
    def task_names(self) -> list[str]:
        return list(self.config.tasks)

    def reset(self, task: str, variation: int, seed: int) -> Observation:
        if task not in self.config.tasks:
            raise UnknownTaskError(f"FakeSimulator has no task {task!r}; it has {list(self.config.tasks)}")
        rng = np.random.default_rng([zlib.crc32(task.encode()), variation, seed])
        self._goal = np.array([rng.uniform(-0.25, 0.25), rng.uniform(0.45, 0.85), BLOCK_HEIGHT])
        self._gripper = np.array([*START_XYZ, 0.0, 0.0, 0.0, 1.0, 1.0])
        self._episode = (task, variation, seed)
        self._keyposes = 0
        self._crashes, self._hangs = self._faults(task, variation, seed)
        return self.observe()

    def observe(self) -> Observation:
        if self._episode is None:
            raise SimulatorError("FakeSimulator.observe() called before reset()")
        task = self._episode[0]
        frames = [self._render(i, name=f"fake_cam{i}") for i in range(len(self._extrinsics))]
        return Observation(
            task=task,
            instruction=f"{task.replace('-', ' ')} to the red block",
            cameras=frames,
            gripper_pose=self._gripper.astype(np.float64).copy(),
            extras={"goal": self._goal.copy()},
        )

    def step_keypose(self, pose: np.ndarray) -> KeyposeOutcome:
        if self._episode is None:
            raise SimulatorError("FakeSimulator.step_keypose() called before reset()")
        pose = np.asarray(pose, dtype=np.float64)
        if pose.shape != (8,) or not np.all(np.isfinite(pose)):
            raise SimulatorError(f"keypose must be 8 finite floats, got shape {pose.shape}: {pose}")
        k = self._keyposes
        cfg = self.config
        if self._crashes and cfg.crash_at == k:
            if cfg.crash_mode == "exit":
                os._exit(17)  # abrupt process death, as a native crash in MuJoCo would be
            raise SimulatorError(f"FakeSimulator crash_at={k} on episode {self._episode}")
        if self._hangs and cfg.hang_at == k:
            time.sleep(cfg.hang_s)
        if cfg.step_delay_s:
            time.sleep(cfg.step_delay_s)
        self._keyposes += 1
        self._gripper = pose.copy()
        reached_goal = float(np.linalg.norm(pose[:3] - self._goal)) < cfg.goal_tolerance
        forced = cfg.succeed_at is not None and k >= cfg.succeed_at
        success = bool(reached_goal or forced)
        # 10 pretend low-level steps per keypose, so a success has a step count like Meta-World's
        return KeyposeOutcome(
            success=success, reached=True, sim_steps=10, success_step=10 * self._keyposes if success else None
        )

    def close(self) -> None:
        self._episode = None

    # -- internals -----------------------------------------------------------------------------------
    def _faults(self, task: str, variation: int, seed: int) -> tuple[bool, bool]:
        """(crashes, hangs) for this episode; counts the attempt when a transient fault is configured."""
        cfg = self.config
        crashes = cfg.crash_at is not None and (cfg.crash_seeds is None or seed in cfg.crash_seeds)
        hangs = cfg.hang_at is not None and (cfg.hang_seeds is None or seed in cfg.hang_seeds)
        if not (crashes or hangs) or cfg.fault_attempts is None:
            return crashes, hangs
        if cfg.state_dir is None:
            raise ValueError(
                "FakeSimConfig.fault_attempts needs state_dir (a directory shared by the actors)"
            )
        marker = Path(cfg.state_dir) / f"{task}-{variation}-{seed}.attempts"
        marker.parent.mkdir(parents=True, exist_ok=True)
        attempts = int(marker.read_text()) if marker.is_file() else 0
        marker.write_text(str(attempts + 1))
        faulty = attempts < cfg.fault_attempts
        return crashes and faulty, hangs and faulty

    def _render(self, index: int, name: str) -> CameraFrame:
        """Ray-cast the table and the goal block's top face from camera ``index``."""
        size = self.config.image_size
        cam_to_world = self._extrinsics[index]
        rot, eye = cam_to_world[:3, :3], cam_to_world[:3, 3]
        dirs = self._rays_cam @ rot.T  # (H*W, 3) world directions, parameter = planar depth
        depth = np.full(len(dirs), FAR_DEPTH)
        rgb = np.zeros((len(dirs), 3), dtype=np.uint8)
        with np.errstate(divide="ignore", invalid="ignore"):
            s_top = (BLOCK_HEIGHT - eye[2]) / dirs[:, 2]  # (H*W,) hit of the block-top plane
            s_table = -eye[2] / dirs[:, 2]  # (H*W,) hit of the table plane
        top = eye + s_top[:, None] * dirs  # (H*W, 3)
        on_block = (s_top > 0) & np.all(np.abs(top[:, :2] - self._goal[:2]) <= BLOCK_HALF, axis=1)
        table = eye + s_table[:, None] * dirs
        on_table = ~on_block & (s_table > 0) & (s_table < FAR_DEPTH)
        depth[on_block] = s_top[on_block]
        rgb[on_block] = (230, 20, 20)
        depth[on_table] = s_table[on_table]
        checker = (np.floor(table[:, 0] / GRID) + np.floor(table[:, 1] / GRID)) % 2  # (H*W,)
        shade = np.where(checker > 0, 150, 110).astype(np.uint8)
        rgb[on_table] = np.stack([shade, shade, shade], axis=1)[on_table]
        return CameraFrame(
            name=name,
            rgb=rgb.reshape(size, size, 3),
            depth=depth.reshape(size, size).astype(np.float32),
            intrinsics=self._intrinsics.copy(),
            extrinsics=cam_to_world.copy(),
        )
