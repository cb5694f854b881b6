"""Keypose-level experts (evaluation/datasets/keypose_experts.py), rolled out in Meta-World."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.datasets.keypose_experts import KEYPOSE_EXPERTS, SoccerShots, run_keypose_expert
from evaluation.simulators.metaworld_backend import MetaWorldConfig, MetaWorldSimulator
from evaluation.simulators.rendering import RenderConfig

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def mt50_sim():
    with MetaWorldSimulator(MetaWorldConfig(suite="mt50", render=RenderConfig(width=48, height=48))) as sim:
        yield sim


def test_soccer_is_demonstrated_by_straight_shots(mt50_sim):
    assert KEYPOSE_EXPERTS["soccer-v3"] is SoccerShots
    for variation in range(4):
        rollout = run_keypose_expert(mt50_sim, "soccer-v3", variation, seed=0)
        assert rollout.success and len(rollout.targets) <= 15, (variation, len(rollout.targets))
        assert all(t[7] == 0.0 for t in rollout.targets), "the ball is pushed with a closed gripper"


def test_soccer_shots_aim_from_behind_the_ball_at_the_goal(mt50_sim):
    """A stroke: above the point 6 cm behind the ball on the goal's line, down to it, 12 cm towards the goal,
    up; each keypose from where the ball is when it is sent."""
    mt50_sim.reset_state("soccer-v3", 5, 0)
    ball = np.array(mt50_sim.env._get_pos_objects(), np.float64)[:2]
    goal = np.array(mt50_sim.env._target_pos, np.float64)[:2]
    line = (goal - ball) / np.linalg.norm(goal - ball)
    expert = SoccerShots()
    above, open_ = expert(mt50_sim, 0)
    assert not open_ and above[2] == pytest.approx(0.1)
    np.testing.assert_allclose(above[:2], ball - 0.06 * line, atol=1e-9)
    down, _ = expert(mt50_sim, 1)
    np.testing.assert_allclose(down, [*(ball - 0.06 * line), 0.03], atol=1e-9)
    push, _ = expert(mt50_sim, 2)
    np.testing.assert_allclose(push, [*(ball + 0.12 * line), 0.03], atol=1e-9)
    # once the ball has moved, the next keypose is planned from where it lies now
    mt50_sim.env._set_obj_xyz(np.array([*(ball + (0.03, 0.02)), 0.03]))
    moved = np.array(mt50_sim.env._get_pos_objects(), np.float64)[:2]
    assert np.linalg.norm(moved - ball) > 0.02
    again, _ = expert(mt50_sim, 4)
    new_line = (goal - moved) / np.linalg.norm(goal - moved)
    np.testing.assert_allclose(again[:2], moved - 0.06 * new_line, atol=1e-9)
