"""FakeSimulator: analytic camera frames that back-project onto the scene, determinism, fault knobs."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest

from evaluation.pointcloud import PointCloudConfig, frame_to_world, frames_to_points
from evaluation.simulators.fake_sim import BLOCK_HEIGHT, FakeSimConfig, FakeSimulator
from evaluation.simulators.sim import SimulatorError, UnknownTaskError

pytestmark = pytest.mark.unit

POSE_AT = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0])


def _pose(xyz) -> np.ndarray:
    pose = POSE_AT.copy()
    pose[:3] = xyz
    return pose


def test_frames_back_project_onto_table_and_block():
    sim = FakeSimulator(FakeSimConfig(cameras=3, image_size=32))
    obs = sim.reset("fake-reach", 0, 7)
    goal = obs.extras["goal"]
    assert len(obs.cameras) == 3
    for frame in obs.cameras:
        assert frame.rgb.shape == (32, 32, 3) and frame.rgb.dtype == np.uint8
        assert frame.depth.shape == (32, 32) and frame.depth.dtype == np.float32
        xyz, rgb = frame_to_world(frame)
        red = rgb[:, 0] > 200
        assert red.sum() >= 4, "the goal block must be visible from every camera"
        np.testing.assert_allclose(xyz[red, 2], BLOCK_HEIGHT, atol=1e-5)
        assert np.abs(xyz[red, :2] - goal[:2]).max() <= 0.051
        np.testing.assert_allclose(xyz[~red, 2], 0.0, atol=1e-5)  # the table
    points = frames_to_points(obs.cameras, PointCloudConfig())  # table removed: only the block remains
    assert len(points) > 0
    np.testing.assert_allclose(points[:, :3].mean(0)[:2], goal[:2], atol=0.02)


def test_goal_depends_on_episode_and_is_deterministic():
    sim = FakeSimulator()
    a = sim.reset("fake-push", 3, 11).extras["goal"]
    b = FakeSimulator().reset("fake-push", 3, 11).extras["goal"]
    c = sim.reset("fake-push", 4, 11).extras["goal"]
    d = sim.reset("fake-pick", 3, 11).extras["goal"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c) and not np.allclose(a, d)


def test_success_at_goal_and_succeed_at_knob():
    sim = FakeSimulator()
    goal = sim.reset("fake-reach", 0, 1).extras["goal"]
    assert not sim.step_keypose(_pose(goal + [0.2, 0, 0])).success
    assert sim.step_keypose(_pose(goal + [0.01, 0, 0])).success
    forced = FakeSimulator(FakeSimConfig(succeed_at=2))
    forced.reset("fake-reach", 0, 1)
    far = _pose([0.5, 0.3, 0.5])
    assert [forced.step_keypose(far).success for _ in range(3)] == [False, False, True]
    obs = forced.observe()
    np.testing.assert_array_equal(obs.gripper_pose, far)


def test_crash_raise_and_fault_filter():
    sim = FakeSimulator(FakeSimConfig(crash_at=1, crash_mode="raise", crash_seeds=(5,)))
    sim.reset("fake-reach", 0, 4)
    for _ in range(3):
        sim.step_keypose(_pose([0.4, 0.3, 0.3]))  # seed 4 is not in fault_seeds
    sim.reset("fake-reach", 0, 5)
    sim.step_keypose(_pose([0.4, 0.3, 0.3]))
    with pytest.raises(SimulatorError, match="crash_at=1"):
        sim.step_keypose(_pose([0.4, 0.3, 0.3]))


def test_fault_attempts_counts_resets_in_state_dir(tmp_path):
    cfg = FakeSimConfig(crash_at=0, crash_mode="raise", fault_attempts=1, state_dir=str(tmp_path))
    first = FakeSimulator(cfg)
    first.reset("fake-reach", 2, 9)
    with pytest.raises(SimulatorError):
        first.step_keypose(_pose([0.1, 0.5, 0.2]))
    second = FakeSimulator(cfg)  # a fresh simulator (another actor) sees the same episode once more
    second.reset("fake-reach", 2, 9)
    second.step_keypose(_pose([0.1, 0.5, 0.2]))


def test_hang_and_step_delay_block():
    sim = FakeSimulator(FakeSimConfig(hang_at=1, hang_s=0.3, step_delay_s=0.05))
    sim.reset("fake-reach", 0, 0)
    t = time.perf_counter()
    sim.step_keypose(_pose([0.4, 0.3, 0.3]))
    first = time.perf_counter() - t
    sim.step_keypose(_pose([0.4, 0.3, 0.3]))
    second = time.perf_counter() - t - first
    assert 0.04 < first < 0.25 and second >= 0.34


def _crash_child():
    sim = FakeSimulator(FakeSimConfig(crash_at=0, crash_mode="exit"))
    sim.reset("fake-reach", 0, 0)
    sim.step_keypose(_pose([0.1, 0.5, 0.2]))


def test_crash_exit_kills_the_process():
    proc = multiprocessing.get_context("fork").Process(target=_crash_child)
    proc.start()
    proc.join(30)
    assert proc.exitcode == 17


def test_errors_are_typed():
    sim = FakeSimulator()
    with pytest.raises(SimulatorError, match="before reset"):
        sim.observe()
    with pytest.raises(UnknownTaskError, match="fake-reach"):
        sim.reset("no-such-task", 0, 0)
    sim.reset("fake-reach", 0, 0)
    with pytest.raises(SimulatorError, match="8 finite"):
        sim.step_keypose(np.full(8, np.nan))
    with pytest.raises(ValueError, match="state_dir"):
        FakeSimulator(FakeSimConfig(crash_at=0, fault_attempts=1)).reset("fake-reach", 0, 0)
