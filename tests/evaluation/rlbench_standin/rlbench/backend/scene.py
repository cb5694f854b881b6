"""Stand-in for ``rlbench.backend.scene.Scene`` with the fake simulator's physics.

World: a table top at ``TABLE_Z`` (RLBench's height), one block whose top face is ``BLOCK_HEIGHT`` above
it (sizes from ``evaluation.simulators.fake_sim``), placed with the *global* numpy RNG at ``init_episode`` (as
RLBench places objects), so ``Demo.restore_state()`` reproduces a demo's scene. The gripper is a point
with an orientation; planned paths move it in straight, eased steps and then settle for two steps with
zero joint velocity (the arm coming to rest at a waypoint). Five cameras named as RLBench's are
ray-cast with PyRep's camera model (see ``pyrep.objects.vision_sensor``).
"""

from __future__ import annotations

import numpy as np
from pyrep.errors import ConfigurationPathError
from pyrep.objects.vision_sensor import VisionSensor

from evaluation.simulators.fake_sim import BLOCK_HALF, BLOCK_HEIGHT, GRID
from rlbench._flavour import FORK
from rlbench.backend.observation import Observation
from rlbench.demo import Demo

TABLE_Z = 0.7505
TABLE_LOW, TABLE_HIGH = np.array([-0.3, -0.7]), np.array([0.9, 0.7])
START_POSE = np.array([0.25, 0.0, 1.25, 1.0, 0.0, 0.0, 0.0])  # pointing down, xyzw
ROBOT_BASE = np.array([-0.3, 0.0, 0.75])
REACH = 1.0  # metres from the base; beyond it no path exists
WORKSPACE_LOW, WORKSPACE_HIGH = np.array([-0.3, -0.6, 0.7]), np.array([0.8, 0.6, 1.8])
STEP_M = 0.03  # path step length
SETTLE_STEPS = 2
NEAR, FAR, ANGLE_DEG = 0.01, 4.5, 60.0
_JACOBIAN = np.array(
    [
        [1.0, 0.2, 0.0],
        [0.3, 1.0, 0.1],
        [0.0, 0.4, 1.0],
        [0.5, 0.0, 0.3],
        [0.1, 0.8, 0.0],
        [0.0, 0.2, 0.9],
        [0.4, 0.4, 0.4],
    ]
)  # (7, 3) fake joint Jacobian
_EYES = {
    "left_shoulder": ((-0.1, 0.55, 1.55), (0.3, 0.0, 0.75)),
    "right_shoulder": ((-0.1, -0.55, 1.55), (0.3, 0.0, 0.75)),
    "overhead": ((0.2, 0.0, 2.0), (0.45, 0.0, 0.75)),
    "front": ((1.3, 0.0, 1.55), (0.3, 0.0, 0.75)),
}
CAMERA_NAMES = ("left_shoulder", "right_shoulder", "overhead", "wrist", "front")


def yaw_quaternion(yaw: float) -> np.ndarray:
    """xyzw quaternion of a gripper pointing down (180 deg about x), then turned by ``yaw`` about z."""
    return np.array([np.cos(yaw / 2), np.sin(yaw / 2), 0.0, 0.0])


def coppelia_look_at(eye, target) -> np.ndarray:
    """4x4 sensor pose (CoppeliaSim sensor axes: x left and y up in the image, z forward)."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = (target - eye) / np.linalg.norm(target - eye)
    x_cv = np.cross(z, [0.0, 0.0, 1.0])
    x_cv /= np.linalg.norm(x_cv)
    y_cv = np.cross(z, x_cv)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([-x_cv, -y_cv, z], axis=1)
    pose[:3, 3] = eye
    return pose


class _Path:
    def __init__(self, scene: Scene, target: np.ndarray):
        self._scene = scene
        start = scene.pose.copy()
        n = max(1, int(np.ceil(np.linalg.norm(target[:3] - start[:3]) / STEP_M)))
        ease = (1 - np.cos(np.pi * np.arange(1, n + 1) / n)) / 2  # (n,)
        self._waypoints = [start[:3] + e * (target[:3] - start[:3]) for e in ease]
        self._quat = target[3:]
        self._settle = SETTLE_STEPS

    def step(self) -> bool:
        scene = self._scene
        if self._waypoints:
            new = self._waypoints.pop(0)
            scene.joint_velocities = _JACOBIAN @ ((new - scene.pose[:3]) / scene.DT)
            scene.pose = np.concatenate([new, self._quat])
            return False
        scene.joint_velocities = np.zeros(7)
        self._settle -= 1
        return self._settle <= 0


class _Arm:
    def __init__(self, scene: Scene):
        self._scene = scene
        self.ignore_collisions_requests: list[bool] = []  # stand-in only: what each get_path was asked

    def get_path(
        self,
        position,
        quaternion,
        ignore_collisions=False,
        trials=300,
        max_configs=1,
        distance_threshold=0.65,
        max_time_ms=10,
        trials_per_goal=1,
        algorithm=None,
        relative_to=None,
    ):
        self.ignore_collisions_requests.append(bool(ignore_collisions))
        position = np.asarray(position, float)
        if position[2] < TABLE_Z or np.linalg.norm(position - ROBOT_BASE) > REACH:
            raise ConfigurationPathError("Could not create path.")
        return _Path(self._scene, np.concatenate([position, np.asarray(quaternion, float)]))


class _Gripper:
    def __init__(self, scene: Scene):
        self._scene = scene
        self.amount = 1.0

    def get_open_amount(self) -> list[float]:
        return [self.amount, self.amount]

    def actuate(self, amount: float, velocity: float) -> bool:
        self.amount = float(
            np.clip(self.amount + np.clip(amount - self.amount, -velocity, velocity), 0.0, 1.0)
        )
        self._scene.joint_velocities = np.zeros(7)
        return abs(self.amount - amount) < 1e-9

    def grasp(self, obj) -> bool:
        return False

    def release(self) -> None:
        pass


class _Robot:
    def __init__(self, scene: Scene):
        self.arm = _Arm(scene)
        self.gripper = _Gripper(scene)


class Scene:
    DT = 0.05
    GOAL_TOLERANCE = 0.03

    def __init__(self, pyrep, robot, obs_config, robot_setup: str = "panda"):
        self.pyrep = pyrep
        self.robot = _Robot(self)
        self.robot_setup = robot_setup
        self.task = None
        self._obs_config = obs_config
        self.pose = START_POSE.copy()
        self.joint_velocities = np.zeros(7)
        self.goal = np.array([0.3, 0.0])
        self.steps = 0
        self._variation_index = 0
        self._step_callback = None
        self._sensors = {}
        for name in CAMERA_NAMES:
            cfg = getattr(obs_config, f"{name}_camera")
            self._sensors[name] = VisionSensor(name, tuple(cfg.image_size), ANGLE_DEG, NEAR, FAR)

    # -- RLBench's Scene methods -----------------------------------------------------------------------
    def load(self, task) -> None:
        self.task = task
        task._scene = self

    def unload(self) -> None:
        self.task = None

    def init_episode(
        self, index: int, randomly_place: bool = True, max_attempts: int = 5, place_demo: bool = False
    ):
        self._variation_index = index
        descriptions = self.task.init_episode(index)
        self.goal = np.array([np.random.uniform(0.1, 0.5), np.random.uniform(-0.25, 0.25)])
        return descriptions

    def reset(self) -> None:
        self.pose = START_POSE.copy()
        self.joint_velocities = np.zeros(7)
        self.robot.gripper.amount = 1.0
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        self.task.step()
        if self._step_callback is not None:
            self._step_callback()

    def register_step_callback(self, func) -> None:
        self._step_callback = func

    def check_target_in_workspace(self, target_pos) -> bool:
        p = np.asarray(target_pos, float)
        return bool(np.all(p >= WORKSPACE_LOW) and np.all(p <= WORKSPACE_HIGH))

    def get_demo(self, record: bool = True, callable_each_step=None) -> Demo:
        """The scripted expert: above the block, down to its top, close the gripper (one obs per step)."""
        observations = [self.get_observation()]
        self.register_step_callback(lambda: observations.append(self.get_observation()))
        yaw = float(np.random.uniform(-0.6, 0.6))
        top = self.goal_top()
        for target in (top + [0.0, 0.0, 0.12], top):
            path = self.robot.arm.get_path(target, quaternion=yaw_quaternion(yaw))
            done = False
            while not done:
                done = path.step()
                self.step()
        done = False
        while not done:
            done = self.robot.gripper.actuate(0.0, velocity=0.2)
            self.step()
        self.register_step_callback(None)
        if not self.task.success()[0]:
            raise RuntimeError("stand-in expert failed")
        return Demo(observations)

    # -- fake physics and rendering ----------------------------------------------------------------------
    def gripper_position(self) -> np.ndarray:
        return self.pose[:3].copy()

    def goal_top(self) -> np.ndarray:
        return np.array([self.goal[0], self.goal[1], TABLE_Z + BLOCK_HEIGHT])

    def _sensor_pose(self, name: str) -> np.ndarray:
        if name == "wrist":
            p = self.pose[:3]
            return coppelia_look_at(p + [-0.06, 0.0, 0.1], p + [0.15, 0.0, -0.3])
        eye, target = _EYES[name]
        return coppelia_look_at(eye, target)

    def _render(self, sensor: VisionSensor) -> tuple[np.ndarray, np.ndarray]:
        """(rgb (H, W, 3) uint8, depth (H, W) metres, planar) with PyRep's pixel convention."""
        w, h = sensor.get_resolution()
        k_inv = np.linalg.inv(sensor.get_intrinsic_matrix())
        cols, rows = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
        pix = np.stack([cols, rows, np.ones_like(cols)], axis=-1).reshape(-1, 3)  # (H*W, 3)
        pose = sensor.get_matrix()
        dirs = (pix @ k_inv.T) @ pose[:3, :3].T  # (H*W, 3) world direction per unit depth
        eye = pose[:3, 3]
        depth = np.full(len(dirs), FAR)
        rgb = np.zeros((len(dirs), 3), np.uint8)
        with np.errstate(divide="ignore", invalid="ignore"):
            s_top = (TABLE_Z + BLOCK_HEIGHT - eye[2]) / dirs[:, 2]
            s_table = (TABLE_Z - eye[2]) / dirs[:, 2]
        top = eye + s_top[:, None] * dirs
        table = eye + s_table[:, None] * dirs
        on_block = (s_top > NEAR) & np.all(np.abs(top[:, :2] - self.goal) <= BLOCK_HALF, axis=1)
        inside = np.all((table[:, :2] >= TABLE_LOW) & (table[:, :2] <= TABLE_HIGH), axis=1)
        on_table = ~on_block & (s_table > NEAR) & (s_table < FAR) & inside
        depth[on_block], rgb[on_block] = s_top[on_block], (230, 20, 20)
        depth[on_table] = s_table[on_table]
        checker = (np.floor(table[:, 0] / GRID) + np.floor(table[:, 1] / GRID)) % 2
        shade = np.where(checker > 0, 150, 110).astype(np.uint8)
        rgb[on_table] = np.stack([shade] * 3, axis=1)[on_table]
        return rgb.reshape(h, w, 3), depth.reshape(h, w)

    def _camera(self, name: str) -> dict:
        cfg = getattr(self._obs_config, f"{name}_camera")
        out = {"rgb": None, "depth": None, "point_cloud": None, "mask": None}
        if not (cfg.rgb or cfg.depth or cfg.point_cloud or cfg.mask):
            return out
        sensor = self._sensors[name]
        sensor.set_matrix(self._sensor_pose(name))
        rgb, depth_m = self._render(sensor)
        out["rgb"] = rgb if cfg.rgb else None
        if cfg.depth:
            out["depth"] = depth_m if cfg.depth_in_meters else (depth_m - NEAR) / (FAR - NEAR)
        if cfg.point_cloud:
            out["point_cloud"] = sensor.pointcloud_from_depth(depth_m)
        if cfg.mask:
            out["mask"] = (rgb[..., 0] == 230).astype(np.float32)
        return out

    def _misc(self) -> dict:
        misc = {}
        for name in CAMERA_NAMES:
            sensor = self._sensors[name]
            sensor.set_matrix(self._sensor_pose(name))
            misc[f"{name}_camera_extrinsics"] = sensor.get_matrix()
            misc[f"{name}_camera_intrinsics"] = sensor.get_intrinsic_matrix()
            misc[f"{name}_camera_near"] = sensor.get_near_clipping_plane()
            misc[f"{name}_camera_far"] = sensor.get_far_clipping_plane()
        if not FORK:  # the fork's Scene._get_misc does not record it
            misc["variation_index"] = self._variation_index
        return misc

    def get_observation(self) -> Observation:
        cfg = self._obs_config
        fields = {}
        for name in CAMERA_NAMES:
            for key, value in self._camera(name).items():
                fields[f"{name}_{key}"] = value
        amount = self.robot.gripper.get_open_amount()[0]
        return Observation(
            **fields,
            joint_velocities=self.joint_velocities.copy() if cfg.joint_velocities else None,
            joint_positions=np.zeros(7) if cfg.joint_positions else None,
            joint_forces=np.zeros(7) if cfg.joint_forces else None,
            gripper_open=(1.0 if amount > 0.9 else 0.0) if cfg.gripper_open else None,
            gripper_pose=self.pose.copy() if cfg.gripper_pose else None,
            gripper_matrix=None,
            gripper_joint_positions=None,
            gripper_touch_forces=None,
            task_low_dim_state=None,
            misc=self._misc(),
        )
