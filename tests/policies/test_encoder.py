import pytest
import torch

from policies.encoder import voxel_pool
from tests.policies.conftest import tiny_batch, tiny_policy

pytestmark = pytest.mark.unit


def test_voxel_pool_matches_naive_per_condition_average():
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(2, 30, 3, generator=g)
    feats = torch.randn(2, 30, 4, generator=g)
    mask = torch.rand(2, 30, generator=g) < 0.8
    low, high = torch.zeros(3), torch.ones(3)
    level = voxel_pool(feats, pos, mask, 0.5, low, high)
    for b in range(2):
        cells: dict[tuple, list[int]] = {}
        for n in range(30):
            if mask[b, n]:
                cells.setdefault(tuple(torch.floor(pos[b, n] / 0.5).long().tolist()), []).append(n)
        assert int(level.mask[b].sum()) == len(cells)
        expected = sorted((k, feats[b, idx].mean(0)) for k, idx in cells.items())
        got = level.feats[b][level.mask[b]]
        for (_, mean), row in zip(expected, got, strict=True):
            assert torch.allclose(mean, row, atol=1e-6)


def _encode(policy, batch):
    with torch.no_grad():
        return policy.encode(batch)


def _valid(level, b):
    return level.feats[b][level.mask[b]]


def test_padded_points_do_not_influence_anything():
    policy = tiny_policy().eval()
    batch = tiny_batch(3, 64)
    ref = _encode(policy, batch)
    # garbage in padded rows, and extra padding columns
    points = batch.points.clone()
    points[~batch.point_mask] = torch.randn(int((~batch.point_mask).sum()), 7) * 5
    points = torch.cat([points, torch.randn(3, 20, 7)], dim=1)
    mask = torch.cat([batch.point_mask, torch.zeros(3, 20, dtype=torch.bool)], dim=1)
    padded = type(batch)(
        points=points, point_mask=mask, text=batch.text, text_mask=batch.text_mask, gripper=batch.gripper
    )
    out = _encode(policy, padded)
    for lv_ref, lv in zip(ref.levels, out.levels, strict=True):
        for b in range(3):
            assert torch.allclose(_valid(lv_ref, b), _valid(lv, b), atol=1e-5)
    assert torch.allclose(ref.cond, out.cond, atol=1e-6)


def test_padded_text_tokens_do_not_influence_anything():
    policy = tiny_policy().eval()
    batch = tiny_batch(3, 64)
    text = batch.text.clone()
    text[~batch.text_mask] = 7.0
    out = _encode(
        policy,
        type(batch)(
            points=batch.points,
            point_mask=batch.point_mask,
            text=text,
            text_mask=batch.text_mask,
            gripper=batch.gripper,
        ),
    )
    ref = _encode(policy, batch)
    for lv_ref, lv in zip(ref.levels, out.levels, strict=True):
        assert torch.allclose(lv_ref.feats[lv_ref.mask], lv.feats[lv.mask], atol=1e-5)


def test_conditions_are_encoded_independently():
    policy = tiny_policy().eval()
    batch = tiny_batch(4, 64)
    ref = _encode(policy, batch)
    points = batch.points.clone()
    points[2, :, :3] += 0.03 * torch.randn(64, 3)  # move condition 2's points (may change its voxel count)
    points[2, :, 3:6] = torch.rand(64, 3)
    points = points * batch.point_mask[..., None]
    out = _encode(
        policy,
        type(batch)(
            points=points,
            point_mask=batch.point_mask,
            text=batch.text,
            text_mask=batch.text_mask,
            gripper=batch.gripper,
        ),
    )
    for lv_ref, lv in zip(ref.levels, out.levels, strict=True):
        for b in (0, 1, 3):
            assert torch.allclose(_valid(lv_ref, b), _valid(lv, b), atol=1e-5)
    assert not torch.allclose(ref.levels[0].feats[2, :3], out.levels[0].feats[2, :3], atol=1e-3)
