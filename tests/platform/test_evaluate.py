"""``platform.evaluate.log_eval_report``: what one evaluation leaves in the run folder and in MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evaluation.metaworld_tiers import TIER_TASKS
from evaluation.runtime.episode import EpisodeOutput, StageTimes
from evaluation.runtime.metrics import summarize
from evaluation.simulators.sim import EpisodeResult
from platform.evaluate import EvalOutcome, log_eval_report

pytestmark = pytest.mark.unit


class _Recorder:
    """The part of ``RunTracker`` that ``log_eval_report`` uses, keeping what it is given."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.dicts: dict[str, Any] = {}

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.update(metrics)

    def log_dict(self, obj: Any, name: str) -> None:
        self.dicts[name] = obj

    def log_artifact(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("no videos in this report")


def test_an_mt50_evaluation_logs_success_per_tier_and_the_tier_average(tmp_path: Path, capsys) -> None:
    # one task per tier, 4 episodes each: easy 4/4, medium 2/4, hard 1/4, very hard 0/4
    outs = [
        EpisodeOutput(EpisodeResult(tasks[0], 25, i, i < k, 3, "ok", "", 0.1), StageTimes())
        for (tier, tasks), k in zip(TIER_TASKS.items(), (4, 2, 1, 0), strict=True)
        for i in range(4)
    ]
    report = summarize(outs, wall_s=1.0)
    tracker = _Recorder()
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000010"
    assert log_eval_report(tracker, checkpoint, 10, EvalOutcome(report=report)) == report
    for name in ("easy", "medium", "hard", "very_hard", "tier_average", "per_episode"):
        for suffix in ("", "_ci_low", "_ci_high"):
            assert f"eval/success/{name}{suffix}" in tracker.metrics
    assert (
        tracker.metrics["eval/success/medium"] == 0.5
        and tracker.metrics["eval/success/tier_average"] == 0.4375
    )
    saved = json.loads((tmp_path / "run" / "eval" / "step_00000010.json").read_text())
    assert (
        saved["tiers"]["hard"]["success_rate"] == 0.25 and saved == tracker.dicts["eval/step_00000010.json"]
    )
    assert "mean success 43.8% over 16 episodes (tier average 43.8%)" in capsys.readouterr().out
