import math

import pytest
import torch

from policies.config import DiffusionConfig
from policies.diffusion import NoiseSchedule

pytestmark = pytest.mark.unit


def test_scaled_linear_betas_match_definition():
    s = NoiseSchedule(DiffusionConfig(train_steps=100))
    betas = torch.linspace(math.sqrt(1e-4), math.sqrt(0.02), 100, dtype=torch.float64) ** 2
    assert torch.allclose(s.alphas_cumprod.double(), torch.cumprod(1 - betas, 0), atol=1e-6)
    assert abs(float(s.alphas_cumprod[0]) - (1 - 1e-4)) < 1e-7


def test_inference_timesteps_leading_spacing():
    s = NoiseSchedule(DiffusionConfig(train_steps=100, inference_steps=10))
    assert s.inference_timesteps(10) == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]
    assert s.inference_timesteps(100) == list(range(99, -1, -1))


def _run_chain(sampler: str, steps: int, x0: torch.Tensor) -> torch.Tensor:
    """With an oracle epsilon (computed from the true x0), every sampler must return x0."""
    s = NoiseSchedule(DiffusionConfig(train_steps=100, inference_steps=steps, sampler=sampler))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(x0.shape, generator=g)
    ts = s.inference_timesteps(steps)
    for i, t in enumerate(ts):
        tt = torch.full((x0.shape[0],), t)
        tp = torch.full((x0.shape[0],), ts[i + 1] if i + 1 < len(ts) else -1)
        abar = s.alphas_cumprod[t]
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        x = s.step(sampler, x, eps, tt, tp, g)
    return x


def test_samplers_recover_x0_with_oracle_noise():
    x0 = torch.rand(64, 3) * 1.8 - 0.9
    for sampler, steps in [("ddim", 10), ("ddpm", 100), ("ddpm", 20)]:
        assert torch.allclose(_run_chain(sampler, steps, x0), x0, atol=1e-4), sampler


def test_add_noise_and_x0_prediction_are_inverse():
    s = NoiseSchedule(DiffusionConfig(), clip_sample=None)
    x0, eps = torch.randn(50, 3), torch.randn(50, 3)
    t = torch.randint(0, 100, (50,))
    assert torch.allclose(s.predict_x0(s.add_noise(x0, eps, t), eps, t), x0, atol=1e-4)


def test_row_generators_draw_each_row_as_a_batch_of_one():
    import pytest

    from policies.diffusion import rand, randn

    gens = [torch.Generator().manual_seed(s) for s in (3, 4, 5)]
    rows = randn((3, 7), gens, torch.device("cpu"))
    for r, seed in enumerate((3, 4, 5)):
        assert torch.equal(
            rows[r : r + 1], randn((1, 7), torch.Generator().manual_seed(seed), torch.device("cpu"))
        )
    u = rand(
        (2, 40), [torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)], torch.device("cpu")
    )
    assert torch.equal(u[1:], torch.rand((1, 40), generator=torch.Generator().manual_seed(2)))
    with pytest.raises(ValueError, match="2 row generators for 3 rows"):
        randn((3, 7), gens[:2], torch.device("cpu"))
    # K candidates per observation (diffusion.inference_samples): group g is generator g's (K, 7) draw
    grouped = randn((6, 7), [torch.Generator().manual_seed(s) for s in (3, 4, 5)], torch.device("cpu"))
    assert torch.equal(grouped[2:4], torch.randn((2, 7), generator=torch.Generator().manual_seed(4)))


def test_forward_initial_sample_has_the_training_input_scale():
    """Sampling starts where training inputs are at the first visited timestep: x_t0 of x_0 = 0."""
    s = NoiseSchedule(DiffusionConfig(train_steps=100))
    noise = torch.randn(4096, 3, generator=torch.Generator().manual_seed(0))
    start = s.initial_sample(noise, 99, "forward")
    abar = float(s.alphas_cumprod[99])
    assert 0.47 < abar < 0.5  # the scale the issue measured: far from a pure-noise endpoint
    assert torch.allclose(start, s.add_noise(torch.zeros_like(noise), noise, torch.full((4096,), 99)))
    assert abs(float(start.std()) - math.sqrt(1 - abar)) < 0.02
    assert torch.equal(s.initial_sample(noise, 99, "standard"), noise)
