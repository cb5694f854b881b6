"""Import RLBench demonstrations (the dataset generator's on-disk layout) into this project's keyframe
dataset format (``evaluation.datasets.dataset``), so RLBench data train exactly like a Meta-World collection:

    python -m evaluation.rlbench_import --root data/peract/train --tasks peract18 --out data/rlbench18_train

Input (either layout, see ``evaluation.simulators.rlbench_backend.list_episodes``): per episode ``low_dim_obs.pkl``
(a pickled ``rlbench.demo.Demo`` whose image fields are ``None``), ``<camera>_rgb/<i>.png`` and
``<camera>_depth/<i>.png`` (depth normalised between the camera's near and far planes, 24-bit fixed point
in the R, G, B bytes, scale ``2**24 - 1``), and ``variation_descriptions.pkl``. RLBench itself is not
needed: the pickles are read with stand-in classes for ``Demo`` and ``Observation``.

Samples follow PerAct / 3D Diffuser Actor: keyframes ``k_1..k_n`` from the PerAct heuristic
(``evaluation.datasets.rlbench_keyframes``), observation frames ``[0, k_1, .., k_{n-1}]``, sample ``j`` = the
fused point cloud at frame ``k_j`` (``k_0 = 0``) -> target pose at ``k_{j+1}`` (``gripper_pose`` + ``gripper_open``).
Depth -> metres with ``misc['<camera>_camera_near'/'_far']``; camera matrices from ``misc`` (converted to
OpenCV axes by ``evaluation.simulators.rlbench_backend.opencv_camera``).

Language: each shard row's ``instruction`` is its variation's first description; ``instructions.parquet``
holds one embedding per task (the task name in words) and ``variation_instructions.parquet`` one per
distinct description of every variation (listed in the manifest as ``text_variations``, whose
``alternatives`` maps a first description to all of its variation's). ``KeyframeDataset`` conditions
each training sample on one of its variation's descriptions drawn at random (as 3D Diffuser Actor
trains), and on the first one when no generator is given.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from evaluation.datasets.dataset import (
    FORMAT,
    INSTRUCTIONS,
    SCHEMA_VERSION,
    STATS,
    VARIATION_INSTRUCTIONS,
    ImportDirError,
    KeyframeSample,
    claim_import_dir,
    sample_fields,
    samples_table,
    write_instructions,
    write_manifest,
    write_table,
)
from evaluation.datasets.rlbench_keyframes import PerActKeyframeConfig, demo_keyframes
from evaluation.datasets.text import TextEncoder, TextEncoderConfig, TextEncoderError
from evaluation.files import atomic_write_json, sha256_file
from evaluation.pointcloud import PointCloudConfig, frames_to_points
from evaluation.simulators.rlbench_backend import EpisodeFiles, camera_frame, gripper_pose8, list_episodes
from evaluation.simulators.rlbench_tasks import (
    ALL_CAMERAS,
    CAMERAS,
    SCENE_BOUNDS_HIGH,
    SCENE_BOUNDS_LOW,
    TABLE_HEIGHT,
    resolve_tasks,
)

DEPTH_SCALE = 2**24 - 1  # rlbench.backend.const.DEPTH_SCALE
SETTINGS = "import_settings.json"


class RLBenchImportError(RuntimeError):
    """The RLBench data or the output directory cannot be used; the message names the file and the fix."""


def rlbench_pointcloud_config(**overrides: Any) -> PointCloudConfig:
    """Point-cloud settings for RLBench: PerAct's scene bounds, table top at RLBench's height, 1 cm voxels."""
    base = {
        "workspace_low": SCENE_BOUNDS_LOW,
        "workspace_high": SCENE_BOUNDS_HIGH,
        "table_height": TABLE_HEIGHT,
    }
    return PointCloudConfig(**{**base, **overrides})


# -- reading RLBench files without RLBench -------------------------------------------------------------------
class PickledRecord:
    """Stands for any RLBench/PyRep object in a pickle (its attributes are restored as they were)."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__.update(state or {})


class PickledDemo(PickledRecord):
    """``rlbench.demo.Demo``: a sequence of observations (``_observations``)."""

    def __len__(self) -> int:
        return len(self.__dict__.get("_observations", []))

    def __getitem__(self, i: int) -> Any:
        return self.__dict__["_observations"][i]

    def __iter__(self):
        return iter(self.__dict__.get("_observations", []))


class _RLBenchFreeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in ("rlbench", "pyrep", "yarr"):
            if name == "Demo":
                return PickledDemo
            return type(name, (PickledRecord,), {"__module__": __name__})
        return super().find_class(module, name)


def load_demo(path: Path) -> PickledDemo:
    """A ``low_dim_obs.pkl`` as a sequence of observation records (no RLBench import)."""
    try:
        with path.open("rb") as f:
            demo = _RLBenchFreeUnpickler(f).load()
    except FileNotFoundError:
        raise RLBenchImportError(
            f"{path} is missing: not an episode written by RLBench's dataset generator"
        ) from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
        raise RLBenchImportError(
            f"{path} is not a readable RLBench demo pickle ({err}); regenerate the episode"
        ) from err
    if isinstance(demo, list):  # a bare list of observations
        demo_obj = PickledDemo()
        demo_obj._observations = demo  # type: ignore[attr-defined]
        return demo_obj
    if not isinstance(demo, PickledDemo) or len(demo) < 2:
        raise RLBenchImportError(f"{path} does not hold an RLBench Demo with at least 2 observations")
    return demo


def decode_depth(path: Path) -> np.ndarray:
    """(H, W) depth in [0, 1] from RLBench's 24-bit PNG encoding (R high byte, B low byte)."""
    rgb = _read_png(path, channels=3)
    value = rgb[..., 0].astype(np.float64) * 65536 + rgb[..., 1].astype(np.float64) * 256 + rgb[..., 2]
    return value / DEPTH_SCALE


def _read_png(path: Path, channels: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            arr = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise RLBenchImportError(f"{path} is missing: the episode's camera images are incomplete") from None
    except OSError as err:
        raise RLBenchImportError(f"{path} is not a readable PNG ({err})") from err
    return arr[..., :channels]


def observation_frames(episode: Path, frame: int, obs: Any, cameras: Sequence[str]) -> list:
    """``CameraFrame`` per camera of stored frame ``frame`` (RGB, depth in metres, OpenCV matrices)."""
    frames = []
    for cam in cameras:
        rgb = _read_png(episode / f"{cam}_rgb" / f"{frame}.png", channels=3)
        depth = decode_depth(episode / f"{cam}_depth" / f"{frame}.png")
        near, far = obs.misc[f"{cam}_camera_near"], obs.misc[f"{cam}_camera_far"]
        if rgb.shape[:2] != depth.shape:
            raise RLBenchImportError(
                f"{episode}: {cam} frame {frame} has RGB {rgb.shape[:2]} but depth {depth.shape}"
            )
        cx2, cy2 = (
            2 * abs(obs.misc[f"{cam}_camera_intrinsics"][0, 2]),
            2 * abs(obs.misc[f"{cam}_camera_intrinsics"][1, 2]),
        )
        if (round(cy2), round(cx2)) != depth.shape:
            raise RLBenchImportError(
                f"{episode}: {cam} images are {depth.shape} but the recorded intrinsics are for {int(cy2)}x{int(cx2)} "
                "(resized images): use the images at the size they were rendered"
            )
        frames.append(camera_frame(cam, rgb, near + depth * (far - near), obs.misc))
    return frames


# -- one episode -> one shard -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ImportJob:
    out: str
    task: str
    episode: int
    source: str
    variation: int
    instruction: str
    cameras: tuple[str, ...]
    pointcloud: dict[str, Any]
    keyframes: dict[str, Any]
    descriptions: tuple[str, ...] = ()  # all of the variation's descriptions (``instruction`` is the first)


@dataclass
class ImportResult:
    task: str
    episode: int
    samples: int
    seconds: float
    skipped: bool = False
    times: dict[str, float] = field(default_factory=dict)


def shard_path(out: Path, task: str, episode: int) -> Path:
    return out / "shards" / task / f"ep{episode:04d}.parquet"


def episode_samples(job: ImportJob) -> list[KeyframeSample]:
    """The (observation at keyframe j -> keypose j+1) samples of one episode."""
    src = Path(job.source)
    demo = load_demo(src / "low_dim_obs.pkl")
    try:
        keyframes = demo_keyframes(demo, PerActKeyframeConfig.model_validate(job.keyframes))
    except ValueError as err:
        raise RLBenchImportError(f"{src / 'low_dim_obs.pkl'}: {err}") from err
    pc_cfg = PointCloudConfig.model_validate(job.pointcloud)
    observed = [0, *keyframes[:-1]]
    samples = []
    for j, (f, k) in enumerate(zip(observed, keyframes, strict=True)):
        obs = demo[f]
        points = frames_to_points(observation_frames(src, f, obs, job.cameras), pc_cfg)
        samples.append(
            KeyframeSample(
                task=job.task,
                variation=job.variation,
                episode=job.episode,
                frame=j,
                state_index=f,
                points=points,
                gripper_pose=gripper_pose8(obs).astype(np.float32),
                target_pose=gripper_pose8(demo[k]).astype(np.float32),
            )
        )
    return samples


def import_episode(job: ImportJob) -> ImportResult:
    """Write the shard of one episode (atomically; an existing shard is kept)."""
    path = shard_path(Path(job.out), job.task, job.episode)
    if path.is_file():
        return ImportResult(job.task, job.episode, 0, 0.0, skipped=True)
    start = time.perf_counter()
    samples = episode_samples(job)
    write_table(samples_table(samples, job.instruction), path)
    return ImportResult(job.task, job.episode, len(samples), time.perf_counter() - start)


# -- the whole dataset ------------------------------------------------------------------------------------------
def _jobs(
    root: Path, out: Path, tasks: Sequence[str], per_task: int | None, settings: dict[str, Any]
) -> list[ImportJob]:
    jobs = []
    for task in tasks:
        try:
            episodes: list[EpisodeFiles] = list_episodes(root, task)
        except FileNotFoundError as err:
            raise RLBenchImportError(str(err)) from err
        if per_task is not None:
            if len(episodes) < per_task:
                raise RLBenchImportError(
                    f"{root / task} has {len(episodes)} episodes, {per_task} were asked for"
                )
            episodes = episodes[:per_task]
        for n, ep in enumerate(episodes):
            if not ep.descriptions:
                raise RLBenchImportError(f"{ep.path}: variation_descriptions.pkl is empty")
            jobs.append(
                ImportJob(
                    str(out),
                    task,
                    n,
                    str(ep.path),
                    ep.variation,
                    str(ep.descriptions[0]),
                    tuple(settings["cameras"]),
                    settings["pointcloud"],
                    settings["keyframes"],
                    tuple(str(d) for d in ep.descriptions),
                )
            )
    return jobs


def description_alternatives(jobs: Sequence[ImportJob]) -> dict[str, list[str]]:
    """``{first description: every description of that variation}`` (the first listed first)."""
    out: dict[str, list[str]] = {}
    for job in jobs:
        known = out.setdefault(job.instruction, [job.instruction])
        known.extend(d for d in job.descriptions if d not in known)
    return out


def import_dataset(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    tasks: str | Sequence[str] | None = None,
    episodes_per_task: int | None = None,
    cameras: Sequence[str] = CAMERAS,
    pointcloud: PointCloudConfig | None = None,
    keyframes: PerActKeyframeConfig | None = None,
    text_encoder: Any = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Import ``tasks`` from RLBench data at ``root`` into a keyframe dataset at ``out``; returns the manifest.

    ``text_encoder``: a ``TextEncoderConfig`` (default MiniLM), or an object with ``name`` and ``encode(texts)``.
    Restartable: finished episode shards are kept; the manifest is written last.
    """
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise RLBenchImportError(f"--root {root} is not a directory of RLBench data (<root>/<task>/...)")
    unknown = [c for c in cameras if c not in ALL_CAMERAS]
    if unknown:
        raise RLBenchImportError(f"unknown cameras {unknown}; RLBench's are {ALL_CAMERAS}")
    names = resolve_tasks(tasks if tasks is None or isinstance(tasks, str) else tuple(tasks))
    pc_cfg, kf_cfg = pointcloud or rlbench_pointcloud_config(), keyframes or PerActKeyframeConfig()
    settings = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "source": str(root.resolve()),
        "tasks": list(names),
        "episodes_per_task": episodes_per_task,
        "cameras": list(cameras),
        "pointcloud": pc_cfg.settings(),
        "keyframes": kf_cfg.model_dump(mode="json"),
    }
    jobs = _jobs(root, out, names, episodes_per_task, settings)
    try:
        claim_import_dir(out, settings, SETTINGS, "an RLBench import")
    except ImportDirError as err:
        raise RLBenchImportError(str(err)) from None
    start = time.perf_counter()
    if workers > 1:
        from evaluation.datasets.parallel import run_pool

        results = run_pool(import_episode, jobs, workers, "process", "rlbench-import", progress)
    else:
        results = [import_episode(job) for job in jobs]
    import_s = time.perf_counter() - start
    if text_encoder is None or isinstance(text_encoder, TextEncoderConfig):
        text_encoder = TextEncoder(text_encoder)  # loaded only now, after the episodes are imported
    text = write_instructions(out, [(t, t.replace("_", " ")) for t in names], INSTRUCTIONS, text_encoder)
    alternatives = description_alternatives(jobs)
    distinct = list(dict.fromkeys((j.task, d) for j in jobs for d in alternatives[j.instruction]))
    text_variations = write_instructions(out, distinct, VARIATION_INSTRUCTIONS, text_encoder)
    text_variations["alternatives"] = alternatives  # training draws one per sample, as 3DDA does
    manifest = _manifest(out, settings, jobs, text, text_variations)
    write_manifest(out, manifest)
    stats = {
        "episodes_written_this_time": sum(not r.skipped for r in results),
        "import_wall_s": round(import_s, 3),
        "samples_written_this_time": sum(r.samples for r in results),
        "workers": workers,
    }
    atomic_write_json(out / STATS, stats)
    return manifest


def _manifest(
    out: Path, settings: dict[str, Any], jobs: list[ImportJob], text: dict, text_variations: dict
) -> dict[str, Any]:
    import pyarrow.parquet as pq

    shards, counts, episodes = [], {}, {}
    for job in jobs:
        path = shard_path(out, job.task, job.episode)
        rows = pq.ParquetFile(path).metadata.num_rows
        shards.append(
            {
                "file": str(path.relative_to(out)),
                "task": job.task,
                "variation": job.variation,
                "episode": job.episode,
                "rows": rows,
                "sha256": sha256_file(path),
                "source": job.source,
            }
        )
        c = counts.setdefault(job.task, {"episodes": 0, "samples": 0})
        c["episodes"] += 1
        c["samples"] += rows
        episodes.setdefault(job.task, []).append(job.episode)
    with Image.open(Path(jobs[0].source) / f"{settings['cameras'][0]}_rgb" / "0.png") as image:
        width, height = image.size
    return {
        **{k: settings[k] for k in ("format", "schema_version", "tasks", "episodes_per_task", "source")},
        "suite": "rlbench",
        "split": "train",
        "episodes": episodes,
        **sample_fields(
            counts,
            settings["pointcloud"],
            "[x, y, z, qx, qy, qz, qw, open], gripper tip (RLBench gripper_pose), world frame, metres",
        ),
        "render": {
            "cameras": settings["cameras"],
            "width": width,
            "height": height,
            "source": "rlbench dataset",
        },
        "keyframes": {"heuristic": "peract", **settings["keyframes"]},
        "text": text,
        "text_variations": text_variations,
        "shards": shards,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m evaluation.rlbench_import", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--root", required=True, help="RLBench data: <root>/<task>/{all_variations,variation<v>}/episodes/"
    )
    p.add_argument("--tasks", default="peract18", help="comma-separated task names, or peract18 (default)")
    p.add_argument("--out", required=True, help="dataset directory to write")
    p.add_argument(
        "--episodes-per-task", type=int, default=None, help="first N episodes of each task (default: all)"
    )
    p.add_argument(
        "--cameras", default=",".join(CAMERAS), help=f"comma-separated, of {','.join(ALL_CAMERAS)}"
    )
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--text-encoder", default="minilm", choices=["minilm", "clip", "auto"])
    p.add_argument("--clip-path", default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        manifest = import_dataset(
            args.root,
            args.out,
            args.tasks,
            args.episodes_per_task,
            tuple(c for c in args.cameras.split(",") if c),
            text_encoder=TextEncoderConfig(kind=args.text_encoder, path=args.clip_path),
            workers=args.workers,
            progress=not args.no_progress,
        )
    except (RLBenchImportError, TextEncoderError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"[rlbench_import] {args.out}: {len(manifest['tasks'])} tasks, "
        f"{sum(c['episodes'] for c in manifest['counts'].values())} episodes, {manifest['total_samples']} samples"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
