"""Evaluation actors and the machine's memory: how many fit (``memory_actor_capacity``), and whether an actor
that died was killed for memory (``OomWatch``) rather than crashing on its own.

An actor killed by Linux's out-of-memory killer dies by SIGKILL; Ray then reports only that its worker
"unexpectedly exits", the same as any crash. The kernel counts its kills (``oom_kill`` in ``/proc/vmstat``,
and in ``memory.events`` of the cgroup a container runs in), so a crash seen while that count rose is
recorded as ``oom_killed``. Ray's own memory monitor says so in its error (``OutOfMemoryError``, "running
low on memory"). Both are seen only for actors on this machine or by Ray; on a remote node a kernel kill
still reads as ``sim_error``.
"""

from __future__ import annotations

from pathlib import Path

# Peak resident memory of one Meta-World evaluation actor: 1.2 GB at MT50 with max_cached_tasks=4 and about
# the same at MT10 (`python -m platform.bench eval --suites mt10,mt50`, docs/evaluation.md), plus a quarter
# for headroom. Other simulators are not measured here and not capped.
ACTOR_MEMORY_MB: dict[str, float] = {"mt10": 1500.0, "mt50": 1500.0}
OOM_COUNTERS = (Path("/proc/vmstat"), Path("/sys/fs/cgroup/memory.events"))
RAY_OOM_MARKERS = ("OutOfMemoryError", "running low on memory", "memory monitor")


def available_memory_mb(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """``MemAvailable`` of this machine in MB (None where the kernel does not say)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_actor_capacity(suite: str, free_mb: float | None = None) -> tuple[int, str] | None:
    """How many evaluation actors of ``suite`` this machine's free memory holds, and the reason to print
    when that caps them; None when the suite's actor size or the free memory is unknown."""
    per_actor = ACTOR_MEMORY_MB.get(suite)
    free_mb = available_memory_mb() if free_mb is None else free_mb
    if per_actor is None or free_mb is None:
        return None
    n = max(1, int(free_mb // per_actor))
    return (
        n,
        f"this machine's free memory ({free_mb / 1024:.1f} GB) holds {n} at about {per_actor / 1024:.1f} GB each",
    )


def oom_kill_count(counters: tuple[Path, ...] = OOM_COUNTERS) -> int:
    """The kernel's out-of-memory kills so far, summed over the counters that exist here."""
    total = 0
    for path in counters:
        try:
            for line in path.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    total += int(value)
        except (OSError, ValueError):
            continue
    return total


class OomWatch:
    """Tells whether an actor death was an out-of-memory kill: Ray's memory monitor named it, or the kernel's
    kill count rose since the last death looked at."""

    def __init__(self, counters: tuple[Path, ...] = OOM_COUNTERS) -> None:
        self.counters = counters
        self.seen = oom_kill_count(counters)

    def killed_for_memory(self, error: BaseException | str) -> bool:
        now = oom_kill_count(self.counters)
        rose, self.seen = now > self.seen, now
        text = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
        return rose or any(marker in text for marker in RAY_OOM_MARKERS)
