"""Scripted-expert demonstrations: roll out, find keyframes, render only the keyframe observations.

``run_expert`` steps a ``metaworld.policies`` expert without rendering and keeps a full-physics state
snapshot per step (cheap). ``plan_keyframes`` finds the keyframes and replays them through the keypose
controller in a fresh episode; when they do not solve the task it tries the denser rungs of
``keyframes.REFINEMENTS`` and keeps the first that does (when none does, the sparsest: a demonstration
is never dropped for it, and the dataset's manifest lists it).
``episode_samples`` restores the snapshots at the observation frames, renders them once each, and
builds the (observation -> next keypose) samples. ``recovery_observations`` branches a replay at each held grasp
into a missed grasp and the two steps back (``KeyframeConfig.recoveries``).

Where the observations come from (``KeyframeConfig.observe``): the expert trajectory's states at the previous
keyframe (``"expert"``), or the states the keypose controller reaches while it replays the keyframes
(``"replay"``: ``keypose_samples`` of the replay ``plan_keyframes`` ran; what a policy sees at evaluation, and
only up to the keyframe after which the replay reports success). The two differ most where the expert pushes
an object along a path that straight keypose moves do not follow: in soccer-v3 the replay scores after 11 of 46
keyframes per episode (3 episodes) while the expert is still dribbling, and the ball is 37 cm from where the
expert had it at the 90th percentile of keyframes (docs/metaworld.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, NamedTuple

import numpy as np

from evaluation.datasets.dataset import KeyframeSample, recovery_frame
from evaluation.datasets.keyframes import Keyframe, KeyframeConfig, detect_keyframes, refinement_ladder
from evaluation.pointcloud import PointCloudConfig, frames_to_points
from evaluation.simulators.metaworld_backend import FIXED_QUAT_XYZW, MetaWorldSimulator


class ExpertError(RuntimeError):
    """The scripted expert did not solve the episode (it is skipped, and counted, by collection)."""


NO_RUNG = -1  # plan_keyframes: no rung replays (the config's own keyframes are kept)


@dataclass
class Trajectory:
    task: str
    variation: int
    seed: int
    tcp: np.ndarray  # (T+1, 3) TCP positions, index 0 = reset state
    grip_open: np.ndarray  # (T+1,) bool, command applied at step t (index 0: open at reset)
    quat: np.ndarray  # (T+1, 4) hand orientation xyzw
    grip_dist: np.ndarray  # (T+1,) finger opening in [0, 1]
    objects: np.ndarray  # (T+1, K) the task's object positions (Meta-World's ``_get_pos_objects``)
    states: list[np.ndarray]  # T+1 full-physics snapshots
    success: bool
    physics_s: float = 0.0


@dataclass
class EpisodeTimes:
    physics_s: float = 0.0
    render_s: float = 0.0
    points_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)


def expert_for(task: str):
    """A fresh ``metaworld.policies`` scripted expert of ``task``."""
    from metaworld.policies import ENV_POLICY_MAP

    return ENV_POLICY_MAP[task]()


def effort_is_open(effort: float) -> bool:
    """Binary gripper state of an expert's grab effort (+1 closes; <= 0 is open)."""
    return bool(effort <= 0.0)


def _objects(sim: MetaWorldSimulator) -> np.ndarray:
    return np.array(sim.env._get_pos_objects(), np.float64).reshape(-1)  # (K,)


def run_expert(
    sim: MetaWorldSimulator,
    task: str,
    variation: int,
    seed: int,
    max_steps: int = 500,
    settle_steps: int = 30,
) -> Trajectory:
    """Roll the expert out, recording the TCP path, gripper commands and a state snapshot per step.

    Runs until the first success, then up to ``settle_steps`` more steps while the task stays solved
    (the expert keeps converging; the first success is often at the edge of the success radius), and
    ends at the last solved step. ``max_steps`` bounds the steps before the first success.
    """
    start = time.perf_counter()
    sim.reset_state(task, variation, seed)
    expert = expert_for(task)
    tcp, grip, quat, states = [sim.tcp_position()], [True], [sim.gripper_pose()[3:7]], [sim.get_state()]
    dist = [float(sim.last_obs[3])]
    objects = [_objects(sim)]
    solved_at: int | None = None
    last_solved = 0
    while len(tcp) <= max_steps + settle_steps:
        if solved_at is None and len(tcp) > max_steps:
            break
        if solved_at is not None and len(tcp) > solved_at + settle_steps:
            break
        action = np.asarray(expert.get_action(sim.last_obs), np.float32)
        solved_now = sim.apply_action(action, sticky=False)
        tcp.append(sim.tcp_position())
        grip.append(effort_is_open(float(action[3])))
        quat.append(sim.gripper_pose()[3:7])
        dist.append(float(sim.last_obs[3]))
        objects.append(_objects(sim))
        states.append(sim.get_state())
        if solved_now:
            last_solved = len(tcp) - 1
            solved_at = last_solved if solved_at is None else solved_at
        elif solved_at is not None:
            break
    end = last_solved + 1 if solved_at is not None else len(tcp)
    return Trajectory(
        task=task,
        variation=variation,
        seed=seed,
        tcp=np.array(tcp[:end]),
        grip_open=np.array(grip[:end], bool),
        quat=np.array(quat[:end]),
        grip_dist=np.array(dist[:end]),
        objects=np.array(objects[:end]),
        states=states[:end],
        success=solved_at is not None,
        physics_s=time.perf_counter() - start,
    )


def keyframes_of(traj: Trajectory, cfg: KeyframeConfig) -> list[Keyframe]:
    return detect_keyframes(traj.tcp, traj.grip_open, cfg, grip_dist=traj.grip_dist, objects=traj.objects)


@dataclass
class KeyposeRollout:
    """Keyposes sent through the keypose controller in one episode, with what was observed before each."""

    task: str
    variation: int
    seed: int
    states: list[np.ndarray] = field(default_factory=list)  # (K) snapshots, state i = before keypose i
    grippers: list[np.ndarray] = field(default_factory=list)  # (K) current gripper poses (8,)
    targets: list[np.ndarray] = field(default_factory=list)  # (K) keyposes sent (8,)
    tcp_after: list[np.ndarray] = field(default_factory=list)  # (K) TCP position after each keypose (3,)
    objects_after: list[np.ndarray] = field(default_factory=list)  # (K) the task's objects then (n, 3)
    success: bool = False
    physics_s: float = 0.0

    def send(self, sim: MetaWorldSimulator, target: np.ndarray) -> bool:
        """Record the state and gripper pose, send ``target`` (8,), record where the TCP and the task's
        objects ended up; whether the task reports success."""
        self.states.append(sim.get_state())
        self.grippers.append(sim.gripper_pose().astype(np.float32))
        self.targets.append(np.asarray(target, np.float32))
        self.success = sim.step_keypose(np.asarray(target, np.float64)).success
        self.tcp_after.append(sim.tcp_position())
        self.objects_after.append(_objects(sim).reshape(-1, 3))
        return self.success


def replay(sim: MetaWorldSimulator, traj: Trajectory, keyframes: list[Keyframe]) -> KeyposeRollout:
    """Drive a fresh episode of ``traj``'s (task, variation) through ``keyframes`` with the keypose
    controller until the task reports success (what ``collect --verify`` checks on the stored dataset),
    recording what a policy would observe before each keypose (collection times the whole planning)."""
    sim.reset_state(traj.task, traj.variation, traj.seed)
    rollout = KeyposeRollout(traj.task, traj.variation, traj.seed)
    for kf in keyframes:
        if rollout.send(sim, keypose(traj, kf)):
            break
    return rollout


class KeyframePlan(NamedTuple):
    keyframes: list[Keyframe]
    rung: int  # 0 = the config's own keyframes; NO_RUNG = none replays
    replay: KeyposeRollout | None  # the successful replay of ``keyframes`` (None with NO_RUNG)


def plan_keyframes(sim: MetaWorldSimulator, traj: Trajectory, cfg: KeyframeConfig) -> KeyframePlan:
    """The sparsest keyframes of ``refinement_ladder(cfg)`` that replay, their rung (0 = ``cfg`` itself)
    and that replay (aimed at the goal with ``cfg.aim_goal``, ``aim_at_goal``); ``cfg``'s own keyframes,
    ``NO_RUNG`` and no replay when no rung replays."""
    ladder = refinement_ladder(cfg)
    for rung, rung_cfg in enumerate(ladder):
        keyframes = keyframes_of(traj, rung_cfg)
        rollout = replay(sim, traj, keyframes)
        if rollout.success:
            plan = KeyframePlan(keyframes, rung, rollout)
            return aim_at_goal(sim, traj, plan) if cfg.aim_goal and traj.task in AIMED_TASKS else plan
    return KeyframePlan(keyframes_of(traj, cfg), NO_RUNG, None)


# Tasks whose Meta-World expert stops at the edge of the success radius, and the point that must reach the goal.
# Final distance to the goal over 3 train variations (their expert rollouts, 2026-12-06) against Meta-World's
# threshold: reach 4.6-4.7 of 5 cm (its expert brings the hand, 4.6 cm above the TCP, to the goal), reach-wall
# 2.5-4.8 of 5, shelf-place 6.6-7.1 of 7, push-back 7.0-7.2 of 7, pick-place-wall 4.2-6.2 of 7, pick-place 4.4-4.6
# of 7 (push 1.0-2.8 of 5 and sweep 1.0-1.3 of 5, at 100 and 60-76 %, are not on the list). reach's policies
# land where its demonstrations do, 4-8 cm below the goal, and fail in 24-32 % of the episodes, always on the same
# high goals (docs/quality.md).
AIMED_TASKS: dict[str, Literal["tcp", "object"]] = {
    "reach-v3": "tcp",
    "reach-wall-v3": "tcp",
    "shelf-place-v3": "object",
    "push-back-v3": "object",
    "pick-place-wall-v3": "object",
    "pick-place-v3": "object",
}


def goal_offset(sim: MetaWorldSimulator, rollout: KeyposeRollout) -> np.ndarray:
    """(3,) from the task's ``AIMED_TASKS`` point to the task's goal: the last keypose of ``rollout`` itself (its
    TCP target), or where the object is after it."""
    point = rollout.targets[-1][:3] if AIMED_TASKS[rollout.task] == "tcp" else rollout.objects_after[-1][0]
    return sim.extras()["goal_pos"][:3] - point


def aim_at_goal(sim: MetaWorldSimulator, traj: Trajectory, plan: KeyframePlan) -> KeyframePlan:
    """``plan`` with the keyframe after which its replay succeeded moved by ``goal_offset`` (the keyframes
    after it dropped: the replay stops at success), when the moved keyframes replay and end nearer the goal;
    ``plan`` itself otherwise. ``sim`` must still hold the episode of ``plan.replay``."""
    assert plan.replay is not None, "only a plan that replays can be aimed"
    offset = goal_offset(sim, plan.replay)
    sent = len(plan.replay.targets)  # the replay stops at the keyframe that succeeds
    last = plan.keyframes[sent - 1]
    moved = replace(last, offset=tuple(float(x) for x in np.add(last.offset, offset)))
    keyframes = [*plan.keyframes[: sent - 1], moved]
    rollout = replay(sim, traj, keyframes)
    if rollout.success and np.linalg.norm(goal_offset(sim, rollout)) < np.linalg.norm(offset):
        return KeyframePlan(keyframes, plan.rung, rollout)
    return plan


class Recovery(NamedTuple):
    """One observed step of recovering from a missed grasp: the state and gripper pose, the keypose that
    follows, the grasp's keypose number and the step's number among the grasp's recoveries (0, 1: the first
    recovery's two steps; 2, 3: the second's; ...)."""

    state: np.ndarray
    gripper: np.ndarray  # (8,)
    target: np.ndarray  # (8,)
    grasp: int
    number: int


MISS_RADIUS_M = (0.03, 0.06)  # how far beside the grasp the fingers close: the policies' misses, 3-6 cm
MISS_LIFT_M = 0.02  # and up to this much higher (never lower: not into the table)
MISS_MOVED_M = 0.01  # a miss that moves an object more than this touched it: not a clean miss
MISS_TRIES = 4  # offsets tried per recovery before the grasp is left without one
HELD_MOVE_M = 0.03  # a grasp holds an object that then moves at least this far with the hand
HELD_SLIP_M = 0.015  # while staying this close to where it was in the hand
LIFT_M = 0.03  # the lift after a miss rises to where the grasp started, and at least this much


def branch(sim: MetaWorldSimulator, rollout: KeyposeRollout, i: int) -> None:
    """Put ``sim`` where ``rollout`` was before keypose ``i``: a fresh episode sent its first ``i`` keyposes.
    (Meta-World is deterministic; restoring a state snapshot would not restore the controller's gripper
    command and the episode's step count.)"""
    sim.reset_state(rollout.task, rollout.variation, rollout.seed)
    for target in rollout.targets[:i]:
        sim.step_keypose(np.asarray(target, np.float64))


def held_grasps(rollout: KeyposeRollout) -> list[int]:
    """Keypose numbers of ``rollout`` that close the gripper (after an open command) on an object that then
    moves with the hand while it stays closed: a real grasp, not a closed fist pressing or pushing."""
    tcp, objects = rollout.tcp_after, rollout.objects_after  # (K) after each keypose
    closes = lambda i: rollout.targets[i][7] < 0.5  # noqa: E731
    grasps = []
    for i in range(len(rollout.targets)):
        if not (rollout.grippers[i][7] >= 0.5 and closes(i)):
            continue
        j = i + 1  # the keyposes after the grasp while the gripper stays closed
        while j < len(rollout.targets) and closes(j):
            moved = np.linalg.norm(objects[j] - objects[i], axis=1)  # (n,) per object
            slip = np.linalg.norm((objects[j] - tcp[j]) - (objects[i] - tcp[i]), axis=1)
            if np.any((moved >= HELD_MOVE_M) & (slip < HELD_SLIP_M)):
                grasps.append(i)
                break
            j += 1
    return grasps


def recovery_observations(
    sim: MetaWorldSimulator, rollout: KeyposeRollout, per_grasp: int, rng: np.random.Generator
) -> list[Recovery]:
    """Up to ``per_grasp`` recoveries of each held grasp of a successful replay (``held_grasps``), two observed
    steps each.

    A recovery sends the grasp keypose ``MISS_RADIUS_M`` beside its target (random direction, up to
    ``MISS_LIFT_M`` higher), so that the fingers close on nothing, then lifts straight up to the height the grasp
    started from and opens (a slanted move back swept pick-place's puck away), then moves to where the grasp
    started. It is kept when no object moved by more than ``MISS_MOVED_M`` during the
    miss and the lift (a clean miss) and the episode still succeeds after the rest of the replay's keyposes.
    Steps: (after the miss -> the lift), (after the lift -> where the grasp started). Trained on, they show the
    policy what a missed grasp looks like and that another try follows, which demonstrations never show.
    """
    out = []
    for i in held_grasps(rollout):
        start = np.array([*rollout.grippers[i][:3], *FIXED_QUAT_XYZW, 1.0], np.float32)
        for k in range(per_grasp):
            for _ in range(MISS_TRIES):
                angle, radius = rng.uniform(0, 2 * np.pi), rng.uniform(*MISS_RADIUS_M)
                offset = (radius * np.cos(angle), radius * np.sin(angle), rng.uniform(0, MISS_LIFT_M))
                miss = np.asarray(rollout.targets[i], np.float64).copy()
                miss[:3] += offset
                branch(sim, rollout, i)
                before = _objects(sim)
                if sim.step_keypose(miss).success:
                    continue
                missed = (sim.get_state(), sim.gripper_pose().astype(np.float32))
                tcp = sim.tcp_position()
                lift = np.array(
                    [tcp[0], tcp[1], max(start[2], tcp[2] + LIFT_M), *FIXED_QUAT_XYZW, 1.0], np.float32
                )
                if sim.step_keypose(lift).success or np.max(np.abs(_objects(sim) - before)) > MISS_MOVED_M:
                    continue
                lifted = (sim.get_state(), sim.gripper_pose().astype(np.float32))
                if any(
                    sim.step_keypose(np.asarray(t, np.float64)).success for t in [start, *rollout.targets[i:]]
                ):
                    out.append(Recovery(*missed, lift, i, 2 * k))
                    out.append(Recovery(*lifted, start, i, 2 * k + 1))
                    break
    return out


def keypose(traj: Trajectory, kf: Keyframe) -> np.ndarray:
    """(8,) target pose of a keyframe: TCP xyz, orientation xyzw, gripper open.

    The orientation is Meta-World's fixed commanded one (the measured hand orientation wobbles by a
    few degrees under contact; the current gripper pose keeps the measured one, as at evaluation)."""
    return np.array([*(traj.tcp[kf.index] + kf.offset), *FIXED_QUAT_XYZW, float(kf.gripper_open)], np.float32)


def render_points(
    sim: MetaWorldSimulator, state: np.ndarray, pc_cfg: PointCloudConfig, times: EpisodeTimes
) -> np.ndarray:
    """Restore ``state``, render the cameras once and fuse them into the (N, 7) point cloud; times added."""
    sim.set_state(state)
    t0 = time.perf_counter()
    frames = sim._renderer().render(sim.env.data)
    t1 = time.perf_counter()
    points = frames_to_points(frames, pc_cfg)
    times.render_s += t1 - t0
    times.points_s += time.perf_counter() - t1
    return points


def episode_samples(
    sim: MetaWorldSimulator,
    traj: Trajectory,
    episode: int,
    pc_cfg: PointCloudConfig,
    keyframes: list[Keyframe],
    times: EpisodeTimes,
) -> list[KeyframeSample]:
    """Samples (observation at keyframe i-1 -> keypose i) of a successful trajectory."""
    if not traj.success:
        raise ExpertError(f"the expert failed {traj.task} variation {traj.variation}")
    observed = []
    for i, kf in enumerate(keyframes):
        obs_i = 0 if i == 0 else keyframes[i - 1].index
        gripper_open = True if i == 0 else keyframes[i - 1].gripper_open
        gripper = np.array([*traj.tcp[obs_i], *traj.quat[obs_i], float(gripper_open)], np.float32)
        observed.append((i, traj.states[obs_i], obs_i, gripper, keypose(traj, kf)))
    return _render_samples(sim, traj.task, traj.variation, episode, observed, pc_cfg, times)


def keypose_samples(
    sim: MetaWorldSimulator,
    rollout: KeyposeRollout,
    episode: int,
    pc_cfg: PointCloudConfig,
    times: EpisodeTimes,
    recoveries: Sequence[Recovery] = (),
) -> list[KeyframeSample]:
    """Samples (observation before keypose i -> keypose i) of a successful keypose rollout (a keypose
    expert's, or the replay of an expert's keyframes), then its ``recoveries`` (frame numbers from
    ``recovery_frame``; the state index is the grasp's keypose number)."""
    steps = zip(rollout.states, rollout.grippers, rollout.targets, strict=True)
    observed = [(i, state, i, gripper, target) for i, (state, gripper, target) in enumerate(steps)]
    observed += [
        (recovery_frame(r.grasp, r.number), r.state, r.grasp, r.gripper, r.target) for r in recoveries
    ]
    return _render_samples(sim, rollout.task, rollout.variation, episode, observed, pc_cfg, times)


def _render_samples(
    sim: MetaWorldSimulator,
    task: str,
    variation: int,
    episode: int,
    observed: list[tuple[int, np.ndarray, int, np.ndarray, np.ndarray]],
    pc_cfg: PointCloudConfig,
    times: EpisodeTimes,
) -> list[KeyframeSample]:
    """``observed``: per sample (frame number, state snapshot, its index, gripper pose (8,), keypose (8,)); each
    state is rendered once into the sample's point cloud."""
    return [
        KeyframeSample(
            task=task,
            variation=variation,
            episode=episode,
            frame=frame,
            state_index=state_index,
            points=render_points(sim, state, pc_cfg, times),
            gripper_pose=gripper,
            target_pose=target,
        )
        for frame, state, state_index, gripper, target in observed
    ]
