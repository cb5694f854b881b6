"""The policy interface that training and evaluation depend on (docs/design.md, section 3).

Checkpoint files a policy reads (written by ``platform`` checkpoints, or by ``save_pretrained``):
  ``policy.json``  the policy config (``PolicyConfig`` as JSON, with ``type``)
  ``model.pt``     raw weights (state dict)
  ``ema.pt``       EMA weights (state dict), optional; preferred for inference when present
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    @classmethod
    def from_checkpoint(cls, directory: str | Path, prefer_ema: bool = True, map_location: str = "cpu",
                        config_updates: dict[str, Any] | None = None) -> Policy:
        """Rebuild a policy from a checkpoint directory's config alone, then load its weights.

        ``config_updates``: nested values laid over the saved config, for inference settings such as
        ``{"diffusion": {"sampler": "ddpm", "inference_steps": 100}}`` (an architecture change fails to load).
        """
        config, weights = read_policy_files(directory, prefer_ema)
        return cls.from_state(config, weights, map_location, config_updates, source=str(directory))

    @classmethod
    def from_state(cls, config: dict[str, Any], weights: Path | bytes, map_location: str = "cpu",
                   config_updates: dict[str, Any] | None = None, source: str = "the weights") -> Policy:
        """Build the policy of ``config`` (``policy.json`` as a dict) and load ``weights`` (a file, or its
        bytes as read by :func:`read_policy_files` elsewhere: what evaluation actors receive)."""
        import io

        from policies.config import _deep_merge
        from policies.registry import build_policy, parse_policy_config

        try:
            cfg = parse_policy_config(_deep_merge(config, config_updates or {}))
        except ValueError as exc:
            raise CheckpointError(f"{source}: {POLICY_CONFIG_FILE} is not a valid policy config: {exc}") from exc
        policy = build_policy(cfg)
        try:
            state = torch.load(io.BytesIO(weights) if isinstance(weights, bytes) else weights,
                               map_location=map_location, weights_only=True)
            policy.load_state_dict(state)
        except Exception as exc:  # corrupt file or shape mismatch: name the file
            name = weights if isinstance(weights, Path) else source
            raise CheckpointError(f"cannot load weights {name}: {exc}") from exc
        return policy.eval()


def read_policy_files(directory: str | Path, prefer_ema: bool = True) -> tuple[dict[str, Any], Path]:
    """A checkpoint directory's policy config (``policy.json``) and the weights file to load (``ema.pt``
    when present and preferred, else ``model.pt``), checked to exist."""
    directory = Path(directory)
    cfg_path = directory / POLICY_CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path} is missing: {directory} is not a policy checkpoint directory")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_path} is not a valid policy config: {exc}") from exc
    weights = directory / (EMA_WEIGHTS_FILE if prefer_ema and (directory / EMA_WEIGHTS_FILE).is_file() else WEIGHTS_FILE)
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing: the checkpoint {directory} is incomplete")
    return config, weights
