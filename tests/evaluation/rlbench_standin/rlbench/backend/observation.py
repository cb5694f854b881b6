"""Stand-in for ``rlbench.backend.observation.Observation`` (same constructor fields as RLBench's)."""

import numpy as np

_FIELDS = (
    "left_shoulder_rgb left_shoulder_depth left_shoulder_mask left_shoulder_point_cloud "
    "right_shoulder_rgb right_shoulder_depth right_shoulder_mask right_shoulder_point_cloud "
    "overhead_rgb overhead_depth overhead_mask overhead_point_cloud "
    "wrist_rgb wrist_depth wrist_mask wrist_point_cloud "
    "front_rgb front_depth front_mask front_point_cloud "
    "joint_velocities joint_positions joint_forces gripper_open gripper_pose gripper_matrix "
    "gripper_joint_positions gripper_touch_forces task_low_dim_state misc"
).split()


class Observation:
    """Storage for both visual and low-dimensional observations."""

    def __init__(self, **fields):
        unknown = set(fields) - set(_FIELDS)
        missing = set(_FIELDS) - set(fields)
        if unknown or missing:
            raise TypeError(f"Observation fields: unknown {sorted(unknown)}, missing {sorted(missing)}")
        for name in _FIELDS:
            setattr(self, name, fields[name])

    def get_low_dim_data(self) -> np.ndarray:
        parts = [] if self.gripper_open is None else [[self.gripper_open]]
        for data in (
            self.joint_velocities,
            self.joint_positions,
            self.joint_forces,
            self.gripper_pose,
            self.gripper_joint_positions,
            self.gripper_touch_forces,
            self.task_low_dim_state,
        ):
            if data is not None:
                parts.append(data)
        return np.concatenate(parts) if parts else np.array([])
