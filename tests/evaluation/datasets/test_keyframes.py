"""Keyframe detection on synthetic trajectories, and the keypose controller on a fake mocap arm."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.datasets.keyframes import (
    REFINEMENTS,
    KeyframeConfig,
    contact_frames,
    detect_keyframes,
    gripper_events,
    path_corners,
    refinement_ladder,
    still_frames,
)
from evaluation.simulators.controller import ControllerConfig, KeyposeController

pytestmark = pytest.mark.unit


def _line(a, b, steps):
    return np.linspace(a, b, steps + 1)[1:]


def _l_path():
    """Reset at the origin, 20 steps along +x, 20 steps along +y: one corner at index 20."""
    start = np.zeros((1, 3))
    leg1 = _line([0, 0, 0], [0.2, 0, 0], 20)
    leg2 = _line([0.2, 0, 0], [0.2, 0.2, 0], 20)
    return np.concatenate([start, leg1, leg2])  # (41, 3)


def test_corner_of_an_l_shaped_path_is_a_keyframe():
    tcp = _l_path()
    frames = detect_keyframes(tcp, np.ones(len(tcp), bool))
    assert [f.index for f in frames] == [20, 40]
    assert frames[0].kind == "turn" and frames[-1].kind == "final"
    assert path_corners(tcp, [0, 40], 0.015) == [20]


def test_straight_path_has_only_the_final_keyframe_and_never_frame_zero():
    tcp = np.concatenate([np.zeros((1, 3)), _line([0, 0, 0], [0.3, 0.1, 0.05], 30)])
    frames = detect_keyframes(tcp, np.ones(len(tcp), bool))
    assert [(f.index, f.kind) for f in frames] == [(30, "final")]


def test_near_still_segment_ends_in_a_keyframe():
    move = _line([0, 0, 0], [0.1, 0, 0], 10)
    pause = np.repeat(move[-1:], 8, axis=0)
    back = _line([0.1, 0, 0], [0.0, 0, 0], 10)
    tcp = np.concatenate([np.zeros((1, 3)), move, pause, back])  # (29, 3)
    assert still_frames(tcp, KeyframeConfig()) == [18]
    frames = detect_keyframes(tcp, np.ones(len(tcp), bool))
    assert 18 in [f.index for f in frames]
    assert {f.kind for f in frames if f.index == 18} == {"still"}


def test_gripper_toggle_keyframe_is_where_the_expert_pauses_and_carries_the_new_state():
    approach = _line([0, 0, 0.2], [0, 0, 0.02], 12)  # descends, toggles at step 10
    pause = np.repeat(approach[-1:], 6, axis=0)  # waits for the fingers (steps 13..18)
    lift = _line([0, 0, 0.02], [0, 0, 0.2], 12)
    tcp = np.concatenate([[[0, 0, 0.2]], approach, pause, lift])  # (31, 3)
    grip_open = np.ones(len(tcp), bool)
    grip_open[10:] = False  # the command closes at step 10, while still descending
    dist = np.ones(len(tcp))
    dist[10:22] = np.linspace(1.0, 0.3, 12)  # fingers close over 12 steps
    dist[22:] = 0.3
    assert gripper_events(grip_open) == [10]
    frames = detect_keyframes(tcp, grip_open, grip_dist=dist)
    grip = [f for f in frames if f.kind == "gripper"]
    assert len(grip) == 1 and grip[0].index == 13 and grip[0].gripper_open is False
    assert all(f.gripper_open for f in frames if f.index < 13)  # earlier keyposes keep the gripper open
    assert frames[-1].index == 30 and frames[-1].gripper_open is False


def test_detect_keyframes_validates_shapes():
    with pytest.raises(ValueError, match="grip_open"):
        detect_keyframes(np.zeros((5, 3)), np.ones(4, bool))
    assert detect_keyframes(np.zeros((1, 3)), np.ones(1, bool)) == []


class FakeMocapArm:
    """Test fake: a mocap point moved by ``action * 0.01`` per step; the TCP follows with lag and a fixed
    offset below the hand, and cannot go below ``floor``. Success when the TCP is within 1 cm of ``goal``."""

    def __init__(self, floor: float = -1.0, goal=(9, 9, 9)) -> None:
        self.mocap = np.array([0.0, 0.6, 0.2])
        self.hand = self.mocap.copy()
        self.offset = np.array([0.0, 0.0, -0.05])
        self.floor, self.goal = floor, np.asarray(goal, float)
        self.efforts: list[float] = []

    def tcp_position(self):
        return self.hand + self.offset

    def hand_position(self):
        return self.hand.copy()

    def mocap_position(self):
        return self.mocap.copy()

    def apply_action(self, action):
        self.mocap = self.mocap + np.clip(action[:3], -1, 1) * 0.01
        self.hand = self.hand + 0.5 * (self.mocap - self.hand)
        self.hand[2] = max(self.hand[2], self.floor - self.offset[2])
        self.efforts.append(float(action[3]))
        return bool(np.linalg.norm(self.tcp_position() - self.goal) < 0.01)


def test_controller_reaches_a_tcp_target_within_tolerance():
    arm = FakeMocapArm()
    ctrl = KeyposeController(arm, ControllerConfig())
    target = np.array([0.1, 0.7, 0.05])
    outcome = ctrl.move_to(target, gripper_open=True)
    assert outcome.reached and outcome.sim_steps < 60
    assert np.linalg.norm(arm.tcp_position() - target) <= 0.004
    assert set(arm.efforts) == {-1.0}  # open effort throughout, no hold


def test_controller_reports_not_reached_at_its_step_limit():
    arm = FakeMocapArm(floor=0.1)
    ctrl = KeyposeController(arm, ControllerConfig(max_steps=40))
    outcome = ctrl.move_to(np.array([0.0, 0.6, 0.0]), gripper_open=True)  # below the floor
    assert not outcome.reached and outcome.sim_steps == 40


def test_controller_toggles_after_reaching_and_holds():
    arm = FakeMocapArm(goal=(0.0, 0.6, 0.1))
    ctrl = KeyposeController(arm, ControllerConfig(hold_steps=15))
    outcome = ctrl.move_to(np.array([0.0, 0.6, 0.1]), gripper_open=False)
    moves = outcome.sim_steps - 15
    assert outcome.reached and outcome.success
    assert arm.efforts[:moves] == [-1.0] * moves and arm.efforts[moves:] == [1.0] * 15
    again = ctrl.move_to(np.array([0.0, 0.6, 0.3]), gripper_open=False)  # no toggle: no hold
    assert again.success  # success is sticky within the episode
    assert arm.efforts[-1] == 1.0


def test_contact_frames_are_added_only_while_an_object_moves():
    tcp = np.concatenate([np.zeros((1, 3)), _line([0, 0, 0], [0.3, 0.0, 0.0], 30)])  # straight: no turns
    objects = np.zeros((31, 3))
    objects[11:21, 0] = np.arange(1, 11) * 0.002  # pushed 2 mm per step during steps 11..20, then still
    objects[21:, 0] = objects[20, 0]
    plain = detect_keyframes(tcp, np.ones(31, bool), KeyframeConfig(), objects=objects)
    assert [f.index for f in plain] == [30]  # contact frames are off by default
    dense = detect_keyframes(tcp, np.ones(31, bool), KeyframeConfig(contact_stride=4), objects=objects)
    assert [(f.index, f.kind) for f in dense] == [
        (11, "contact"),
        (15, "contact"),
        (19, "contact"),
        (30, "final"),
    ]
    assert contact_frames(objects, 4, 0.0005, taken={13}) == [11, 17]  # the stride restarts at a kept frame


def test_refinement_ladder_starts_with_the_config_and_gets_denser():
    base = KeyframeConfig()
    ladder = refinement_ladder(base)
    assert ladder[0] == base and len(ladder) == 1 + len(REFINEMENTS)
    tolerances = [c.path_tolerance_m for c in ladder]
    assert tolerances == sorted(tolerances, reverse=True)
    strides = [c.contact_stride for c in ladder if c.contact_stride]
    assert len(strides) >= 3 and strides == sorted(strides, reverse=True)
    assert any(c.gripper_at == "settled" for c in ladder)
    assert refinement_ladder(KeyframeConfig(refine=False)) == [KeyframeConfig(refine=False)]


def test_recoveries_branch_off_the_replay_and_are_recorded_only_when_asked_for():
    with pytest.raises(ValueError, match="recoveries needs observe=replay"):
        KeyframeConfig(recoveries=1)
    assert KeyframeConfig(observe="replay", recoveries=2).settings()["recoveries"] == 2
    assert "recoveries" not in KeyframeConfig(observe="replay").settings()
