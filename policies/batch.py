"""The one batch type that crosses the data -> policy boundary (docs/design.md, data flow stages 3-4).

Pose layout everywhere (gripper and target): ``[x, y, z, qx, qy, qz, qw, open]`` (8 floats), world
frame, metres, unit quaternion in xyzw order (as RLBench's ``gripper_pose``), ``open`` in {0, 1}.
Point layout: ``[x, y, z, r, g, b, h]`` (7 floats), xyz in the world frame (metres), rgb in [-1, 1],
h = height above the table (metres). Padded rows are zero and masked out by ``point_mask``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor

POSE_DIM = 8
POINT_DIM = 7


@dataclass(frozen=True)
class ConditionBatch:
    """B conditions (observation + instruction), optionally with their ground-truth next keypose.

    points:     (B, N, 7) float32, zero padded
    point_mask: (B, N) bool, True for real points
    text:       (B, L, D_text) float32 instruction token features
    text_mask:  (B, L) bool, True for real tokens
    gripper:    (B, 8) current gripper pose
    history:    (B, H, 8) gripper poses of the H previous keyposes (most recent first), or None
    target:     (B, 8) next keypose, or None at inference
    task_index: (B,) int64 task id within the dataset, or None
    """

    points: Tensor
    point_mask: Tensor
    text: Tensor
    text_mask: Tensor
    gripper: Tensor
    target: Tensor | None = None
    task_index: Tensor | None = None
    history: Tensor | None = None

    def __post_init__(self) -> None:
        b, n, c = self.points.shape
        if c != POINT_DIM:
            raise ValueError(f"points must be (B, N, {POINT_DIM}), got {tuple(self.points.shape)}")
        if self.point_mask.shape != (b, n) or self.point_mask.dtype != torch.bool:
            raise ValueError(
                f"point_mask must be bool (B, N)=({b}, {n}), got {self.point_mask.dtype} {tuple(self.point_mask.shape)}"
            )
        if self.text.dim() != 3 or self.text.shape[0] != b or self.text_mask.shape != self.text.shape[:2]:
            raise ValueError(
                f"text must be (B, L, D) with text_mask (B, L); got {tuple(self.text.shape)}, {tuple(self.text_mask.shape)}"
            )
        if self.gripper.shape != (b, POSE_DIM):
            raise ValueError(f"gripper must be (B, {POSE_DIM}), got {tuple(self.gripper.shape)}")
        if self.target is not None and self.target.shape != (b, POSE_DIM):
            raise ValueError(f"target must be (B, {POSE_DIM}), got {tuple(self.target.shape)}")
        if self.history is not None and (self.history.dim() != 3 or self.history.shape[::2] != (b, POSE_DIM)):
            raise ValueError(f"history must be (B, H, {POSE_DIM}), got {tuple(self.history.shape)}")

    @property
    def batch_size(self) -> int:
        return self.points.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ConditionBatch:
        moved = {
            f.name: (v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v)
            for f in fields(self)
            for v in [getattr(self, f.name)]
        }
        return ConditionBatch(**moved)

    def select(self, index: Tensor) -> ConditionBatch:
        """Rows ``index`` of every field (used by naive per-condition reference loops in tests)."""
        return replace(
            self,
            points=self.points[index],
            point_mask=self.point_mask[index],
            text=self.text[index],
            text_mask=self.text_mask[index],
            gripper=self.gripper[index],
            target=None if self.target is None else self.target[index],
            task_index=None if self.task_index is None else self.task_index[index],
            history=None if self.history is None else self.history[index],
        )
