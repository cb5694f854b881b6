"""The batching policy server: padding/stacking, per-row noise, and results identical to in-actor
inference while many simulator actors share one forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.pointcloud import PointCloudConditioner
from evaluation.runtime.coordinator import Coordinator, PoolConfig
from evaluation.runtime.episode import LocalInference, run_episode
from evaluation.runtime.evaluate import plan_episodes
from evaluation.runtime.policy_server import predict_rows, stack_conditions
from evaluation.simulators.fake_sim import FakeSimConfig, FakeSimulator
from policies.batch import ConditionBatch
from tests.evaluation.eval_fakes import (
    FakeGoalPolicy,
    FakePolicyFactory,
    conditioner,
    fake_instructions,
    start_local_ray,
    wait_gone,
)

TASKS = FakeSimConfig().tasks
INSTR = fake_instructions(TASKS)


def _conditions(n: int) -> list[ConditionBatch]:
    sim, cond = FakeSimulator(), conditioner()
    out = []
    for i in range(n):
        obs = sim.reset(TASKS[i % len(TASKS)], i, i)
        tokens, mask = INSTR[TASKS[i % len(TASKS)]]
        out.append(cond(obs, (tokens[: 2 + i % 3], mask[: 2 + i % 3])))  # different text lengths too
    return out


@pytest.mark.unit
def test_stack_conditions_pads_points_and_text_exactly():
    items = _conditions(3)
    batch = stack_conditions(items)
    n = max(c.points.shape[1] for c in items)
    assert batch.points.shape == (3, n, 7) and batch.text.shape[:2] == (3, 4)
    for i, c in enumerate(items):
        k = c.points.shape[1]
        assert torch.equal(batch.points[i, :k], c.points[0]) and not batch.point_mask[i, k:].any()
        assert torch.equal(batch.point_mask[i, :k], c.point_mask[0])
        length = c.text.shape[1]
        assert torch.equal(batch.text[i, :length], c.text[0]) and not batch.text_mask[i, length:].any()
    with pytest.raises(ValueError, match="at least one"):
        stack_conditions([])
    assert batch.history is None


@pytest.mark.unit
def test_stack_conditions_keeps_the_past_poses_of_history_policies():
    sim, cond = FakeSimulator(), PointCloudConditioner(max_points=64, history=2)
    items = []
    for i in range(3):
        obs = sim.reset(TASKS[0], i, i)
        earlier = [obs.gripper_pose + 0.01 * (j + 1) for j in range(i)]  # 0, 1 and 2 keyposes made
        items.append(cond(obs, INSTR[TASKS[0]], earlier))
    batch = stack_conditions(items)
    assert batch.history.shape == (3, 2, 8)
    for i, c in enumerate(items):
        assert torch.equal(batch.history[i], c.history[0])


@pytest.mark.unit
def test_batched_rows_equal_one_at_a_time_with_row_generators():
    items, seeds = _conditions(4), [11, 12, 13, 14]
    policy = FakeGoalPolicy(max_step=0.05, noise=0.01)
    batched = predict_rows(policy, stack_conditions(items), seeds, "cpu")  # (4, 8)
    single = np.stack([LocalInference(policy)(c, s) for c, s in zip(items, seeds, strict=True)])
    np.testing.assert_array_equal(batched, single)
    with pytest.raises(ValueError, match="row seeds"):
        predict_rows(policy, stack_conditions(items), seeds[:2], "cpu")


@pytest.mark.integration
def test_server_results_identical_to_in_actor_inference_and_batched():
    """The coordinator test shows in-actor results equal in-process ``LocalInference`` runs; here the
    server's batched results must equal those too, row for row, with a noisy policy."""
    specs = plan_episodes(TASKS, 4, seed=5, variations=range(6))
    sim = FakeSimConfig(cameras=2)
    policy = FakePolicyFactory(max_step=0.05, noise=0.01)
    local = [
        run_episode(sim.build(), LocalInference(policy()), conditioner(), INSTR, s).result for s in specs
    ]
    ray = start_local_ray(num_cpus=3)
    try:
        pool = PoolConfig(
            num_actors=2, progress=False, episode_timeout_s=60.0, policy_server="on", server_max_wait_s=0.05
        )
        served = Coordinator(sim.build, policy, INSTR, conditioner(), pool)
        with served:
            via_server = served.run(specs)
            stats = served.server_stats()
            pids = served.actor_pids()
        assert served.server is None and len(pids) == 3  # 2 simulator actors + the server
        assert wait_gone(pids) == []
    finally:
        ray.shutdown()
    assert [(r.success, r.steps, r.status) for r in local] == [
        (o.result.success, o.result.steps, o.result.status) for o in via_server
    ]
    assert sum(r.success for r in local) >= 8
    assert stats is not None and stats["mean_batch"] > 1.2, stats  # requests were really batched


@pytest.mark.unit
def test_real_policy_batches_padded_conditions_and_single_rows_match_local():
    from policies.registry import build_policy, parse_policy_config

    torch.manual_seed(0)
    policy = build_policy(
        parse_policy_config({"type": "mini_diffuser", "preset": "tiny", "text_dim": 8})
    ).eval()
    items = _conditions(3)
    batched = predict_rows(policy, stack_conditions(items), [1, 2, 3], "cpu")
    assert batched.shape == (3, 8) and np.isfinite(batched).all()
    one = predict_rows(policy, stack_conditions(items[:1]), [7], "cpu")
    np.testing.assert_array_equal(one[0], LocalInference(policy)(items[0], 7))


@pytest.mark.unit
@pytest.mark.parametrize("policy_type", ["mini_diffuser", "dda_style"])
def test_real_policy_rows_get_the_noise_they_would_get_alone(policy_type):
    """Row generators: a served batch of a real (stochastic DDPM) policy gives each row the keypose it
    gets in-actor, up to float rounding of the batched forward pass; one shared generator does not."""
    from policies.registry import build_policy, parse_policy_config

    torch.manual_seed(0)
    cfg = {
        "type": policy_type,
        "preset": "tiny",
        "text_dim": 8,
        "diffusion": {"sampler": "ddpm", "inference_steps": 5},
    }
    policy = build_policy(parse_policy_config(cfg)).eval()
    assert policy.accepts_row_generators
    items, seeds = _conditions(3), [21, 22, 23]
    batched = predict_rows(policy, stack_conditions(items), seeds, "cpu")  # (3, 8)
    alone = np.stack([LocalInference(policy)(c, s) for c, s in zip(items, seeds, strict=True)])
    np.testing.assert_allclose(batched, alone, atol=1e-4)
    shared = policy.predict_action(
        stack_conditions(items), generator=torch.Generator().manual_seed(21)
    ).numpy()
    assert not np.allclose(shared[1:, :3], alone[1:, :3], atol=1e-3)  # what rows got before row generators
