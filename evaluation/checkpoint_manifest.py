"""A checkpoint directory's ``manifest.json``: its step, an optional metric, and the size and sha256 of every
file in it. ``platform.checkpoint`` writes it last (so a directory with a manifest is complete), and every
reader checks a checkpoint against it: training when it resumes, evaluation when it reads a checkpoint
(``evaluation.runtime.bundle.CheckpointBundle.read``), so a corrupt file is named before anything loads it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from evaluation.files import atomic_write_json, sha256_file

MANIFEST = "manifest.json"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint directory fails its manifest check (missing file, size or hash mismatch). Not a
    ``policies.base.CheckpointError``: this module stays free of torch, since a checkpoint writer imports it
    (``CheckpointBundle.read`` turns it into one)."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    metric: float | None  # e.g. eval success, for keep-best


def write_manifest(directory: Path, step: int, names: Iterable[str], metric: float | None = None) -> None:
    """Write ``directory/manifest.json`` for the files ``names`` (already written and fsync'd), fsync'd."""
    files = {
        name: {"bytes": (directory / name).stat().st_size, "sha256": sha256_file(directory / name)}
        for name in names
    }
    manifest = {"step": step, "metric": metric, "created": time.time(), "files": files}
    atomic_write_json(directory / MANIFEST, manifest, indent=2)


def verify_checkpoint(path: Path) -> CheckpointInfo:
    """Check a checkpoint against its manifest; raise ``CorruptCheckpointError`` naming what is wrong."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise CorruptCheckpointError(f"{path}: no {MANIFEST} (interrupted write or not a checkpoint)")
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
        step = int(manifest["step"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(f"{mpath}: unreadable manifest ({exc})") from None
    for name, meta in files.items():
        f = path / name
        if not f.is_file():
            raise CorruptCheckpointError(f"{path}: file {name} listed in the manifest is missing")
        if f.stat().st_size != meta["bytes"] or sha256_file(f) != meta["sha256"]:
            raise CorruptCheckpointError(
                f"{path}: {name} does not match its manifest hash (corrupted): use another "
                "checkpoint of the run, or retrain"
            )
    return CheckpointInfo(path=path, step=step, metric=manifest.get("metric"))
