"""Stand-in for ``rlbench.task_environment.TaskEnvironment`` (same method names and return values)."""

import numpy as np

from rlbench._flavour import FORK
from rlbench.backend.exceptions import TaskEnvironmentError


class TaskEnvironment:
    def __init__(
        self,
        pyrep,
        robot,
        scene,
        task,
        action_mode,
        dataset_root,
        obs_config,
        static_positions=False,
        attach_grasped_objects=True,
        shaped_rewards=False,
    ):
        self._pyrep = pyrep
        self._robot = robot
        self._scene = scene
        self._task = task
        self._variation_number = 0
        self._action_mode = action_mode
        self._dataset_root = dataset_root
        self._obs_config = obs_config
        self._reset_called = False
        self._scene.load(self._task)

    def get_name(self) -> str:
        return self._task.get_name()

    def sample_variation(self) -> int:
        self._variation_number = np.random.randint(0, self._task.variation_count())
        return self._variation_number

    def set_variation(self, v: int) -> None:
        if v >= self.variation_count():
            raise TaskEnvironmentError(
                f"Requested variation {v}, but there are only {self.variation_count()} variations."
            )
        self._variation_number = v

    def variation_count(self) -> int:
        return self._task.variation_count()

    def reset(self, demo=None):
        self._scene.reset()
        desc = self._scene.init_episode(self._variation_number)
        self._reset_called = True
        return desc, self._scene.get_observation()

    def get_observation(self):
        return self._scene.get_observation()

    def step(self, action):
        if not self._reset_called:
            raise RuntimeError("Call 'reset' before calling 'step' on a task.")
        self._action_mode.action(self._scene, action)
        success, terminate = self._task.success()
        return self._scene.get_observation(), float(success), terminate

    def get_demos(
        self,
        amount: int,
        live_demos: bool = False,
        image_paths: bool = False,
        callable_each_step=None,
        max_attempts: int = 10,
        random_selection: bool = True,
        from_episode_number: int = 0,
    ):
        if not live_demos:
            raise RuntimeError("the stand-in only makes live demos")
        demos = []
        for _ in range(amount):
            random_seed = np.random.get_state()
            self.reset()
            demo = self._scene.get_demo(callable_each_step=callable_each_step)
            demo.random_seed = random_seed
            demos.append(demo)
        return demos

    def reset_to_demo(self, demo):
        demo.restore_state()
        if FORK:  # the fork's version: the caller must have set the demo's variation
            return self.reset()
        self.set_variation(demo._observations[0].misc["variation_index"])
        return self.reset(demo)
