"""Multi-camera RGB-D -> the policy's point cloud (Mini-Diffuser's condition; docs/design.md, stage 7).

Stages (each a plain function of numpy arrays, shared by collection and evaluation):
``frame_to_world`` (depth -> world points + colours per camera) -> ``fuse_and_crop`` (concatenate,
workspace crop, table removal) -> ``voxelize`` (mean per occupied voxel, sorted by voxel key, so
deterministic) -> ``drop_surface`` (a fixture's top that holds most of the voxels, when enabled) ->
``subsample`` (fixed-seed permutation to at most ``max_points``) -> ``point_features``
((N, 7) float32 ``[x, y, z, r, g, b, h]``, rgb in [-1, 1], h = height above the table; the layout of
``policies.batch``).

``observation_to_condition`` turns a simulator ``Observation`` into a B = 1 ``ConditionBatch`` with
exactly the processing used at collection time, so training and evaluation inputs match;
``PointCloudConditioner`` is that as the picklable ``ConditionFn`` evaluation episodes call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from pydantic import Field, model_validator

from evaluation.simulators.sim import CameraFrame, Observation
from policies.batch import POINT_DIM, POSE_DIM, ConditionBatch
from policies.config import FrozenModel


class PointCloudConfig(FrozenModel):
    """How camera frames become the policy's point cloud. Stored in every dataset manifest.

    Default workspace (Meta-World, measured): the table top is z = 0 (x in [-0.7, 0.7], y in [0.2, 1.0]),
    bounded by 12 cm retaining walls at y = 0.21, y = 0.99 and x = +-0.69; every MT10 object and goal
    lies in x [-0.32, 0.30], y [0.40, 0.90], z [0, 0.31]. The crop keeps x [-0.5, 0.5], y [0.3, 0.97],
    z [-0.05, 0.5]: all task objects and the gripper, not the walls, the robot's pedestal or upper arm.
    """

    voxel_size: float = Field(0.01, gt=0.0, le=0.2)
    workspace_low: tuple[float, float, float] = (-0.5, 0.3, -0.05)
    workspace_high: tuple[float, float, float] = (0.5, 0.97, 0.5)
    table_height: float = 0.0
    table_margin: float = Field(0.005, ge=0.0, le=0.1)  # points with h below this are table
    max_points: int = Field(4000, ge=16, le=65536)  # stored per sample; batches may take fewer
    subsample_seed: int = 0
    # Drop a horizontal surface above the table when one layer (+-table_margin) holds at least this fraction of
    # the voxels (``drop_surface``); 0 = off. Meta-World's hand-insert, sweep-into and pick-out-of-hole stand a
    # box with a hole on the table: its top, 5 cm up, is 75-88 % of their voxels, so a 1024-point condition
    # kept about 4 points of hand-insert's puck. In every other MT50 scene the largest layer is at most 33 %.
    surface_fraction: float = Field(0.0, ge=0.0, le=1.0)
    # The clouds hold no point of the robot's links above its gripper: Meta-World's cameras do not draw them
    # (``RenderConfig.hide_arm``; collection and evaluation render so), a real robot's clouds must be masked the
    # same way. In Meta-World the arm is about 45 % of a scene's voxels (soccer 796 of 1735).
    hide_arm: bool = False

    @model_validator(mode="after")
    def _check(self) -> PointCloudConfig:
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high, strict=True)):
            raise ValueError(
                f"workspace_low {self.workspace_low} must be below workspace_high {self.workspace_high}"
            )
        return self

    def settings(self) -> dict[str, object]:
        """The config as collection settings and manifests record it; ``surface_fraction`` and ``hide_arm`` only
        when on, so that datasets collected before the options keep their settings (and can be extended)."""
        off = {key for key in ("surface_fraction", "hide_arm") if not getattr(self, key)}
        return self.model_dump(mode="json", exclude=off or None)


def frame_to_world(frame: CameraFrame) -> tuple[np.ndarray, np.ndarray]:
    """Back-project a camera's planar depth to world points.

    Returns (xyz (H*W, 3) float64 world frame, rgb (H*W, 3) uint8). Pixel (row v, col u) has its centre
    at (u + 0.5, v + 0.5); camera axes are OpenCV (x right, y down, z forward).
    """
    h, w = frame.depth.shape
    k = frame.intrinsics
    u = (np.arange(w, dtype=np.float64) + 0.5 - k[0, 2]) / k[0, 0]  # (W,)
    v = (np.arange(h, dtype=np.float64) + 0.5 - k[1, 2]) / k[1, 1]  # (H,)
    z = frame.depth.astype(np.float64)  # (H, W)
    cam = np.stack([u[None, :] * z, v[:, None] * z, z], axis=-1).reshape(-1, 3)  # (H*W, 3)
    rot, trans = frame.extrinsics[:3, :3], frame.extrinsics[:3, 3]
    world = cam @ rot.T + trans  # (H*W, 3)
    return world, frame.rgb.reshape(-1, 3)


def fuse_and_crop(frames: Sequence[CameraFrame], cfg: PointCloudConfig) -> tuple[np.ndarray, np.ndarray]:
    """All cameras' points inside the workspace and above the table: (xyz (P, 3), rgb (P, 3) uint8)."""
    xyz_parts, rgb_parts = [], []
    for frame in frames:
        xyz, rgb = crop(*frame_to_world(frame), cfg)
        xyz_parts.append(xyz)
        rgb_parts.append(rgb)
    if not xyz_parts:
        return np.zeros((0, 3)), np.zeros((0, 3), np.uint8)
    return np.concatenate(xyz_parts), np.concatenate(rgb_parts)


def crop(xyz: np.ndarray, rgb: np.ndarray, cfg: PointCloudConfig) -> tuple[np.ndarray, np.ndarray]:
    """The points of a fused world-frame cloud inside the workspace and above the table (as ``fuse_and_crop``)."""
    low, high = np.asarray(cfg.workspace_low), np.asarray(cfg.workspace_high)
    keep = np.all((xyz >= low) & (xyz <= high), axis=1)
    keep &= xyz[:, 2] - cfg.table_height >= cfg.table_margin
    return xyz[keep], rgb[keep]


def voxelize(xyz: np.ndarray, rgb: np.ndarray, cfg: PointCloudConfig) -> tuple[np.ndarray, np.ndarray]:
    """Mean position and colour per occupied voxel, ordered by voxel key: (xyz (V, 3), rgb (V, 3) float [0, 255])."""
    if len(xyz) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3))
    keys = np.floor((xyz - np.asarray(cfg.workspace_low)) / cfg.voxel_size).astype(np.int64)  # (P, 3)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    n_vox = len(counts)
    out_xyz = np.stack([np.bincount(inverse, xyz[:, i], n_vox) for i in range(3)], axis=1) / counts[:, None]
    rgb_f = rgb.astype(np.float64)
    out_rgb = np.stack([np.bincount(inverse, rgb_f[:, i], n_vox) for i in range(3)], axis=1) / counts[:, None]
    return out_xyz, out_rgb


def drop_surface(xyz: np.ndarray, rgb: np.ndarray, cfg: PointCloudConfig) -> tuple[np.ndarray, np.ndarray]:
    """Voxels minus the largest horizontal layer when it holds at least ``cfg.surface_fraction`` of them.

    The layer: the voxel heights within ``table_margin`` of one voxel's height, the height with the most
    (a flat top's voxel centres share one height). Off (``surface_fraction`` 0) or below the fraction: unchanged.
    """
    if not cfg.surface_fraction or len(xyz) == 0:
        return xyz, rgb
    z = np.sort(xyz[:, 2])  # (V,)
    within = np.searchsorted(z, z + cfg.table_margin, "right") - np.searchsorted(
        z, z - cfg.table_margin, "left"
    )
    k = int(np.argmax(within))
    if within[k] < cfg.surface_fraction * len(z):
        return xyz, rgb
    keep = np.abs(xyz[:, 2] - z[k]) > cfg.table_margin
    return xyz[keep], rgb[keep]


def subsample(n: int, max_points: int, seed: int) -> np.ndarray:
    """Indices of at most ``max_points`` of ``n`` points: a fixed-seed permutation's first ones, sorted."""
    if n <= max_points:
        return np.arange(n)
    perm = np.random.default_rng(seed).permutation(n)[:max_points]
    return np.sort(perm)


def point_features(xyz: np.ndarray, rgb: np.ndarray, cfg: PointCloudConfig) -> np.ndarray:
    """(N, 7) float32 ``[x, y, z, r, g, b, h]``: world xyz, rgb in [-1, 1], height above the table."""
    feats = np.empty((len(xyz), POINT_DIM), np.float32)
    feats[:, :3] = xyz
    feats[:, 3:6] = rgb / 127.5 - 1.0
    feats[:, 6] = xyz[:, 2] - cfg.table_height
    return feats


def frames_to_points(frames: Sequence[CameraFrame], cfg: PointCloudConfig) -> np.ndarray:
    """The whole pipeline: camera frames -> (N <= cfg.max_points, 7) float32 point features."""
    return _voxel_features(*fuse_and_crop(frames, cfg), cfg)


def cloud_to_points(xyz: np.ndarray, rgb: np.ndarray, cfg: PointCloudConfig) -> np.ndarray:
    """A ready world-frame cloud (xyz (P, 3) metres, rgb (P, 3) in [0, 255]) -> (N <= cfg.max_points, 7) point
    features, through the same crop, voxels and subsample as camera frames (``frames_to_points``)."""
    return _voxel_features(*crop(np.asarray(xyz, np.float64), np.asarray(rgb), cfg), cfg)


def _voxel_features(xyz: np.ndarray, rgb: np.ndarray, cfg: PointCloudConfig) -> np.ndarray:
    """A cropped cloud -> voxels -> surface dropped -> subsampled (N <= cfg.max_points, 7) point features."""
    vox_xyz, vox_rgb = drop_surface(*voxelize(xyz, rgb, cfg), cfg)
    keep = subsample(len(vox_xyz), cfg.max_points, cfg.subsample_seed)
    return point_features(vox_xyz[keep], vox_rgb[keep], cfg)


def select_points(
    n: int, max_points: int, generator: np.random.Generator | None, fixed_seed: int = 0
) -> np.ndarray:
    """Which of a sample's ``n`` stored points go into a batch of ``max_points`` per condition.

    Random subset when ``generator`` is given (training augmentation), else the first ``max_points``
    of a fixed-seed permutation (deterministic; the same rule for datasets and live observations).
    """
    if n <= max_points:
        return np.arange(n)
    if generator is not None:
        return np.sort(generator.choice(n, size=max_points, replace=False))
    return np.sort(np.random.default_rng(fixed_seed).permutation(n)[:max_points])


def collate_points(clouds: Sequence[np.ndarray], max_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad per-condition clouds (each (n_i <= max_points, 7)) to (B, N, 7) + mask (B, N)."""
    width = max(1, min(max_points, max((len(c) for c in clouds), default=1)))
    points = np.zeros((len(clouds), width, POINT_DIM), np.float32)  # (B, N, 7)
    mask = np.zeros((len(clouds), width), bool)  # (B, N)
    for i, cloud in enumerate(clouds):
        points[i, : len(cloud)] = cloud
        mask[i, : len(cloud)] = True
    return torch.from_numpy(points), torch.from_numpy(mask)


def observation_to_condition(
    obs: Observation,
    text: tuple[np.ndarray, np.ndarray],
    max_points: int,
    cfg: PointCloudConfig,
    previous: Sequence[np.ndarray] = (),
    history: int = 0,
) -> ConditionBatch:
    """A live observation as a B = 1 ``ConditionBatch`` (target None), processed exactly as at collection.

    ``text`` is ``(tokens (L, D) float32, mask (L,) bool)`` from ``KeyframeDataset.instruction_embedding``
    or ``evaluation.datasets.text``. The cloud is built with ``cfg`` (use the dataset manifest's config) and then
    reduced to ``max_points`` with the deterministic rule of ``KeyframeDataset.batch(generator=None)``.
    ``previous`` and ``history``: see ``past_poses``.
    """
    cloud = frames_to_points(obs.cameras, cfg)
    return points_to_condition(cloud, obs.gripper_pose, text, max_points, cfg, previous, history)


def past_poses(gripper_pose: np.ndarray, previous: Sequence[np.ndarray], history: int) -> np.ndarray:
    """(history, 8) float32: the gripper poses at the episode's ``history`` previous keyposes, most recent
    first, from ``previous`` (the poses at its earlier keyposes, oldest first). Before an episode has made that
    many keyposes its first pose stands in for the missing ones, as ``KeyframeDataset.history`` does."""
    if not history:
        return np.zeros((0, POSE_DIM), np.float32)
    poses = [np.asarray(p, np.float32).reshape(POSE_DIM) for p in previous]
    first = poses[0] if poses else np.asarray(gripper_pose, np.float32).reshape(POSE_DIM)
    recent = poses[::-1][:history]
    return np.stack(recent + [first] * (history - len(recent)))  # (history, 8)


def points_to_condition(
    cloud: np.ndarray,
    gripper_pose: np.ndarray,
    text: tuple[np.ndarray, np.ndarray],
    max_points: int,
    cfg: PointCloudConfig,
    previous: Sequence[np.ndarray] = (),
    history: int = 0,
) -> ConditionBatch:
    """(n, 7) point features + (8,) gripper pose + instruction -> a B = 1 ``ConditionBatch`` (the tail of
    ``observation_to_condition``, also used by the policy server for a ready point cloud); with ``history``
    > 0 also the poses of that many previous keyposes (``past_poses``)."""
    cloud = cloud[select_points(len(cloud), max_points, None, cfg.subsample_seed)]
    points, mask = collate_points([cloud], max_points)
    tokens, token_mask = text
    gripper = np.asarray(gripper_pose, np.float32).reshape(1, POSE_DIM)
    return ConditionBatch(
        points=points,
        point_mask=mask,
        text=torch.from_numpy(np.asarray(tokens, np.float32))[None],  # (1, L, D)
        text_mask=torch.from_numpy(np.asarray(token_mask, bool))[None],  # (1, L)
        gripper=torch.from_numpy(gripper),
        history=torch.from_numpy(past_poses(gripper_pose, previous, history))[None] if history else None,
    )


class ConditionFn(Protocol):
    def __call__(
        self, obs: Observation, text: tuple[np.ndarray, np.ndarray], previous: Sequence[np.ndarray] = ()
    ) -> ConditionBatch:
        """(B=1) condition of one observation and its instruction; ``previous``: the gripper poses at the
        episode's earlier keyposes, oldest first (read by policies with ``history`` > 0)."""


@dataclass(frozen=True)
class PointCloudConditioner:
    """The default ``ConditionFn``: ``observation_to_condition`` (picklable)."""

    max_points: int
    config: PointCloudConfig | None = None  # None = its defaults
    history: int = 0  # the policy's ``history``: how many previous keyposes' poses a condition carries

    def __call__(
        self, obs: Observation, text: tuple[np.ndarray, np.ndarray], previous: Sequence[np.ndarray] = ()
    ) -> ConditionBatch:
        cfg = self.config if self.config is not None else PointCloudConfig()
        return observation_to_condition(obs, text, self.max_points, cfg, previous, self.history)
