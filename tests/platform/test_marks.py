"""Training-time marks: a checkpoint kept and validated at each mark, training stopped at the last one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from platform.config import ConfigError, load_config
from platform.train.dataset import DatasetSubset
from platform.train.marks import MARKS_FILE, TimeMarks, read_marks
from tests.platform.fakes import FakeKeyframeDataset

pytestmark = pytest.mark.unit


def _payload(tmp_path, monkeypatch, *overrides: str):
    import platform.train.worker

    cfg = load_config(
        None,
        [
            "policy.preset=tiny",
            "policy.m=2",
            "train.batch_size=2",
            "train.steps=500",
            "train.warmup_steps=0",
            "train.checkpoint_every=50",
            "train.log_every=5",
            "train.val_every=1000",
            "train.device=cpu",
            "eval.enabled=false",
            f"output_dir={tmp_path}",
            *overrides,
        ],
    )

    def split(c):
        full = FakeKeyframeDataset(c.policy, num_samples=12)
        return DatasetSubset(full, np.arange(8)), DatasetSubset(full, np.arange(8, 12))

    monkeypatch.setattr(platform.train.worker, "open_split", split)
    cfg.run_dir.mkdir(parents=True)
    return cfg, {"config": cfg.model_dump(mode="json"), "run_dir": str(cfg.run_dir)}


def test_marks_keep_validated_checkpoints_and_stop_training(tmp_path, monkeypatch, capsys):
    import platform.train.worker as worker

    cfg, payload = _payload(tmp_path, monkeypatch, "train.time_marks_s=[0.2,0.5]")
    worker.train_loop_per_worker(payload)
    records = read_marks(cfg.run_dir)
    assert [r.index for r in records] == [0, 1]
    for rec in records:
        assert rec.train_time_s >= rec.mark_s
        assert (cfg.run_dir / rec.checkpoint / "model.pt").is_file()
        assert rec.val["val/pos_err_cm"] > 0 and "val/fake-task-a/gripper_acc" in rec.val
    # stopped at the last mark, long before train.steps (one slow step may pass both marks at once)
    assert records[0].step <= records[1].step < 500 and records[1].train_time_s >= 0.5
    progress = json.loads((cfg.run_dir / "progress.json").read_text())
    assert progress["step"] == records[1].step
    out = capsys.readouterr().out
    assert out.count("[train] time mark") == 2 and out.count("[val] step") >= 2
    # rerunning the same run: every mark was reached, nothing trains again
    worker.train_loop_per_worker(payload)
    assert read_marks(cfg.run_dir) == records


def test_marks_resume_where_they_stopped(tmp_path):
    marks = TimeMarks((1.0, 2.0, 3.0), tmp_path)
    ckpt = tmp_path / "checkpoints" / "step_1"
    ckpt.mkdir(parents=True)
    (ckpt / "model.pt").write_text("w")
    assert not marks.due(0.5) and marks.due(1.2) and marks.next_s() == 1.0
    marks.record(ckpt, 10, 1.2, {"val/pos_err_cm": 3.0})
    again = TimeMarks((1.0, 2.0, 3.0), tmp_path)
    assert again.next_s() == 2.0 and not again.all_reached
    assert (tmp_path / "marks" / "mark_00" / "model.pt").read_text() == "w"
    (tmp_path / MARKS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not a valid marks file"):
        TimeMarks((1.0,), tmp_path)


def test_marks_must_increase():
    with pytest.raises(ConfigError, match="time_marks_s"):
        load_config(None, ["train.time_marks_s=[5,3]"])
