"""The checkpoint format: the bundle read once, rebuilt anywhere from memory, refused where reads are forbidden."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from evaluation.checkpoint_format import (
    INSTRUCTIONS_FILE,
    NO_READS_ENV,
    POINTCLOUD_FILE,
    RENDER_FILE,
    CheckpointBundle,
    save_instructions,
)
from evaluation.runtime.actors import BundlePolicy
from policies.base import CheckpointError, Policy
from policies.registry import build_policy, load_checkpoint, parse_policy_config
from policies.synthetic import random_condition_batch

pytestmark = pytest.mark.unit


def _checkpoint(tmp_path):
    torch.manual_seed(0)
    policy = build_policy(parse_policy_config({"type": "mini_diffuser", "preset": "tiny"}))
    policy.save_pretrained(tmp_path)
    dim = policy.config.text_dim
    save_instructions(
        tmp_path / INSTRUCTIONS_FILE, {"reach-v3": (np.ones((3, dim), np.float32), np.ones(3, bool))}
    )
    (tmp_path / POINTCLOUD_FILE).write_text(json.dumps({"voxel_size": 0.02, "hide_arm": True}))
    (tmp_path / RENDER_FILE).write_text(json.dumps({"width": 64, "height": 48}))
    return policy


def test_a_bundle_rebuilds_the_same_policy_without_its_directory(tmp_path):
    original = _checkpoint(tmp_path / "ckpt")
    bundle = pickle.loads(pickle.dumps(CheckpointBundle.read(tmp_path / "ckpt")))  # as Ray ships it
    (tmp_path / "ckpt").rename(tmp_path / "moved")  # nothing below may open the directory
    rebuilt = BundlePolicy(bundle)()
    batch = random_condition_batch(2, 64, text_len=3, text_dim=original.config.text_dim, seed=1)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(rebuilt.predict_action(batch, g1), original.eval().predict_action(batch, g2))
    assert set(bundle.instructions.tasks) == {"reach-v3"}
    assert bundle.condition_fn().config.voxel_size == 0.02 and bundle.max_points == original.config.max_points
    assert isinstance(load_checkpoint(tmp_path / "moved"), Policy)
    # evaluation renders as the training set was collected (render.json), the arm hidden as its clouds say
    render = bundle.render_config()
    assert (render.width, render.height, render.hide_arm) == (64, 48, True)


def test_a_checkpoint_without_render_settings_renders_with_the_defaults(tmp_path):
    from evaluation.simulators.rendering import RenderConfig

    _checkpoint(tmp_path)
    (tmp_path / RENDER_FILE).unlink()
    (tmp_path / POINTCLOUD_FILE).unlink()
    assert CheckpointBundle.read(tmp_path).render_config() == RenderConfig()


def test_reads_are_refused_where_forbidden_and_bad_checkpoints_name_the_file(tmp_path, monkeypatch):
    _checkpoint(tmp_path)
    monkeypatch.setenv(NO_READS_ENV, "1")
    with pytest.raises(CheckpointError, match=NO_READS_ENV):
        CheckpointBundle.read(tmp_path)
    monkeypatch.delenv(NO_READS_ENV)
    (tmp_path / RENDER_FILE).write_text(json.dumps({"width": 0}))
    with pytest.raises(CheckpointError, match=f"{RENDER_FILE} is not a valid render config"):
        CheckpointBundle.read(tmp_path)
    (tmp_path / POINTCLOUD_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=POINTCLOUD_FILE):
        CheckpointBundle.read(tmp_path)
    with pytest.raises(CheckpointError, match="policy.json"):
        CheckpointBundle.read(tmp_path / "missing")
