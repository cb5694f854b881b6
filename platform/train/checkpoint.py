"""Atomic, self-describing checkpoints (tested by tests/platform: atomic under SIGKILL, corruption detected).

Layout: ``<run_dir>/checkpoints/step_<00000123>/`` holding
  policy.json, model.pt, ema.pt      what ``policies.registry.load_checkpoint`` needs (evaluation rebuilds from these alone)
  train_state.pt                     optimizer, scheduler, scaler, sampler, RNG, counters: exact resume
  experiment.yaml                    the resolved experiment config
  instructions.npz                   instruction token features per task (evaluation needs no dataset)
  instruction_texts.json             each task's instruction text and the text encoder's name (platform.serve)
  pointcloud.json                    the dataset's point-cloud settings (evaluation builds its inputs the same way)
  manifest.json                      written LAST: step, file sizes and sha256 hashes

A checkpoint is written into a temp directory, fsync'd, then renamed into place, so a SIGKILL leaves either
nothing or a complete checkpoint. On load, a directory whose manifest is missing or whose hashes do not match
is reported and skipped; the newest valid one wins. The manifest's format and check live in
``evaluation.checkpoint_format``: evaluation checks every checkpoint it reads against it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from evaluation.checkpoint_format import (  # the manifest format, shared with evaluation
    MANIFEST,
    CheckpointInfo,
    CorruptCheckpointError,
    verify_checkpoint,
    write_manifest,
)
from evaluation.files import atomic_write_json

__all__ = [
    "MANIFEST",
    "CheckpointInfo",
    "CorruptCheckpointError",
    "best_checkpoint",
    "checkpoint_root",
    "latest_checkpoint",
    "list_checkpoints",
    "prune_checkpoints",
    "set_checkpoint_metric",
    "verify_checkpoint",
    "write_checkpoint",
]

CHECKPOINT_DIR = "checkpoints"
_PREFIX = "step_"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR


def write_checkpoint(
    run_dir: Path, step: int, writers: dict[str, Callable[[Path], None]], metric: float | None = None
) -> Path:
    """Write a checkpoint atomically. ``writers`` maps file name -> function writing that file."""
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{_PREFIX}{step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        for name, write in writers.items():
            target = tmp / name
            write(target)
            with open(target, "rb") as f:
                os.fsync(f.fileno())
        write_manifest(tmp, step, writers, metric)
        _fsync_dir(tmp)
        if final.exists():  # same step written again (e.g. after a crash between write and report)
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def list_checkpoints(run_dir: Path, verify: bool = True) -> list[CheckpointInfo]:
    """Valid checkpoints of a run, oldest first; corrupt ones are reported (warning) and skipped."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX)):
        try:
            out.append(
                verify_checkpoint(d) if verify else CheckpointInfo(d, int(d.name[len(_PREFIX) :]), None)
            )
        except CorruptCheckpointError as exc:
            warnings.warn(f"skipping corrupt checkpoint: {exc}", stacklevel=2)
    return sorted(out, key=lambda c: c.step)


def latest_checkpoint(run_dir: Path) -> CheckpointInfo | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def set_checkpoint_metric(path: Path, metric: float) -> None:
    """Record an evaluation metric for keep-best (a side file: the manifest stays as written)."""
    atomic_write_json(Path(path) / "metric.json", {"metric": metric})


def _metric(info: CheckpointInfo) -> float | None:
    side = info.path / "metric.json"
    if side.is_file():
        try:
            return float(json.loads(side.read_text())["metric"])
        except (ValueError, KeyError):
            return None
    return info.metric


def best_checkpoint(run_dir: Path) -> CheckpointInfo | None:
    scored = [(m, c.step, c) for c in list_checkpoints(run_dir) if (m := _metric(c)) is not None]
    return max(scored, key=lambda t: (t[0], t[1]))[2] if scored else None


def prune_checkpoints(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints and the best-scoring one; stale temp dirs too."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    removed = []
    for tmp in root.glob(".tmp-*"):
        pid = tmp.name.split("-")[-2] if tmp.name.count("-") >= 3 else ""
        if not (pid.isdigit() and int(pid) == os.getpid()):
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    found = list_checkpoints(run_dir, verify=False)
    best = best_checkpoint(run_dir)
    keep = {c.path for c in found[-keep_last:]} | ({best.path} if best else set())
    for c in found:
        if c.path not in keep:
            shutil.rmtree(c.path, ignore_errors=True)
            removed.append(c.path)
    return removed
