"""Keypose-level experts: for the tasks whose Meta-World expert cannot be turned into keyframes that replay.

A Meta-World expert is a reactive controller at 1 cm per step; collection turns its rollout into keyframes
(``keyframes.py``) and checks that they replay (``demos.plan_keyframes``). One expert relies on what
keyposes cannot express: handle-pull-side's lifts the handle by friction, gripping it at grab effort 0.6
while moving up and loosening its grip (effort 0) whenever the handle slips, dozens of times per episode.
Its keyframes replay in 9 of 25 train variations even at one keyframe per step (docs/metaworld.md).

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


# (simulator, keyposes sent so far) -> next (3,) TCP position and gripper open; one instance per episode
KeyposePolicy = Callable[[MetaWorldSimulator, int], tuple[np.ndarray, bool]]
KEYPOSE_EXPERTS: dict[str, Callable[[], KeyposePolicy]] = {"handle-pull-side-v3": HandlePullSideRatchet}


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
