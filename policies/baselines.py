"""Baselines trained in the same code as Mini-Diffuser (same encoder, neck and heads) for a fair comparison.

* ``OneToOnePolicy`` (in ``policies.minidiffuser``): M = 1, one encoded condition per noised sample.
* ``DDAStylePolicy``: one-to-one, and, as 3D Diffuser Actor does, the rotation is diffused too: the action
  is ``[normalised xyz (3), 6D rotation (6)]``; the position uses ``config.diffusion`` and the rotation its own
  schedule ``config.rotation_diffusion`` (same timestep index, different betas). The head predicts both
  noises (L1, weights ``diffusion.loss_weight`` and ``rotation_diffusion.loss_weight``) and the gripper
  (BCE); there is no Euler-bin classifier. Sampling steps both parts together with ``config.diffusion``'s
  sampler and steps; the rotation is read from the denoised 6D vector (Gram-Schmidt).
"""

from __future__ import annotations

import torch
from torch import Tensor

from policies.config import DDAStyleConfig
from policies.diffusion import Generators, NoiseSchedule
from policies.heads import epsilon_l1_rows, gripper_bce_rows
from policies.minidiffuser import MiniDiffuserPolicy, NoiseDraw, OneToOnePolicy, RowOutputs
from policies.rotation import quat_to_rot6d, rot6d_to_quat

__all__ = ["DDAStylePolicy", "OneToOnePolicy"]


class DDAStylePolicy(MiniDiffuserPolicy):
    action_dim = 9

    def __init__(self, config: DDAStyleConfig) -> None:
        super().__init__(config)
        self.rotation_schedule = NoiseSchedule(config.rotation_diffusion)

    def _rotation_bins(self) -> int:
        return 0  # no Euler-bin head: the rotation is diffused

    def clean_action(self, target: Tensor) -> Tensor:
        """(B, 8) -> (B, 9): normalised xyz and the 6D rotation (entries already in [-1, 1])."""
        return torch.cat([self.workspace.normalize(target[:, :3]), quat_to_rot6d(target[:, 3:7])], dim=-1)

    def noisy_action(self, x0: Tensor, draw: NoiseDraw) -> Tensor:
        pos = self.schedule.add_noise(x0[:, :3], draw.noise[:, :3], draw.t)
        rot = self.rotation_schedule.add_noise(x0[:, 3:], draw.noise[:, 3:], draw.t)
        return torch.cat([pos, rot], dim=-1)  # (R, 9)

    def reverse_step(
        self, x: Tensor, eps: Tensor, t: Tensor, t_prev: Tensor, generator: Generators
    ) -> Tensor:
        sampler = self.config.diffusion.sampler
        pos = self.schedule.step(sampler, x[:, :3], eps[:, :3], t, t_prev, generator)
        rot = self.rotation_schedule.step(sampler, x[:, 3:], eps[:, 3:], t, t_prev, generator)
        return torch.cat([pos, rot], dim=-1)

    def initial_sample(self, noise: Tensor, t0: int) -> Tensor:
        how = self.config.diffusion.init_sample
        pos = self.schedule.initial_sample(noise[:, :3], t0, how)
        rot = self.rotation_schedule.initial_sample(noise[:, 3:], t0, how)
        return torch.cat([pos, rot], dim=-1)

    def loss_terms(
        self, out: RowOutputs, draw: NoiseDraw, target_rows: Tensor, head: bool = True
    ) -> dict[str, Tensor]:
        return {
            "position": self.config.diffusion.loss_weight
            * epsilon_l1_rows(out.eps[:, :3], draw.noise[:, :3]),
            "rotation": self.config.rotation_diffusion.loss_weight
            * epsilon_l1_rows(out.eps[:, 3:], draw.noise[:, 3:]),
            "gripper": gripper_bce_rows(out.gripper, target_rows[:, 7] > 0.5),
        }

    def decode(self, x0: Tensor, out: RowOutputs) -> Tensor:
        xyz = self.workspace.clip(self.workspace.denormalize(x0[:, :3].clamp(-1, 1)))
        quat = rot6d_to_quat(x0[:, 3:])  # (B, 4)
        is_open = (out.gripper > 0).to(xyz.dtype)[:, None]
        return torch.cat([xyz, quat, is_open], dim=-1)
