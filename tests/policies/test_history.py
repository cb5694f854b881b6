"""``policy.history``: the condition also reads the gripper poses of the previous keyposes."""

from dataclasses import replace

import pytest
import torch
from pydantic import ValidationError

from policies.augment import augment, limit_points
from policies.config import AugmentConfig
from tests.policies.conftest import tiny_batch, tiny_config, tiny_policy

pytestmark = pytest.mark.unit

TYPES = ["mini_diffuser", "one_to_one", "dda_style"]


@pytest.mark.parametrize("policy_type", TYPES)
def test_a_history_policy_trains_and_samples_and_reads_the_past_poses(policy_type):
    policy = tiny_policy(policy_type, history=2)
    batch = tiny_batch(3, 64, history=2)
    loss = policy.compute_loss(batch, torch.Generator().manual_seed(0)).loss
    loss.backward()
    assert torch.isfinite(loss)
    first = policy.encoder.gripper_embed[0].weight.grad  # (d, 8 * (1 + H)): the past poses get gradient
    assert first is not None and first[:, 8:].abs().sum() > 0
    policy.eval()
    obs = replace(batch, target=None)
    a = policy.predict_action(obs, torch.Generator().manual_seed(1))
    moved = replace(obs, history=obs.history + torch.tensor([0.05, -0.05, 0.05, 0, 0, 0, 0, 0]))
    b = policy.predict_action(moved, torch.Generator().manual_seed(1))
    assert a.shape == (3, 8) and not torch.allclose(a[:, :3], b[:, :3])


def test_a_history_policy_refuses_a_condition_without_its_past_poses():
    policy = tiny_policy("mini_diffuser", history=2).eval()
    with pytest.raises(ValueError, match=r"policy.history=2.*has none"):
        policy.predict_action(tiny_batch(2, 64, with_target=False))
    with pytest.raises(ValueError, match=r"policy.history=2.*has 1"):
        policy.predict_action(tiny_batch(2, 64, with_target=False, history=1))


def test_without_history_the_past_poses_are_ignored():
    policy = tiny_policy("mini_diffuser").eval()
    plain = tiny_batch(2, 64, with_target=False)
    with_past = tiny_batch(2, 64, with_target=False, history=3)
    assert torch.equal(plain.points, with_past.points)  # the history is drawn after everything else
    a = policy.predict_action(plain, torch.Generator().manual_seed(0))
    b = policy.predict_action(with_past, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_history_is_bounded():
    with pytest.raises(ValidationError, match="history"):
        tiny_config(history=9)


def test_augmentation_turns_the_past_poses_with_the_scene():
    batch = tiny_batch(4, 64, history=2)
    batch = replace(batch, history=torch.stack([batch.gripper, batch.target], dim=1))  # (B, 2, 8)
    cfg = AugmentConfig(z_rotation_deg=45, jitter_m=0.0, keep_fraction_min=1.0)
    low, high = torch.tensor((-0.6, 0.2, -0.05)), torch.tensor((0.6, 1.1, 0.6))
    out = augment(batch, cfg, low, high, torch.Generator().manual_seed(0))
    assert not torch.allclose(out.gripper, batch.gripper)  # it did rotate
    assert torch.allclose(out.history[:, 0], out.gripper, atol=1e-6)
    assert torch.allclose(out.history[:, 1], out.target, atol=1e-6)
    limited = limit_points(out, 16, torch.Generator().manual_seed(0))
    assert torch.equal(limited.history, out.history) and limited.points.shape[1] == 16
    assert torch.equal(batch.select(torch.tensor([2, 0])).history, batch.history[[2, 0]])
    with pytest.raises(ValueError, match="history must be"):
        replace(batch, history=batch.history[:, :, :7])
