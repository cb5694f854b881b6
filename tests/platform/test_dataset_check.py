"""The driver checks a dataset without loading it (docs/design.md, section 2a): the training workers load
and verify it once, so the driver's check reads the manifest and the keypose targets only."""

from __future__ import annotations

import pytest

import platform.train.dataset as training_data
from platform.cli import UserFacingError
from platform.config import load_config
from tests.evaluation.datasets.test_dataset import DIM, _write_synthetic_dataset

pytestmark = pytest.mark.unit


def _cfg(path, *overrides):
    # The synthetic targets sit at 0..12 m: a workspace that holds them, unless an override says otherwise.
    return load_config(
        None,
        [
            f"data.path={path}",
            f"policy.text_dim={DIM}",
            "policy.workspace_low=[-1,-1,-1]",
            "policy.workspace_high=[20,20,20]",
            *overrides,
        ],
    )


class _NoFullLoad:
    def __init__(self, *args, **kwargs):
        raise AssertionError("the driver's dataset check loaded the whole dataset")


def test_the_driver_checks_the_dataset_without_loading_it(tmp_path, monkeypatch):
    path = _write_synthetic_dataset(tmp_path / "data")
    monkeypatch.setattr(training_data, "KeyframeDataset", _NoFullLoad)
    assert training_data.ensure_dataset(_cfg(path)) == path


def test_the_cheap_check_still_refuses_what_the_config_cannot_train_on(tmp_path, monkeypatch):
    path = _write_synthetic_dataset(tmp_path / "data")
    monkeypatch.setattr(training_data, "KeyframeDataset", _NoFullLoad)
    with pytest.raises(UserFacingError, match="outside the policy workspace"):
        training_data.ensure_dataset(_cfg(path, "policy.workspace_high=[1,1,1]"))
    with pytest.raises(UserFacingError, match="instruction features are 6-d"):
        training_data.ensure_dataset(_cfg(path, "policy.text_dim=384"))
    with pytest.raises(UserFacingError, match=r"data.tasks \['nope'\] are not in the dataset"):
        training_data.ensure_dataset(_cfg(path, "data.tasks=[nope]"))
    (path / "shards/task-a/var00.parquet").unlink()
    with pytest.raises(UserFacingError, match="var00.parquet is listed in .* but missing"):
        training_data.ensure_dataset(_cfg(path))


def test_a_dataset_observed_another_way_is_refused_with_the_fix(tmp_path, monkeypatch):
    """data.observe must match how the Meta-World dataset was collected (evaluation.collect --observe)."""
    import json

    path = _write_synthetic_dataset(tmp_path / "data")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(suite="mt10", keyframes={"observe": "replay"})
    (path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(training_data, "KeyframeDataset", _NoFullLoad)
    with pytest.raises(UserFacingError, match="observations from the replay .* set data.observe=replay"):
        training_data.ensure_dataset(_cfg(path, "data.collect_if_missing=false"))
    cfg = _cfg(path, "data.collect_if_missing=false", "data.observe=replay")
    assert training_data.ensure_dataset(cfg) == path


@pytest.mark.parametrize(
    ("key", "recorded", "shown"), [("surface_fraction", 0.5, "0.5"), ("hide_arm", True, "True")]
)
def test_a_dataset_with_other_point_cloud_settings_is_refused_with_the_fix(
    tmp_path, monkeypatch, key, recorded, shown
):
    """data.surface_fraction and data.hide_arm must match the point clouds of the Meta-World dataset
    (evaluation.collect --surface-fraction / --hide-arm): the policy would otherwise be evaluated on clouds built
    differently."""
    import json

    path = _write_synthetic_dataset(tmp_path / "data")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["suite"] = "mt50"
    manifest["pointcloud"][key] = recorded
    (path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(training_data, "KeyframeDataset", _NoFullLoad)
    with pytest.raises(UserFacingError, match=rf"data.{key}={shown} but .* set data.{key}={shown}"):
        training_data.ensure_dataset(_cfg(path, "data.collect_if_missing=false"))
    cfg = _cfg(path, "data.collect_if_missing=false", f"data.{key}={shown.lower()}")
    assert training_data.ensure_dataset(cfg) == path


def test_a_dataset_with_other_recoveries_is_refused_and_recoveries_need_replay_observations(
    tmp_path, monkeypatch
):
    """data.recoveries must match the Meta-World dataset's (evaluation.collect --recoveries), and branches off
    the replay: without data.observe=replay the config is refused before anything runs."""
    import json

    from platform.config import ConfigError

    path = _write_synthetic_dataset(tmp_path / "data")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(suite="mt50", keyframes={"observe": "replay", "recoveries": 1})
    (path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(training_data, "KeyframeDataset", _NoFullLoad)
    base = ("data.collect_if_missing=false", "data.observe=replay")
    with pytest.raises(
        UserFacingError, match="data.recoveries=1 but data.recoveries is 0: set data.recoveries=1"
    ):
        training_data.ensure_dataset(_cfg(path, *base))
    assert training_data.ensure_dataset(_cfg(path, *base, "data.recoveries=1")) == path
    with pytest.raises(ConfigError, match="data.recoveries needs observe=replay"):
        _cfg(path, "data.recoveries=1")


def test_a_dataset_aimed_another_way_is_refused_with_the_fix(tmp_path, monkeypatch):
    """data.aim_goal must match the Meta-World dataset's (evaluation.collect --aim-goal): its completing keyposes
    differ."""
    import json

    path = _write_synthetic_dataset(tmp_path / "data")
    manifest = json.loads((path / "manifest.json").read_text())
    manifest.update(suite="mt50", keyframes={"aim_goal": True})
    (path / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(training_data, "KeyframeDataset", _NoFullLoad)
    with pytest.raises(
        UserFacingError, match="data.aim_goal=True but data.aim_goal is False: set data.aim_goal=True"
    ):
        training_data.ensure_dataset(_cfg(path, "data.collect_if_missing=false"))
    assert (
        training_data.ensure_dataset(_cfg(path, "data.collect_if_missing=false", "data.aim_goal=true"))
        == path
    )
