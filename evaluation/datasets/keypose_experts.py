"""Keypose-level experts: for the tasks whose Meta-World expert cannot be turned into keyframes that replay, or
whose replayed keyframes are long and irregular.

A Meta-World expert is a reactive controller at 1 cm per step; collection turns its rollout into keyframes
(``keyframes.py``) and checks that they replay (``demos.plan_keyframes``). One expert relies on what
keyposes cannot express: handle-pull-side's lifts the handle by friction, gripping it at grab effort 0.6
while moving up and loosening its grip (effort 0) whenever the handle slips, dozens of times per episode.
Its keyframes replay in 9 of 25 train variations even at one keyframe per step (docs/metaworld.md).
Soccer's replays (it dribbles with axis-aligned 1 cm nudges, 23 keyframes per episode after refinement), but a
policy does not learn it: 12-36 % over five 12000-step MT50 runs, and 12 of 88 episodes scored when the goal is
9-45 degrees to the side of the ball, where the policy pushes straight into the post; its keypose expert shoots
along the ball-to-goal line in 6.4 keyposes on average (what a policy learns from it: docs/quality.md).

A keypose expert decides each next keypose from the simulator's state, like Meta-World's experts decide
each action, and is rolled out *through the keypose controller* (``run_keypose_expert``): the stored
keyposes are the commands it sent, the observations the states it saw, so the demonstration replays by
construction (Meta-World is deterministic) and matches what a policy sees at evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from evaluation.datasets.demos import KeyposeRollout
from evaluation.simulators.metaworld_backend import FIXED_QUAT_XYZW, MetaWorldSimulator


class HandlePullSideRatchet:
    """Ratchet the side handle up: above it, then cycles of (down 2.8 cm below its tip, close, up 3 cm,
    open), each cycle planned from the handle's height when it starts. Meta-World's TCP is 4.5 cm below
    the finger pads, so 2.8 cm below the tip puts the pads around the bar; one cycle lifts the handle 1-2 cm
    before it slips, and the handle keeps its height when let go. Measured on the 25 train variations:
    25 successes with 8-13 keyposes (lift 5 cm: 25; lift 4 cm from 2 cm below: 24)."""

    below_m, lift_m = 0.028, 0.03

    def __init__(self) -> None:
        self.base: np.ndarray | None = None

    def __call__(self, sim: MetaWorldSimulator, sent: int) -> tuple[np.ndarray, bool]:
        handle = np.array(sim.env._get_pos_objects(), np.float64)[:3]  # the handle's tip ("handleRight")
        if sent == 0:
            return handle + (0.0, 0.0, 0.1), True
        phase = (sent - 1) % 4
        if phase == 0 or self.base is None:
            self.base = handle
        low = self.base + (0.0, 0.0, -self.below_m)
        high = low + (0.0, 0.0, self.lift_m)
        return [(low, True), (low, False), (high, False), (high, True)][phase]


class SoccerShots:
    """Shoot the ball at the goal in strokes of 4 keyposes: above a point 6 cm behind the ball (on the line from
    the goal through the ball), down to it, a push 12 cm along that line, up. Every keypose is planned from
    where the ball is when it is sent, not once per stroke: the ball rolls on for 5-15 cm after a push, and a
    stroke planned before it stopped hit it from the side (22 of 25 train variations scored). The gripper stays
    closed (Meta-World's expert pushes with a closed fist too). The gripper's flat front sends a diagonal push
    straighter (+y) than aimed, so aiming further sideways suggests itself; measured on the 50 variations,
    aiming 1.3x or 1.6x the angle scored 46 and 45, straight at the goal 49 (docs/metaworld.md)."""

    behind_m, stroke_m, low_z, high_z = 0.06, 0.12, 0.03, 0.1

    def __call__(self, sim: MetaWorldSimulator, sent: int) -> tuple[np.ndarray, bool]:
        ball = np.array(sim.env._get_pos_objects(), np.float64)[:3]
        goal = np.array(sim.env._target_pos, np.float64)[:3]
        line = goal[:2] - ball[:2]  # (2,) ball -> goal, on the table
        distance = float(np.linalg.norm(line))
        line /= max(distance, 1e-9)
        behind = ball[:2] - self.behind_m * line
        phase = sent % 4
        if phase == 0:
            return np.array([*behind, self.high_z]), False
        if phase == 1:
            return np.array([*behind, self.low_z]), False
        if phase == 2:
            return np.array([*(ball[:2] + min(self.stroke_m, distance) * line), self.low_z]), False
        tcp = sim.controller.arm.tcp_position()
        return np.array([tcp[0], tcp[1], self.high_z]), False


# (simulator, keyposes sent so far) -> next (3,) TCP position and gripper open; one instance per episode
KeyposePolicy = Callable[[MetaWorldSimulator, int], tuple[np.ndarray, bool]]
KEYPOSE_EXPERTS: dict[str, Callable[[], KeyposePolicy]] = {
    "handle-pull-side-v3": HandlePullSideRatchet,
    "soccer-v3": SoccerShots,
}


def run_keypose_expert(
    sim: MetaWorldSimulator, task: str, variation: int, seed: int, max_keyposes: int = 25
) -> KeyposeRollout:
    """Roll ``KEYPOSE_EXPERTS[task]`` out through the keypose controller until success (or
    ``max_keyposes``, the evaluation's limit), recording the state before each keypose."""
    start = time.perf_counter()
    policy = KEYPOSE_EXPERTS[task]()
    sim.reset_state(task, variation, seed)
    rollout = KeyposeRollout(task, variation, seed)
    while len(rollout.targets) < max_keyposes and not rollout.success:
        position, gripper_open = policy(sim, len(rollout.targets))
        rollout.send(sim, np.array([*position, *FIXED_QUAT_XYZW, float(gripper_open)], np.float32))
    rollout.physics_s = time.perf_counter() - start
    return rollout
