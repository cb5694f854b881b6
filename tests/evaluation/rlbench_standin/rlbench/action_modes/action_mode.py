"""Stand-in for ``rlbench.action_modes.action_mode`` (upstream RLBench: 7 arm values + 1 gripper value)."""

from abc import abstractmethod

import numpy as np


class ActionMode:
    def __init__(self, arm_action_mode, gripper_action_mode):
        self.arm_action_mode = arm_action_mode
        self.gripper_action_mode = gripper_action_mode

    @abstractmethod
    def action(self, scene, action: np.ndarray):
        pass

    @abstractmethod
    def action_shape(self, scene):
        pass


class MoveArmThenGripper(ActionMode):
    """The arm action is first applied, followed by the gripper action."""

    def action(self, scene, action: np.ndarray):
        arm_size = int(np.prod(self.arm_action_mode.action_shape(scene)))
        self.arm_action_mode.action(scene, np.array(action[:arm_size]))
        self.gripper_action_mode.action(scene, np.array(action[arm_size:]))

    def action_shape(self, scene):
        return int(np.prod(self.arm_action_mode.action_shape(scene))) + int(
            np.prod(self.gripper_action_mode.action_shape(scene))
        )
