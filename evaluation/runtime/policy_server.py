"""A policy server: one Ray actor that batches observations from many simulator actors.

Simulator actors send B=1 ``ConditionBatch`` requests (the point cloud is fused on their CPU); the server
collects up to ``max_batch`` of them, waiting at most ``max_wait_s`` after the first arrival, pads them
into one (B, N, 7) batch and runs ``predict_action`` once: the encoder once per observation, the
denoiser over all diffusion steps for the whole batch. The forward pass runs in a worker thread, so the
asyncio loop keeps accepting requests while the GPU is busy (the next batch fills up meanwhile).

Noise: with one request the sampler's generator is seeded with that request's ``row_seed``, exactly as
``LocalInference`` does, so the output is identical to in-actor inference. With several rows the policy
gets per-row generators when it declares ``accepts_row_generators = True`` (each row draws the noise it
would draw alone; outputs equal one row at a time up to float rounding of the batched forward pass);
otherwise one generator seeded from all the rows' seeds (deterministic given the batch).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import ray
import torch
from torch import Tensor

from evaluation.runtime.episode import check_actions
from policies.base import Policy
from policies.batch import ConditionBatch

PolicyFactory = Callable[[], Policy]


class PolicyServerError(RuntimeError):
    """The policy server could not answer in time or has died."""


def _pad_to(x: Tensor, length: int) -> Tensor:
    """Zero-pad dim 1 of (1, n, ...) to (1, length, ...)."""
    if x.shape[1] == length:
        return x
    pad = torch.zeros((x.shape[0], length - x.shape[1], *x.shape[2:]), dtype=x.dtype)
    return torch.cat([x, pad], dim=1)


def stack_conditions(items: Sequence[ConditionBatch]) -> ConditionBatch:
    """Concatenate conditions along the batch, zero-padding points and text tokens (masks stay exact)."""
    if not items:
        raise ValueError("stack_conditions needs at least one condition")
    n = max(c.points.shape[1] for c in items)
    length = max(c.text.shape[1] for c in items)
    have_index = all(c.task_index is not None for c in items)
    have_history = all(c.history is not None for c in items)
    return ConditionBatch(
        points=torch.cat([_pad_to(c.points, n) for c in items]),  # (B, N, 7)
        point_mask=torch.cat([_pad_to(c.point_mask, n) for c in items]),  # (B, N)
        text=torch.cat([_pad_to(c.text, length) for c in items]),  # (B, L, D)
        text_mask=torch.cat([_pad_to(c.text_mask, length) for c in items]),  # (B, L)
        gripper=torch.cat([c.gripper for c in items]),  # (B, 8)
        task_index=torch.cat([c.task_index for c in items]) if have_index else None,  # type: ignore[misc]
        history=torch.cat([c.history for c in items]) if have_history else None,  # type: ignore[misc]
    )


def predict_rows(policy: Policy, batch: ConditionBatch, row_seeds: Sequence[int], device: str) -> np.ndarray:
    """(B, 8) actions of a batch whose row r is seeded by ``row_seeds[r]`` (see the module docstring)."""
    b = batch.batch_size
    if len(row_seeds) != b:
        raise ValueError(f"{len(row_seeds)} row seeds for a batch of {b}")
    if b == 1:
        generator: object = torch.Generator(device=device).manual_seed(int(row_seeds[0]))
    elif getattr(policy, "accepts_row_generators", False):
        generator = [torch.Generator(device=device).manual_seed(int(s)) for s in row_seeds]
    else:
        mixed = np.random.SeedSequence([int(s) for s in row_seeds]).generate_state(1, dtype=np.uint64)[0]
        generator = torch.Generator(device=device).manual_seed(int(mixed >> 1))
    with torch.no_grad():
        action = policy.predict_action(batch.to(device), generator=generator)  # type: ignore[arg-type]
    return check_actions(action, b)


@dataclass
class _Request:
    condition: ConditionBatch
    row_seed: int
    future: asyncio.Future


@ray.remote
class PolicyServer:
    """Async Ray actor: ``infer(condition, row_seed) -> (8,)``; requests are batched across callers."""

    def __init__(
        self,
        policy_factory: PolicyFactory,
        device: str = "cpu",
        max_batch: int = 16,
        max_wait_s: float = 0.005,
        torch_threads: int = 1,
    ) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_s >= 0, got {max_batch}, {max_wait_s}")
        torch.set_num_threads(max(1, torch_threads))
        self.device = device
        self.policy = policy_factory().to(device).eval()
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._pending: list[_Request] = []
        self._arrived: asyncio.Event | None = None
        self._loop_task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1)
        self._batches: list[int] = []
        self._forward_s = 0.0

    async def ready(self) -> dict[str, object]:
        import os

        return {"pid": os.getpid(), "device": self.device}

    async def infer(self, condition: ConditionBatch, row_seed: int) -> np.ndarray:
        if self._loop_task is None:
            self._arrived = asyncio.Event()
            self._loop_task = asyncio.get_running_loop().create_task(self._batch_loop())
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Request(condition, row_seed, future))
        assert self._arrived is not None
        self._arrived.set()
        return await future

    async def stats(self) -> dict[str, float]:
        """Batches run, mean batch size and seconds spent in forward passes since the last reset."""
        n = len(self._batches)
        return {
            "batches": float(n),
            "mean_batch": float(np.mean(self._batches)) if n else 0.0,
            "forward_s": self._forward_s,
        }

    async def reset_stats(self) -> None:
        self._batches, self._forward_s = [], 0.0

    async def _batch_loop(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            first = loop.time()
            while len(self._pending) < self.max_batch:
                left = self.max_wait_s - (loop.time() - first)
                if left <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), timeout=left)
                except TimeoutError:
                    break
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
            if self._pending:
                self._arrived.set()
            else:
                self._arrived.clear()
            try:
                actions = await loop.run_in_executor(self._executor, self._forward, batch)
            except Exception as exc:  # handed to every caller of this batch, never swallowed
                for req in batch:
                    if not req.future.done():
                        req.future.set_exception(exc)
                continue
            for req, action in zip(batch, actions, strict=True):
                if not req.future.done():  # a caller that timed out has cancelled its request
                    req.future.set_result(action)

    def _forward(self, batch: list[_Request]) -> np.ndarray:
        t = time.perf_counter()
        stacked = stack_conditions([r.condition for r in batch])
        actions = predict_rows(self.policy, stacked, [r.row_seed for r in batch], self.device)  # (B, 8)
        self._forward_s += time.perf_counter() - t
        self._batches.append(len(batch))
        return actions


class ServerInference:
    """``Inference`` that asks a ``PolicyServer`` (used inside simulator actors); waits at most ``timeout_s``."""

    def __init__(self, server: ray.actor.ActorHandle, timeout_s: float) -> None:
        self.server = server
        self.timeout_s = timeout_s

    def __call__(self, condition: ConditionBatch, row_seed: int) -> np.ndarray:
        ref = self.server.infer.remote(condition, row_seed)
        ready, _ = ray.wait([ref], timeout=self.timeout_s)
        if not ready:
            ray.cancel(ref)
            raise PolicyServerError(f"the policy server did not answer within {self.timeout_s:.0f} s")
        return ray.get(ref)
