"""The policy interface that training and evaluation depend on (docs/design.md, section 3).

Checkpoint files a policy reads (written by ``platform`` checkpoints, or by ``save_pretrained``):
  ``policy.json``  the policy config (``PolicyConfig`` as JSON, with ``type``)
  ``model.pt``     raw weights (state dict)
  ``ema.pt``       EMA weights (state dict), optional; preferred for inference when present
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from policies.batch import ConditionBatch

POLICY_CONFIG_FILE = "policy.json"
WEIGHTS_FILE = "model.pt"
EMA_WEIGHTS_FILE = "ema.pt"


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, incomplete or does not match the policy."""


@dataclass
class LossOutput:
    loss: Tensor  # scalar, differentiable
    metrics: dict[str, float] = field(default_factory=dict)  # detached loss parts, for logging


class Policy(nn.Module, ABC):
    """A keyframe policy: condition (point cloud + instruction + gripper) -> next keypose (8,)."""

    config: object  # the frozen pydantic config this policy was built from

    @abstractmethod
    def compute_loss(self, batch: ConditionBatch, generator: torch.Generator | None = None) -> LossOutput:
        """Training loss of one batch of B conditions (two-level expansion happens inside)."""

    @abstractmethod
    def predict_action(self, obs: ConditionBatch, generator: torch.Generator | None = None) -> Tensor:
        """(B, 8) next keyposes ``[xyz, quat xyzw, open]`` for B observations (``obs.target`` ignored)."""

    def forward(self, batch: ConditionBatch, generator: torch.Generator | None = None) -> LossOutput:
        """``forward`` is the training loss, so that DDP wrappers (which hook ``forward``) sync gradients."""
        return self.compute_loss(batch, generator=generator)

    def save_pretrained(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / POLICY_CONFIG_FILE).write_text(self.config.model_dump_json(indent=2))  # type: ignore[attr-defined]
        torch.save(self.state_dict(), directory / WEIGHTS_FILE)
