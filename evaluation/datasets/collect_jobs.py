"""Work done in collection worker processes (or Ray pool workers): one (task, variation) per job.

Each worker process keeps one ``MetaWorldSimulator`` (GL context, envs and render contexts per task)
for all the jobs it runs. Jobs are pure functions of their arguments, so results do not depend on
which worker runs them or in which order (determinism).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluation.datasets.dataset import samples_table, write_table
from evaluation.datasets.demos import EpisodeTimes, episode_samples, run_expert
from evaluation.datasets.keyframes import KeyframeConfig
from evaluation.pointcloud import PointCloudConfig
from evaluation.simulators.instructions import instruction_for
from evaluation.simulators.metaworld_backend import MetaWorldConfig, MetaWorldSimulator

_SIM: dict[str, Any] = {}


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


def collect_job(job: CollectJob) -> JobResult:
    """Roll out the expert for (task, variation), render its keyframes, write the shard atomically.

    An expert failure writes a small ``.failed.json`` marker instead (so a resumed collection does not
    retry it) and returns ``ok=False``.
    """
    root = Path(job.root)
    sim, startup_s = _simulator(job.sim)
    times = EpisodeTimes()
    t0 = time.perf_counter()
    traj = run_expert(sim, job.task, job.variation, job.seed)
    times.physics_s = traj.physics_s
    first_render = job.task not in sim._renderers
    if not traj.success:
        marker = {
            "task": job.task,
            "variation": job.variation,
            "reason": "expert failed",
            "steps": len(traj.tcp) - 1,
        }
        failure_path(root, job.task, job.variation).parent.mkdir(parents=True, exist_ok=True)
        failure_path(root, job.task, job.variation).write_text(json.dumps(marker, sort_keys=True) + "\n")
        return JobResult(
            job.task,
            job.variation,
            False,
            steps=len(traj.tcp) - 1,
            message="expert failed",
            times={"physics_s": times.physics_s, "startup_s": startup_s},
            pid=os.getpid(),
        )
    pc_cfg = PointCloudConfig.model_validate(job.pointcloud)
    kf_cfg = KeyframeConfig.model_validate(job.keyframes)
    t_ctx = time.perf_counter()
    if first_render:
        sim._renderer()  # render context of this task's model: start-up cost, not per-frame rendering
    context_s = time.perf_counter() - t_ctx
    samples = episode_samples(sim, traj, job.variation, pc_cfg, kf_cfg, times)
    t_write = time.perf_counter()
    write_table(samples_table(samples, instruction_for(job.task)), shard_path(root, job.task, job.variation))
    write_s = time.perf_counter() - t_write
    return JobResult(
        task=job.task,
        variation=job.variation,
        ok=True,
        samples=len(samples),
        keyframes=len(samples),
        steps=len(traj.tcp) - 1,
        times={
            "startup_s": startup_s + context_s,
            "physics_s": times.physics_s,
            "render_s": times.render_s,
            "points_s": times.points_s,
            "write_s": write_s,
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
    import numpy as np

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
