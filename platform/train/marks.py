"""Training-time marks (``train.time_marks_s``): points of a run kept for a time-to-quality curve.

When the summed training time (``TrainingState.train_time_s``: training steps only, not validation,
checkpointing or evaluation) reaches a mark, the worker checkpoints, validates, and keeps a copy of that
checkpoint under ``runs/<name>/marks/mark_<k>/`` (never pruned); ``runs/<name>/marks.json`` lists the marks
reached so far with their step, training time and validation metrics. Training stops at the last mark.
``platform.quality`` evaluates the kept checkpoints in the simulator afterwards, so the simulator never
competes with the training for the CPU.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evaluation.files import atomic_write_json

MARKS_FILE = "marks.json"
MARKS_DIR = "marks"


@dataclass(frozen=True)
class MarkRecord:
    """One reached mark: ``checkpoint`` is relative to the run directory."""

    index: int
    mark_s: float
    step: int
    train_time_s: float
    checkpoint: str
    val: dict[str, float] = field(default_factory=dict)


class TimeMarks:
    """The marks of one run directory and which of them were reached (resumable: read from marks.json)."""

    def __init__(self, marks_s: tuple[float, ...] | list[float], run_dir: Path) -> None:
        self.marks_s = [float(m) for m in marks_s]
        self.run_dir = Path(run_dir)
        self.records = read_marks(self.run_dir)
        self.reached = len(self.records)  # DDP ranks other than 0 only count (``advance``)

    @property
    def enabled(self) -> bool:
        return bool(self.marks_s)

    @property
    def all_reached(self) -> bool:
        return self.enabled and self.reached >= len(self.marks_s)

    def next_s(self) -> float | None:
        """The training time of the next mark not yet reached, or None."""
        return self.marks_s[self.reached] if self.enabled and not self.all_reached else None

    def due(self, train_time_s: float) -> bool:
        nxt = self.next_s()
        return nxt is not None and train_time_s >= nxt

    def advance(self) -> None:
        """Count the next mark as reached without recording it (DDP ranks that do not write)."""
        self.reached += 1

    def record(self, checkpoint: Path, step: int, train_time_s: float, val: dict[str, float]) -> MarkRecord:
        """Keep a copy of ``checkpoint`` as the next mark's and append it to marks.json (both atomic)."""
        index = len(self.records)
        name = f"{MARKS_DIR}/mark_{index:02d}"
        dest = self.run_dir / name
        tmp = self.run_dir / MARKS_DIR / f".mark_{index:02d}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)  # a copy left by a crash before marks.json was written
        shutil.copytree(checkpoint, tmp)
        tmp.replace(dest)
        rec = MarkRecord(
            index=index,
            mark_s=self.marks_s[index],
            step=step,
            train_time_s=train_time_s,
            checkpoint=name,
            val={k: float(v) for k, v in val.items()},
        )
        self.records.append(rec)
        self.reached = len(self.records)
        atomic_write_json(self.run_dir / MARKS_FILE, [asdict(r) for r in self.records])
        return rec


def read_marks(run_dir: Path) -> list[MarkRecord]:
    """The marks recorded in ``run_dir/marks.json`` (empty when none)."""
    path = Path(run_dir) / MARKS_FILE
    if not path.is_file():
        return []
    try:
        return [MarkRecord(**row) for row in json.loads(path.read_text())]
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{path} is not a valid marks file ({exc}); delete it to record the marks again"
        ) from None
