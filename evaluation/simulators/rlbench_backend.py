"""RLBench (CoppeliaSim 4.1 + PyRep) behind ``evaluation.simulators.sim.Simulator``: written against RLBench's API,
NOT run against CoppeliaSim on the machines this project was built on (see docs/rlbench.md).

``rlbench``/``pyrep`` are imported lazily, when an ``RLBenchSimulator`` is built (or
``require_rlbench()`` is called); a missing or broken install raises ``RLBenchUnavailableError`` naming
what is missing and how to install it. Set-up, as in PerAct / 3D Diffuser Actor:
``Environment(MoveArmThenGripper(EndEffectorPoseViaPlanning(collision_checking=False), Discrete()),
obs_config=<4 cameras, RGB + depth in metres + point clouds>, headless=True)``.

Episodes: with ``RLBenchConfig.demo_root`` (the PerAct *test* split, ``<root>/<task>/all_variations/
episodes/episode<i>`` or ``<root>/<task>/variation<v>/episodes/episode<i>``), ``reset(task, i, seed)``
restores test episode ``i`` with ``task_env.reset_to_demo(demo)`` (the scene of that demo, whatever its
variation: evaluate with ``variations=range(25)``). Without it, ``reset(task, v, seed)`` seeds numpy's
global RNG (RLBench places objects with it) and resets variation ``v``. The instruction is the first of
the task's descriptions returned by the reset, as in PerAct's evaluation.

``step_keypose`` sends one action (``MoveArmThenGripper``: plan and follow a path to the pose, then
open/close); RLBench's ``InvalidActionError`` and PyRep's ``IKError`` / ``ConfigurationPathError`` become
``PlannerError`` (the episode ends as ``planner_error``), anything else ``SimulatorError``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from evaluation.simulators.rlbench_tasks import (
    ALL_CAMERAS,
    CAMERAS,
    IMAGE_SIZE,
    PERACT_TASK_NAMES,
    class_name_of,
)
from evaluation.simulators.sim import (
    CameraFrame,
    KeyposeOutcome,
    Observation,
    PlannerError,
    Simulator,
    SimulatorError,
    UnknownTaskError,
)
from policies.config import FrozenModel

INSTALL_HINT = (
    "RLBench needs CoppeliaSim 4.1 and PyRep, which are not on PyPI: see docs/rlbench.md. In short: "
    "download CoppeliaSim 4.1 (https://downloads.coppeliarobotics.com/V4_1_0/), export COPPELIASIM_ROOT=<its dir>, "
    "LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$COPPELIASIM_ROOT and QT_QPA_PLATFORM_PLUGIN_PATH=$COPPELIASIM_ROOT, then "
    "pip install git+https://github.com/stepjam/PyRep.git; then PerAct's RLBench fork from a clone (its setup.py "
    "omits packages, so not from a git URL): git clone -b peract https://github.com/MohitShridhar/RLBench.git && "
    "cd RLBench && pip install -r requirements.txt && pip install -e . ; run under `xvfb-run -a` on a machine "
    "without a display"
)


class RLBenchUnavailableError(ImportError):
    """The RLBench backend was selected but ``rlbench``/``pyrep``/CoppeliaSim cannot be imported."""


def _import_error(what: str, err: BaseException) -> RLBenchUnavailableError:
    root = os.environ.get("COPPELIASIM_ROOT")
    env = f"COPPELIASIM_ROOT={root!r}" if root else "COPPELIASIM_ROOT is not set"
    return RLBenchUnavailableError(
        f"RLBench backend selected but {what} ({type(err).__name__}: {err}; {env}). {INSTALL_HINT}"
    )


def require_rlbench() -> SimpleNamespace:
    """Import the RLBench/PyRep API this backend uses; ``RLBenchUnavailableError`` says what is missing."""
    try:
        import pyrep  # noqa: F401  (this already loads CoppeliaSim's library through PyRep's cffi module)
    except ModuleNotFoundError as err:
        if err.name != "pyrep" and not (err.name or "").startswith("pyrep."):
            raise _import_error(f"PyRep cannot import its dependency {err.name!r}", err) from err
        raise _import_error("PyRep is not installed", err) from err
    except ImportError as err:  # e.g. libcoppeliaSim.so not found: COPPELIASIM_ROOT / LD_LIBRARY_PATH
        raise _import_error("PyRep is installed but cannot load CoppeliaSim", err) from err
    try:
        from pyrep.const import RenderMode
        from pyrep.errors import ConfigurationPathError, IKError
    except ImportError as err:
        raise _import_error(
            "the installed 'pyrep' is not PyRep (PyPI's 'pyrep' is an unrelated package) or cannot load CoppeliaSim",
            err,
        ) from err
    try:
        from rlbench.action_modes.action_mode import MoveArmThenGripper
        from rlbench.action_modes.arm_action_modes import EndEffectorPoseViaPlanning
        from rlbench.action_modes.gripper_action_modes import Discrete
        from rlbench.backend.exceptions import InvalidActionError
        from rlbench.environment import Environment
        from rlbench.observation_config import CameraConfig, ObservationConfig
    except ImportError as err:
        raise _import_error(
            "RLBench (>= 1.2 API, or PerAct's fork) is not installed or does not import", err
        ) from err
    return SimpleNamespace(
        Environment=Environment,
        MoveArmThenGripper=MoveArmThenGripper,
        EndEffectorPoseViaPlanning=EndEffectorPoseViaPlanning,
        Discrete=Discrete,
        ObservationConfig=ObservationConfig,
        CameraConfig=CameraConfig,
        RenderMode=RenderMode,
        planner_errors=(InvalidActionError, IKError, ConfigurationPathError),
    )


# -- camera conventions (pure numpy; shared with evaluation.datasets.rlbench_import) -------------------------------
def opencv_camera(intrinsics: np.ndarray, extrinsics: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PyRep camera matrices -> this project's (K, camera-to-world) in OpenCV axes, pixel centres at +0.5.

    PyRep (``VisionSensor.get_intrinsic_matrix`` / ``pointcloud_from_depth_and_camera_params``): focal
    lengths are negative, the sensor looks along +z with x and y pointing left and up in the image, and
    pixel (row v, col u) is back-projected at (u, v). Flipping x and y gives OpenCV axes; shifting the
    principal point by +0.5 moves PyRep's integer pixel coordinates to ``evaluation.pointcloud``'s pixel
    centres, so both back-project every pixel to the same world point.
    """
    k = np.asarray(intrinsics, dtype=np.float64)
    e = np.asarray(extrinsics, dtype=np.float64)
    if k.shape != (3, 3) or e.shape != (4, 4):
        raise ValueError(f"expected 3x3 intrinsics and 4x4 extrinsics, got {k.shape} and {e.shape}")
    k_cv = np.array([[abs(k[0, 0]), 0.0, k[0, 2] + 0.5], [0.0, abs(k[1, 1]), k[1, 2] + 0.5], [0.0, 0.0, 1.0]])
    flip = np.diag([np.sign(k[0, 0]), np.sign(k[1, 1]), 1.0])  # PyRep's negative focal lengths flip x and y
    e_cv = e.copy()
    e_cv[:3, :3] = e[:3, :3] @ flip  # (3, 3) columns: the OpenCV camera axes in the world
    return k_cv, e_cv


def camera_frame(name: str, rgb: np.ndarray, depth_m: np.ndarray, misc: dict[str, Any]) -> CameraFrame:
    """A ``CameraFrame`` from an RLBench camera's image, planar depth in metres and ``Observation.misc``."""
    try:
        k, e = misc[f"{name}_camera_intrinsics"], misc[f"{name}_camera_extrinsics"]
    except KeyError as err:
        raise ValueError(
            f"observation misc has no {err.args[0]!r}: camera {name!r} was not recorded"
        ) from None
    k_cv, e_cv = opencv_camera(k, e)
    return CameraFrame(
        name=name,
        rgb=np.ascontiguousarray(rgb, dtype=np.uint8),
        depth=np.asarray(depth_m, dtype=np.float32),
        intrinsics=k_cv,
        extrinsics=e_cv,
    )


def gripper_pose8(obs: Any) -> np.ndarray:
    """(8,) ``[x, y, z, qx, qy, qz, qw, open]`` of an RLBench observation (PyRep poses are xyzw)."""
    pose = np.asarray(obs.gripper_pose, dtype=np.float64).reshape(-1)
    if pose.shape != (7,) or obs.gripper_open is None:
        raise ValueError(
            f"observation needs gripper_pose (7,) and gripper_open, got {pose.shape} / {obs.gripper_open}"
        )
    return np.concatenate([pose, [float(obs.gripper_open)]])


# -- test episodes on disk ------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpisodeFiles:
    task: str
    path: Path  # episode folder
    variation: int
    descriptions: tuple[str, ...]


def _load_pickle(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: not an RLBench episode in the dataset generator's layout"
        )
    with path.open("rb") as f:
        return pickle.load(f)


def list_episodes(root: str | Path, task: str) -> list[EpisodeFiles]:
    """A task's episodes in either layout, ordered as the dataset generator numbered them.

    ``<root>/<task>/all_variations/episodes/episode<i>`` (PerAct's fork; ``variation_number.pkl`` and
    ``variation_descriptions.pkl`` in each episode) or ``<root>/<task>/variation<v>/episodes/episode<i>``
    (RLBench; ``variation_descriptions.pkl`` per variation). The second is ordered by (v, i).
    """
    task_dir = Path(root) / task
    if not task_dir.is_dir():
        raise FileNotFoundError(f"{task_dir} does not exist: no RLBench data for task {task!r} under {root}")
    out: list[EpisodeFiles] = []
    all_dir = task_dir / "all_variations" / "episodes"
    if all_dir.is_dir():
        for ep in sorted(all_dir.glob("episode*"), key=_episode_number):
            variation = int(_load_pickle(ep / "variation_number.pkl"))
            desc = tuple(_load_pickle(ep / "variation_descriptions.pkl"))
            out.append(EpisodeFiles(task, ep, variation, desc))
        return out
    var_dirs = [p for p in task_dir.glob("variation*") if p.is_dir() and p.name[len("variation") :].isdigit()]
    for var_dir in sorted(var_dirs, key=lambda p: int(p.name[len("variation") :])):
        variation = int(var_dir.name[len("variation") :])
        shared = var_dir / "variation_descriptions.pkl"  # RLBench's generator: one per variation
        desc = tuple(_load_pickle(shared)) if shared.is_file() else None
        for ep in sorted((var_dir / "episodes").glob("episode*"), key=_episode_number):
            # PerAct's fork with --all_variations=False writes the descriptions into each episode
            out.append(
                EpisodeFiles(
                    task, ep, variation, desc or tuple(_load_pickle(ep / "variation_descriptions.pkl"))
                )
            )
    if not out:
        raise FileNotFoundError(f"{task_dir} has neither all_variations/episodes/ nor variation<v>/episodes/")
    return out


def _episode_number(path: Path) -> int:
    try:
        return int(path.name[len("episode") :])
    except ValueError:
        raise FileNotFoundError(f"{path}: episode folders must be named episode<number>") from None


# -- the simulator ----------------------------------------------------------------------------------------
class RLBenchConfig(FrozenModel):
    """How the RLBench backend is set up (frozen, picklable: Ray actors build their simulator from it)."""

    tasks: tuple[str, ...] = PERACT_TASK_NAMES
    cameras: tuple[str, ...] = CAMERAS
    image_size: int = Field(IMAGE_SIZE, ge=16, le=1024)
    headless: bool = True
    render_mode: Literal["opengl", "opengl3"] = "opengl"
    collision_checking: bool = False
    demo_root: str | None = None  # PerAct test split: episodes restored with reset_to_demo
    action_layout: Literal["auto", "rlbench", "peract"] = "auto"  # peract: + ignore_collisions (the fork)
    max_tries: int = Field(
        1, ge=1, le=10
    )  # re-send the keypose while the tip is farther than reach_tolerance_m
    reach_tolerance_m: float = Field(0.005, gt=0.0)
    # with_arm: one MoveArmThenGripper step per keypose (PerAct). after_arm (3D Diffuser Actor's Mover): move
    # the arm keeping the previous gripper state (with the re-tries), then, if the gripper state changes and
    # the task is not solved yet, one more step that only changes it
    gripper_step: Literal["with_arm", "after_arm"] = "with_arm"
    # the instruction of an episode: the variation's first description (PerAct) or one drawn from them with
    # the episode's seed (3D Diffuser Actor draws one at random; it also trains on all of them)
    instruction: Literal["first", "random"] = "first"
    arm_max_velocity: float = Field(1.0, gt=0.0)
    arm_max_acceleration: float = Field(4.0, gt=0.0)
    point_clouds_in_extras: bool = False  # also pass RLBench's <camera>_point_cloud in Observation.extras

    @field_validator("cameras")
    @classmethod
    def _known_cameras(cls, cameras: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [c for c in cameras if c not in ALL_CAMERAS]
        if unknown or not cameras:
            raise ValueError(f"cameras must be a non-empty subset of {ALL_CAMERAS}, got {cameras}")
        return cameras


def rlbench_factory(config: RLBenchConfig) -> functools.partial[RLBenchSimulator]:
    """Picklable ``sim_factory`` for the evaluation actors; checks here, in the driver, that RLBench imports."""
    require_rlbench()
    return functools.partial(RLBenchSimulator, config)


class RLBenchSimulator(Simulator):
    def __init__(self, config: RLBenchConfig | None = None) -> None:
        self.config = config or RLBenchConfig()
        self._api = require_rlbench()
        api, cfg = self._api, self.config
        arm = api.EndEffectorPoseViaPlanning(collision_checking=cfg.collision_checking)
        self._peract_layout = _uses_peract_layout(arm, cfg.action_layout)
        action_mode = api.MoveArmThenGripper(arm, api.Discrete())
        extra = {"arm_max_velocity": cfg.arm_max_velocity, "arm_max_acceleration": cfg.arm_max_acceleration}
        accepted = inspect.signature(api.Environment).parameters  # PerAct's fork predates these two
        self._env = api.Environment(
            action_mode,
            obs_config=self._observation_config(),
            headless=cfg.headless,
            **{k: v for k, v in extra.items() if k in accepted},
        )
        try:
            self._env.launch()
        except Exception as err:
            raise SimulatorError(
                f"CoppeliaSim failed to launch ({type(err).__name__}: {err}); {INSTALL_HINT}"
            ) from err
        self._task_name: str | None = None
        self._task_env: Any = None
        self._last: Any = None
        self._instruction = ""
        self._variation = -1
        self._last_gripper: float | None = (
            None  # gripper state of the last keypose (gripper_step="after_arm")
        )

    def _observation_config(self) -> Any:
        api, cfg = self._api, self.config
        render = api.RenderMode.OPENGL if cfg.render_mode == "opengl" else api.RenderMode.OPENGL3

        def camera(used: bool) -> Any:
            cam = api.CameraConfig(
                rgb=used,
                depth=used,
                point_cloud=used,
                mask=False,
                image_size=(cfg.image_size, cfg.image_size),
                render_mode=render,
                depth_in_meters=True,
            )
            if not used:
                cam.set_all(False)
            return cam

        cams = {f"{name}_camera": camera(name in cfg.cameras) for name in ALL_CAMERAS}
        return api.ObservationConfig(
            **cams,
            joint_velocities=True,
            joint_positions=False,
            joint_forces=False,
            gripper_open=True,
            gripper_pose=True,
            task_low_dim_state=False,
        )

    # -- Simulator interface ------------------------------------------------------------------------------
    def task_names(self) -> list[str]:
        return list(self.config.tasks)

    def reset(self, task: str, variation: int, seed: int) -> Observation:
        if task not in self.config.tasks:
            raise UnknownTaskError(
                f"RLBench backend has no task {task!r}; configured tasks: {list(self.config.tasks)}"
            )
        try:
            task_env = self._task(task)
            if self.config.demo_root is not None:
                descriptions, obs = self._reset_to_demo(task_env, task, variation)
            else:
                count = int(task_env.variation_count())
                if not 0 <= variation < count:
                    raise UnknownTaskError(f"{task} has variations 0..{count - 1}, got {variation}")
                np.random.seed(seed % 2**32)  # RLBench samples the scene with numpy's global RNG
                task_env.set_variation(variation)
                descriptions, obs = task_env.reset()
                self._variation = variation
        except (UnknownTaskError, FileNotFoundError):
            raise
        except Exception as err:
            raise SimulatorError(
                f"RLBench reset of {task} ({variation}, seed {seed}) failed: {type(err).__name__}: {err}"
            ) from err
        self._instruction = self._pick_instruction(list(descriptions or []), task, seed)
        self._last = obs
        self._last_gripper = None  # as 3DDA's Mover, built anew for each episode
        return self.observe()

    def _pick_instruction(self, descriptions: list[str], task: str, seed: int) -> str:
        if not descriptions:
            return task.replace("_", " ")
        if self.config.instruction == "first":
            return str(descriptions[0])
        return str(descriptions[int(np.random.default_rng(seed).integers(len(descriptions)))])

    def observe(self) -> Observation:
        if self._last is None or self._task_name is None:
            raise SimulatorError("RLBenchSimulator.observe() called before reset()")
        obs, cfg = self._last, self.config
        frames = [
            camera_frame(c, getattr(obs, f"{c}_rgb"), getattr(obs, f"{c}_depth"), obs.misc)
            for c in cfg.cameras
        ]
        extras = {"rlbench_variation": np.array(self._variation)}
        if cfg.point_clouds_in_extras:
            extras.update(
                {f"{c}_point_cloud": np.asarray(getattr(obs, f"{c}_point_cloud")) for c in cfg.cameras}
            )
        return Observation(
            task=self._task_name,
            instruction=self._instruction,
            cameras=frames,
            gripper_pose=gripper_pose8(obs),
            extras=extras,
        )

    def step_keypose(self, pose: np.ndarray) -> KeyposeOutcome:
        if self._last is None:
            raise SimulatorError("RLBenchSimulator.step_keypose() called before reset()")
        action = self.action_of(pose)
        move = action.copy()
        after_arm = self.config.gripper_step == "after_arm" and self._last_gripper is not None
        if after_arm:
            move[7] = self._last_gripper  # the arm moves first with the gripper as it was
        reward, reached = 0.0, False
        for _attempt in range(self.config.max_tries):
            obs, reward = self._step(move)
            reached = (
                float(np.linalg.norm(np.asarray(obs.gripper_pose[:3]) - action[:3]))
                < self.config.reach_tolerance_m
            )
            if reward >= 1.0 or reached:
                break
        if after_arm and reward < 1.0 and action[7] != move[7]:
            _obs, reward = self._step(action)  # then the gripper change alone
        self._last_gripper = float(action[7])
        return KeyposeOutcome(success=bool(reward >= 1.0), reached=reached, sim_steps=0)

    def _step(self, action: np.ndarray) -> tuple[Any, float]:
        """One ``task_env.step``; planner errors become ``PlannerError``, anything else ``SimulatorError``."""
        try:
            obs, reward, _terminate = self._task_env.step(action)
        except self._api.planner_errors as err:
            raise PlannerError(f"{type(err).__name__}: {err}") from err
        except Exception as err:
            raise SimulatorError(f"RLBench step failed: {type(err).__name__}: {err}") from err
        self._last = obs
        return obs, float(reward)

    def close(self) -> None:
        env, self._env = getattr(self, "_env", None), None
        self._task_env = self._last = None
        if env is not None:
            env.shutdown()

    # -- helpers --------------------------------------------------------------------------------------------
    def action_of(self, pose: np.ndarray) -> np.ndarray:
        """RLBench action of an (8,) keypose: xyz, unit quaternion xyzw, gripper 0/1 (+ ignore_collisions)."""
        pose = np.asarray(pose, dtype=np.float64).reshape(-1)
        if pose.shape != (8,):
            raise SimulatorError(f"keypose must have 8 values [xyz, quat xyzw, open], got shape {pose.shape}")
        quat = pose[3:7]
        norm = float(np.linalg.norm(quat))
        if not np.all(np.isfinite(pose)) or norm < 1e-6:
            raise PlannerError(
                f"invalid keypose {pose.tolist()}: needs finite values and a non-zero quaternion"
            )
        action = [*pose[:3], *(quat / norm), 1.0 if pose[7] > 0.5 else 0.0]
        if self._peract_layout:
            action.append(0.0 if self.config.collision_checking else 1.0)  # ignore_collisions
        return np.array(action)

    def _task(self, task: str) -> Any:
        if task != self._task_name:
            try:
                module = importlib.import_module(f"rlbench.tasks.{task}")
                task_class = getattr(module, class_name_of(task))
            except (ModuleNotFoundError, AttributeError) as err:
                raise UnknownTaskError(
                    f"RLBench has no task class rlbench.tasks.{task}.{class_name_of(task)} ({err}); "
                    "three PerAct tasks exist only in PerAct's fork (MohitShridhar/RLBench@peract)"
                ) from err
            self._task_env = self._env.get_task(task_class)
            self._task_name = task
        return self._task_env

    def _reset_to_demo(self, task_env: Any, task: str, index: int) -> tuple[list[str], Any]:
        episodes = list_episodes(self.config.demo_root or "", task)
        if not 0 <= index < len(episodes):
            raise UnknownTaskError(
                f"{task}: test episode {index} requested, {self.config.demo_root} has {len(episodes)}"
            )
        ep = episodes[index]
        demo = _load_pickle(ep.path / "low_dim_obs.pkl")
        demo[0].misc.setdefault("variation_index", ep.variation)  # what reset_to_demo reads (RLBench >= 1.2)
        demo.variation_number = (
            ep.variation
        )  # informational (PerAct's CustomRLBenchEnv reads it, not RLBench)
        task_env.set_variation(
            ep.variation
        )  # the fork's reset_to_demo only restores the RNG state and resets
        self._variation = ep.variation
        return task_env.reset_to_demo(demo)


def _uses_peract_layout(arm_mode: Any, layout: str) -> bool:
    """PerAct's RLBench fork takes a 9th action value (ignore_collisions) passed to the arm mode's action()."""
    if layout != "auto":
        return layout == "peract"
    try:
        return "ignore_collisions" in inspect.signature(arm_mode.action).parameters
    except (TypeError, ValueError):
        return False
