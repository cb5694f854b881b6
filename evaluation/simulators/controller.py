"""Keypose controller for mocap-driven grippers (Meta-World's Sawyer): pose in, "reached or not" out.

A keypose is a tool-centre-point (TCP) position plus a binary gripper state. The controller:

1. moves with the *current* gripper command: each step it sends the mocap body toward
   ``target + (hand - tcp)`` (the hand/TCP offset measured at the start), rate-limited to
   ``max_step_m`` per step (Meta-World's action is a mocap displacement of ``action * 0.01 m``);
2. once the mocap has arrived but the TCP is still off (contact, weld compliance), it adds a slow,
   bounded integral correction until the TCP is within ``tolerance_m``;
3. then applies the keypose's gripper state and, if that toggled the gripper, holds for
   ``hold_steps`` so the fingers close/open before the next keypose.

It stops after ``max_steps`` and reports ``reached=False`` (an explicit "not reached" outcome); the
episode's task success is sticky (any step that reports success counts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from pydantic import Field

from evaluation.simulators.sim import KeyposeOutcome
from policies.config import FrozenModel


class ControllerConfig(FrozenModel):
    max_steps: int = Field(150, ge=1, le=10_000)  # low-level steps per keypose before "not reached"
    tolerance_m: float = Field(0.004, gt=0.0, le=0.1)
    max_step_m: float = Field(0.01, gt=0.0, le=0.05)  # rate limit of the mocap target per step
    action_scale_m: float = Field(0.01, gt=0.0)  # metres of mocap motion per unit action (Meta-World: 0.01)
    integral_gain: float = Field(0.2, ge=0.0, le=1.0)
    integral_limit_m: float = Field(0.05, ge=0.0, le=0.5)
    arrive_m: float = Field(0.002, gt=0.0)  # mocap-to-command distance at which integral correction starts
    hold_steps: int = Field(15, ge=0, le=500)  # steps held after a gripper toggle
    open_effort: float = -1.0
    close_effort: float = 1.0


class MocapArm(Protocol):
    """What the controller needs from a simulator (Meta-World backend, test fakes)."""

    def tcp_position(self) -> np.ndarray: ...  # (3,)

    def hand_position(self) -> np.ndarray: ...  # (3,) the mocap-welded body

    def mocap_position(self) -> np.ndarray: ...  # (3,)

    def apply_action(self, action: np.ndarray) -> bool: ...  # (4,) [dx, dy, dz, grip]; returns task success


@dataclass
class ControllerState:
    """The controller's memory across keyposes of one episode."""

    gripper_open: bool = True
    success: bool = False
    steps: int = 0
    success_step: int | None = None  # ``steps`` when the task first reported success


class KeyposeController:
    """Drives a ``MocapArm`` to commanded (position, open) keyposes. One instance per episode/arm."""

    def __init__(self, arm: MocapArm, cfg: ControllerConfig | None = None, gripper_open: bool = True) -> None:
        self.arm = arm
        self.cfg = cfg or ControllerConfig()
        self.state = ControllerState(gripper_open=gripper_open)

    def effort(self, gripper_open: bool) -> float:
        return self.cfg.open_effort if gripper_open else self.cfg.close_effort

    def _step(self, mocap_goal: np.ndarray, effort: float) -> None:
        delta = mocap_goal - self.arm.mocap_position()
        norm = float(np.linalg.norm(delta))
        if norm > self.cfg.max_step_m:
            delta = delta * (self.cfg.max_step_m / norm)
        action = np.empty(4, np.float32)
        action[:3] = np.clip(delta / self.cfg.action_scale_m, -1.0, 1.0)
        action[3] = effort
        self.state.success |= bool(self.arm.apply_action(action))
        self.state.steps += 1
        if self.state.success and self.state.success_step is None:
            self.state.success_step = self.state.steps

    def move_to(self, target: np.ndarray, gripper_open: bool) -> KeyposeOutcome:
        """Reach ``target`` (3,) TCP position, then set the gripper; see the module docstring."""
        cfg, start_steps = self.cfg, self.state.steps
        target = np.asarray(target, np.float64)[:3]
        offset = self.arm.hand_position() - self.arm.tcp_position()  # (3,)
        integral = np.zeros(3)
        effort = self.effort(self.state.gripper_open)
        reached = False
        while self.state.steps - start_steps < cfg.max_steps:
            error = target - self.arm.tcp_position()
            if np.linalg.norm(error) <= cfg.tolerance_m:
                reached = True
                break
            goal = target + offset + integral
            if np.linalg.norm(goal - self.arm.mocap_position()) <= cfg.arrive_m:
                integral = integral + cfg.integral_gain * error
                norm = float(np.linalg.norm(integral))
                if norm > cfg.integral_limit_m:
                    integral *= cfg.integral_limit_m / norm
                goal = target + offset + integral
            self._step(goal, effort)
        toggled = bool(gripper_open) != self.state.gripper_open
        self.state.gripper_open = bool(gripper_open)
        if toggled:
            goal = self.arm.mocap_position().copy()
            for _ in range(cfg.hold_steps):
                self._step(goal, self.effort(self.state.gripper_open))
        return KeyposeOutcome(
            success=self.state.success,
            reached=reached,
            sim_steps=self.state.steps - start_steps,
            success_step=self.state.success_step,
        )
