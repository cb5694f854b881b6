import pytest
import torch

from tests.policies.conftest import tiny_batch, tiny_policy

pytestmark = pytest.mark.unit


def test_tiny_preset_overfits_a_handful_of_samples():
    """Memorise 4 conditions x 16 noised samples (fixed draws: the classic single-batch overfit check)."""
    policy = tiny_policy(m=16).train()
    batch = tiny_batch(4, 64, seed=1)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    losses = []
    for _ in range(250):
        out = policy.compute_loss(batch, torch.Generator().manual_seed(0))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
    assert out.metrics["loss/rotation"] < 0.1 and out.metrics["loss/gripper"] < 0.1
