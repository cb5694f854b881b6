"""Progress lines: the ``[eval]`` lines of a long evaluation (``Coordinator.run``: done / total, success so
far, episodes/s and ETA, printed through tqdm so that a terminal's progress bar stays intact), and the ETA
format of training's ``[train]`` lines (``format_duration``).

A terminal shows the tqdm bar, but a Ray task, a log file or ``ray job submit`` does not: a 500-episode
MT50 evaluation at 1 episode/s printed nothing for 8 minutes. These lines are the same everywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tqdm import tqdm


def format_duration(seconds: float) -> str:
    """``1h02m``, ``3m07s``, ``42s``: the ETA of training's ``[train]`` and evaluation's ``[eval]`` lines."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def progress_line(done: int, total: int, successes: int, elapsed_s: float) -> str:
    """``[eval] 120/500 episodes (24%)  success 45.0% so far  1.02 episodes/s  ETA 6m12s`` (at the end:
    ``took ...``). The rate is over the whole run so far, actor start-up included."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    success = f"{100 * successes / done:.1f}%" if done else "-"
    if done >= total:
        tail = f"took {format_duration(elapsed_s)}"
    else:
        tail = f"ETA {format_duration((total - done) / rate)}" if rate > 0 else "ETA -"
    return (
        f"[eval] {done}/{total} episodes ({100 * done / max(total, 1):.0f}%)  success {success} so far  "
        f"{rate:.2f} episodes/s  {tail}"
    )


@dataclass
class ProgressLines:
    """When one run prints its ``[eval]`` progress lines: none in its first ``every_s`` seconds, then at
    every new 10 % of the episodes and whenever ``every_s`` passed since the last line; a last line at
    the end when any was printed."""

    total: int
    every_s: float
    enabled: bool
    start: float = field(default_factory=time.monotonic)
    last_line: float | None = None  # when the last line was printed (None: none yet)
    decile: int = 0  # the 10 % mark of the last line

    def due(self, done: int, now: float) -> bool:
        if not self.enabled or not self.total or now - self.start < self.every_s:
            return False
        since = now - (self.start if self.last_line is None else self.last_line)
        return 10 * done // self.total > self.decile or since >= self.every_s

    def update(self, done: int, successes: int, now: float | None = None, final: bool = False) -> None:
        now = time.monotonic() if now is None else now
        wanted = (self.enabled and self.last_line is not None) if final else self.due(done, now)
        if not wanted:
            return
        self.last_line, self.decile = now, 10 * done // self.total
        with tqdm.external_write_mode():  # keeps a terminal's progress bar intact
            print(progress_line(done, self.total, successes, now - self.start), flush=True)
