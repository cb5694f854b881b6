"""Meta-World (MuJoCo) behind ``evaluation.simulators.sim.Simulator``: headless, multi-camera RGB-D, keypose control.

Variations: Meta-World pre-samples 50 object/goal configurations per task for a benchmark seed
(``metaworld.MT10(seed)`` / ``MT50(seed)``). ``reset(task, variation, seed)`` uses configuration
``variation`` of the suite built with ``MetaWorldConfig.benchmark_seed``. The train/test split of
variations is defined here, once: ``TRAIN_VARIATIONS`` = 0..24 (demonstrations), ``TEST_VARIATIONS`` =
25..49 (evaluation); ``variations(split)`` returns them. Meta-World physics is deterministic, so the
episode ``seed`` only seeds the env's RNG (unused by the MT tasks); it is recorded for bookkeeping.

Building a suite's task list is slow (about 10 s for MT10), so it is cached per process and on disk
(``$MINIDIFFUSER_CACHE`` or ``~/.cache/minidiffuser-platform``), keyed by suite, seed and Meta-World version.

A simulator keeps the env and the render context of at most ``MetaWorldConfig.max_cached_tasks`` tasks,
least recently reset first out (``_env`` / ``_evict``): an evicted task is rebuilt on its next ``reset``
(about 0.7 s of CPU: 0.25 s to compile the env, 0.45 s for its render context) and renders bit for bit
the same pictures.
"""

from __future__ import annotations

import functools
import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from evaluation.files import atomic_write_bytes
from evaluation.simulators.controller import ControllerConfig, KeyposeController
from evaluation.simulators.instructions import instruction_for
from evaluation.simulators.rendering import (
    FastRenderer,
    RenderConfig,
    make_gl_context,
    release_freed_memory,
    select_gl_backend,
)
from evaluation.simulators.sim import KeyposeOutcome, Observation, Simulator, SimulatorError, UnknownTaskError
from policies.config import FrozenModel

Suite = Literal["mt10", "mt50"]
N_VARIATIONS = 50
TRAIN_VARIATIONS: tuple[int, ...] = tuple(range(0, 25))
TEST_VARIATIONS: tuple[int, ...] = tuple(range(25, 50))
# Meta-World fixes the hand orientation (mocap quaternion wxyz (1, 0, 1, 0), normalised); as xyzw:
FIXED_QUAT_XYZW: tuple[float, float, float, float] = (0.0, 0.5**0.5, 0.0, 0.5**0.5)


def variations(split: Literal["train", "test"]) -> tuple[int, ...]:
    """The variation indices of a split (the same for every task)."""
    if split == "train":
        return TRAIN_VARIATIONS
    if split == "test":
        return TEST_VARIATIONS
    raise ValueError(f"unknown split {split!r}: use 'train' or 'test'")


class MetaWorldConfig(FrozenModel):
    suite: Suite = "mt10"
    benchmark_seed: int = 0
    render: RenderConfig = RenderConfig()
    controller: ControllerConfig = ControllerConfig()
    max_episode_steps: int = Field(3000, ge=1)  # low-level steps per episode across all keyposes
    # Tasks whose env and render context a simulator keeps (least recently reset evicted first). Each costs
    # about 150 MB of RSS (its MjModel/MjData 20-60 MB, its MjrContext 100-130 MB under llvmpipe): an MT50
    # evaluation actor that kept all 50 held 7.4 GB; with 4 one peaked at 1.2 GB (docs/evaluation.md). The
    # coordinator's task affinity keeps an actor on one task at a time, so a rebuild (0.7 s CPU) comes
    # about once per task the actor meets.
    max_cached_tasks: int = Field(4, ge=1)


def _cache_dir() -> Path:
    return Path(os.environ.get("MINIDIFFUSER_CACHE", Path.home() / ".cache" / "minidiffuser-platform"))


@functools.lru_cache(maxsize=4)
def suite_tasks(suite: Suite, benchmark_seed: int = 0) -> dict[str, list[Any]]:
    """``{task name: [metaworld Task] * 50}`` in the suite's order (cached in-process and on disk)."""
    import metaworld

    if suite not in ("mt10", "mt50"):
        raise ValueError(f"unknown suite {suite!r}: use 'mt10' or 'mt50'")
    version = getattr(metaworld, "__version__", "3.1.1")
    path = _cache_dir() / f"metaworld-{version}-{suite}-seed{benchmark_seed}.pkl"
    if path.exists():
        try:
            with path.open("rb") as f:
                return pickle.load(f)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError):
            path.unlink(missing_ok=True)  # corrupt cache: rebuild below
    bench = (metaworld.MT10 if suite == "mt10" else metaworld.MT50)(seed=benchmark_seed)
    tasks: dict[str, list[Any]] = {name: [] for name in bench.train_classes}
    for task in bench.train_tasks:
        tasks[task.env_name].append(task)
    atomic_write_bytes(path, pickle.dumps(tasks))
    return tasks


def suite_task_names(suite: Suite) -> list[str]:
    """Task names of a suite without building its configurations (fast)."""
    import metaworld.env_dict as env_dict

    if suite == "mt10":
        return list(env_dict.MT10_V3)
    if suite == "mt50":
        return list(env_dict.MT50_V3)
    raise ValueError(f"unknown suite {suite!r}: use 'mt10' or 'mt50'")


def check_task(task: str, names: list[str], suite: str) -> None:
    if task not in names:
        raise UnknownTaskError(
            f"unknown Meta-World task {task!r} in suite {suite}; known tasks: {', '.join(names)}"
        )


# The Sawyer's bodies: everything under ``base`` (pedestal, torso, head, links right_l0-l6); the gripper is the
# subtree of ``hand`` (palm, claws, finger pads). RenderConfig.hide_arm hides the first without the second.
ROBOT_BODY, GRIPPER_BODY = "base", "hand"


def arm_geoms(model: Any) -> list[int]:
    """The geoms of the robot's bodies that are not its gripper (``ROBOT_BODY``'s subtree minus ``GRIPPER_BODY``'s).

    In Meta-World's scenes they are about 45 % of a 1 cm point cloud's voxels (soccer: 796 of 1735; reach:
    809 of 1059), all of it above the gripper, which a condition's 1024 points would otherwise spend on."""
    import mujoco

    def subtree(name: str) -> set[int]:
        root = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, name)
        if root < 0:
            raise SimulatorError(f"the Meta-World model has no body {name!r}; cannot hide the robot's arm")
        inside = {root}
        for body in range(root + 1, model.nbody):  # MuJoCo numbers a body after its parent
            if int(model.body_parentid[body]) in inside:
                inside.add(body)
        return inside

    arm = subtree(ROBOT_BODY) - subtree(GRIPPER_BODY)
    return [g for g in range(model.ngeom) if int(model.geom_bodyid[g]) in arm]


class MetaWorldSimulator(Simulator):
    """One headless Meta-World instance: envs (and their render contexts) are created lazily per task and
    at most ``config.max_cached_tasks`` of them are kept (least recently reset evicted first).

    Poses are TCP poses ``[x, y, z, qx, qy, qz, qw, open]`` (TCP = midpoint of the finger pads). The
    orientation is fixed in Meta-World; ``step_keypose`` ignores the commanded quaternion.
    """

    def __init__(self, config: MetaWorldConfig | None = None) -> None:
        select_gl_backend()
        self.config = config or MetaWorldConfig()
        self._names = suite_task_names(self.config.suite)
        self._envs: OrderedDict[str, Any] = OrderedDict()  # least recently reset first
        self._renderers: dict[str, FastRenderer] = {}  # a subset of _envs' tasks (made at the first render)
        self.evictions = 0  # tasks whose env and render context were freed (evicted, or by close)
        self._gl: Any = None
        self.env: Any = None
        self.task: str | None = None
        self.last_obs: np.ndarray | None = None  # Meta-World's flat state observation (for experts)
        self.controller: KeyposeController | None = None
        self.episode_steps = 0
        self.success = False

    # ----------------------------------------------------------------- Simulator interface
    def task_names(self) -> list[str]:
        return list(self._names)

    def reset(self, task: str, variation: int, seed: int) -> Observation:
        self.reset_state(task, variation, seed)
        return self.observe()

    def observe(self) -> Observation:
        frames = self._renderer().render(self.env.data)
        return Observation(
            task=self.task or "",
            instruction=instruction_for(self.task or ""),
            cameras=frames,
            gripper_pose=self.gripper_pose(),
            extras=self.extras(),
        )

    def step_keypose(self, pose: np.ndarray) -> KeyposeOutcome:
        pose = np.asarray(pose, np.float64).reshape(-1)
        if pose.shape != (8,) or not np.all(np.isfinite(pose)):
            raise ValueError(f"keypose must be 8 finite floats [xyz, quat, open], got {pose!r}")
        if self.controller is None:
            raise SimulatorError("step_keypose before reset: call reset(task, variation, seed) first")
        return self.controller.move_to(pose[:3], gripper_open=bool(pose[7] >= 0.5))

    def close(self) -> None:
        self._evict(keep=0)
        if self._gl is not None:
            self._gl.free()
            self._gl = None

    # ----------------------------------------------------------------- low-level access (collection)
    def reset_state(self, task: str, variation: int, seed: int) -> None:
        """Reset without rendering (collection renders only keyframes)."""
        check_task(task, self._names, self.config.suite)
        if not 0 <= variation < N_VARIATIONS:
            raise ValueError(f"variation must be in [0, {N_VARIATIONS}), got {variation}")
        env = self._env(task)
        env.set_task(suite_tasks(self.config.suite, self.config.benchmark_seed)[task][variation])
        env.seed(int(seed))
        try:
            self.last_obs, _ = env.reset()
        except Exception as err:  # noqa: BLE001 - MuJoCo errors become the interface's typed error
            raise SimulatorError(f"Meta-World reset of {task} variation {variation} failed: {err}") from err
        self.env, self.task = env, task
        self.episode_steps, self.success = 0, False
        self.controller = KeyposeController(self, self.config.controller, gripper_open=True)

    def apply_action(self, action: np.ndarray, sticky: bool = True) -> bool:
        """One Meta-World step with ``action`` (4,); returns the episode's sticky task success (or,
        with ``sticky=False``, whether this step reports success). No step past ``max_episode_steps``."""
        if self.episode_steps >= self.config.max_episode_steps:
            return self.success if sticky else False
        try:
            self.last_obs, _, _, _, info = self.env.step(np.asarray(action, np.float32))
        except Exception as err:  # noqa: BLE001
            raise SimulatorError(f"Meta-World step failed in {self.task}: {err}") from err
        self.episode_steps += 1
        now = bool(info["success"])
        self.success |= now
        return self.success if sticky else now

    def get_state(self) -> np.ndarray:
        import mujoco

        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        state = np.empty(mujoco.mj_stateSize(self.env.model, spec))
        mujoco.mj_getState(self.env.model, self.env.data, state, spec)
        return state

    def set_state(self, state: np.ndarray) -> None:
        """Restore a ``get_state`` snapshot (for rendering a past keyframe; derived data recomputed)."""
        import mujoco

        mujoco.mj_setState(self.env.model, self.env.data, state, mujoco.mjtState.mjSTATE_FULLPHYSICS)
        mujoco.mj_forward(self.env.model, self.env.data)

    def tcp_position(self) -> np.ndarray:
        return np.array(self.env.tcp_center, np.float64)

    def hand_position(self) -> np.ndarray:
        return np.array(self.env.data.body("hand").xpos, np.float64)

    def mocap_position(self) -> np.ndarray:
        return np.array(self.env.data.mocap_pos[0], np.float64)

    def gripper_open(self) -> bool:
        return True if self.controller is None else self.controller.state.gripper_open

    def gripper_pose(self, gripper_open: bool | None = None) -> np.ndarray:
        """(8,) ``[tcp xyz, hand quat xyzw, open]`` now; ``open`` from the last gripper command."""
        w, x, y, z = self.env.data.body("hand").xquat
        is_open = self.gripper_open() if gripper_open is None else gripper_open
        return np.array([*self.tcp_position(), x, y, z, w, float(is_open)], np.float64)

    def extras(self) -> dict[str, np.ndarray]:
        return {
            "object_pos": np.array(self.env._get_pos_objects(), np.float64),
            "goal_pos": np.array(self.env._target_pos, np.float64),
            "gripper_distance": np.array([self.last_obs[3] if self.last_obs is not None else 1.0]),
        }

    # ----------------------------------------------------------------- internals
    def _env(self, task: str) -> Any:
        """The env of ``task`` (built on first use or after eviction), now the most recently used."""
        if task in self._envs:
            self._envs.move_to_end(task)
            return self._envs[task]
        self._evict(keep=self.config.max_cached_tasks - 1)
        import metaworld.env_dict as env_dict

        env = env_dict.ALL_V3_ENVIRONMENTS[task]()
        env.max_path_length = 10**9  # the episode step limit is ours (max_episode_steps)
        self._envs[task] = env
        return env

    def _evict(self, keep: int) -> None:
        """Free the least recently used tasks' render contexts and envs until at most ``keep`` remain."""
        if len(self._envs) <= keep:
            return
        while len(self._envs) > keep:
            task, env = self._envs.popitem(last=False)
            renderer = self._renderers.pop(task, None)
            if renderer is not None:
                renderer.close()
            env.close()
            if task == self.task:  # max_cached_tasks=1, or close(): no episode is left to step or observe
                self.env, self.task, self.controller = None, None, None
            self.evictions += 1
        release_freed_memory()

    def _renderer(self) -> FastRenderer:
        if self.env is None or self.task is None:
            raise SimulatorError("observe before reset: call reset(task, variation, seed) first")
        if self.task not in self._renderers:
            cfg = self.config.render
            if self._gl is None:
                self._gl = make_gl_context(max(cfg.width, 640), max(cfg.height, 480))
            hidden = arm_geoms(self.env.model) if cfg.hide_arm else ()
            self._renderers[self.task] = FastRenderer(
                self.env.model, cfg, gl_context=self._gl, hidden_geoms=hidden
            )
        return self._renderers[self.task]
