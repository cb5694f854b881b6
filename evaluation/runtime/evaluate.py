"""Evaluation entry points: plan (task, variation, seed) episodes, run them on a ``Coordinator`` pool and
summarise them into an ``EvalReport``. ``evaluate_checkpoint`` is what training's periodic evaluation and
``python -m evaluation.run`` call; it works inside an existing Ray session and never shuts Ray down
(it starts, and then stops, a local Ray only when none is running).

Checkpoint inputs: the policy files of ``policies.base`` (``policy.json``, ``model.pt`` [+ ``ema.pt``]) and
``instructions.npz`` (``<task>/tokens`` (L, D) float32, ``<task>/mask`` (L,) bool; for datasets whose
variations differ by language also ``__texts__/strings`` (K,) str, ``__texts__/tokens`` (K, L, D) and
``__texts__/mask`` (K, L), one row per distinct instruction text); optionally ``pointcloud.json`` (an ``evaluation.pointcloud.PointCloudConfig``, as used to build the training set).
"""

from __future__ import annotations

import dataclasses
import functools
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import ray

from evaluation.checkpoint_format import CheckpointBundle, Instruction, Instructions
from evaluation.pointcloud import ConditionFn
from evaluation.raysession import ray_session
from evaluation.runtime.actors import BundlePolicy, SimFactory
from evaluation.runtime.coordinator import Coordinator, PoolConfig
from evaluation.runtime.episode import EpisodeSpec
from evaluation.runtime.metrics import EvalReport, seed_success, summarize
from evaluation.runtime.policy_server import PolicyFactory
from evaluation.simulators.rendering import RenderConfig
from policies.base import CheckpointError


def episode_seed(seed: int, task: str, index: int) -> int:
    """Seed of episode ``index`` of ``task`` in an evaluation seeded ``seed`` (stable across processes)."""
    state = np.random.SeedSequence([seed, zlib.crc32(task.encode()), index]).generate_state(1)
    return int(state[0]) & 0x7FFFFFFF


def plan_episodes(
    tasks: Sequence[str], episodes_per_task: int, seed: int, variations: Sequence[int]
) -> list[EpisodeSpec]:
    """``episodes_per_task`` episodes per task, cycling through ``variations`` (the test split)."""
    if episodes_per_task < 1:
        raise ValueError(f"episodes_per_task must be >= 1, got {episodes_per_task}")
    if not variations:
        raise ValueError("variations is empty: pass the test variations of the benchmark")
    return [
        EpisodeSpec(task, int(variations[i % len(variations)]), episode_seed(seed, task, i))
        for task in tasks
        for i in range(episodes_per_task)
    ]


def evaluate(
    sim_factory: SimFactory,
    policy_factory: PolicyFactory,
    instructions: Instructions | Mapping[str, Instruction],
    specs: list[EpisodeSpec],
    condition_fn: ConditionFn,
    pool: PoolConfig,
    meta: dict[str, Any] | None = None,
    video_dir: Path | None = None,
) -> EvalReport:
    """Run ``specs`` on a fresh pool (needs a Ray session) and summarise; the pool is always shut down.

    With ``pool.videos``, the rollout videos (``evaluation.runtime.video``) go to ``video_dir`` and their file names
    to the report's ``info["videos"]``."""
    instructions = Instructions.of(instructions)
    missing = sorted({s.task for s in specs} - set(instructions.tasks))
    if missing:
        raise CheckpointError(
            f"no instruction embeddings for tasks {missing}; have {sorted(instructions.tasks)}"
        )
    start = time.monotonic()
    coordinator = Coordinator(sim_factory, policy_factory, instructions, condition_fn, pool)
    try:
        coordinator.start()
        outputs = coordinator.run(specs)
        server = coordinator.server_stats()
    finally:
        coordinator.shutdown()
    videos: list[str] = []
    if pool.videos and video_dir is not None and coordinator.videos:
        from evaluation.runtime.video import write_videos

        videos = write_videos(coordinator.videos, video_dir)
    stats = coordinator.stats
    info = {
        **(meta or {}),
        "num_actors": pool.num_actors,
        "policy_server": server is not None,
        "max_keyposes": pool.max_keyposes,
        **({"max_keyposes_per_task": dict(pool.max_keyposes_per_task)} if pool.max_keyposes_per_task else {}),
        "on_planner_error": pool.on_planner_error,
    }
    if server is not None:
        info["server"] = server
    if videos:
        info["video_dir"], info["videos"] = str(video_dir), videos
    return summarize(
        outputs, time.monotonic() - start, stats.retries, stats.actor_restarts, stats.failures, info
    )


def metaworld_factory(suite: str, render: RenderConfig | None = None) -> SimFactory:
    """Meta-World simulators of ``suite`` rendering with ``render`` (``RenderConfig()`` by default; for a checkpoint,
    ``CheckpointBundle.render_config()``: the image size and cameras of its training set, the arm hidden or not)."""
    from evaluation.simulators.metaworld_backend import MetaWorldConfig, MetaWorldSimulator

    config = MetaWorldConfig(suite=suite, render=render or RenderConfig())  # type: ignore[arg-type]
    return functools.partial(MetaWorldSimulator, config)


def metaworld_test_variations() -> tuple[int, ...]:
    from evaluation.simulators.metaworld_backend import variations

    return variations("test")


def evaluate_checkpoint(
    checkpoint: str | Path | CheckpointBundle,
    tasks: Sequence[str] | None = None,
    episodes_per_task: int = 25,
    num_actors: int = 2,
    seed: int | Sequence[int] = 0,
    suite: str = "mt10",
    sim_factory: SimFactory | None = None,
    variations: Sequence[int] | None = None,
    instructions: Instructions | Mapping[str, Instruction] | None = None,
    pool: PoolConfig | None = None,
    video_dir: str | Path | None = None,
    policy_factory: PolicyFactory | None = None,
) -> EvalReport:
    """Evaluate a checkpoint (a directory, read here, or a ``CheckpointBundle`` read elsewhere) on ``tasks`` (default: every task of ``suite``) with ``num_actors``.

    Defaults to the Meta-World backend (rendering as the checkpoint's training set was collected: image size,
    cameras, the robot's arm hidden or not) and its test variations (disjoint from the training variations).
    The episode plan depends only on (tasks, episodes_per_task, seed, variations), so two evaluations of
    the same checkpoint give the same numbers. ``seed`` may be a list (RLBench's protocol: 3 seeds): every
    seed plans its own ``episodes_per_task`` episodes per task, all run on one pool, and the report's
    ``seed_success`` holds each seed's mean. ``pool`` overrides the pool settings (its ``num_actors``
    is replaced by ``num_actors``). With ``pool.videos``, rollout videos are written to ``video_dir``.
    ``instructions`` replace the checkpoint's own. The actors and the policy server get the checkpoint through
    Ray's object store (``evaluation.checkpoint_format``): they never open its directory. ``policy_factory`` replaces the bundle's policy
    (tests and benchmarks with fake policies).
    """
    if isinstance(checkpoint, CheckpointBundle):
        bundle = checkpoint
        if instructions is not None:
            bundle = dataclasses.replace(bundle, instructions=Instructions.of(instructions))
    else:
        bundle = CheckpointBundle.read(
            checkpoint, instructions=None if instructions is None else Instructions.of(instructions)
        )
    if sim_factory is None:  # rendered as the policy's training clouds were
        sim_factory = metaworld_factory(suite, bundle.render_config())
    if tasks is None:
        from evaluation.simulators.metaworld_backend import suite_task_names

        tasks = suite_task_names(suite)  # type: ignore[arg-type]
    if variations is None:
        variations = metaworld_test_variations()
    pool = (pool or PoolConfig()).model_copy(update={"num_actors": num_actors})
    PoolConfig.model_validate(pool.model_dump())  # re-check the updated fields
    seeds = [int(seed)] if isinstance(seed, int) else [int(s) for s in seed]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seed must be an int or a list of distinct ints, got {seed!r}")
    specs, spec_seeds = [], []
    for s in seeds:
        planned = plan_episodes(list(tasks), episodes_per_task, s, variations)
        specs += planned
        spec_seeds += [s] * len(planned)
    meta = {
        "checkpoint": bundle.source,
        "suite": suite,
        "seed": seeds[0] if len(seeds) == 1 else seeds,
        "episodes_per_task": episodes_per_task,
    }
    with ray_session():
        # Once: every actor (or the server) reads the same object.
        factory = policy_factory or BundlePolicy(ray.put(bundle))
        report = evaluate(
            sim_factory,
            factory,
            bundle.instructions,
            specs,
            bundle.condition_fn(),
            pool,
            meta,
            None if video_dir is None else Path(video_dir),
        )
    if len(seeds) == 1:
        return report
    return report.model_copy(update={"seed_success": seed_success(report, spec_seeds)})
