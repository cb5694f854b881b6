"""Work done in collection worker processes (or Ray pool workers): one (task, variation) per job.

Each worker process keeps one ``MetaWorldSimulator`` (GL context, envs and render contexts per task)
for all the jobs it runs. Jobs are pure functions of their arguments, so results do not depend on
which worker runs them or in which order (determinism).
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.datasets.dataset import samples_table, write_table
from evaluation.datasets.demos import (
    EpisodeTimes,
    KeyposeRollout,
    Recovery,
    Trajectory,
    episode_samples,
    keypose_samples,
    plan_keyframes,
    recovery_observations,
    run_expert,
)
from evaluation.datasets.keyframes import Keyframe, KeyframeConfig
from evaluation.datasets.keypose_experts import KEYPOSE_EXPERTS, run_keypose_expert
from evaluation.files import atomic_write_bytes
from evaluation.pointcloud import PointCloudConfig
from evaluation.simulators.instructions import instruction_for
from evaluation.simulators.metaworld_backend import MetaWorldConfig, MetaWorldSimulator

_SIM: dict[str, Any] = {}
EXPERT_FAILED = "expert failed"
KEYFRAME_RUNG = "keyframe_rung"  # shard metadata key: the refinement rung its keyframes needed (0 = none)


def shard_path(root: Path, task: str, variation: int) -> Path:
    return root / "shards" / task / f"var{variation:02d}.parquet"


def failure_path(root: Path, task: str, variation: int) -> Path:
    return root / "shards" / task / f"var{variation:02d}.failed.json"


@dataclass(frozen=True)
class CollectJob:
    root: str
    task: str
    variation: int
    seed: int
    sim: dict[str, Any]  # MetaWorldConfig as JSON
    pointcloud: dict[str, Any]
    keyframes: dict[str, Any]


@dataclass
class JobResult:
    task: str
    variation: int
    ok: bool
    samples: int = 0
    keyframes: int = 0
    steps: int = 0
    rung: int = 0
    message: str = ""
    times: dict[str, float] = field(default_factory=dict)
    pid: int = 0


def _simulator(sim_cfg: dict[str, Any]) -> tuple[MetaWorldSimulator, float]:
    """The process's simulator for this config (created once; returns its start-up time the first time)."""
    key = json.dumps(sim_cfg, sort_keys=True)
    if key in _SIM:
        return _SIM[key], 0.0
    start = time.perf_counter()
    close_simulators()
    _SIM[key] = MetaWorldSimulator(MetaWorldConfig.model_validate(sim_cfg))
    return _SIM[key], time.perf_counter() - start


def close_simulators() -> None:
    """Release this process's cached simulator (GL context, envs); the next job makes a new one."""
    for sim in _SIM.values():
        sim.close()
    _SIM.clear()


def _record_failure(job: CollectJob, reason: str, steps: int, times: dict[str, float]) -> JobResult:
    """A ``.failed.json`` marker (so a resumed collection does not retry the variation) and the result."""
    marker = {"task": job.task, "variation": job.variation, "reason": reason, "steps": steps}
    path = failure_path(Path(job.root), job.task, job.variation)
    atomic_write_bytes(path, (json.dumps(marker, sort_keys=True) + "\n").encode())
    return JobResult(
        job.task, job.variation, False, steps=steps, message=reason, times=times, pid=os.getpid()
    )


def collect_job(job: CollectJob) -> JobResult:
    """Roll out the expert for (task, variation), choose keyframes that replay, render them, write the
    shard atomically (its Parquet metadata records the refinement rung, ``KEYFRAME_RUNG``; -1 = none
    replays).

    An expert failure writes a small ``.failed.json`` marker instead and returns ``ok=False``.
    """
    if job.task in KEYPOSE_EXPERTS:
        return _collect_keypose_job(job)
    sim, startup_s = _simulator(job.sim)
    times = EpisodeTimes()
    t0 = time.perf_counter()
    traj = run_expert(sim, job.task, job.variation, job.seed)
    times.physics_s = traj.physics_s
    steps = len(traj.tcp) - 1
    if not traj.success:
        return _record_failure(
            job, EXPERT_FAILED, steps, {"physics_s": times.physics_s, "startup_s": startup_s}
        )
    t_replay = time.perf_counter()
    kf_cfg = KeyframeConfig.model_validate(job.keyframes)
    plan = plan_keyframes(sim, traj, kf_cfg)
    replay_s = time.perf_counter() - t_replay
    if kf_cfg.observe == "replay" and plan.replay is not None:  # observations from the replay, to its success
        recoveries: list[Recovery] = []
        if kf_cfg.recoveries:
            t_rec = time.perf_counter()
            rng = np.random.default_rng([job.seed, job.variation, zlib.crc32(job.task.encode())])
            recoveries = recovery_observations(sim, plan.replay, kf_cfg.recoveries, rng)
            times.extra["recovery_s"] = time.perf_counter() - t_rec
        return _write_shard(
            job, sim, plan.replay, plan.rung, steps, times, startup_s, replay_s, t0, recoveries=recoveries
        )
    return _write_shard(job, sim, plan.keyframes, plan.rung, steps, times, startup_s, replay_s, t0, traj=traj)


def _collect_keypose_job(job: CollectJob) -> JobResult:
    """``collect_job`` for a task with a keypose-level expert (``keypose_experts.py``): rolled out through
    the keypose controller, so there is nothing to detect or refine (rung 0)."""
    sim, startup_s = _simulator(job.sim)
    times = EpisodeTimes()
    t0 = time.perf_counter()
    rollout = run_keypose_expert(sim, job.task, job.variation, job.seed)
    times.physics_s = rollout.physics_s
    steps = sim.episode_steps
    if not rollout.success:
        failed_times = {"physics_s": times.physics_s, "startup_s": startup_s}
        return _record_failure(job, EXPERT_FAILED, steps, failed_times)
    return _write_shard(job, sim, rollout, 0, steps, times, startup_s, 0.0, t0)


def _write_shard(
    job: CollectJob,
    sim: MetaWorldSimulator,
    plan: list[Keyframe] | KeyposeRollout,
    rung: int,
    steps: int,
    times: EpisodeTimes,
    startup_s: float,
    replay_s: float,
    t0: float,
    traj: Trajectory | None = None,
    recoveries: Sequence[Recovery] = (),
) -> JobResult:
    """Render the observations, write the shard (rung in its metadata) atomically, and time the job.
    ``plan``: the keyframes of ``traj`` (a Meta-World expert, observed on its trajectory), or a
    ``KeyposeRollout`` (a keypose expert's, or the replay of an expert's keyframes)."""
    t_ctx = time.perf_counter()
    sim._renderer()  # the task's render context, if new: start-up cost, not per-frame rendering
    context_s = time.perf_counter() - t_ctx
    pc_cfg = PointCloudConfig.model_validate(job.pointcloud)
    if isinstance(plan, KeyposeRollout):
        samples = keypose_samples(sim, plan, job.variation, pc_cfg, times, recoveries)
    else:
        assert traj is not None, "expert keyframes are observed on the expert's trajectory"
        samples = episode_samples(sim, traj, job.variation, pc_cfg, plan, times)
    t_write = time.perf_counter()
    table = samples_table(samples, instruction_for(job.task))
    table = table.replace_schema_metadata({KEYFRAME_RUNG: str(rung)})
    write_table(table, shard_path(Path(job.root), job.task, job.variation))
    write_s = time.perf_counter() - t_write
    return JobResult(
        task=job.task,
        variation=job.variation,
        ok=True,
        samples=len(samples),
        keyframes=len(samples),
        steps=steps,
        rung=rung,
        times={
            "startup_s": startup_s + context_s,
            "physics_s": times.physics_s,
            "replay_s": replay_s,
            "render_s": times.render_s,
            "points_s": times.points_s,
            "write_s": write_s,
            **times.extra,
            "job_s": time.perf_counter() - t0 + startup_s,
        },
        pid=os.getpid(),
    )


@dataclass(frozen=True)
class ReplayJob:
    task: str
    variation: int
    seed: int
    sim: dict[str, Any]
    targets: list[list[float]]  # the episode's keyposes in order, (K, 8)


def replay_job(job: ReplayJob) -> dict[str, Any]:
    """Drive a fresh episode through the stored keyposes with the keypose controller."""
    sim, _ = _simulator(job.sim)
    start = time.perf_counter()
    sim.reset_state(job.task, job.variation, job.seed)
    reached = steps = 0
    success = False
    for target in job.targets:
        outcome = sim.step_keypose(np.asarray(target, np.float64))
        reached += int(outcome.reached)
        steps += outcome.sim_steps
        success = outcome.success
        if success:
            break
    return {
        "task": job.task,
        "variation": job.variation,
        "success": bool(success),
        "keyposes": len(job.targets),
        "reached": reached,
        "sim_steps": steps,
        "wall_s": time.perf_counter() - start,
    }
