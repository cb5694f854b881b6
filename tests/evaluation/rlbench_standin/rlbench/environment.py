"""Stand-in for ``rlbench.environment.Environment`` (same constructor arguments as RLBench's)."""

import inspect
from os.path import exists

from rlbench._flavour import FORK
from rlbench.backend.scene import Scene
from rlbench.observation_config import ObservationConfig
from rlbench.task_environment import TaskEnvironment

LAUNCHES = []  # (headless,) per launch(): lets tests check how the backend launched it


class Environment:
    def __init__(
        self,
        action_mode,
        dataset_root: str = "",
        obs_config=None,
        headless: bool = False,
        static_positions: bool = False,
        robot_setup: str = "panda",
        randomize_every=None,
        frequency: int = 1,
        visual_randomization_config=None,
        dynamics_randomization_config=None,
        attach_grasped_objects: bool = True,
        shaped_rewards: bool = False,
        arm_max_velocity: float = 1.0,
        arm_max_acceleration: float = 4.0,
    ):
        self._setup(action_mode, dataset_root, obs_config, headless, robot_setup)

    def _setup(self, action_mode, dataset_root, obs_config, headless, robot_setup):
        self._action_mode = action_mode
        self._dataset_root = dataset_root
        self._obs_config = obs_config or ObservationConfig()
        self._headless = headless
        self._robot_setup = robot_setup
        if len(dataset_root) > 0 and not exists(dataset_root):
            raise RuntimeError(f"Data set root does not exists: {dataset_root}")
        self._pyrep = None
        self._scene = None

    def launch(self):
        if self._pyrep is not None:
            raise RuntimeError("Already called launch!")
        self._pyrep = object()
        self._scene = Scene(self._pyrep, None, self._obs_config, self._robot_setup)
        LAUNCHES.append((self._headless,))

    def shutdown(self):
        self._pyrep = None

    def get_task(self, task_class) -> TaskEnvironment:
        if self._pyrep is None:
            self.launch()
        self._scene.unload()
        task = task_class(self._pyrep, self._scene.robot)
        return TaskEnvironment(
            self._pyrep,
            self._scene.robot,
            self._scene,
            task,
            self._action_mode,
            self._dataset_root,
            self._obs_config,
        )


if (
    FORK
):  # PerAct's fork predates shaped_rewards and the arm speed limits: its constructor has no such keywords
    _UPSTREAM_ONLY = ("shaped_rewards", "arm_max_velocity", "arm_max_acceleration")
    _upstream_init = Environment.__init__
    _signature = inspect.signature(_upstream_init)

    def _fork_init(self, *args, **kwargs):
        unknown = sorted(set(kwargs) & set(_UPSTREAM_ONLY))
        if unknown:
            raise TypeError(f"__init__() got an unexpected keyword argument {unknown[0]!r}")
        _upstream_init(self, *args, **kwargs)

    _fork_init.__signature__ = _signature.replace(
        parameters=[p for name, p in _signature.parameters.items() if name not in _UPSTREAM_ONLY]
    )
    Environment.__init__ = _fork_init
