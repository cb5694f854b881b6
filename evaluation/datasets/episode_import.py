"""Your own demonstrations in: recorded episodes (``evaluation.datasets.episodes``) -> a keyframe dataset that
``platform.train`` trains on like a Meta-World collection (docs/importing.md)::

    python -m evaluation.import_episodes --root recordings/ --out data/my_robot

The same rules as Meta-World collection: keyframes from the gripper path and its open/closed state
(``evaluation.datasets.keyframes.detect_keyframes``: gripper events, near-still frames, turns, the last frame),
samples "observation at keyframe i-1 -> keypose i" (the first observed at frame 0), point clouds by
``evaluation.pointcloud.frames_to_points`` with one ``PointCloudConfig`` for the whole dataset, a manifest with
every file's sha256 written last. What a simulator gives collection and a recording does not, the importer
takes from the data: the workspace box and the table height are fitted (:func:`fit_workspace`) unless given,
and printed either way. Shards of finished episodes are kept, so a stopped import resumes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.datasets.dataset import (
    FORMAT,
    INSTRUCTIONS,
    SCHEMA_VERSION,
    STATS,
    VARIATION_INSTRUCTIONS,
    KeyframeSample,
    claim_import_dir,
    sample_fields,
    samples_table,
    write_instructions,
    write_manifest,
    write_table,
)
from evaluation.datasets.episodes import RecordedEpisode, list_episodes, read_episode
from evaluation.datasets.keyframes import KeyframeConfig, detect_keyframes
from evaluation.files import atomic_write_json, sha256_file
from evaluation.pointcloud import PointCloudConfig, frame_to_world, frames_to_points

SETTINGS = "import_settings.json"
SUITE = "recorded"  # manifest "suite" of an import (not a simulator: data.suite names the evaluation's)
POSE_LAYOUT = "[x, y, z, qx, qy, qz, qw, open], gripper (as recorded), world frame, metres"
# Fitting the workspace: the box around every episode's gripper path, widened by this much (objects are
# within reach of the path: the gripper touches them) and cut 5 cm below the fitted table top.
WORKSPACE_MARGIN_M = 0.15
BELOW_TABLE_M = 0.05
TABLE_BIN_M = 0.01  # the table is the most populated 1 cm height band of the first frames' points
FIT_EPISODES = 8  # episodes whose first frame the table height is fitted on


@dataclass(frozen=True)
class Workspace:
    low: tuple[float, float, float]
    high: tuple[float, float, float]
    table_height: float
    fitted: bool

    def describe(self) -> str:
        how = "fitted to the data" if self.fitted else "as given"
        mm = lambda v: f"{round(v, 3) + 0.0:.3f}"  # noqa: E731  (+ 0.0: no "-0.000")
        low, high = (", ".join(mm(v) for v in b) for b in (self.low, self.high))
        return f"workspace {how}: low ({low}), high ({high}), table height {mm(self.table_height)} m"


def fit_workspace(episodes: Sequence[RecordedEpisode]) -> Workspace:
    """The crop box and table height of a set of recordings: the gripper paths' bounding box widened by
    ``WORKSPACE_MARGIN_M``; the table top is the most populated ``TABLE_BIN_M`` height band of the first frames'
    points inside that box (a tabletop scene's largest horizontal surface)."""
    paths = np.concatenate([ep.gripper[:, :3] for ep in episodes])  # (sum T, 3)
    lo, hi = paths.min(axis=0) - WORKSPACE_MARGIN_M, paths.max(axis=0) + WORKSPACE_MARGIN_M
    heights = []
    for ep in episodes[:FIT_EPISODES]:
        for frame in ep.frames(0):
            xyz, _ = frame_to_world(frame)
            inside = (frame.depth.reshape(-1) > 0) & np.all(
                (xyz[:, :2] >= lo[:2]) & (xyz[:, :2] <= hi[:2]), axis=1
            )
            heights.append(xyz[inside & (xyz[:, 2] <= hi[2]), 2])
    z = np.concatenate(heights) if heights else np.zeros(0)
    if len(z) == 0:
        table = float(paths[:, 2].min()) - BELOW_TABLE_M
    else:
        bins = np.floor(z / TABLE_BIN_M).astype(np.int64)
        values, counts = np.unique(bins, return_counts=True)
        band = values[np.argmax(counts)]
        table = float(np.median(z[bins == band]))
    low = (float(lo[0]), float(lo[1]), table - BELOW_TABLE_M)
    high = (float(hi[0]), float(hi[1]), float(hi[2]))
    return Workspace(low, high, table, fitted=True)


@dataclass(frozen=True)
class EpisodeJob:
    out: str
    task: str
    episode: int
    source: str
    pointcloud: dict[str, Any]
    keyframes: dict[str, Any]


def shard_path(out: Path, task: str, episode: int) -> Path:
    return out / "shards" / task / f"ep{episode:04d}.parquet"


def episode_samples(
    episode: RecordedEpisode, index: int, pc_cfg: PointCloudConfig, kf_cfg: KeyframeConfig
) -> list[KeyframeSample]:
    """The (observation at keyframe i-1 -> keypose i) samples of one recording (Meta-World collection's rule;
    the gripper state of a pose is the recorded one at its frame)."""
    pose, is_open = episode.gripper, episode.gripper_open
    keyframes = detect_keyframes(pose[:, :3], is_open, kf_cfg)
    samples = []
    for i, kf in enumerate(keyframes):
        obs = 0 if i == 0 else keyframes[i - 1].index
        samples.append(
            KeyframeSample(
                task=episode.task,
                variation=index,
                episode=index,
                frame=i,
                state_index=obs,
                points=frames_to_points(episode.frames(obs), pc_cfg),
                gripper_pose=np.array([*pose[obs, :7], float(is_open[obs])], np.float32),
                target_pose=np.array([*pose[kf.index, :7], float(is_open[kf.index])], np.float32),
            )
        )
    return samples


def import_episode(job: EpisodeJob) -> tuple[str, int, int, bool]:
    """Write one episode's shard (atomically; an existing shard is kept): (task, episode, samples, skipped)."""
    path = shard_path(Path(job.out), job.task, job.episode)
    if path.is_file():
        return job.task, job.episode, 0, True
    episode = read_episode(Path(job.source), job.task)
    samples = episode_samples(
        episode,
        job.episode,
        PointCloudConfig.model_validate(job.pointcloud),
        KeyframeConfig.model_validate(job.keyframes),
    )
    write_table(samples_table(samples, episode.instruction), path)
    return job.task, job.episode, len(samples), False


def import_episodes(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    tasks: Sequence[str] | None = None,
    episodes_per_task: int | None = None,
    workspace: Workspace | None = None,
    pointcloud: dict[str, Any] | None = None,
    keyframes: KeyframeConfig | None = None,
    text_encoder: Any = None,
    workers: int = 1,
    progress: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Import the recordings under ``root`` into a keyframe dataset at ``out``; returns the manifest.

    ``workspace``: the crop box and table height (None: fitted, :func:`fit_workspace`); ``pointcloud``: other
    ``PointCloudConfig`` fields (voxel size, points); ``text_encoder``: a ``TextEncoderConfig`` (default MiniLM) or
    an object with ``name`` and ``encode(texts)``. Every episode is checked before anything is written.
    """
    from evaluation.datasets.text import TextEncoder, TextEncoderConfig

    root, out = Path(root), Path(out)
    found = list_episodes(root)
    names = list(tasks) if tasks else sorted(found)
    unknown = [t for t in names if t not in found]
    if unknown:
        raise ValueError(
            f"--tasks {unknown} have no episodes under {root} (it has {', '.join(sorted(found))})"
        )
    chosen: dict[str, list[Path]] = {}
    for task in names:
        episodes = found[task]
        if episodes_per_task is not None:
            if len(episodes) < episodes_per_task:
                raise ValueError(
                    f"{root / task} has {len(episodes)} episodes, {episodes_per_task} were asked for"
                )
            episodes = episodes[:episodes_per_task]
        chosen[task] = episodes
    start = time.perf_counter()
    recorded = {task: [read_episode(p, task) for p in paths] for task, paths in chosen.items()}  # all checked
    episodes = [ep for eps in recorded.values() for ep in eps]
    workspace = workspace or fit_workspace(episodes)
    log(
        f"[import] {workspace.describe()}"
        + ("; set them with --workspace LX LY LZ HX HY HZ and --table-height" if workspace.fitted else "")
    )
    pc_cfg = PointCloudConfig(
        **{
            **(pointcloud or {}),
            "workspace_low": workspace.low,
            "workspace_high": workspace.high,
            "table_height": workspace.table_height,
        }
    )
    kf_cfg = keyframes or KeyframeConfig(refine=False)  # nothing to replay a recording in
    settings = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "source": str(root.resolve()),
        "tasks": names,
        "episodes_per_task": episodes_per_task,
        "pointcloud": pc_cfg.settings(),
        "keyframes": kf_cfg.settings(),
    }
    claim_import_dir(out, settings, SETTINGS, "an episode import")
    jobs = [
        EpisodeJob(str(out), task, n, str(p), settings["pointcloud"], settings["keyframes"])
        for task, paths in chosen.items()
        for n, p in enumerate(paths)
    ]
    if workers > 1:
        from evaluation.datasets.parallel import run_pool

        results = run_pool(import_episode, jobs, workers, "process", "import", progress)
    else:
        results = []
        for n, job in enumerate(jobs, 1):
            results.append(import_episode(job))
            if progress and (n % 10 == 0 or n == len(jobs)):
                log(f"[import] {n}/{len(jobs)} episodes ({time.perf_counter() - start:.0f} s)")
    import_s = time.perf_counter() - start
    if text_encoder is None or isinstance(text_encoder, TextEncoderConfig):
        text_encoder = TextEncoder(text_encoder)  # loaded only now, after the episodes are imported
    first = {task: eps[0].instruction for task, eps in recorded.items()}
    text = write_instructions(out, [(t, first[t]) for t in names], INSTRUCTIONS, text_encoder)
    manifest = _manifest(out, settings, recorded, text)
    if any(ep.instruction != first[task] for task, eps in recorded.items() for ep in eps):
        distinct = list(dict.fromkeys((task, ep.instruction) for task, eps in recorded.items() for ep in eps))
        manifest["text_variations"] = write_instructions(out, distinct, VARIATION_INSTRUCTIONS, text_encoder)
    write_manifest(out, manifest)
    written = [r for r in results if not r[3]]
    atomic_write_json(
        out / STATS,
        {
            "episodes_written_this_time": len(written),
            "import_wall_s": round(import_s, 3),
            "episodes_per_s": round(len(written) / import_s, 3) if import_s > 0 else None,
            "samples_written_this_time": sum(r[2] for r in written),
            "workers": workers,
        },
    )
    return manifest


def _manifest(
    out: Path, settings: dict[str, Any], recorded: dict[str, list[RecordedEpisode]], text: dict[str, Any]
) -> dict[str, Any]:
    import pyarrow.parquet as pq

    shards, counts = [], {}
    for task, eps in recorded.items():
        samples = 0
        for n, ep in enumerate(eps):
            path = shard_path(out, task, n)
            rows = pq.ParquetFile(path).metadata.num_rows
            samples += rows
            shards.append(
                {
                    "file": str(path.relative_to(out)),
                    "task": task,
                    "variation": n,
                    "episode": n,
                    "rows": rows,
                    "sha256": sha256_file(path),
                    "source": str(ep.path),
                }
            )
        counts[task] = {"episodes": len(eps), "samples": samples}
    first = next(iter(recorded.values()))[0]
    height, width = first.frames(0)[0].depth.shape
    return {
        **{k: settings[k] for k in ("format", "schema_version", "tasks", "episodes_per_task", "source")},
        "suite": SUITE,
        "split": "train",
        "episodes": {task: list(range(len(eps))) for task, eps in recorded.items()},
        **sample_fields(counts, settings["pointcloud"], POSE_LAYOUT),
        "render": {
            "cameras": [c.name for c in first.cameras],
            "width": width,
            "height": height,
            "source": "recorded episodes",
        },
        "keyframes": settings["keyframes"],
        "text": text,
        "shards": shards,
    }


def main(argv: Sequence[str] | None = None) -> int:
    import argparse
    import sys

    from evaluation.datasets.dataset import DatasetError
    from evaluation.datasets.episodes import EpisodeFormatError
    from evaluation.datasets.text import TextEncoderConfig, TextEncoderError

    p = argparse.ArgumentParser(
        prog="python -m evaluation.import_episodes", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--root", required=True, help="recorded episodes: <root>/<task>/<episode>/ (docs/importing.md)"
    )
    p.add_argument("--out", required=True, help="keyframe dataset directory to write")
    p.add_argument("--tasks", nargs="*", default=None, help="task folders to import (default: all)")
    p.add_argument(
        "--episodes-per-task", type=int, default=None, help="first N episodes of each task (default: all)"
    )
    p.add_argument(
        "--workspace",
        type=float,
        nargs=6,
        default=None,
        metavar=("LX", "LY", "LZ", "HX", "HY", "HZ"),
        help="crop box in the world frame, metres (default: fitted to the gripper paths, printed)",
    )
    p.add_argument("--table-height", type=float, default=None, help="table top z, metres (default: fitted)")
    p.add_argument("--voxel-size", type=float, default=None, help="point-cloud voxel, metres (default 0.01)")
    p.add_argument("--max-points", type=int, default=None, help="points kept per sample (default 4000)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--text-encoder", default="minilm", choices=["minilm", "clip", "auto"])
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    pointcloud = {
        k: v for k, v in (("voxel_size", args.voxel_size), ("max_points", args.max_points)) if v is not None
    }
    workspace = None
    try:
        if args.workspace is not None or args.table_height is not None:
            if args.workspace is None or args.table_height is None:
                raise ValueError("--workspace and --table-height go together (or leave both out to fit them)")
            workspace = Workspace(
                tuple(args.workspace[:3]), tuple(args.workspace[3:]), args.table_height, False
            )
        manifest = import_episodes(
            args.root,
            args.out,
            args.tasks,
            args.episodes_per_task,
            workspace,
            pointcloud,
            text_encoder=TextEncoderConfig(kind=args.text_encoder),
            workers=args.workers,
            progress=not args.no_progress,
        )
    except (EpisodeFormatError, DatasetError, TextEncoderError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stats = json.loads((Path(args.out) / STATS).read_text())
    rate = f", {stats['episodes_per_s']} episodes/s" if stats.get("episodes_per_s") else ""
    print(
        f"[import] {args.out}: {len(manifest['tasks'])} tasks, {sum(c['episodes'] for c in manifest['counts'].values())}"
        f" episodes, {manifest['total_samples']} keyframe samples ({stats['import_wall_s']:.1f} s{rate}); train on it "
        f"with python -m platform.train data.path={args.out} data.collect_if_missing=false"
    )
    return 0
