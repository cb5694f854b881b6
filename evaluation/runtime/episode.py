"""One evaluation episode: observation -> condition -> policy -> keypose -> simulator, until done.

The loop is backend- and policy-agnostic: it takes a ``Simulator``, an ``Inference`` (the policy in this
process, or a client of the batching policy server) and the checkpoint's ``Instructions``: one
embedding per task, plus one per distinct instruction text when the benchmark's variations differ by
language (RLBench). Each episode is conditioned on the instruction its simulator states after ``reset``
(``Observation.instruction``), falling back to its task's embedding. An episode ends

- with success as soon as the simulator reports it (status ``ok``, success True),
- after ``max_keyposes`` keyposes without success (status ``ok``, success False; RLBench uses 25),
- on a ``PlannerError`` (status ``planner_error``, a failure, counted in the denominator), as PerAct
  evaluates; with ``on_planner_error="continue"`` (3D Diffuser Actor's evaluation) the keypose counts as
  a step, the policy is asked again from the unchanged scene, and an episode that never succeeds after a
  planner error ends as ``planner_error``.

A ``SimulatorError`` (or any crash) is *not* turned into a result here: it propagates so that the
coordinator replaces the actor and retries the episode (docs/design.md, R5).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import torch

from evaluation.checkpoint_format import Instruction, Instructions
from evaluation.pointcloud import ConditionFn
from evaluation.simulators.sim import EpisodeResult, PlannerError, Simulator, SimulatorError
from policies.base import Policy
from policies.batch import POSE_DIM, ConditionBatch
from policies.config import MAX_HISTORY

DEFAULT_MAX_KEYPOSES = 25  # RLBench / PerAct evaluation limit
PlannerErrorRule = Literal["end", "continue"]


@dataclass(frozen=True)
class EpisodeSpec:
    """One requested episode: a task, its test configuration (variation) and the seed."""

    task: str
    variation: int
    seed: int


@dataclass
class StageTimes:
    """Seconds spent in each stage of an episode (summed over its keyposes)."""

    render: float = 0.0  # reset + observe (camera rendering and state reads)
    preprocess: float = 0.0  # observation -> ConditionBatch (point cloud fusion)
    policy: float = 0.0  # predict_action, including the wait for the policy server
    sim: float = 0.0  # step_keypose (controller / physics)

    def add(self, other: StageTimes) -> None:
        self.render += other.render
        self.preprocess += other.preprocess
        self.policy += other.policy
        self.sim += other.sim

    def as_dict(self) -> dict[str, float]:
        return {"render": self.render, "preprocess": self.preprocess, "policy": self.policy, "sim": self.sim}


@dataclass
class EpisodeOutput:
    """What an evaluation actor returns for one episode: the result plus where the time went."""

    result: EpisodeResult
    times: StageTimes = field(default_factory=StageTimes)
    actor_pid: int = 0
    cpu_s: float = 0.0  # CPU seconds of the actor process (all its threads) during the episode
    frames: list[np.ndarray] | None = None  # rollout video frames (evaluation.runtime.video), when recorded


class Inference(Protocol):
    def __call__(self, condition: ConditionBatch, row_seed: int) -> np.ndarray:
        """(8,) next keypose of a B=1 condition; ``row_seed`` seeds the sampler's noise."""


def row_seed(seed: int, keypose_index: int) -> int:
    """Seed of the diffusion noise for keypose ``keypose_index`` of the episode seeded ``seed``."""
    return int(np.random.SeedSequence([seed, keypose_index]).generate_state(1, dtype=np.uint64)[0] >> 1)


class LocalInference:
    """Runs the policy in this process (CPU by default); the noise of each call is seeded per row."""

    def __init__(self, policy: Policy, device: str = "cpu") -> None:
        self.policy = policy.to(device).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, condition: ConditionBatch, row_seed: int) -> np.ndarray:
        generator = torch.Generator(device=self.device).manual_seed(row_seed)
        action = self.policy.predict_action(condition.to(self.device), generator=generator)  # (1, 8)
        return check_actions(action, 1)[0]


def check_actions(action: torch.Tensor, batch: int) -> np.ndarray:
    """(B, 8) float64 numpy from a policy's output, with a clear error when its shape is wrong."""
    if tuple(action.shape) != (batch, POSE_DIM):
        raise ValueError(
            f"predict_action returned shape {tuple(action.shape)}, expected ({batch}, {POSE_DIM})"
        )
    return action.detach().to("cpu", torch.float64).numpy()


def run_episode(
    sim: Simulator,
    infer: Inference,
    condition_fn: ConditionFn,
    instructions: Instructions | Mapping[str, Instruction],
    spec: EpisodeSpec,
    max_keyposes: int = DEFAULT_MAX_KEYPOSES,
    on_planner_error: PlannerErrorRule = "end",
    record_camera: str | None = None,
) -> EpisodeOutput:
    """Run one episode to success, failure or the keypose limit. ``SimulatorError`` propagates.

    ``record_camera``: also return the rollout's video frames from that camera (``evaluation.runtime.video``)."""
    table = Instructions.of(instructions)
    if spec.task not in table.tasks:  # fail before paying for a reset
        table.for_episode(spec.task, "")
    times = StageTimes()
    start = time.perf_counter()
    t = time.perf_counter()
    obs = sim.reset(spec.task, spec.variation, spec.seed)
    times.render += time.perf_counter() - t
    text = table.for_episode(spec.task, obs.instruction)
    success, status, message, steps, planner_errors = False, "ok", "", 0, 0
    sim_steps, success_step = 0, None
    recorder = None
    if record_camera is not None:
        from evaluation.runtime.video import Recorder

        recorder = Recorder(spec.task, record_camera)
    previous: list[np.ndarray] = []  # gripper poses at the keyposes made so far (policies with history)
    for k in range(max_keyposes):
        t = time.perf_counter()
        condition = condition_fn(obs, text, previous[-MAX_HISTORY:])
        t2 = time.perf_counter()
        pose = infer(condition, row_seed(spec.seed, k))
        t3 = time.perf_counter()
        times.preprocess += t2 - t
        times.policy += t3 - t2
        if recorder is not None:
            recorder.keypose(k, obs, pose)
        try:
            outcome = sim.step_keypose(pose)
        except PlannerError as exc:
            times.sim += time.perf_counter() - t3
            steps = k + 1
            status, message = "planner_error", f"keypose {k}: {exc}"
            planner_errors += 1
            if on_planner_error == "end":
                break
            if k + 1 < max_keyposes:  # the scene is as it was: ask the policy again (new noise)
                t = time.perf_counter()
                obs = sim.observe()
                times.render += time.perf_counter() - t
            continue
        times.sim += time.perf_counter() - t3
        sim_steps += outcome.sim_steps
        previous.append(np.asarray(obs.gripper_pose))  # a planner error moved nothing: not a keypose made
        steps = k + 1
        if outcome.success:
            success, status, success_step = True, "ok", outcome.success_step
            if planner_errors:
                message = f"succeeded after {planner_errors} planner error(s); last: {message}"
            break
        if k + 1 < max_keyposes:
            t = time.perf_counter()
            obs = sim.observe()
            times.render += time.perf_counter() - t
    else:
        limit = f"keypose limit {max_keyposes} reached"
        message = (
            f"{limit} after {planner_errors} planner error(s); last: {message}" if planner_errors else limit
        )
    if recorder is not None:
        try:
            recorder.end(sim.observe(), success, steps)
        except SimulatorError:  # the video ends without its last frame; the episode's result stands
            pass
    result = EpisodeResult(
        task=spec.task,
        variation=spec.variation,
        seed=spec.seed,
        success=success,
        steps=steps,
        status=status,  # type: ignore[arg-type]
        message=message,
        wall_s=time.perf_counter() - start,
        sim_steps=sim_steps,
        success_step=success_step,
    )
    return EpisodeOutput(result=result, times=times, frames=None if recorder is None else recorder.frames)
