"""Collect a Meta-World keyframe dataset from scripted experts; replay-check it; preview a task.

    python -m evaluation.collect --suite mt10 --episodes-per-task 20 --out data/metaworld_mt10 [--workers 2] [--seed 0]
    python -m evaluation.collect --verify --out data/metaworld_mt10
    python -m evaluation.collect --preview pick-place-v3 --out previews/

Episodes use the train variations (``evaluation.simulators.metaworld_backend.TRAIN_VARIATIONS``, 0..24): the first
``episodes_per_task`` variations whose expert succeeds (a failing expert is recorded and the next
variation used). One shard per (task, variation), written atomically; a killed collection restarts
where it stopped (finished shards and failure markers are kept); the manifest is written last. Same
arguments -> same bytes (Meta-World is deterministic; nothing depends on worker scheduling).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from evaluation.datasets.collect_jobs import (
    KEYFRAME_RUNG,
    CollectJob,
    JobResult,
    close_simulators,
    collect_job,
    failure_path,
    shard_path,
)
from evaluation.datasets.dataset import (
    FORMAT,
    INSTRUCTIONS,
    SCHEMA_VERSION,
    STATS,
    instructions_table,
    is_recovery,
    sample_fields,
    write_manifest,
    write_table,
)
from evaluation.datasets.demos import AIMED_TASKS, NO_RUNG
from evaluation.datasets.keyframes import KeyframeConfig
from evaluation.datasets.keypose_experts import KEYPOSE_EXPERTS
from evaluation.datasets.parallel import run_pool
from evaluation.datasets.text import TextEncoderConfig, get_encoder
from evaluation.filelock import FileLock
from evaluation.files import atomic_write_bytes, sha256_file
from evaluation.pointcloud import PointCloudConfig
from evaluation.simulators.instructions import instruction_for
from evaluation.simulators.metaworld_backend import (
    TRAIN_VARIATIONS,
    MetaWorldConfig,
    check_task,
    suite_task_names,
)
from evaluation.simulators.rendering import RenderConfig

SETTINGS = "collect_settings.json"
RUNTIME_SIM_KEYS = {"max_cached_tasks"}  # MetaWorldConfig keys that do not change the collected bytes
LOCK = ".collect.lock"
DEFAULT_OUT = "data/metaworld_mt10"


class CollectError(RuntimeError):
    """Bad collection arguments or an output directory that cannot be used; the message says the fix."""


def _check_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise CollectError(
            f"cannot write to output directory {out} ({err.strerror}); choose a writable --out"
        ) from err


def _settings(suite, tasks, episodes_per_task, seed, sim_cfg, pc_cfg, kf_cfg, text_cfg) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "suite": suite,
        "tasks": list(tasks),
        "episodes_per_task": episodes_per_task,
        "seed": seed,
        "variation_pool": list(TRAIN_VARIATIONS),
        # what shapes the data; how many task models a worker keeps in memory does not
        "sim": sim_cfg.model_dump(mode="json", exclude=RUNTIME_SIM_KEYS),
        "pointcloud": pc_cfg.settings(),
        "keyframes": kf_cfg.settings(),
        "text_encoder": text_cfg.model_dump(mode="json"),
        # tasks demonstrated by a keypose-level expert instead of Meta-World's (only present when any are)
        **({"keypose_experts": experts} if (experts := [t for t in tasks if t in KEYPOSE_EXPERTS]) else {}),
        # with aim_goal, the tasks it aims (demos.AIMED_TASKS): a later list does not extend an older collection
        **(
            {"aimed_tasks": aimed}
            if kf_cfg.aim_goal and (aimed := [t for t in tasks if t in AIMED_TASKS])
            else {}
        ),
    }


def _claim_out_dir(out: Path, settings: dict[str, Any]) -> None:
    """Record the settings on first use; refuse to mix data from different settings in one directory.

    The episode count is not a setting of the data (episodes are per variation, deterministic): a larger
    count extends a finished collection (e.g. to add validation episodes), a smaller one keeps the first."""
    path = out / SETTINGS
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError:
            previous = None
        changed = sorted(
            k
            for k in settings
            if k != "episodes_per_task" and (previous is None or previous.get(k) != settings[k])
        )
        if changed:
            raise CollectError(
                f"{out} holds a collection made with different settings ({', '.join(changed)} differ, see "
                f"{path}); use another --out, or delete {out} to start over"
            )
        if previous != settings:
            atomic_write_bytes(path, (json.dumps(settings, indent=1, sort_keys=True) + "\n").encode())
        return
    if any(p.name not in (LOCK,) for p in out.iterdir()):
        raise CollectError(f"{out} is not empty and is not a collection directory; use an empty or new --out")
    atomic_write_bytes(path, (json.dumps(settings, indent=1, sort_keys=True) + "\n").encode())


DONE, NO_REPLAY, FAILED = "done", "no_replay", "failed"


def _on_disk(out: Path, task: str, variation: int) -> str | None:
    """``DONE``: a shard whose keyframes replay; ``NO_REPLAY``: a shard whose keyframes replay at no
    refinement rung; ``FAILED``: an expert failure recorded; None: not done yet."""
    path = shard_path(out, task, variation)
    if path.is_file():
        return NO_REPLAY if _rung(pq.ParquetFile(path).schema_arrow) == NO_RUNG else DONE
    if failure_path(out, task, variation).is_file():
        return FAILED
    return None


def _plan_round(
    out: Path, tasks: Sequence[str], n: int
) -> tuple[list[tuple[str, int]], dict[str, list[int]]]:
    """Jobs still needed to reach ``n`` variations per task whose keyframes replay, assuming pending ones
    do. A task with fewer than ``n`` such variations among all train variations is filled up, in variation
    order, with demonstrations whose keyframes do not replay (the manifest lists them)."""
    jobs, chosen = [], {}
    for task in tasks:
        ok: list[int] = []
        fallback: list[int] = []
        for variation in TRAIN_VARIATIONS:
            if len(ok) == n:
                break
            state = _on_disk(out, task, variation)
            if state is None:
                jobs.append((task, variation))
                ok.append(variation)
            elif state == DONE:
                ok.append(variation)
            elif state == NO_REPLAY:
                fallback.append(variation)
        chosen[task] = sorted(ok + fallback[: max(0, n - len(ok))])
    return jobs, chosen


def _encode_instructions(out: Path, tasks: Sequence[str], text_cfg: TextEncoderConfig) -> dict[str, Any]:
    path = out / INSTRUCTIONS
    if not path.is_file():
        encoder = get_encoder(text_cfg)
        texts = [instruction_for(t) for t in tasks]
        embeddings = encoder.encode(texts)
        rows = [(t, e.text, encoder.name, e.tokens) for t, e in zip(tasks, embeddings, strict=True)]
        write_table(instructions_table(rows), path)
    meta = pq.read_table(path, columns=["encoder", "dim"]).to_pydict()
    return {
        "file": INSTRUCTIONS,
        "sha256": sha256_file(path),
        "encoder": meta["encoder"][0],
        "dim": meta["dim"][0],
    }


def _rung(meta: Any) -> int:
    """The keyframe refinement rung recorded in a shard's Parquet metadata (0 for older shards)."""
    raw = (meta.metadata or {}).get(KEYFRAME_RUNG.encode(), b"0")
    return int(raw)


def _manifest(out, settings, chosen, failures, text_meta, render_cfg) -> dict[str, Any]:
    shards, counts, rungs, recovered = [], {}, {}, {}
    for task, variations in chosen.items():
        samples = 0
        rungs[task] = {}
        for variation in variations:
            path = shard_path(out, task, variation)
            parquet = pq.ParquetFile(path)
            rows = parquet.metadata.num_rows
            rung = _rung(parquet.schema_arrow)
            if rung:
                rungs[task][str(variation)] = rung
            samples += rows
            if settings["keyframes"].get("recoveries"):
                frames = pq.read_table(path, columns=["frame"]).column("frame").to_numpy()
                recovered[task] = recovered.get(task, 0) + int(is_recovery(frames).sum())
            shards.append(
                {
                    "file": str(path.relative_to(out)),
                    "task": task,
                    "variation": variation,
                    "rows": rows,
                    "sha256": sha256_file(path),
                }
            )
        counts[task] = {"episodes": len(variations), "samples": samples}
        if task in recovered:  # of its samples, the recoveries (KeyframeConfig.recoveries)
            counts[task]["recovery_samples"] = recovered[task]
    import metaworld
    import mujoco

    return {
        **{
            k: settings[k]
            for k in ("format", "schema_version", "suite", "tasks", "episodes_per_task", "seed")
        },
        "split": "train",
        "variation_pool": settings["variation_pool"],
        "episodes": chosen,
        "expert_failures": failures,
        # variations whose expert succeeded but whose keyframes replay at no refinement rung, chosen or not
        "replay_failures": {
            t: [v for v in TRAIN_VARIATIONS if _on_disk(out, t, v) == NO_REPLAY] for t in chosen
        },
        # per task, the variations whose keyframes needed a denser rung than the config's
        # ({variation: rung}; -1: no rung replays, the config's own keyframes are kept)
        "keyframe_rungs": rungs,
        **sample_fields(
            counts, settings["pointcloud"], "[x, y, z, qx, qy, qz, qw, open], TCP, world frame, metres"
        ),
        "render": render_cfg.model_dump(mode="json"),
        "benchmark_seed": settings["sim"]["benchmark_seed"],
        "keyframes": settings["keyframes"],
        "keypose_experts": settings.get("keypose_experts", []),
        **({"aimed_tasks": settings["aimed_tasks"]} if "aimed_tasks" in settings else {}),
        "controller": settings["sim"]["controller"],
        "text": text_meta,
        "shards": shards,
        "versions": {"metaworld": getattr(metaworld, "__version__", "3.1.1"), "mujoco": mujoco.__version__},
    }


def collect_dataset(
    suite: str = "mt10",
    tasks: Sequence[str] | None = None,
    episodes_per_task: int = 20,
    out: str | os.PathLike[str] = DEFAULT_OUT,
    workers: int = 2,
    seed: int = 0,
    render: RenderConfig | None = None,
    pointcloud: PointCloudConfig | None = None,
    keyframes: KeyframeConfig | None = None,
    text_encoder: TextEncoderConfig | None = None,
    executor: str = "process",
    progress: bool = True,
) -> dict[str, Any]:
    """Collect (or finish collecting) a dataset in ``out``; returns the manifest. See the module docstring.

    Raises ``UnknownTaskError`` for a task not in ``suite``, ``CollectError`` for bad counts, an
    unusable ``out`` directory, or tasks whose expert fails on too many train variations.
    """
    names = suite_task_names(suite)  # type: ignore[arg-type]
    tasks = list(tasks) if tasks else names
    for task in tasks:
        check_task(task, names, suite)
    if not 1 <= episodes_per_task <= len(TRAIN_VARIATIONS):
        raise CollectError(
            f"--episodes-per-task must be between 1 and {len(TRAIN_VARIATIONS)} (the train variations per task), "
            f"got {episodes_per_task}"
        )
    if workers < 1:
        raise CollectError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    _check_out_dir(out)
    pc_cfg, kf_cfg = pointcloud or PointCloudConfig(), keyframes or KeyframeConfig()
    # the cameras draw the arm or not as the clouds are to hold it (the point-cloud setting is what checkpoints keep)
    render = (render or RenderConfig()).model_copy(update={"hide_arm": pc_cfg.hide_arm})
    sim_cfg = MetaWorldConfig(suite=suite, render=render)  # type: ignore[arg-type]
    text_cfg = text_encoder or TextEncoderConfig()
    settings = _settings(suite, tasks, episodes_per_task, seed, sim_cfg, pc_cfg, kf_cfg, text_cfg)
    with _exclusive(out, progress):
        _claim_out_dir(out, settings)
        for stale in out.glob("**/.*.tmp"):  # partial files of a killed run (never renamed into place)
            stale.unlink(missing_ok=True)
        return _collect_locked(
            out, settings, tasks, episodes_per_task, seed, workers, executor, progress, sim_cfg, text_cfg
        )


@contextlib.contextmanager
def _exclusive(out: Path, progress: bool):
    """One collection per directory at a time: a second one (e.g. parallel Tune trials) waits for the
    first, then finds its shards (and usually its manifest) and finishes at once."""

    def waiting(holder: str) -> None:
        if progress:
            print(f"[collect] another collection is writing {out} ({holder}); waiting for it", flush=True)

    with FileLock(out / LOCK).acquire(wait_s=math.inf, on_wait=waiting):
        yield


def _collect_locked(
    out, settings, tasks, episodes_per_task, seed, workers, executor, progress, sim_cfg, text_cfg
):
    start = time.perf_counter()
    results: list[JobResult] = []
    while True:
        pending, chosen = _plan_round(out, tasks, episodes_per_task)
        if not pending:
            break
        jobs = [
            CollectJob(str(out), t, v, seed, settings["sim"], settings["pointcloud"], settings["keyframes"])
            for t, v in pending
        ]
        try:
            results += run_pool(collect_job, jobs, workers, executor, "collect", progress)
        finally:
            close_simulators()  # jobs run in this process (workers=1) leave a simulator behind
    short = {t: len(v) for t, v in chosen.items() if len(v) < episodes_per_task}
    if short:
        raise CollectError(
            f"the experts failed on too many train variations to get {episodes_per_task} episodes for {short}; "
            f"ask for fewer --episodes-per-task"
        )
    failures = {t: [v for v in TRAIN_VARIATIONS if _on_disk(out, t, v) == FAILED] for t in tasks}
    collect_s = time.perf_counter() - start
    t_text = time.perf_counter()
    text_meta = _encode_instructions(out, tasks, text_cfg)
    text_s = time.perf_counter() - t_text
    manifest = _manifest(out, settings, chosen, failures, text_meta, sim_cfg.render)
    write_manifest(out, manifest)
    _write_stats(out, results, collect_s, text_s, workers, time.perf_counter() - start)
    return manifest


def _write_stats(
    out: Path, results: list[JobResult], collect_s: float, text_s: float, workers: int, total_s: float
):
    keys = ("startup_s", "physics_s", "replay_s", "recovery_s", "render_s", "points_s", "write_s", "job_s")
    sums = {k: round(sum(r.times.get(k, 0.0) for r in results), 3) for k in keys}
    done = [r for r in results if r.ok]
    stats = {
        "workers": workers,
        "jobs_run_this_time": len(results),
        "episodes_written_this_time": len(done),
        "expert_failures_this_time": len(results) - len(done),
        "keyframe_rungs_this_time": {
            str(k): sum(1 for r in done if r.rung == k) for k in sorted({r.rung for r in done})
        },
        "samples_written_this_time": sum(r.samples for r in done),
        "collect_wall_s": round(collect_s, 3),
        "text_encoding_s": round(text_s, 3),
        "total_wall_s": round(total_s, 3),
        "episodes_per_s": round(len(done) / collect_s, 3) if collect_s > 0 and done else 0.0,
        "worker_time_s": sums,
        "load_average": list(os.getloadavg()),
        "cpu_count": os.cpu_count(),
    }
    atomic_write_bytes(out / STATS, (json.dumps(stats, indent=1) + "\n").encode())
    return stats


if (
    __name__ == "__main__"
):  # python -m evaluation.collect: the command line lives in evaluation.datasets.collect_cli
    from evaluation.datasets.collect_cli import main

    sys.exit(main())
