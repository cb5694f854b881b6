"""Meta-World as the robot: scripted-expert episodes written as recorded episodes (``evaluation.datasets.episodes``),
every frame with every camera, as a robot's logger would write them. What ``import_episodes`` reads back is then
the test of the robot loop (docs/importing.md)::

    python -m evaluation.export_episodes --tasks reach-v3 push-v3 --episodes-per-task 5 --out recordings/

Episode ``n`` of a task is the expert's rollout of training variation ``n`` (``TRAIN_VARIATIONS``), with the
collection's seed rule, so an export is deterministic. Tasks whose demonstrations come from a keypose-level
expert (``keypose_experts.KEYPOSE_EXPERTS``) have no per-step trajectory to record and are refused.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evaluation.datasets.demos import run_expert
from evaluation.datasets.episodes import EPISODE_FILE, CameraRecording, write_episode
from evaluation.datasets.keypose_experts import KEYPOSE_EXPERTS
from evaluation.simulators.instructions import instruction_for
from evaluation.simulators.metaworld_backend import (
    TRAIN_VARIATIONS,
    MetaWorldConfig,
    MetaWorldSimulator,
    check_task,
    suite_task_names,
)


def export_episode(sim: MetaWorldSimulator, task: str, variation: int, seed: int, path: Path) -> int:
    """Roll the expert out and write every frame; returns the number of frames (an existing episode is kept)."""
    if (path / EPISODE_FILE).is_file():
        return 0
    traj = run_expert(sim, task, variation, seed)
    if not traj.success:
        raise RuntimeError(f"the scripted expert failed {task} variation {variation}: nothing to export")
    recordings: dict[str, CameraRecording] = {}
    for state in traj.states:
        sim.set_state(state)
        for frame in sim._renderer().render(sim.env.data):
            cam = recordings.setdefault(
                frame.name, CameraRecording(frame.intrinsics, frame.extrinsics, [], [])
            )
            cam.rgb.append(frame.rgb)
            cam.depth.append(frame.depth)
    gripper = np.concatenate(
        [traj.tcp, traj.quat, traj.grip_open[:, None].astype(np.float64)], axis=1
    )  # (T+1, 8)
    write_episode(path, instruction_for(task), gripper, recordings)
    return len(gripper)


def export_episodes(
    tasks: Sequence[str],
    episodes_per_task: int,
    out: str | Path,
    seed: int = 0,
    sim: MetaWorldConfig | None = None,
    log=print,
) -> list[Path]:
    """Export ``episodes_per_task`` expert episodes of each task under ``out/<task>/ep<NNNN>/``."""
    names = list(tasks)
    for task in names:
        check_task(task, suite_task_names("mt50"), "mt50")
    refused = [t for t in names if t in KEYPOSE_EXPERTS]
    if refused:
        raise ValueError(
            f"{refused} have keypose-level experts (no per-step trajectory to record): export other tasks"
        )
    if episodes_per_task > len(TRAIN_VARIATIONS):
        raise ValueError(
            f"--episodes-per-task {episodes_per_task}: Meta-World has {len(TRAIN_VARIATIONS)} training "
            "variations per task"
        )
    simulator = MetaWorldSimulator(sim or MetaWorldConfig())
    paths, start = [], time.perf_counter()
    try:
        for task in names:
            for n, variation in enumerate(TRAIN_VARIATIONS[:episodes_per_task]):
                path = Path(out) / task / f"ep{n:04d}"
                frames = export_episode(simulator, task, variation, seed, path)
                paths.append(path)
                log(
                    f"[export] {task} episode {n}: {frames or 'kept'} frames ({time.perf_counter() - start:.0f} s)"
                )
    finally:
        simulator.close()
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m evaluation.export_episodes", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--tasks", nargs="+", required=True, help="Meta-World tasks, e.g. reach-v3 push-v3")
    p.add_argument("--episodes-per-task", type=int, default=2)
    p.add_argument(
        "--out", required=True, help="folder of recorded episodes to write (<out>/<task>/<episode>/)"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        paths = export_episodes(args.tasks, args.episodes_per_task, args.out, args.seed)
    except (ValueError, RuntimeError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"[export] {len(paths)} episodes under {args.out}; import them with python -m evaluation.import_episodes "
        f"--root {args.out} --out <dataset>"
    )
    return 0
