"""Stand-in for ``rlbench.action_modes.gripper_action_modes.Discrete`` (> 0.5 opens, else closes)."""

import numpy as np

from rlbench.backend.exceptions import InvalidActionError


class GripperActionMode:
    def action(self, scene, action):
        raise NotImplementedError

    def action_shape(self, scene):
        raise NotImplementedError


class Discrete(GripperActionMode):
    def __init__(self, attach_grasped_objects: bool = True, detach_before_open: bool = True):
        self._attach_grasped_objects = attach_grasped_objects
        self._detach_before_open = detach_before_open

    def _actuate(self, action, scene):
        done = False
        while not done:
            done = scene.robot.gripper.actuate(action, velocity=0.2)
            scene.step()

    def action(self, scene, action: np.ndarray):
        if np.shape(action) != (1,):
            raise InvalidActionError(
                f"Expected the action shape to be: (1,), but was shape: {np.shape(action)}"
            )
        current = 1.0 if all(x > 0.9 for x in scene.robot.gripper.get_open_amount()) else 0.0
        target = float(action[0] > 0.5)
        if current != target:
            if target == 0.0:
                for obj in scene.task.get_graspable_objects():
                    scene.robot.gripper.grasp(obj)
            else:
                scene.robot.gripper.release()
            self._actuate(target, scene)

    def action_shape(self, scene):
        return (1,)
