"""Command line of ``python -m evaluation.collect``: collect, ``--verify`` (replay check), ``--preview``."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evaluation.datasets.collect import DEFAULT_OUT, CollectError, collect_dataset
from evaluation.datasets.demos import AIMED_TASKS
from evaluation.datasets.keyframes import KeyframeConfig
from evaluation.datasets.text import TextEncoderConfig
from evaluation.files import atomic_write_json
from evaluation.pointcloud import PointCloudConfig
from evaluation.simulators.rendering import RenderConfig
from evaluation.simulators.sim import UnknownTaskError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.collect",
        description="Meta-World keyframe dataset from scripted experts (headless MuJoCo).",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--verify", action="store_true", help="replay each episode's keyposes through the controller"
    )
    mode.add_argument(
        "--preview", metavar="TASK", help="write PNGs of the camera views and the fused point cloud"
    )
    p.add_argument("--suite", default="mt10", choices=["mt10", "mt50"])
    p.add_argument("--tasks", nargs="+", default=None, help="subset of the suite's tasks (default: all)")
    p.add_argument("--episodes-per-task", type=int, default=20)
    p.add_argument(
        "--out", default=None, help="dataset directory (default data/metaworld_mt10; previews/ for --preview)"
    )
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--observe",
        default="expert",
        choices=["expert", "replay"],
        help="what each sample observes: the expert's state at the previous keyframe, or the state the keypose "
        "controller reaches replaying the keyframes (what a policy sees; docs/metaworld.md)",
    )
    p.add_argument(
        "--recoveries",
        type=int,
        default=0,
        help="with --observe replay: recovery samples per grasp (the grasp sent 3-6 cm beside its target, "
        "observed, labelled with a return to where it started, open; docs/metaworld.md); default 0",
    )
    p.add_argument(
        "--aim-goal",
        action="store_true",
        help="aim the keypose that completes a demonstration at the goal, for the tasks whose expert stops at the "
        f"edge of the success radius ({', '.join(t.removesuffix('-v3') for t in AIMED_TASKS)}; docs/metaworld.md)",
    )
    p.add_argument(
        "--surface-fraction",
        type=float,
        default=0.0,
        help="drop a horizontal surface above the table that holds at least this fraction of a point cloud's "
        "voxels (a fixture's top, e.g. hand-insert's box with a hole); 0 = off (docs/metaworld.md)",
    )
    p.add_argument(
        "--hide-arm",
        action="store_true",
        help="the cameras do not see the robot's links above its gripper (about 45 %% of a scene's voxels); "
        "policies trained on the dataset are evaluated so (docs/metaworld.md)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--executor", default="process", choices=["process", "ray"])
    p.add_argument("--image-size", type=int, default=128, help="square camera images (pixels)")
    p.add_argument("--text-encoder", default="minilm", choices=["minilm", "clip", "auto"])
    p.add_argument("--clip-path", default=None, help="directory of a saved CLIPTextModel + CLIPTokenizer")
    p.add_argument("--variation", type=int, default=0, help="--preview: which variation")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evaluation.collect``."""
    return run_cli(build_parser().parse_args(argv))


def run_cli(args: argparse.Namespace) -> int:
    from evaluation.datasets.dataset import DatasetError
    from evaluation.simulators.rendering import GLBackendError

    try:
        if args.preview:
            from evaluation.datasets.preview import write_preview

            out = Path(args.out or "previews")
            paths = write_preview(
                args.preview,
                out,
                suite=args.suite,
                variation=args.variation,
                render=RenderConfig(width=args.image_size, height=args.image_size, hide_arm=args.hide_arm),
            )
            for path in paths:
                print(path)
            return 0
        out = Path(args.out or DEFAULT_OUT)
        if args.verify:
            report = verify_dataset(
                out, workers=args.workers, executor=args.executor, progress=not args.no_progress
            )
            print_verify(report)
            return 0 if report["success_rate"] >= 0.95 else 1
        manifest = collect_dataset(
            suite=args.suite,
            tasks=args.tasks,
            episodes_per_task=args.episodes_per_task,
            out=out,
            workers=args.workers,
            seed=args.seed,
            render=RenderConfig(width=args.image_size, height=args.image_size),
            pointcloud=PointCloudConfig(surface_fraction=args.surface_fraction, hide_arm=args.hide_arm),
            keyframes=KeyframeConfig(
                observe=args.observe, recoveries=args.recoveries, aim_goal=args.aim_goal
            ),
            text_encoder=TextEncoderConfig(kind=args.text_encoder, path=args.clip_path),
            executor=args.executor,
            progress=not args.no_progress,
        )
        stats = json.loads((out / "collection_stats.json").read_text())
        print(
            f"[collect] {out}: {len(manifest['tasks'])} tasks, "
            f"{sum(c['episodes'] for c in manifest['counts'].values())} episodes, "
            f"{manifest['total_samples']} samples; this run: {stats['episodes_written_this_time']} episodes in "
            f"{stats['collect_wall_s']:.1f} s ({stats['episodes_per_s']:.2f} episodes/s), "
            f"worker time {stats['worker_time_s']}"
        )
        return 0
    except (UnknownTaskError, CollectError, DatasetError, GLBackendError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def verify_dataset(
    out: Path, workers: int = 2, executor: str = "process", progress: bool = True
) -> dict[str, Any]:
    """Replay every episode of a dataset through the keypose controller; per-task success.

    Writes ``<out>/verify.json`` and returns the same report.
    """
    import pyarrow.parquet as pq

    from evaluation.datasets.collect_jobs import ReplayJob, replay_job
    from evaluation.datasets.dataset import RECOVERY_FRAME, KeyframeDataset
    from evaluation.datasets.parallel import run_pool
    from evaluation.simulators.metaworld_backend import MetaWorldConfig

    ds = KeyframeDataset(out)  # validates every file first
    manifest = ds.manifest
    sim_cfg = MetaWorldConfig(
        suite=manifest["suite"], benchmark_seed=manifest["benchmark_seed"], controller=manifest["controller"]
    ).model_dump(mode="json")
    jobs = []
    for shard in manifest["shards"]:
        table = pq.read_table(out / shard["file"], columns=["frame", "target_pose"]).to_pydict()
        keyframes = [i for i, f in enumerate(table["frame"]) if f < RECOVERY_FRAME]  # not the recoveries
        order = sorted(keyframes, key=lambda i: table["frame"][i])
        targets = [list(table["target_pose"][i]) for i in order]
        jobs.append(ReplayJob(shard["task"], shard["variation"], manifest["seed"], sim_cfg, targets))
    from evaluation.datasets.collect_jobs import close_simulators

    try:
        results = run_pool(replay_job, jobs, workers, executor, "verify", progress)
    finally:
        close_simulators()
    per_task: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        per_task[r["task"]].append(r["success"])
    report = {
        "dataset": str(out),
        "episodes": len(results),
        "success_rate": sum(r["success"] for r in results) / max(1, len(results)),
        "per_task": {t: {"episodes": len(v), "success_rate": sum(v) / len(v)} for t, v in per_task.items()},
        "failures": [r for r in results if not r["success"]],
    }
    atomic_write_json(out / "verify.json", report)
    return report


def print_verify(report: dict[str, Any]) -> None:
    print(
        f"[verify] {report['dataset']}: replay success {100 * report['success_rate']:.1f} % "
        f"of {report['episodes']} episodes"
    )
    for task, row in report["per_task"].items():
        print(f"  {task:28s} {100 * row['success_rate']:6.1f} %  ({row['episodes']} episodes)")
    for f in report["failures"]:
        print(
            f"  failed: {f['task']} variation {f['variation']} ({f['reached']}/{f['keyposes']} keyposes reached)"
        )
