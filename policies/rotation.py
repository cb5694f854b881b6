"""Rotation utilities: quaternions (xyzw), rotation matrices, Euler bins, 6D rotations. Batched, pure torch.

Euler convention (documented in docs/policies.md): **extrinsic XYZ** (scipy's lowercase ``"xyz"``, as used
by RLBench/PerAct), ``R = Rz(gamma) @ Ry(beta) @ Rx(alpha)`` for angles ``(alpha, beta, gamma)`` about the
fixed world x, y, z axes. ``alpha, gamma`` lie in [-180, 180), ``beta`` in [-90, 90]. Each angle is
classified into ``bins`` equal bins over [-180, 180) (72 bins of 5 deg); a bin decodes to its centre, so the
round trip quat -> bins -> quat is within half a bin (2.5 deg) per Euler angle.

6D rotation (Zhou et al. 2019): the first two columns of R, ``[R[:, 0], R[:, 1]]``; decoded by Gram-Schmidt.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def normalize_quat(q: Tensor) -> Tensor:
    """(..., 4) xyzw -> unit quaternion with w >= 0 (canonical sign)."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(q[..., 3:4] < 0, -q, q)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product a * b of (..., 4) xyzw quaternions (apply b first, then a)."""
    ax, ay, az, aw = a.unbind(-1)
    bx, by, bz, bw = b.unbind(-1)
    return torch.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        dim=-1,
    )


def z_rotation_quat(angle: Tensor) -> Tensor:
    """(...,) radians -> (..., 4) xyzw quaternion of a rotation about the world z axis."""
    half = angle / 2
    zeros = torch.zeros_like(half)
    return torch.stack([zeros, zeros, half.sin(), half.cos()], dim=-1)


def quat_to_matrix(q: Tensor) -> Tensor:
    """(..., 4) xyzw -> (..., 3, 3) rotation matrices."""
    x, y, z, w = normalize_quat(q).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)  # (..., 3, 3)


def matrix_to_quat(m: Tensor) -> Tensor:
    """(..., 3, 3) rotation matrices -> (..., 4) xyzw unit quaternions (w >= 0).

    Builds the four candidate quaternions (each divided by its own largest component) and keeps, per matrix,
    the one whose pivot is largest: numerically safe for every rotation.
    """
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    four_sq = torch.stack(
        [1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22, 1 + m00 + m11 + m22], dim=-1
    )  # (..., 4): 4*x^2, 4*y^2, 4*z^2, 4*w^2
    pivot = four_sq.clamp_min(1e-12).sqrt()  # (..., 4): 2|x|, 2|y|, 2|z|, 2|w|
    cand = torch.stack(
        [
            torch.stack([pivot[..., 0] ** 2, m01 + m10, m02 + m20, m21 - m12], dim=-1)
            / (2 * pivot[..., 0:1]),
            torch.stack([m01 + m10, pivot[..., 1] ** 2, m12 + m21, m02 - m20], dim=-1)
            / (2 * pivot[..., 1:2]),
            torch.stack([m02 + m20, m12 + m21, pivot[..., 2] ** 2, m10 - m01], dim=-1)
            / (2 * pivot[..., 2:3]),
            torch.stack([m21 - m12, m02 - m20, m10 - m01, pivot[..., 3] ** 2], dim=-1)
            / (2 * pivot[..., 3:4]),
        ],
        dim=-2,
    )  # (..., 4 candidates, 4)
    best = four_sq.argmax(dim=-1)  # (...,)
    q = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    return normalize_quat(q)


def matrix_to_euler(m: Tensor) -> Tensor:
    """(..., 3, 3) -> (..., 3) extrinsic XYZ angles (alpha, beta, gamma) in radians."""
    beta = torch.asin((-m[..., 2, 0]).clamp(-1.0, 1.0))
    locked = m[..., 2, 0].abs() > 1 - 1e-6  # gimbal lock: set alpha = 0
    alpha = torch.where(locked, torch.zeros_like(beta), torch.atan2(m[..., 2, 1], m[..., 2, 2]))
    gamma = torch.where(
        locked, torch.atan2(-m[..., 0, 1], m[..., 1, 1]), torch.atan2(m[..., 1, 0], m[..., 0, 0])
    )
    return torch.stack([alpha, beta, gamma], dim=-1)


def euler_to_matrix(euler: Tensor) -> Tensor:
    """(..., 3) extrinsic XYZ radians -> (..., 3, 3): ``Rz(gamma) @ Ry(beta) @ Rx(alpha)``."""
    ca, cb, cg = euler.cos().unbind(-1)
    sa, sb, sg = euler.sin().unbind(-1)
    rows = [
        cg * cb, cg * sb * sa - sg * ca, cg * sb * ca + sg * sa,
        sg * cb, sg * sb * sa + cg * ca, sg * sb * ca - cg * sa,
        -sb, cb * sa, cb * ca,
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*euler.shape[:-1], 3, 3)


def quat_to_euler_bins(q: Tensor, bins: int) -> Tensor:
    """(..., 4) xyzw -> (..., 3) int64 bin indices in [0, bins) of the three Euler angles."""
    euler = matrix_to_euler(quat_to_matrix(q))  # (..., 3) radians in [-pi, pi]
    width = 2 * math.pi / bins
    return torch.floor((euler + math.pi) / width).long().remainder(bins)


def euler_bins_to_quat(idx: Tensor, bins: int) -> Tensor:
    """(..., 3) bin indices -> (..., 4) xyzw quaternions of the bin centres."""
    width = 2 * math.pi / bins
    euler = -math.pi + (idx.to(torch.float32) + 0.5) * width  # (..., 3) radians
    return matrix_to_quat(euler_to_matrix(euler))


def quat_to_rot6d(q: Tensor) -> Tensor:
    """(..., 4) xyzw -> (..., 6): the first two columns of the rotation matrix."""
    m = quat_to_matrix(q)
    return torch.cat([m[..., :, 0], m[..., :, 1]], dim=-1)


def rot6d_to_matrix(r: Tensor) -> Tensor:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt (any non-degenerate 6-vector maps to a rotation)."""
    a1, a2 = r[..., :3], r[..., 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    a2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = a2 / a2.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)  # columns


def rot6d_to_quat(r: Tensor) -> Tensor:
    return matrix_to_quat(rot6d_to_matrix(r))


def quat_angle_deg(a: Tensor, b: Tensor) -> Tensor:
    """(...,) geodesic angle in degrees between two (..., 4) quaternions."""
    a, b = normalize_quat(a), normalize_quat(b)
    a_inv = torch.cat([-a[..., :3], a[..., 3:]], dim=-1)
    rel = quat_multiply(a_inv, b)  # atan2 form: precise for small angles, unlike acos of the dot product
    return torch.rad2deg(2 * torch.atan2(rel[..., :3].norm(dim=-1), rel[..., 3].abs()))
