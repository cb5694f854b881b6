"""Device-agnostic measurement helpers for benchmarks: peak tensor memory and median wall time.

``PeakTensorMemory`` counts the bytes of tensor storages allocated while it is active and still alive,
and records the maximum. On CUDA it uses the caching allocator's statistics; on CPU (no allocator
statistics) it intercepts every ATen op with a ``TorchDispatchMode`` (forward and backward) and tracks
output storages through weak references. Either way the figure is the peak of memory allocated *during*
the measured region (parameters and optimizer state that existed before are not counted).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _StorageTracker(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = 0
        self.peak = 0

    def _collect(self) -> None:
        dead = [key for key, (ref, _) in self.live.items() if ref.expired()]
        for key in dead:
            self.current -= self.live.pop(key)[1]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        out = func(*args, **(kwargs or {}))
        self._collect()  # storages freed since the previous op
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                storage = leaf.untyped_storage()
                key = storage._cdata
                if key not in self.live:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


class PeakTensorMemory:
    """``with PeakTensorMemory(device) as mem: ...`` then ``mem.peak_bytes``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0
        self._tracker: _StorageTracker | None = None
        self._baseline = 0

    def __enter__(self) -> PeakTensorMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
        else:
            self._tracker = _StorageTracker()
            self._tracker.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._baseline
        else:
            assert self._tracker is not None
            self._tracker.__exit__(*exc)
            self.peak_bytes = self._tracker.peak


def interleaved_median_seconds(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int, device: torch.device, clock: str = "wall"
) -> dict[str, float]:
    """Median time of each ``fns[name]()`` over ``repeats`` rounds, the functions interleaved within a round
    (so that a change of machine load affects all of them alike), after ``warmup`` untimed rounds.

    clock: ``"wall"`` (perf_counter; CUDA synchronised) or ``"process"`` (CPU time of this process: on a shared
    CPU machine with one intra-op thread it is insensitive to other processes' load).
    """
    if clock not in {"wall", "process"}:
        raise ValueError(f"clock must be 'wall' or 'process', got {clock!r}")
    if clock == "process" and device.type == "cuda":
        raise ValueError("clock='process' measures CPU time only; use clock='wall' on CUDA")
    now = time.perf_counter if clock == "wall" else time.process_time

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync()
            start = now()
            fn()
            sync()
            times[name].append(now() - start)
    return {name: statistics.median(values) for name, values in times.items()}
