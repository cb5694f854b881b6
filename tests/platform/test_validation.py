"""The validation split (held-out train-set episodes) and the keypose-error metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from platform.config import load_config
from platform.train.dataset import DatasetSubset, split_episodes
from platform.train.metrics import MetricLog
from platform.train.validation import ValidationSet, cap_per_task, keypose_errors, validate
from platform.train.worker import _validation_set
from policies.registry import build_policy
from tests.platform.fakes import FakeKeyframeDataset

pytestmark = pytest.mark.unit


def _cfg(*overrides: str):
    return load_config(
        None,
        [
            "policy.preset=tiny",
            "policy.m=2",
            "train.batch_size=2",
            "train.steps=40",
            "train.warmup_steps=0",
            "train.device=cpu",
            "eval.enabled=false",
            *overrides,
        ],
    )


class _Episodes:
    """Just what split_episodes reads: tasks and episodes per sample."""

    def __init__(self) -> None:
        self.task_names = ["a", "b"]
        # task a: episodes 0,1,2,3 (3 samples each); task b: episodes 4,5,6 (2 samples each)
        self.sample_episode = np.array([0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 + [4] * 2 + [5] * 2 + [6] * 2)
        self.task_index = np.array([0] * 12 + [1] * 6)


def test_split_takes_the_first_episodes_for_training_and_the_next_for_validation():
    ds = _Episodes()
    train, val = split_episodes(ds, None, train_per_task=2, val_per_task=1)
    assert set(ds.sample_episode[train]) == {0, 1, 4, 5}
    assert set(ds.sample_episode[val]) == {2, 6}
    assert not set(train) & set(val)
    train, val = split_episodes(ds, ["b"], train_per_task=2, val_per_task=5)  # fewer left than asked: all
    assert set(ds.sample_episode[train]) == {4, 5} and set(ds.sample_episode[val]) == {6}
    _, val = split_episodes(ds, None, train_per_task=10, val_per_task=2)
    assert len(val) == 0
    with pytest.raises(ValueError, match="not in the dataset"):
        split_episodes(ds, ["c"], 1, 1)
    ds.recovery = np.zeros(len(ds.task_index), bool)
    ds.recovery[[4, 16]] = True  # recovery samples of a training and a validation episode
    train, val = split_episodes(ds, None, train_per_task=2, val_per_task=1)
    assert 4 in train and 16 not in val and set(ds.sample_episode[val]) == {2, 6}  # trained on, not validated


def test_keypose_errors_of_exact_and_shifted_predictions():
    target = torch.tensor([[0.1, 0.5, 0.2, 0, 0, 0, 1, 1.0], [0.0, 0.6, 0.1, 0, 0, 0, 1, 0.0]])
    exact = keypose_errors(target, target)
    assert torch.allclose(exact["pos_err_cm"], torch.zeros(2)) and torch.all(exact["gripper_acc"] == 1)
    assert torch.allclose(exact["rot_err_deg"], torch.zeros(2), atol=1e-3)
    shifted = target.clone()
    shifted[:, 0] += 0.03  # 3 cm
    shifted[1, 7] = 1.0  # wrong gripper state
    err = keypose_errors(shifted, target)
    assert torch.allclose(err["pos_err_cm"], torch.full((2,), 3.0), atol=1e-4)
    assert err["gripper_acc"].tolist() == [1.0, 0.0] and err["within_2cm"].tolist() == [0.0, 0.0]


class _Oracle(torch.nn.Module):
    """Predicts the ground truth (a test fake): validation must report zero error."""

    def __init__(self, truth: torch.Tensor) -> None:
        super().__init__()
        self.truth = truth

    def predict_action(self, obs, generator=None):
        idx = [int(torch.nonzero((self.truth == row).all(-1))[0]) for row in obs.target]
        return self.truth[idx]


def test_validation_is_deterministic_per_task_and_zero_for_an_oracle():
    cfg = _cfg()
    ds = FakeKeyframeDataset(cfg.policy, num_samples=10)
    val = ValidationSet.from_dataset(DatasetSubset(ds, np.arange(10)), cfg.policy.max_points)
    torch.manual_seed(0)
    policy = build_policy(cfg.policy).train()
    a = validate(policy, val, torch.device("cpu"))
    b = validate(policy, val, torch.device("cpu"))
    assert policy.training  # restored
    a.pop("val/time_s"), b.pop("val/time_s")
    assert a == b
    for key in ("pos_err_cm", "rot_err_deg", "gripper_acc", "within_2cm"):
        assert f"val/{key}" in a and f"val/fake-task-a/{key}" in a and f"val/fake-task-b/{key}" in a
        assert a[f"val/{key}"] == pytest.approx(
            (a[f"val/fake-task-a/{key}"] + a[f"val/fake-task-b/{key}"]) / 2
        )
    assert a["val/pos_err_cm"] > 0.5  # an untrained policy is far off
    oracle = validate(_Oracle(ds._all.target), val, torch.device("cpu"))
    assert oracle["val/pos_err_cm"] == 0 and oracle["val/gripper_acc"] == 1 and oracle["val/within_2cm"] == 1


@pytest.mark.parametrize(
    ("every", "log_every", "expected"),
    [
        (10, 5, [10, 20, 30, 40]),
        (15, 10, [20, 30, 40]),
        (100, 10, [40]),
        (0, 10, []),
    ],
)
def test_validation_schedule(every, log_every, expected):
    cfg = _cfg(f"train.val_every={every}")
    log = MetricLog(cfg, 0, None, None)
    windows = [(s, log_every) for s in range(log_every, 41, log_every)]
    assert [s for s, n in windows if log._validate_now(s, n)] == expected


def test_has_validation_reads_the_manifest(tmp_path):
    """Sweeps rank trials by validation only when training will validate (else Tune misses the metric)."""
    import json

    from platform.sweep import LOSS_METRIC, VAL_METRIC, ranking_metric
    from platform.train.dataset import has_validation

    shards = [{"task": t} for t in ("a", "a", "a", "b", "b")]
    (tmp_path / "manifest.json").write_text(json.dumps({"tasks": ["a", "b"], "shards": shards}))
    cfg = _cfg(f"data.path={tmp_path}", "data.episodes_per_task=2")
    assert has_validation(cfg) and ranking_metric(cfg) == VAL_METRIC
    assert not has_validation(_cfg(f"data.path={tmp_path}", "data.episodes_per_task=3"))
    assert not has_validation(_cfg(f"data.path={tmp_path}", "data.episodes_per_task=2", "train.val_every=0"))
    assert ranking_metric(_cfg(f"data.path={tmp_path / 'missing'}")) == LOSS_METRIC


def test_cap_per_task_keeps_evenly_spaced_samples_of_every_task():
    task_index = np.array([0] * 10 + [1] * 3 + [2] * 7)
    rows = cap_per_task(task_index, 4)
    assert rows.tolist() == [
        0,
        3,
        6,
        9,
        10,
        11,
        12,
        13,
        15,
        17,
        19,
    ]  # 4 of task 0, all 3 of task 1, 4 of task 2
    assert cap_per_task(task_index, None).tolist() == list(range(20))


def test_train_val_per_task_caps_the_validation_set_the_worker_builds(capsys):
    cfg = _cfg("train.val_per_task=2")
    ds = FakeKeyframeDataset(cfg.policy, num_samples=10)
    val = _validation_set(cfg, DatasetSubset(ds, np.arange(10)))
    tasks = torch.cat([b.task_index for b in val.batches])
    assert val.size == 4 and torch.bincount(tasks).tolist() == [2, 2]  # 2 of each of the fake's 2 tasks
    assert "at most 2 per task" in capsys.readouterr().out


@pytest.mark.parametrize(
    "overrides, named",
    [
        (("train.val_every=0",), "train.val_every=0"),
        (("data.val_episodes_per_task=0",), "data.val_episodes_per_task=0"),
    ],
)
def test_validation_switched_off_says_so_and_by_which_setting(overrides, named, capsys):
    """configs/mt50.yaml trains on every episode and validates nothing: the log says why there is no val/* line."""
    cfg = _cfg(*overrides)
    ds = FakeKeyframeDataset(cfg.policy, num_samples=10)
    assert _validation_set(cfg, DatasetSubset(ds, np.arange(10))) is None
    out = capsys.readouterr().out
    assert "[val] validation is off" in out and named in out


def test_the_validation_command_scores_the_training_or_the_held_out_episodes(tmp_path, capsys):
    """``python -m platform.validation --split train --per-task N``: the same metric on the training episodes
    (how well the policy fits what it was trained on), capped per task like ``train.val_per_task``."""
    import json

    from evaluation.checkpoint_format import EXPERIMENT_FILE
    from platform.config import to_yaml
    from platform.train.validation import main
    from tests.evaluation.datasets.test_dataset import DIM, _write_synthetic_dataset

    data = _write_synthetic_dataset(tmp_path / "data")  # 2 tasks x 2 episodes x 3 keyframes
    cfg = _cfg(
        f"data.path={data}",
        "data.episodes_per_task=1",
        "data.val_episodes_per_task=1",
        f"policy.text_dim={DIM}",
        "policy.workspace_low=[-1,-1,-1]",
        "policy.workspace_high=[20,20,20]",
    )
    ckpt = tmp_path / "step_00000040"
    build_policy(cfg.policy).save_pretrained(ckpt)
    (ckpt / EXPERIMENT_FILE).write_text(to_yaml(cfg))
    assert main(["--checkpoint", str(ckpt), "--split", "train", "--json", str(tmp_path / "t.json")]) == 0
    assert "6 training keyframes" in capsys.readouterr().out
    assert main(["--checkpoint", str(ckpt), "--split", "train", "--per-task", "1"]) == 0
    assert "2 training keyframes" in capsys.readouterr().out
    assert main(["--checkpoint", str(ckpt)]) == 0
    assert "6 validation keyframes" in capsys.readouterr().out
    assert json.loads((tmp_path / "t.json").read_text())["val/pos_err_cm"] > 0
    with pytest.raises(SystemExit):
        main(["--checkpoint", str(ckpt), "--per-task", "0"])
    assert "--per-task must be at least 1" in capsys.readouterr().err
