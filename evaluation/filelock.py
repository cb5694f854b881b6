"""Exclusive ``flock`` locks on a file, released by ``release()`` or by the holder's death (even SIGKILL).

Used for one collection per dataset directory (``evaluation.datasets.collect``), one writer per MLflow outage buffer (``platform.tracking.buffer``), one driver per run
(``platform.train.preflight``: ``<run dir>/.driver.lock``, held for the driver's whole life, a second driver is
refused at once) and one training process per run directory (``platform.train.worker``: a driver killed while
joined to a cluster leaves its train worker alive until Ray reaps it, and a relaunch waits for it instead of
training beside it).

Not the ``filelock`` package (installed with torch, never asked for by this project): what a refused user needs
is who holds the lock, so the holder writes ``pid <n> on <host>`` into the lock file and waiting is reported
once through ``on_wait``; that takes 80 lines on ``fcntl.flock`` here, and would be a wrapper around filelock's
private state there (its 4.x API changed from 3.x).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO


class LockBusyError(RuntimeError):
    """The lock is held by another process; ``holder`` is what it wrote into the lock file."""

    def __init__(self, path: Path, holder: str, waited_s: float) -> None:
        self.path, self.holder, self.waited_s = path, holder, waited_s
        super().__init__(f"{path} is held by {holder} (waited {waited_s:.0f} s)")


class FileLock:
    """``FileLock(path).acquire(wait_s)`` holds an exclusive lock on ``path`` until ``release()``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def holder(self) -> str:
        """What the current holder wrote into the lock file (``pid <n> on <host>``), or ``unknown``."""
        try:
            return self.path.read_text(encoding="utf-8").strip() or "unknown"
        except OSError:
            return "unknown"

    def acquire(
        self, wait_s: float = 0.0, poll_s: float = 0.25, on_wait: Callable[[str], None] | None = None
    ) -> FileLock:
        """Take the lock, waiting up to ``wait_s`` seconds (``on_wait(holder)`` is called once when the lock
        is busy at first); raises ``LockBusyError`` if it is still held after that."""
        if self._file is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        start = time.monotonic()
        warned = False
        while True:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                waited = time.monotonic() - start
                if waited >= wait_s:
                    f.close()
                    raise LockBusyError(self.path, self.holder(), waited) from None
                if not warned and on_wait is not None:
                    on_wait(self.holder())
                    warned = True
                time.sleep(min(poll_s, max(0.0, wait_s - waited)))
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
