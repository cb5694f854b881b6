"""Run independent jobs over worker processes or Ray actors, with a progress bar; results in job order.

``executor="process"``: a ``spawn`` multiprocessing pool (each worker imports MuJoCo and makes its own
GL context; nothing GL-related is inherited). ``executor="ray"``: ``ray.util.multiprocessing.Pool``
(Ray actors; attaches to the running Ray session, or starts a local one with this repo on the
workers' ``PYTHONPATH``). ``workers == 1`` runs in this process.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tqdm import tqdm

from evaluation.raysession import ray_session

J = TypeVar("J")
R = TypeVar("R")


def _indexed(args: tuple[Callable[[Any], Any], int, Any]) -> tuple[int, Any]:
    fn, index, job = args
    return index, fn(job)


def _worker_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per worker: no oversubscription
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def run_pool(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    workers: int,
    executor: str = "process",
    desc: str = "jobs",
    progress: bool = True,
) -> list[R]:
    """``[fn(job) for job in jobs]`` computed by ``workers`` workers (order of ``jobs`` kept)."""
    if executor not in ("process", "ray"):
        raise ValueError(f"executor must be 'process' or 'ray', got {executor!r}")
    results: list[Any] = [None] * len(jobs)
    bar = tqdm(total=len(jobs), desc=desc, unit="ep", disable=not progress, file=None, dynamic_ncols=True)
    try:
        if workers == 1 or len(jobs) <= 1:
            for i, job in enumerate(jobs):
                results[i] = fn(job)
                bar.update(1)
            return results
        n = min(workers, len(jobs))
        with contextlib.ExitStack() as stack:
            if executor == "ray":
                from ray.util.multiprocessing import Pool

                stack.enter_context(
                    ray_session(address=os.environ.get("RAY_ADDRESS", "local"), log_to_driver=False)
                )
                pool = Pool(processes=n, initializer=_worker_init)
            else:
                pool = multiprocessing.get_context("spawn").Pool(n, initializer=_worker_init)
            try:
                tasks = [(fn, i, job) for i, job in enumerate(jobs)]
                chunk = max(1, len(jobs) // (n * 8))  # consecutive jobs (same task) share a worker's contexts
                for index, result in pool.imap_unordered(_indexed, tasks, chunksize=chunk):
                    results[index] = result
                    bar.update(1)
            finally:
                pool.terminate()
                pool.join()
        return results
    finally:
        bar.close()
