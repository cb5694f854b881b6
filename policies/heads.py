"""Output heads and per-row losses (Mini-Diffuser): epsilon on xyz (L1, weight 20), rotation as 3 x bins
Euler classification (cross-entropy), gripper open as BCE. Also the workspace normalisation of positions.

Losses are returned per row (R,) so that a batched loss can be compared with a naive per-condition loop; the
training loss is their mean over rows, every noised sample weighted equally.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Workspace(nn.Module):
    """Maps world xyz (metres) to [-1, 1]^3 over [workspace_low, workspace_high] and back."""

    def __init__(self, low: tuple[float, float, float], high: tuple[float, float, float]) -> None:
        super().__init__()
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32), persistent=False)
        self.register_buffer("high", torch.tensor(high, dtype=torch.float32), persistent=False)

    def normalize(self, xyz: Tensor) -> Tensor:
        return 2 * (xyz - self.low) / (self.high - self.low) - 1

    def denormalize(self, x: Tensor) -> Tensor:
        return self.low + (x + 1) * (self.high - self.low) / 2

    def clip(self, xyz: Tensor) -> Tensor:
        return torch.minimum(torch.maximum(xyz, self.low), self.high)


class ActionEmbedding(nn.Module):
    """Noisy action (normalised xyz, optionally + 6D rotation) -> (R, d)."""

    def __init__(self, action_dim: int, d: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(action_dim, d), nn.GELU(), nn.Linear(d, d))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class EpsilonHead(nn.Module):
    """(R, d) -> (R, out_dim) predicted noise."""

    def __init__(self, d: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class RotationGripperHead(nn.Module):
    """(R, d) -> rotation logits (R, 3, bins) (omitted when bins = 0) and gripper logit (R,)."""

    def __init__(self, d: int, bins: int) -> None:
        super().__init__()
        self.bins = bins
        self.net = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, 3 * bins + 1))

    def forward(self, x: Tensor) -> tuple[Tensor | None, Tensor]:
        out = self.net(x)  # (R, 3*bins + 1)
        rot = out[:, : 3 * self.bins].reshape(-1, 3, self.bins) if self.bins else None  # (R, 3, bins)
        return rot, out[:, -1]


def epsilon_l1_rows(pred: Tensor, target: Tensor) -> Tensor:
    """(R, D), (R, D) -> (R,) mean absolute error per row."""
    return (pred - target).abs().mean(dim=-1)


def rotation_ce_rows(logits: Tensor, bins: Tensor) -> Tensor:
    """logits (R, 3, K), bins (R, 3) int64 -> (R,) cross-entropy averaged over the three Euler angles."""
    r, three, k = logits.shape
    ce = F.cross_entropy(logits.reshape(r * three, k), bins.reshape(r * three), reduction="none")
    return ce.reshape(r, three).mean(dim=-1)


def gripper_bce_rows(logit: Tensor, is_open: Tensor) -> Tensor:
    """(R,), (R,) in {0, 1} -> (R,) binary cross-entropy."""
    return F.binary_cross_entropy_with_logits(logit, is_open.to(logit.dtype), reduction="none")
