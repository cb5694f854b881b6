"""Shared fixtures of the policy tests: tiny configs and synthetic batches (milliseconds on CPU)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from policies.batch import ConditionBatch
from policies.registry import build_policy, parse_policy_config
from policies.synthetic import random_condition_batch

TEXT_DIM = 16


def tiny_config(policy_type: str = "mini_diffuser", **overrides: Any):
    data: dict[str, Any] = {
        "type": policy_type,
        "preset": "tiny",
        "text_dim": TEXT_DIM,
        "augment": {"enabled": False},
    }
    data.update(overrides)
    return parse_policy_config(data)


def tiny_policy(policy_type: str = "mini_diffuser", seed: int = 0, **overrides: Any):
    torch.manual_seed(seed)
    return build_policy(tiny_config(policy_type, **overrides))


def tiny_batch(b: int = 3, n_points: int = 96, seed: int = 0, **kwargs: Any) -> ConditionBatch:
    return random_condition_batch(b, n_points, text_len=5, text_dim=TEXT_DIM, seed=seed, **kwargs)


@pytest.fixture
def batch() -> ConditionBatch:
    return tiny_batch()


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core box threads contend."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
