"""Test fakes for platform tests (named as such): an in-memory keyframe dataset built from synthetic scenes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from policies.batch import ConditionBatch
from policies.synthetic import random_condition_batch


class FakeKeyframeDataset:
    """Quacks like ``evaluation.datasets.dataset.KeyframeDataset`` for the training loop: ``len``, ``batch``,
    ``task_names``, ``instruction_embedding``. Samples are fixed synthetic scenes."""

    def __init__(self, policy_cfg, num_samples: int = 12, seed: int = 0, points: int = 96) -> None:
        self._all = random_condition_batch(
            num_samples,
            points,
            text_dim=policy_cfg.text_dim,
            workspace_low=policy_cfg.workspace_low,
            workspace_high=policy_cfg.workspace_high,
            seed=seed,
        )
        self.task_names = ["fake-task-a", "fake-task-b"]
        self.task_index = np.arange(num_samples) % 2  # (S,) alternating tasks
        self.sample_episode = (
            np.arange(num_samples) // 2
        )  # (S,) two samples (one per task) per episode number
        self._all = ConditionBatch(**{**self._all.__dict__, "task_index": torch.as_tensor(self.task_index)})

    def __len__(self) -> int:
        return self._all.batch_size

    def instruction_embedding(self, task: str):
        return self._all.text[0].numpy(), self._all.text_mask[0].numpy()

    def batch(
        self,
        indices: Sequence[int],
        max_points: int,
        generator: np.random.Generator | None = None,
        history: int = 0,
    ) -> ConditionBatch:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        batch = self._all.select(idx)
        if not history:
            return batch
        past = batch.gripper[:, None, :].expand(-1, history, -1).clone()  # (B, H, 8): the first keyframe's
        return ConditionBatch(**{**batch.__dict__, "history": past})
