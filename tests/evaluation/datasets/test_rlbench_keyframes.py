"""PerAct's keyframe heuristic on synthetic RLBench-like trajectories (``evaluation.datasets.rlbench_keyframes``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from evaluation.datasets.rlbench_keyframes import PerActKeyframeConfig, demo_keyframes, peract_keyframes

pytestmark = pytest.mark.unit


def trajectory(segments: list[tuple[int, float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate (frames, joint speed, gripper_open) segments into (gripper (T,), velocities (T, 7))."""
    grip = np.concatenate([np.full(n, g) for n, _, g in segments])
    vel = np.concatenate([np.full((n, 7), v) for n, v, _ in segments])
    return grip, vel


def test_reach_grasp_lift_demo():
    # rest, move, stop (2 frames), move, stop, close (3 frames at rest), lift, final rest
    grip, vel = trajectory(
        [
            (1, 0.0, 1),
            (8, 0.8, 1),
            (2, 0.0, 1),
            (6, 0.5, 1),
            (2, 0.0, 1),
            (3, 0.0, 0),
            (6, 0.6, 0),
            (2, 0.0, 0),
        ]
    )
    keys = peract_keyframes(grip, vel)
    # stops at the first frame of each rest run, the gripper change, the final frame; frame 0 never
    assert keys == [9, 17, 19, 29]
    assert grip[19] == 0 and grip[18] == 1  # the gripper keyframe is the first closed frame


def test_stop_buffer_spaces_stops_in_a_long_rest():
    grip, vel = trajectory([(5, 0.7, 1), (12, 0.0, 1), (5, 0.7, 1)])
    assert peract_keyframes(grip, vel) == [5, 10, 15, 21]
    assert peract_keyframes(grip, vel, PerActKeyframeConfig(stop_buffer=0)) == [*range(5, 17), 21]


def test_velocity_threshold_is_per_joint_and_inclusive():
    grip, vel = trajectory([(4, 0.5, 1), (3, 0.0, 1), (4, 0.5, 1)])
    vel[4:7, 3] = 0.1  # one joint exactly at the threshold: still stopped
    assert peract_keyframes(grip, vel) == [4, 10]
    vel[4:7, 3] = 0.1001
    assert peract_keyframes(grip, vel) == [10]
    assert peract_keyframes(grip, vel, PerActKeyframeConfig(stopping_delta=0.2)) == [4, 10]


def test_no_stop_keyframe_next_to_a_gripper_change():
    # the arm rests while the gripper closes: the gripper state must be equal at i-2..i+1 for a stop,
    # so the earliest stop after a change at frame c is c + 2
    grip, vel = trajectory([(4, 0.5, 1), (1, 0.0, 1), (2, 0.0, 0), (4, 0.5, 0)])
    assert peract_keyframes(grip, vel) == [5, 10]
    grip, vel = trajectory([(4, 0.5, 1), (1, 0.0, 1), (4, 0.0, 0), (4, 0.5, 0)])
    assert peract_keyframes(grip, vel) == [5, 7, 12]


def test_adjacent_last_two_keyframes_drop_the_second_to_last():
    grip, vel = trajectory([(4, 0.5, 1), (1, 0.5, 0)])  # the change is on the last frame
    assert peract_keyframes(grip, vel) == [4]
    grip, vel = trajectory([(4, 0.5, 1), (2, 0.5, 0)])  # change at 4, last frame 5: adjacent -> 4 dropped
    assert peract_keyframes(grip, vel) == [5]


def test_boundary_clamp_versus_wrap():
    # three frames at rest with the gripper open; the demo ends closed. Clamped, frame 0 counts as a stop
    # and its buffer hides frames 1-4; PerAct's original indexing reads the end of the demo for frames
    # -1, -2, so frames 0 and 1 are not "steady" and frame 2 becomes a stop keyframe.
    grip, vel = trajectory([(3, 0.0, 1), (6, 0.6, 1), (3, 0.0, 0), (3, 0.6, 0)])
    assert peract_keyframes(grip, vel, PerActKeyframeConfig(boundary="clamp")) == [9, 11, 14]
    assert peract_keyframes(grip, vel, PerActKeyframeConfig(boundary="wrap")) == [2, 9, 11, 14]


@pytest.mark.parametrize("seed", range(20))
def test_properties_on_random_demos(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 80))
    grip = (rng.random(n) < 0.5).astype(float)
    grip = np.repeat(grip, rng.integers(1, 6, size=n))[:n]  # runs of equal states
    vel = rng.choice([0.0, 0.05, 0.5], size=(n, 7), p=[0.4, 0.2, 0.4])
    keys = peract_keyframes(grip, vel)
    assert keys == sorted(set(keys)) and keys[-1] == n - 1 and keys[0] >= 1
    changes = [i for i in range(1, n) if grip[i] != grip[i - 1]]
    missing = set(changes) - set(keys)
    assert missing <= {n - 2}  # only a change on the second-to-last frame can be dropped
    for k in set(keys) - set(changes) - {n - 1}:  # stops: at rest, gripper steady around them
        assert np.all(np.abs(vel[k]) <= 0.1) and k < n - 2
        assert grip[k + 1] == grip[k] == grip[max(k - 1, 0)] == grip[max(k - 2, 0)]


def test_demo_keyframes_reads_observations_and_names_missing_fields():
    grip, vel = trajectory([(4, 0.5, 1), (3, 0.0, 1), (4, 0.5, 1)])
    demo = [SimpleNamespace(gripper_open=g, joint_velocities=v) for g, v in zip(grip, vel, strict=True)]
    assert demo_keyframes(demo) == peract_keyframes(grip, vel) == [4, 10]
    demo[3].joint_velocities = None
    with pytest.raises(ValueError, match="observation 3 .* joint_velocities"):
        demo_keyframes(demo)
    with pytest.raises(ValueError, match=r"\(T, J\)"):
        peract_keyframes(grip, vel[:5])
