"""R2: a resumed run is bitwise identical to an uninterrupted one (weights, EMA, optimizer, sampler, RNG);
R7 at run level: too many consecutive non-finite steps stop the run with a clear error."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from platform.config import load_config
from platform.train.loop import NonFiniteLossError, run_steps
from platform.train.state import build_training, resume_if_possible
from tests.platform.fakes import FakeKeyframeDataset

pytestmark = pytest.mark.unit


def tiny_cfg(tmp_path: Path, *extra: str):
    return load_config(
        None,
        [
            "policy.preset=tiny",
            "policy.m=4",
            "train.batch_size=3",
            "train.steps=8",
            "train.warmup_steps=2",
            "train.log_every=3",
            f"output_dir={tmp_path}",
            *extra,
        ],
    )


def assert_states_equal(a, b):
    for (ka, va), (kb, vb) in zip(a.policy.state_dict().items(), b.policy.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), f"weights differ at {ka}"
    for (ka, va), (_, vb) in zip(a.ema.state_dict().items(), b.ema.state_dict().items(), strict=True):
        assert torch.equal(va, vb), f"EMA differs at {ka}"
    oa, ob = a.optimizer.state_dict()["state"], b.optimizer.state_dict()["state"]
    assert oa.keys() == ob.keys()
    for k in oa:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(oa[k][name], ob[k][name]), f"optimizer {name} differs for param {k}"
    assert a.sampler.state_dict() == b.sampler.state_dict()
    assert a.scheduler.state_dict() == b.scheduler.state_dict()


def global_rng() -> tuple:
    """The process-wide generators a checkpoint restores: torch's, numpy's and Python's states."""
    return torch.get_rng_state().clone(), np.random.get_state(), random.getstate()


def assert_rng_equal(a: tuple, b: tuple) -> None:
    assert torch.equal(a[0], b[0]), "torch's global RNG state differs"
    assert a[1][0] == b[1][0] and np.array_equal(a[1][1], b[1][1]) and a[1][2:] == b[1][2:], "numpy's differs"
    assert a[2] == b[2], "Python's differs"


def test_resume_is_bitwise_exact(tmp_path):
    cfg = tiny_cfg(tmp_path)
    ds = FakeKeyframeDataset(cfg.policy)
    instr = {t: ds.instruction_embedding(t) for t in ds.task_names}
    dev = torch.device("cpu")

    straight = build_training(cfg, ds, dev)
    losses_straight = [m.loss for m in run_steps(straight, ds, 8)]
    rng_straight = global_rng()

    first = build_training(cfg, ds, dev)
    losses_a = [m.loss for m in run_steps(first, ds, 5)]
    torch.rand(3), np.random.rand(3), random.random()  # global draws between steps, as a data loader's
    rng_at_save = global_rng()
    first.save(cfg.run_dir, instr)
    run_steps(first, ds, 3)  # work after the checkpoint that a crash loses

    resumed = build_training(cfg, ds, dev)
    torch.manual_seed(999)  # a restarted process has other global RNG state
    np.random.seed(999)
    random.seed(999)
    assert resume_if_possible(resumed, cfg.run_dir) is not None and resumed.step == 5
    assert_rng_equal(global_rng(), rng_at_save)
    losses_b = [m.loss for m in run_steps(resumed, ds, 8)]
    assert losses_a + losses_b == losses_straight
    assert_states_equal(straight, resumed)
    with pytest.raises(AssertionError):  # the check can fail: the straight run made no draws between steps
        assert_rng_equal(global_rng(), rng_straight)


def test_non_finite_streak_stops_the_run(tmp_path):
    cfg = tiny_cfg(tmp_path, "train.max_consecutive_nonfinite=3")
    ds = FakeKeyframeDataset(cfg.policy)
    state = build_training(cfg, ds, torch.device("cpu"))
    run_steps(state, ds, 2)
    with torch.no_grad():
        next(state.policy.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="3 consecutive steps"):
        run_steps(state, ds, 12)
    assert state.skipped_total == 3
