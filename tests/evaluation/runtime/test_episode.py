"""The episode loop on the fake simulator with the real point-cloud path and a fake policy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation.checkpoint_format import InstructionError
from evaluation.runtime.episode import EpisodeSpec, LocalInference, row_seed, run_episode
from evaluation.simulators.fake_sim import START_XYZ, FakeSimConfig, FakeSimulator
from evaluation.simulators.sim import PlannerError, SimulatorError
from tests.evaluation.eval_fakes import FakeGoalPolicy, conditioner, fake_instructions

pytestmark = pytest.mark.unit

TASKS = FakeSimConfig().tasks
INSTR = fake_instructions(TASKS)


def _run(sim, policy, spec, max_keyposes=25):
    return run_episode(sim, LocalInference(policy), conditioner(), INSTR, spec, max_keyposes)


def test_policy_reaches_the_goal_in_the_expected_number_of_keyposes():
    sim = FakeSimulator()
    spec = EpisodeSpec("fake-push", 1, 3)
    goal = sim.reset(spec.task, spec.variation, spec.seed).extras["goal"]
    out = _run(sim, FakeGoalPolicy(max_step=0.05), spec)
    expected = math.ceil(np.linalg.norm(goal - np.array(START_XYZ)) / 0.05)
    r = out.result
    assert (r.task, r.variation, r.seed, r.status, r.success) == ("fake-push", 1, 3, "ok", True)
    assert abs(r.steps - expected) <= 1
    # the fake counts 10 low-level steps per keypose; the success came in the last one
    assert r.sim_steps == 10 * r.steps and r.success_step == 10 * r.steps
    assert r.wall_s > 0 and out.times.render > 0 and out.times.policy > 0 and out.times.preprocess > 0


def test_keypose_limit_ends_as_failure_with_status_ok():
    out = _run(FakeSimulator(), FakeGoalPolicy(max_step=0.0), EpisodeSpec("fake-reach", 0, 0), max_keyposes=7)
    assert (out.result.status, out.result.success, out.result.steps) == ("ok", False, 7)
    assert "limit 7" in out.result.message
    assert (out.result.sim_steps, out.result.success_step) == (70, None)


def test_default_limit_is_25_keyposes():
    out = run_episode(
        FakeSimulator(),
        LocalInference(FakeGoalPolicy(max_step=0.0)),
        conditioner(),
        INSTR,
        EpisodeSpec("fake-reach", 0, 0),
    )
    assert out.result.steps == 25 and not out.result.success


class _PlannerFails(FakeSimulator):
    def step_keypose(self, pose):
        if self._keyposes == 2:
            raise PlannerError("no IK solution")
        return super().step_keypose(pose)


def test_planner_error_is_a_counted_failure():
    out = _run(_PlannerFails(), FakeGoalPolicy(max_step=0.0), EpisodeSpec("fake-reach", 0, 0))
    assert (out.result.status, out.result.success, out.result.steps) == ("planner_error", False, 3)
    assert "no IK solution" in out.result.message


class _PlannerFailsOnce(FakeSimulator):
    """The 2nd and 3rd keyposes sent raise a planner error (the scene stays as it was)."""

    calls = 0

    def step_keypose(self, pose):
        self.calls += 1
        if self.calls in (2, 3):
            raise PlannerError("no IK solution")
        return super().step_keypose(pose)


def test_3dda_rule_goes_on_after_a_planner_error():
    spec = EpisodeSpec("fake-reach", 0, 0)
    policy = FakeGoalPolicy(max_step=0.05)
    ended = run_episode(_PlannerFailsOnce(), LocalInference(policy), conditioner(), INSTR, spec)
    assert (ended.result.status, ended.result.success, ended.result.steps) == ("planner_error", False, 2)
    went_on = run_episode(
        _PlannerFailsOnce(), LocalInference(policy), conditioner(), INSTR, spec, on_planner_error="continue"
    )
    clean = run_episode(FakeSimulator(), LocalInference(policy), conditioner(), INSTR, spec)
    assert (went_on.result.status, went_on.result.success) == ("ok", True)
    assert went_on.result.steps == clean.result.steps + 2  # the two failed keyposes cost their steps
    assert "after 2 planner error(s)" in went_on.result.message
    never = run_episode(
        _PlannerFailsOnce(),
        LocalInference(FakeGoalPolicy(max_step=0.0)),
        conditioner(),
        INSTR,
        spec,
        max_keyposes=6,
        on_planner_error="continue",
    )
    assert (never.result.status, never.result.success, never.result.steps) == ("planner_error", False, 6)
    assert "keypose limit 6 reached after 2 planner error(s)" in never.result.message


def test_simulator_error_propagates_for_the_coordinator():
    sim = FakeSimulator(FakeSimConfig(crash_at=1, crash_mode="raise"))
    with pytest.raises(SimulatorError):
        _run(sim, FakeGoalPolicy(max_step=0.0), EpisodeSpec("fake-reach", 0, 0))


def test_same_seed_same_result_with_a_noisy_policy():
    spec = EpisodeSpec("fake-pick", 2, 42)
    a = _run(FakeSimulator(), FakeGoalPolicy(max_step=0.06, noise=0.02), spec).result
    b = _run(FakeSimulator(), FakeGoalPolicy(max_step=0.06, noise=0.02), spec).result
    assert (a.success, a.steps, a.status) == (b.success, b.steps, b.status)
    assert row_seed(42, 0) != row_seed(42, 1) != row_seed(43, 0)


def test_missing_instruction_names_the_file_keys():
    with pytest.raises(InstructionError, match="instructions.npz"):
        run_episode(
            FakeSimulator(),
            LocalInference(FakeGoalPolicy()),
            conditioner(),
            {},
            EpisodeSpec("fake-reach", 0, 0),
        )


def test_each_condition_gets_the_poses_of_the_keyposes_made_before_it():
    """What a policy with ``history`` reads: the gripper poses seen at the earlier keyposes, oldest first; a
    keypose the planner refused moved nothing and is not one of them."""
    seen: list[tuple[np.ndarray, list[np.ndarray]]] = []
    inner = conditioner()

    def recording(obs, text, previous=()):
        seen.append((np.asarray(obs.gripper_pose).copy(), [np.asarray(p).copy() for p in previous]))
        return inner(obs, text, previous)

    spec = EpisodeSpec("fake-reach", 0, 0)
    run_episode(
        _PlannerFailsOnce(),
        LocalInference(FakeGoalPolicy(max_step=0.05)),
        recording,
        INSTR,
        spec,
        max_keyposes=6,
        on_planner_error="continue",
    )
    assert [len(previous) for _, previous in seen] == [0, 1, 1, 1, 2, 3]  # keyposes 2 and 3 were refused
    for k in range(1, len(seen)):
        moved = [pose for pose, _ in seen[:k]]
        kept = [moved[0]] + [moved[i] for i in range(3, k)]  # the poses at which a keypose was made
        assert all(np.array_equal(a, b) for a, b in zip(seen[k][1], kept, strict=True))
