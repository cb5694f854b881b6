"""Level-1 sampling: which B conditions a training step sees (the data-flow stage after collection).

The sampler walks epoch-wise permutations seeded from ``(seed, epoch)``; its whole state is
``(epoch, position)``, so ``state_dict()`` / ``load_state_dict()`` give an exact resume. Per-step
randomness (point subsampling, diffusion noise, augmentation) is seeded from ``(seed, step)`` by
``step_seed`` so that a resumed run draws exactly what an uninterrupted one would have drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def step_seed(seed: int, step: int, stream: int = 0, rank: int = 0) -> int:
    """A 63-bit seed for (run seed, step, stream, DDP rank), independent across streams and ranks (rank 0
    draws what a single-worker run draws)."""
    entropy = [seed & 0xFFFFFFFF, step & 0xFFFFFFFF, stream] + ([rank] if rank else [])
    ss = np.random.SeedSequence(entropy)
    hi, lo = (int(x) for x in ss.generate_state(2, dtype=np.uint32))
    return ((hi << 32) | lo) & ((1 << 63) - 1)


# data.balance -> the exponent of Level1Sampler's group sizes ("samples" draws without groups unless data.task_weights
# weighs some tasks, then with groups and exponent 1: every group in proportion to its size times its weight)
BALANCE_EXPONENTS: dict[str, float] = {"tasks": 0.0, "sqrt": 0.5, "samples": 1.0}


class Level1Sampler:
    """Draws ``batch_size`` condition indices per step from ``num_samples``, epoch by epoch.

    Uniform over samples (``groups=None``): each epoch is one permutation of the samples, every sample drawn
    once. Balanced over groups (``groups``: (num_samples,) task index of each sample): each epoch draws a group
    of n samples ``ceil(n_max * (n / n_max) ** exponent)`` times, n_max the largest group's size (a group's
    samples repeat, in fresh permutations, when that is more than n), all shuffled together. ``exponent`` 0
    (``data.balance=tasks``): every group as often as the largest; 0.5 (``data.balance=sqrt``): in proportion to
    the square root of its size, ceil(sqrt(n * n_max)); 1: in proportion to its size (uniform over samples).
    ``weights`` (one per group, indexed by group id; ``data.task_weights``) multiply those draws: a group of
    weight 2 is drawn twice as often, ``ceil(n_max * (n / n_max) ** exponent * w)`` times per epoch. Either
    way an epoch is a function of (seed, epoch), so the state is (epoch, position) and resume is exact."""

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int,
        groups: np.ndarray | None = None,
        exponent: float = 0.0,
        weights: np.ndarray | None = None,
    ) -> None:
        if num_samples < 1:
            raise ValueError("the dataset is empty: nothing to sample")
        if groups is not None and len(groups) != num_samples:
            raise ValueError(f"groups has {len(groups)} entries for {num_samples} samples")
        if not 0.0 <= exponent <= 1.0:
            raise ValueError(f"exponent {exponent} must be in [0, 1] (1: in proportion to a group's size)")
        if weights is not None:
            if groups is None:
                raise ValueError("weights weigh groups: pass groups too")
            weights = np.asarray(weights, np.float64)
            if weights.ndim != 1 or len(weights) <= int(np.max(groups)) or not np.all(weights > 0):
                raise ValueError(
                    f"weights must be one positive number per group (ids 0..{int(np.max(groups))}), "
                    f"got {weights.tolist()}"
                )
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.groups = None if groups is None else np.asarray(groups, np.int64)
        self.exponent = float(exponent)
        self.weights = weights
        self.epoch = 0
        self.position = 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, 0x5A])
        if self.groups is None:
            return rng.permutation(self.num_samples)
        ids = np.unique(self.groups)
        members = [np.flatnonzero(self.groups == g) for g in ids]
        n_max = max(len(m) for m in members)
        parts = []
        for g, m in zip(ids, members, strict=True):
            w = 1.0 if self.weights is None else float(self.weights[g])
            # the 1e-9 keeps an exact product (16 * (4 / 16) ** 0.5 = 8) from rounding up to the next draw
            size = int(np.ceil(n_max * (len(m) / n_max) ** self.exponent * w - 1e-9))
            parts.append(np.concatenate([rng.permutation(m) for _ in range(-(-size // len(m)))])[:size])
        return rng.permutation(np.concatenate(parts))  # (sum of the groups' sizes,)

    def next_indices(self) -> np.ndarray:
        """(B,) int64 indices; crosses epoch boundaries seamlessly (a batch may span two epochs)."""
        out = np.empty(self.batch_size, dtype=np.int64)
        filled = 0
        while filled < self.batch_size:
            take = min(self.batch_size - filled, len(self._perm) - self.position)
            out[filled : filled + take] = self._perm[self.position : self.position + take]
            filled += take
            self.position += take
            if self.position == len(self._perm):
                self.epoch += 1
                self.position = 0
                self._perm = self._permutation(self.epoch)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "balanced": self.groups is not None,
            "balance_exponent": self.exponent,
            "group_weights": None if self.weights is None else self.weights.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_samples"] != self.num_samples:
            raise ValueError(
                f"the checkpoint's sampler saw {state['num_samples']} samples but the dataset has "
                f"{self.num_samples}: resuming on a different dataset is not exact; use a new run name"
            )
        # checkpoints written before data.balance=sqrt have no exponent: theirs was 0 (tasks); before
        # data.task_weights, no weights
        if bool(state.get("balanced", False)) != (self.groups is not None) or (
            self.groups is not None and float(state.get("balance_exponent", 0.0)) != self.exponent
        ):
            raise ValueError(
                "the checkpoint was trained with another data.balance: resuming with a different "
                "level-1 sampling is not exact; use the run's setting or a new run name"
            )
        theirs = state.get("group_weights")
        if theirs != (None if self.weights is None else self.weights.tolist()):
            raise ValueError(
                f"the checkpoint was trained with other data.task_weights (per task: {theirs}): resuming with "
                "a different level-1 sampling is not exact; use the run's setting or a new run name"
            )
        self.batch_size = state["batch_size"]
        self.seed = state["seed"]
        self.epoch = state["epoch"]
        self.position = state["position"]
        self._perm = self._permutation(self.epoch)
