"""Noise schedules and samplers (DDPM ancestral, DDIM deterministic) over a normalised action space.

Conventions (as diffusers' ``DDPMScheduler`` / ``DDIMScheduler`` with ``prediction_type="epsilon"``):
``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps`` for integer ``t`` in ``[0, T)``; the network predicts eps.
``scaled_linear`` betas are ``linspace(sqrt(beta_start), sqrt(beta_end), T) ** 2`` (Mini-Diffuser, 3DDA:
T = 100, 1e-4 .. 0.02). Sampling visits ``inference_steps`` timesteps with "leading" spacing
(``[(n-1)*k, ..., k, 0]`` with ``k = T // n``); ``inference_steps = T`` is the classic full chain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from policies.config import DiffusionConfig

# One generator for the whole batch, or one per row (evaluation batches whose rows must get exactly the
# noise they would get alone), or None (the global RNG).
Generators = torch.Generator | Sequence[torch.Generator] | None


class NoiseSchedule(nn.Module):
    """Buffers of one schedule (non-persistent: they are derived from the config, not saved)."""

    def __init__(self, cfg: DiffusionConfig, clip_sample: float | None = 1.0) -> None:
        super().__init__()
        self.cfg = cfg
        self.clip_sample = clip_sample
        t = cfg.train_steps
        if cfg.schedule == "scaled_linear":
            betas = (
                torch.linspace(math.sqrt(cfg.beta_start), math.sqrt(cfg.beta_end), t, dtype=torch.float64)
                ** 2
            )
        else:
            betas = torch.linspace(cfg.beta_start, cfg.beta_end, t, dtype=torch.float64)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)  # (T,)

    @property
    def train_steps(self) -> int:
        return self.cfg.train_steps

    def _abar(self, t: Tensor) -> Tensor:
        """(R,) int timesteps, -1 meaning 'before the first step' (abar = 1) -> (R, 1)."""
        abar = self.alphas_cumprod[t.clamp_min(0)]
        return torch.where(t < 0, torch.ones_like(abar), abar)[:, None]

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x0, noise: (R, D); t: (R,) int64 -> x_t (R, D)."""
        abar = self._abar(t)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def sample_timesteps(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """(n,) int64 training timesteps, uniform over [0, T)."""
        gen_device = generator.device if generator is not None else device
        return torch.randint(0, self.train_steps, (n,), generator=generator, device=gen_device).to(device)

    def inference_timesteps(self, steps: int) -> list[int]:
        """Descending timesteps visited by a sampler with ``steps`` steps ('leading' spacing)."""
        if not 1 <= steps <= self.train_steps:
            raise ValueError(f"inference steps must be in [1, {self.train_steps}], got {steps}")
        stride = self.train_steps // steps
        return [i * stride for i in reversed(range(steps))]

    def initial_sample(self, noise: Tensor, t0: int, how: str = "forward") -> Tensor:
        """Where sampling starts at timestep ``t0`` given standard noise (R, D): ``"forward"`` is the forward
        process from x_0 = 0, ``sqrt(1 - abar_t0) * noise`` (the scale training inputs have at t0);
        ``"standard"`` is the noise itself."""
        if how == "standard":
            return noise
        if how != "forward":
            raise ValueError(
                f"unknown initial sample {how!r}; use 'forward' or 'standard' (diffusion.init_sample)"
            )
        return (1 - self.alphas_cumprod[t0]).sqrt().to(noise.dtype) * noise

    def predict_x0(self, x_t: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        abar = self._abar(t)
        x0 = (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()
        return x0.clamp(-self.clip_sample, self.clip_sample) if self.clip_sample is not None else x0

    def step(
        self,
        sampler: str,
        x_t: Tensor,
        eps: Tensor,
        t: Tensor,
        t_prev: Tensor,
        generator: Generators = None,
    ) -> Tensor:
        """One reverse step from ``t`` to ``t_prev`` (< t; -1 ends the chain). x_t, eps: (R, D); t, t_prev: (R,)."""
        abar_t, abar_prev = self._abar(t), self._abar(t_prev)
        x0 = self.predict_x0(x_t, eps, t)
        if sampler == "ddim":  # eta = 0: deterministic
            eps_hat = (x_t - abar_t.sqrt() * x0) / (1 - abar_t).sqrt()
            return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps_hat
        if sampler != "ddpm":
            raise ValueError(
                f"unknown sampler {sampler!r}; use 'ddpm' or 'ddim' (policy config diffusion.sampler)"
            )
        beta = 1 - abar_t / abar_prev  # effective beta over the (possibly strided) step
        mean = (abar_prev.sqrt() * beta / (1 - abar_t)) * x0 + (
            (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar_t)
        ) * x_t
        var = ((1 - abar_prev) / (1 - abar_t) * beta).clamp_min(1e-20)
        z = randn(tuple(x_t.shape), generator, x_t.device, x_t.dtype)
        return mean + torch.where(t_prev[:, None] >= 0, var.sqrt() * z, torch.zeros_like(z))


def _draw(
    fn: Any, shape: tuple[int, ...], generator: Generators, device: torch.device, dtype: Any = None
) -> Tensor:
    """``fn(shape)`` on the generator's device, moved to ``device``. With a sequence of G generators (one per
    observation), dim 0 holds G consecutive groups of shape[0] / G rows (one row per observation, or the K
    candidates of ``diffusion.inference_samples``), and group g is ``fn((shape[0] / G, *shape[1:]))`` drawn
    from generator g alone: the draw a batch of one observation would get."""
    kw = {} if dtype is None else {"dtype": dtype}
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        return fn(shape, generator=generator, device=gen_device, **kw).to(device)
    if not generator or shape[0] % len(generator):
        raise ValueError(f"{len(generator)} row generators for {shape[0]} rows")
    per = shape[0] // len(generator)
    rows = [fn((per, *shape[1:]), generator=g, device=g.device, **kw).to(device) for g in generator]
    return torch.cat(rows, dim=0)


def randn(shape: tuple[int, ...], generator: Generators, device: torch.device, dtype: Any = None) -> Tensor:
    """Standard normal noise drawn on the generator's device, then moved to ``device`` (see ``_draw``)."""
    return _draw(torch.randn, shape, generator, device, dtype)


def rand(shape: tuple[int, ...], generator: Generators, device: torch.device) -> Tensor:
    """Uniform [0, 1) noise drawn on the generator's device, then moved to ``device`` (see ``_draw``)."""
    return _draw(torch.rand, shape, generator, device)
