"""Per-condition point-cloud preparation and training augmentation (applied before the level-2 expansion,
so the M noised copies of a condition share its augmented observation and target).

* ``limit_points``: keep at most ``max_points`` valid points per condition (random subset).
* ``augment``: random z-rotation about the workspace centre (points, gripper, past and target poses), then an
  optional random horizontal shift of the same (``translate_m``), xyz jitter on the points, random point
  subsampling (keep fraction in [keep_fraction_min, 1]). A condition whose rotated (or shifted) target would
  leave the policy workspace is not rotated (shifted) (positions are normalised over the
  workspace, and a target outside it could never be sampled: RLBench's scene bounds with +-45 deg did this).
Padded points stay zero and masked.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from policies.batch import POSE_DIM, ConditionBatch
from policies.config import AugmentConfig
from policies.diffusion import Generators, rand, randn
from policies.rotation import normalize_quat, quat_multiply, z_rotation_quat


def _masked(points: Tensor, mask: Tensor) -> Tensor:
    return points * mask[..., None].to(points.dtype)


def limit_points(batch: ConditionBatch, max_points: int, generator: Generators) -> ConditionBatch:
    """Keep a random subset of at most ``max_points`` valid points per condition -> (B, <= max_points, 7)."""
    b, n, _ = batch.points.shape
    if n <= max_points:
        return batch
    scores = rand((b, n), generator, batch.points.device)
    scores = torch.where(batch.point_mask, scores, torch.full_like(scores, 2.0))  # padding sorts last
    keep = torch.sort(torch.argsort(scores, dim=1)[:, :max_points], dim=1).values  # (B, max_points)
    points = torch.gather(batch.points, 1, keep[..., None].expand(-1, -1, batch.points.shape[-1]))
    mask = torch.gather(batch.point_mask, 1, keep)
    return replace(batch, points=_masked(points, mask), point_mask=mask)


def _rotate_pose(pose: Tensor, rot: Tensor, q: Tensor, centre: Tensor) -> Tensor:
    """pose (B, 8); rot (B, 3, 3) z-rotations; q (B, 4) the same as quaternions; centre (3,)."""
    xyz = torch.einsum("bij,bj->bi", rot, pose[:, :3] - centre) + centre
    quat = normalize_quat(quat_multiply(q, pose[:, 3:7]))
    return torch.cat([xyz, quat, pose[:, 7:]], dim=-1)


def _rotate_xy(xyz: Tensor, angle: Tensor, centre: Tensor) -> Tensor:
    """xyz (B, 3) rotated by ``angle`` (B,) about the vertical axis through ``centre`` (3,)."""
    d = xyz - centre
    cos, sin = angle.cos(), angle.sin()
    return (
        torch.stack([cos * d[:, 0] - sin * d[:, 1], sin * d[:, 0] + cos * d[:, 1], d[:, 2]], dim=-1) + centre
    )


def _inside(xyz: Tensor, low: Tensor, high: Tensor) -> Tensor:
    """(B, 3) -> (B,) whether each position lies in the workspace [low, high]."""
    return ((xyz >= low) & (xyz <= high)).all(dim=-1)


def augment(
    batch: ConditionBatch,
    cfg: AugmentConfig,
    low: Tensor,
    high: Tensor,
    generator: torch.Generator | None,
) -> ConditionBatch:
    """Random z-rotation, horizontal shift, jitter and subsampling per condition (see module docstring)."""
    if not cfg.enabled:
        return batch
    b, n, _ = batch.points.shape
    device = batch.points.device
    angle = (2 * rand((b,), generator, device) - 1) * math.radians(cfg.z_rotation_deg)  # (B,)
    centre = torch.cat(
        [(low[:2] + high[:2]) / 2, low.new_zeros(1)]
    )  # rotate about the vertical workspace axis
    if batch.target is not None:  # a rotation that would carry the target out of the workspace is not applied
        angle = torch.where(
            _inside(_rotate_xy(batch.target[:, :3], angle, centre), low, high), angle, torch.zeros_like(angle)
        )
    cos, sin, zero, one = angle.cos(), angle.sin(), torch.zeros_like(angle), torch.ones_like(angle)
    rot = torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], dim=-1).reshape(b, 3, 3)
    q = z_rotation_quat(angle)  # (B, 4)
    xyz = torch.einsum("bij,bnj->bni", rot, batch.points[..., :3] - centre) + centre
    xyz = xyz + cfg.jitter_m * randn((b, n, 3), generator, device)
    keep_fraction = cfg.keep_fraction_min + (1 - cfg.keep_fraction_min) * rand((b, 1), generator, device)
    keep = rand((b, n), generator, device) < keep_fraction  # (B, N)
    first_valid = torch.zeros_like(batch.point_mask).scatter(
        1, batch.point_mask.long().argmax(1, keepdim=True), True
    )
    mask = batch.point_mask & (keep | first_valid)  # never empty a condition
    gripper = _rotate_pose(batch.gripper, rot, q, centre)
    target = None if batch.target is None else _rotate_pose(batch.target, rot, q, centre)
    history = batch.history
    if history is not None:  # the past poses turn with the scene: (B, H, 8) -> (B*H, 8) -> (B, H, 8)
        h = history.shape[1]
        history = _rotate_pose(
            history.reshape(b * h, POSE_DIM),
            rot.repeat_interleave(h, dim=0),
            q.repeat_interleave(h, dim=0),
            centre,
        ).reshape(b, h, POSE_DIM)
    if cfg.translate_m > 0:  # drawn only when enabled, so the other draws (and old runs) stay as they were
        shift = torch.cat(
            [(2 * rand((b, 2), generator, device) - 1) * cfg.translate_m, xyz.new_zeros(b, 1)], dim=-1
        )  # (B, 3): x and y only, the table stays at its height
        if target is not None:  # a shift that would carry the target out of the workspace is not applied
            shift = shift * _inside(target[:, :3] + shift, low, high)[:, None].to(shift.dtype)
        offset = torch.cat([shift, shift.new_zeros(b, POSE_DIM - 3)], dim=-1)  # (B, 8): a pose's xyz only
        xyz = xyz + shift[:, None, :]
        gripper = gripper + offset
        target = None if target is None else target + offset
        history = None if history is None else history + offset[:, None, :]
    points = _masked(torch.cat([xyz, batch.points[..., 3:]], dim=-1), mask)
    return replace(batch, points=points, point_mask=mask, gripper=gripper, target=target, history=history)
