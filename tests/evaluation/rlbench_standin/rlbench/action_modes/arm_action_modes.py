"""Stand-in for ``rlbench.action_modes.arm_action_modes.EndEffectorPoseViaPlanning``.

Same checks and error behaviour as RLBench's: a wrong shape, a non-unit quaternion or a target outside
the workspace raise ``InvalidActionError``; a ``ConfigurationPathError`` from path planning is re-raised
as ``InvalidActionError``; the path is followed step by step and stops early on task success.
"""

import numpy as np
from pyrep.errors import ConfigurationPathError

from rlbench._flavour import FORK
from rlbench.backend.exceptions import InvalidActionError


def assert_action_shape(action, expected_shape):
    if np.shape(action) != tuple(expected_shape):
        raise InvalidActionError(
            f"Expected the action shape to be: {expected_shape}, but was shape: {np.shape(action)}"
        )


def assert_unit_quaternion(quat):
    if not np.isclose(np.linalg.norm(quat), 1.0):
        raise InvalidActionError("Action contained non unit quaternion!")


class ArmActionMode:
    def action(self, scene, action):
        raise NotImplementedError

    def action_shape(self, scene):
        raise NotImplementedError

    def set_control_mode(self, robot):
        pass


class EndEffectorPoseViaPlanning(ArmActionMode):
    def __init__(self, absolute_mode: bool = True, frame=None, collision_checking: bool = False):
        self._absolute_mode = absolute_mode
        self._frame = frame
        self._collision_checking = collision_checking

    def _move(self, scene, action: np.ndarray, ignore_collisions: bool):
        assert_action_shape(action, (7,))
        assert_unit_quaternion(action[3:])
        if not scene.check_target_in_workspace(action[:3]):
            raise InvalidActionError("A path could not be found because the target is outside of workspace.")
        try:
            path = scene.robot.arm.get_path(
                action[:3], quaternion=action[3:], ignore_collisions=ignore_collisions
            )
        except ConfigurationPathError as e:
            raise InvalidActionError(
                "A path could not be found. Most likely due to the target being inaccessible or a "
                "collison was detected."
            ) from e
        done = False
        while not done:
            done = path.step()
            scene.step()
            success, _ = scene.task.success()
            if success:
                break

    if FORK:  # PerAct's fork: the 9th action value decides; collision_checking is not read

        def action(self, scene, action: np.ndarray, ignore_collisions: bool = True):
            self._move(scene, action, ignore_collisions)

    else:

        def action(self, scene, action: np.ndarray):
            self._move(scene, action, not self._collision_checking)

    def action_shape(self, scene):
        return (7,)
