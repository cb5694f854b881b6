"""Stand-in for ``rlbench.action_modes.action_mode``: upstream RLBench takes 7 arm values + 1 gripper value;
PerAct's fork (``rlbench._flavour``) a 9th, ignore_collisions, passed on to the arm action mode."""

from abc import abstractmethod

import numpy as np

from rlbench._flavour import FORK


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
        if FORK:  # the fork's layout: [arm (7), gripper (1), ignore_collisions (1)]
            ignore_collisions = bool(action[arm_size + 1 : arm_size + 2])
            self.arm_action_mode.action(scene, np.array(action[:arm_size]), ignore_collisions)
            self.gripper_action_mode.action(scene, np.array(action[arm_size : arm_size + 1]))
            return
        self.arm_action_mode.action(scene, np.array(action[:arm_size]))
        self.gripper_action_mode.action(scene, np.array(action[arm_size:]))

    def action_shape(self, scene):
        return int(np.prod(self.arm_action_mode.action_shape(scene))) + int(
            np.prod(self.gripper_action_mode.action_shape(scene))
        )
