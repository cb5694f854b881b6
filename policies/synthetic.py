"""Synthetic ``ConditionBatch``es for unit tests and benchmarks (no dataset needed).

Each condition is a tabletop-like scene: points on a table plane plus a few boxes, so voxel pooling sees
surface-like occupancy as in real fused point clouds (uniform volume noise would occupy every voxel).
Point counts vary per condition (padding is exercised); instruction lengths vary too.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from policies.batch import ConditionBatch
from policies.rotation import normalize_quat


def _scene_points(n: int, low: Tensor, high: Tensor, g: torch.Generator) -> Tensor:
    """(n, 7) points: ~60 % on the table (z = low_z + 5 cm), the rest on the faces of 3 boxes."""
    span = high - low
    table_z = low[2] + 0.05
    n_table = int(0.6 * n)
    table_xy = low[:2] + torch.rand(n_table, 2, generator=g) * span[:2]
    table = torch.cat([table_xy, torch.full((n_table, 1), float(table_z))], dim=1)
    n_box = n - n_table
    centres = low + torch.rand(3, 3, generator=g) * span
    centres[:, 2] = table_z + 0.05
    which = torch.randint(0, 3, (n_box,), generator=g)
    offsets = (torch.rand(n_box, 3, generator=g) - 0.5) * 0.1  # box half-size 5 cm
    face = torch.randint(0, 3, (n_box,), generator=g)  # snap one coordinate to a face
    snap = torch.where(torch.rand(n_box, generator=g) < 0.5, -0.05, 0.05)
    offsets[torch.arange(n_box), face] = snap
    boxes = centres[which] + offsets
    xyz = torch.cat([table, boxes], dim=0)
    rgb = torch.rand(n, 3, generator=g) * 2 - 1
    height = (xyz[:, 2:3] - table_z).clamp_min(0)
    return torch.cat([xyz, rgb, height], dim=1)


def random_pose(b: int, low: Tensor, high: Tensor, g: torch.Generator) -> Tensor:
    """(b, 8) poses with xyz inside the workspace (10 % margin), random unit quaternions, random open."""
    span = high - low
    xyz = low + (0.1 + 0.8 * torch.rand(b, 3, generator=g)) * span
    quat = normalize_quat(torch.randn(b, 4, generator=g))
    is_open = (torch.rand(b, 1, generator=g) < 0.5).float()
    return torch.cat([xyz, quat, is_open], dim=1)


def random_condition_batch(
    b: int,
    n_points: int,
    *,
    text_len: int = 8,
    text_dim: int = 384,
    workspace_low: tuple[float, float, float] = (-0.6, 0.2, -0.05),
    workspace_high: tuple[float, float, float] = (0.6, 1.1, 0.6),
    min_fraction: float = 0.7,
    with_target: bool = True,
    history: int = 0,
    seed: int = 0,
) -> ConditionBatch:
    """B synthetic conditions with between ``min_fraction * n_points`` and ``n_points`` valid points each
    (and ``history`` random previous gripper poses each, for policies with ``history`` > 0)."""
    g = torch.Generator().manual_seed(seed)
    low, high = torch.tensor(workspace_low), torch.tensor(workspace_high)
    points = torch.zeros(b, n_points, 7)
    point_mask = torch.zeros(b, n_points, dtype=torch.bool)
    for i in range(b):
        n = int(torch.randint(max(1, int(min_fraction * n_points)), n_points + 1, (1,), generator=g))
        points[i, :n] = _scene_points(n, low, high, g)
        point_mask[i, :n] = True
    lengths = torch.randint(1, text_len + 1, (b,), generator=g)
    text_mask = torch.arange(text_len)[None, :] < lengths[:, None]  # (B, L)
    text = torch.randn(b, text_len, text_dim, generator=g) * text_mask[..., None]
    batch = ConditionBatch(
        points=points,
        point_mask=point_mask,
        text=text,
        text_mask=text_mask,
        gripper=random_pose(b, low, high, g),
        target=random_pose(b, low, high, g) if with_target else None,
        task_index=torch.randint(0, 10, (b,), generator=g),
    )
    if not history:  # drawn last, so a batch without history is the one this seed always gave
        return batch
    past = random_pose(b * history, low, high, g).reshape(b, history, -1)  # (B*H, 8) -> (B, H, 8)
    return replace(batch, history=past)
