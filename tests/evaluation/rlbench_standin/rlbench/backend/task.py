"""Stand-in for ``rlbench.backend.task.Task``: every task shares the fake physics of ``scene.py``.

A task's variation picks the colour word of its descriptions; success is the fake simulator's rule
(the closed gripper within ``GOAL_TOLERANCE`` of the block's top centre).
"""

from __future__ import annotations

import re

import numpy as np

COLORS = (
    "red",
    "maroon",
    "lime",
    "green",
    "blue",
    "navy",
    "yellow",
    "cyan",
    "magenta",
    "silver",
    "gray",
    "orange",
    "olive",
    "purple",
    "teal",
    "azure",
    "violet",
    "rose",
    "black",
    "white",
)


class Task:
    VARIATIONS = 1

    def __init__(self, pyrep=None, robot=None, name: str | None = None):
        self.pyrep = pyrep
        self.robot = robot
        self._name = name or re.sub("(?<!^)(?=[A-Z])", "_", type(self).__name__).lower()
        self._scene = None
        self._variation_index = 0

    def get_name(self) -> str:
        return self._name

    def variation_count(self) -> int:
        return self.VARIATIONS

    def init_episode(self, index: int) -> list[str]:
        self._variation_index = index
        words = self.get_name().replace("_", " ")
        color = COLORS[index % len(COLORS)]
        return [f"{words} with the {color} block", f"{color} block: {words}"]

    def step(self) -> None:
        pass

    def success(self) -> tuple[bool, bool]:
        scene = self._scene
        closed = scene.robot.gripper.get_open_amount()[0] < 0.1
        near = float(np.linalg.norm(scene.gripper_position() - scene.goal_top())) < scene.GOAL_TOLERANCE
        done = bool(closed and near)
        return done, done

    def get_graspable_objects(self) -> list:
        return []
