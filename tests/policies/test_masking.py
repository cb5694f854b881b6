"""Exactness of the two-level expansion and the masked denoiser (docs/design.md, R8)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.batch import ConditionBatch
from policies.expansion import expand_parent_index
from policies.minidiffuser import NoiseDraw
from tests.policies.conftest import tiny_batch, tiny_policy

pytestmark = pytest.mark.unit

ATOL = 2e-5


def _rows_outputs(policy, batch: ConditionBatch, parent: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
    with torch.no_grad():
        ctx = policy.denoiser.prepare(policy.encode(batch))
        out = policy.forward_rows(ctx, parent, x_t, t)
    return torch.cat([out.eps, out.rotation.flatten(1), out.gripper[:, None]], dim=1)  # (R, features)


def _draw(policy, rows: int, seed: int, conditions: int | None = None) -> NoiseDraw:
    return policy.draw_noise(
        rows, torch.Generator().manual_seed(seed), torch.device("cpu"), conditions=conditions
    )


def _sub_draw(draw: NoiseDraw, rows: torch.Tensor, conds: torch.Tensor) -> NoiseDraw:
    """The draws of noisy rows ``rows`` and of the head rows of conditions ``conds``."""
    pose = None if draw.pose_noise is None else draw.pose_noise[conds]
    return NoiseDraw(t=draw.t[rows], noise=draw.noise[rows], pose_noise=pose)


@settings(max_examples=8, deadline=None)
@given(b=st.integers(2, 4), m=st.integers(1, 4), j=st.integers(0, 3), seed=st.integers(0, 1000))
def test_perturbing_one_condition_changes_no_other_condition(b, m, j, seed):
    j = j % b
    policy = tiny_policy(seed=seed).eval()
    batch = tiny_batch(b, 48, seed=seed)
    parent = expand_parent_index(b, m)[torch.randperm(b * m, generator=torch.Generator().manual_seed(seed))]
    x_t = torch.randn(b * m, 3)
    t = torch.randint(0, 100, (b * m,))
    ref = _rows_outputs(policy, batch, parent, x_t, t)
    points, text = batch.points.clone(), batch.text.clone()
    points[j, :, :6] += torch.randn(48, 6) * 0.05
    points = points * batch.point_mask[..., None]
    text[j] = torch.randn_like(text[j]) * batch.text_mask[j, :, None]
    gripper = batch.gripper.clone()
    gripper[j, :3] += 0.1
    changed = ConditionBatch(
        points=points, point_mask=batch.point_mask, text=text, text_mask=batch.text_mask, gripper=gripper
    )
    out = _rows_outputs(policy, changed, parent, x_t, t)
    others = parent != j
    assert torch.allclose(out[others], ref[others], atol=ATOL)
    assert not torch.allclose(out[~others], ref[~others], atol=1e-4)


def test_perturbing_one_noisy_action_changes_no_other_row():
    policy = tiny_policy().eval()
    batch = tiny_batch(3, 48)
    parent = expand_parent_index(3, 4)
    x_t, t = torch.randn(12, 3), torch.randint(0, 100, (12,))
    ref = _rows_outputs(policy, batch, parent, x_t, t)
    for r in (0, 5, 11):
        x2, t2 = x_t.clone(), t.clone()
        x2[r] += 0.5
        t2[r] = (t2[r] + 37) % 100
        out = _rows_outputs(policy, batch, parent, x2, t2)
        keep = torch.arange(12) != r
        assert torch.allclose(out[keep], ref[keep], atol=ATOL)
        assert not torch.allclose(out[r], ref[r], atol=1e-4)


@settings(max_examples=6, deadline=None)
@given(
    b=st.integers(1, 4),
    m=st.integers(1, 5),
    seed=st.integers(0, 1000),
    head_input=st.sampled_from(["position", "noisy_rows"]),
)
def test_loss_equals_naive_per_condition_loop(b, m, seed, head_input):
    policy = tiny_policy(seed=seed, head_input=head_input).eval()
    batch = tiny_batch(b, 48, seed=seed)
    parent = expand_parent_index(b, m)[torch.randperm(b * m, generator=torch.Generator().manual_seed(seed))]
    draw = _draw(policy, b * m, seed, conditions=b)
    per_condition = head_input == "position"  # rotation and gripper come from one head row per condition
    with torch.no_grad():
        batched = policy.row_losses(policy.encode(batch), batch.target, parent, draw)
        for i in range(b):  # naive: encode condition i alone, run only its rows
            rows = (parent == i).nonzero().flatten()
            single = batch.select(torch.tensor([i]))
            sub = _sub_draw(draw, rows, torch.tensor([i]))
            naive = policy.row_losses(policy.encode(single), single.target, torch.zeros_like(rows), sub)
            assert torch.allclose(batched["position"][rows], naive["position"], atol=ATOL)
            for name in ("rotation", "gripper"):
                mine = batched[name][i : i + 1] if per_condition else batched[name][rows]
                assert torch.allclose(mine, naive[name], atol=ATOL), name


def test_head_rows_read_the_noised_ground_truth_position():
    """The rotation/gripper loss of head_input=position depends on the pose noise, not on the noisy rows."""
    policy = tiny_policy(seed=3, head_input="position").eval()
    batch = tiny_batch(2, 48, seed=3)
    parent = expand_parent_index(2, 3)
    draw = _draw(policy, 6, seed=3, conditions=2)
    with torch.no_grad():
        enc = policy.encode(batch)
        ref = policy.row_losses(enc, batch.target, parent, draw)
        other_rows = NoiseDraw(t=(draw.t + 50) % 100, noise=-draw.noise, pose_noise=draw.pose_noise)
        moved_rows = policy.row_losses(enc, batch.target, parent, other_rows)
        other_pose = NoiseDraw(t=draw.t, noise=draw.noise, pose_noise=draw.pose_noise + 0.05)
        moved_pose = policy.row_losses(enc, batch.target, parent, other_pose)
    assert ref["rotation"].shape == (2,) and ref["position"].shape == (6,)
    assert torch.allclose(ref["rotation"], moved_rows["rotation"], atol=ATOL)
    assert torch.allclose(ref["gripper"], moved_rows["gripper"], atol=ATOL)
    assert not torch.allclose(ref["gripper"], moved_pose["gripper"], atol=1e-5)
    assert torch.allclose(ref["position"], moved_pose["position"], atol=ATOL)


@settings(max_examples=6, deadline=None)
@given(b=st.integers(1, 3), m=st.integers(1, 4), seed=st.integers(0, 1000))
def test_two_level_equals_one_to_one_on_repeated_conditions(b, m, seed):
    two_level = tiny_policy("mini_diffuser", seed=seed, m=m).eval()
    one_to_one = tiny_policy("one_to_one", seed=seed + 1).eval()
    one_to_one.load_state_dict(two_level.state_dict())
    batch = tiny_batch(b, 48, seed=seed)
    parent = expand_parent_index(b, m)
    draw = _draw(two_level, b * m, seed, conditions=b)
    with torch.no_grad():
        ours = two_level.row_losses(two_level.encode(batch), batch.target, parent, draw)
        repeated = batch.select(
            parent
        )  # B*M conditions, one per noised sample, each with its parent's head noise
        their_draw = NoiseDraw(t=draw.t, noise=draw.noise, pose_noise=draw.pose_noise[parent])
        theirs = one_to_one.row_losses(
            one_to_one.encode(repeated), repeated.target, torch.arange(b * m), their_draw
        )
    assert torch.allclose(ours["position"], theirs["position"], atol=ATOL)
    for name in ("rotation", "gripper"):  # per condition: each of the M copies equals its parent's
        assert torch.allclose(ours[name][parent], theirs[name], atol=ATOL), name


def test_m1_compute_loss_equals_one_to_one_compute_loss():
    mini = tiny_policy("mini_diffuser", m=1).eval()
    base = tiny_policy("one_to_one", seed=5).eval()
    base.load_state_dict(mini.state_dict())
    batch = tiny_batch(4, 48)
    a = mini.compute_loss(batch, torch.Generator().manual_seed(3))
    c = base.compute_loss(batch, torch.Generator().manual_seed(3))
    assert torch.allclose(a.loss, c.loss, atol=1e-6)
    assert a.metrics == c.metrics


def test_dense_masked_and_grouped_policies_agree_in_loss_and_gradients():
    grouped = tiny_policy(attention="grouped")
    dense = tiny_policy(attention="dense_masked", seed=9)
    dense.load_state_dict(grouped.state_dict())
    batch = tiny_batch(3, 48)
    losses = []
    for policy in (grouped, dense):
        out = policy.compute_loss(batch, torch.Generator().manual_seed(1))
        out.loss.backward()
        losses.append(out.loss.detach())
    assert torch.allclose(losses[0], losses[1], atol=1e-5)
    for (name, p1), p2 in zip(grouped.named_parameters(), dense.parameters(), strict=True):
        assert torch.allclose(p1.grad, p2.grad, atol=1e-5, rtol=1e-4), name
