"""Stand-in for ``rlbench.observation_config`` (same constructor arguments as RLBench's)."""

from pyrep.const import RenderMode


class CameraConfig:
    def __init__(
        self,
        rgb=True,
        rgb_noise=None,
        depth=True,
        depth_noise=None,
        point_cloud=True,
        mask=True,
        image_size=(128, 128),
        render_mode=RenderMode.OPENGL3,
        masks_as_one_channel=True,
        depth_in_meters=False,
    ):
        self.rgb = rgb
        self.rgb_noise = rgb_noise
        self.depth = depth
        self.depth_noise = depth_noise
        self.point_cloud = point_cloud
        self.mask = mask
        self.image_size = image_size
        self.render_mode = render_mode
        self.masks_as_one_channel = masks_as_one_channel
        self.depth_in_meters = depth_in_meters

    def set_all(self, value: bool):
        self.rgb = self.depth = self.point_cloud = self.mask = value


class ObservationConfig:
    def __init__(
        self,
        left_shoulder_camera=None,
        right_shoulder_camera=None,
        overhead_camera=None,
        wrist_camera=None,
        front_camera=None,
        joint_velocities=True,
        joint_velocities_noise=None,
        joint_positions=True,
        joint_positions_noise=None,
        joint_forces=True,
        joint_forces_noise=None,
        gripper_open=True,
        gripper_pose=True,
        gripper_matrix=False,
        gripper_joint_positions=False,
        gripper_touch_forces=False,
        wrist_camera_matrix=False,
        record_gripper_closing=False,
        task_low_dim_state=False,
    ):
        self.left_shoulder_camera = left_shoulder_camera or CameraConfig()
        self.right_shoulder_camera = right_shoulder_camera or CameraConfig()
        self.overhead_camera = overhead_camera or CameraConfig()
        self.wrist_camera = wrist_camera or CameraConfig()
        self.front_camera = front_camera or CameraConfig()
        self.joint_velocities = joint_velocities
        self.joint_positions = joint_positions
        self.joint_forces = joint_forces
        self.gripper_open = gripper_open
        self.gripper_pose = gripper_pose
        self.gripper_matrix = gripper_matrix
        self.gripper_joint_positions = gripper_joint_positions
        self.gripper_touch_forces = gripper_touch_forces
        self.wrist_camera_matrix = wrist_camera_matrix
        self.record_gripper_closing = record_gripper_closing
        self.task_low_dim_state = task_low_dim_state

    def set_all(self, value: bool):
        for cam in (
            self.left_shoulder_camera,
            self.right_shoulder_camera,
            self.overhead_camera,
            self.wrist_camera,
            self.front_camera,
        ):
            cam.set_all(value)
        self.joint_velocities = self.joint_positions = self.joint_forces = value
        self.gripper_open = self.gripper_pose = self.gripper_matrix = value
        self.gripper_joint_positions = self.gripper_touch_forces = self.task_low_dim_state = value
