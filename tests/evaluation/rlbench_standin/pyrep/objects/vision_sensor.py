"""Stand-in for ``pyrep.objects.vision_sensor.VisionSensor``: PyRep's camera model, without CoppeliaSim.

PyRep's conventions reproduced here: ``get_matrix()`` is the sensor's 4x4 pose in the world (camera to
world) with CoppeliaSim's sensor axes (looks along +z); ``get_intrinsic_matrix()`` has *negative* focal
lengths ``-res / (2 tan(angle / 2))`` and principal point ``res / 2``; pixel ``(row v, col u)`` is
back-projected at integer coordinates ``(u, v)``; depth in metres is planar (along +z).
"""

from __future__ import annotations

import math

import numpy as np


class VisionSensor:
    def __init__(
        self, name: str, resolution: tuple[int, int], perspective_angle_deg: float, near: float, far: float
    ):
        self.name = name
        self.resolution = [int(resolution[0]), int(resolution[1])]  # [x (width), y (height)]
        self._angle = float(perspective_angle_deg)
        self._near, self._far = float(near), float(far)
        self._matrix = np.eye(4)

    # -- the PyRep methods RLBench's scene calls ---------------------------------------------------
    def still_exists(self) -> bool:
        return True

    def get_resolution(self) -> list[int]:
        return list(self.resolution)

    def get_perspective_angle(self) -> float:
        return self._angle

    def get_near_clipping_plane(self) -> float:
        return self._near

    def get_far_clipping_plane(self) -> float:
        return self._far

    def get_matrix(self) -> np.ndarray:
        return self._matrix.copy()

    def set_matrix(self, matrix: np.ndarray) -> None:
        self._matrix = np.asarray(matrix, dtype=np.float64).copy()

    def get_intrinsic_matrix(self) -> np.ndarray:
        res = np.array(self.get_resolution(), dtype=np.float64)
        ratio = res[0] / res[1]
        angle_x = angle_y = math.radians(self.get_perspective_angle())
        if ratio > 1:
            angle_y = 2 * math.atan(math.tan(angle_y / 2) / ratio)
        elif ratio < 1:
            angle_x = 2 * math.atan(math.tan(angle_x / 2) * ratio)
        focal = -res / (2 * np.tan(np.array([angle_x, angle_y]) / 2))
        return np.array([[focal[0], 0.0, res[0] / 2], [0.0, focal[1], res[1] / 2], [0.0, 0.0, 1.0]])

    def pointcloud_from_depth(self, depth: np.ndarray) -> np.ndarray:
        return VisionSensor.pointcloud_from_depth_and_camera_params(
            depth, self.get_matrix(), self.get_intrinsic_matrix()
        )

    @staticmethod
    def pointcloud_from_depth_and_camera_params(
        depth: np.ndarray, extrinsics: np.ndarray, intrinsics: np.ndarray
    ) -> np.ndarray:
        """(H, W, 3) world points of a (H, W) planar depth map in metres."""
        h, w = depth.shape
        cols, rows = np.meshgrid(
            np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
        )  # (H, W) each
        pix = np.stack([cols * depth, rows * depth, depth.astype(np.float64)], axis=-1)  # (H, W, 3)
        cam = pix.reshape(-1, 3) @ np.linalg.inv(intrinsics).T  # (H*W, 3) sensor frame
        world = cam @ extrinsics[:3, :3].T + extrinsics[:3, 3]  # (H*W, 3)
        return world.reshape(h, w, 3)
