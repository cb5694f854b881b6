import math

import pytest
import torch

from policies.rotation import (
    euler_bins_to_quat,
    euler_to_matrix,
    matrix_to_euler,
    matrix_to_quat,
    normalize_quat,
    quat_angle_deg,
    quat_multiply,
    quat_to_euler_bins,
    quat_to_matrix,
    quat_to_rot6d,
    rot6d_to_quat,
    z_rotation_quat,
)

pytestmark = pytest.mark.unit


def _random_quats(n: int, seed: int = 0) -> torch.Tensor:
    return normalize_quat(torch.randn(n, 4, generator=torch.Generator().manual_seed(seed)))


def test_quat_matrix_round_trip_and_orthonormal():
    q = _random_quats(2000)
    m = quat_to_matrix(q)
    assert torch.allclose(m @ m.transpose(-1, -2), torch.eye(3).expand(2000, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(m), torch.ones(2000), atol=1e-5)
    assert quat_angle_deg(matrix_to_quat(m), q).max() < 0.05


def test_euler_matches_extrinsic_xyz_convention():
    angles = torch.tensor([[0.3, -0.4, 1.2]])
    rx = euler_to_matrix(torch.tensor([[0.3, 0.0, 0.0]]))
    ry = euler_to_matrix(torch.tensor([[0.0, -0.4, 0.0]]))
    rz = euler_to_matrix(torch.tensor([[0.0, 0.0, 1.2]]))
    assert torch.allclose(euler_to_matrix(angles), rz @ ry @ rx, atol=1e-6)
    assert torch.allclose(
        rx[0],
        torch.tensor([[1, 0, 0], [0, math.cos(0.3), -math.sin(0.3)], [0, math.sin(0.3), math.cos(0.3)]]),
        atol=1e-6,
    )
    assert torch.allclose(matrix_to_euler(euler_to_matrix(angles)), angles, atol=1e-5)


def test_euler_bins_round_trip_within_half_a_bin():
    q = _random_quats(5000, seed=1)
    euler = matrix_to_euler(quat_to_matrix(q))
    away_from_lock = euler[:, 1].abs() < math.radians(85)
    q, euler = q[away_from_lock], euler[away_from_lock]
    bins = quat_to_euler_bins(q, 72)
    assert bins.min() >= 0 and bins.max() < 72 and bins.dtype == torch.int64
    back = euler_bins_to_quat(bins, 72)
    back_euler = matrix_to_euler(quat_to_matrix(back))
    diff = torch.rad2deg(torch.remainder(back_euler - euler + math.pi, 2 * math.pi) - math.pi).abs()
    assert diff.max() <= 2.5 + 1e-3, diff.max()
    assert quat_angle_deg(back, q).max() <= 7.5  # three half-bin errors at most


def test_rot6d_round_trip_and_gram_schmidt_of_noisy_input():
    q = _random_quats(500, seed=2)
    assert quat_angle_deg(rot6d_to_quat(quat_to_rot6d(q)), q).max() < 0.05
    noisy = quat_to_rot6d(q) + 0.01 * torch.randn(500, 6, generator=torch.Generator().manual_seed(3))
    assert quat_angle_deg(rot6d_to_quat(noisy), q).max() < 3.0


def test_z_rotation_quat_composes_like_matrices():
    q = _random_quats(100, seed=4)
    angle = torch.linspace(-math.pi, math.pi, 100)
    rz = euler_to_matrix(torch.stack([torch.zeros(100), torch.zeros(100), angle], dim=-1))
    composed = quat_to_matrix(quat_multiply(z_rotation_quat(angle), q))
    assert torch.allclose(composed, rz @ quat_to_matrix(q), atol=1e-5)
