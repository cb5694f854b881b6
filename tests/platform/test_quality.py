"""platform.quality: marks, the time-to-quality table, and the report from kept, evaluated checkpoints."""

from __future__ import annotations

import json

import pytest

from evaluation.runtime.metrics import EvalReport, TaskSummary
from platform.cli import UserFacingError
from platform.config import load_config, to_yaml
from platform.quality import REPORT_FILE, Point, build_parser, geometric_marks, main, time_to_quality
from platform.train.marks import TimeMarks

pytestmark = pytest.mark.unit


def _point(m: int, t: float, success: float | None) -> Point:
    return Point(
        m=m,
        mark=0,
        train_time_s=t,
        step=int(t),
        success=success,
        success_ci=None,
        episodes=10,
        val_pos_err_cm=5.0,
        val_within_2cm=0.1,
        checkpoint="x",
    )


def test_geometric_marks_end_at_the_budget():
    assert geometric_marks(800, 4) == (100.0, 200.0, 400.0, 800.0)
    with pytest.raises(UserFacingError):
        geometric_marks(0, 3)


def test_time_to_quality_reads_the_first_mark_reaching_m1s_final_success():
    points = [
        _point(1, 100, 0.1),
        _point(1, 200, 0.3),
        _point(1, 400, 0.3),  # M=1 reaches 0.3 at 200 s
        _point(16, 100, 0.2),
        _point(16, 200, 0.5),  # 200 s: ratio 1
        _point(64, 25, 0.31),
        _point(64, 50, 0.6),  # 25 s: ratio 1/8
        _point(4, 100, 0.1),
        _point(4, 400, None),
    ]  # never reaches it (the last mark is not evaluated)
    target, rows = time_to_quality(points)
    assert target == 0.3
    by_m = {r.m: r for r in rows}
    assert by_m[1].time_to_target_s == 200 and by_m[1].ratio_to_m1 == 1.0
    assert by_m[64].ratio_to_m1 == pytest.approx(0.125) and by_m[16].ratio_to_m1 == 1.0
    assert by_m[4].time_to_target_s is None and by_m[4].ratio_to_m1 is None
    assert time_to_quality([_point(4, 10, 0.5)])[0] is None  # no M = 1 trial: no target
    val = [
        Point(
            m=m,
            mark=0,
            train_time_s=t,
            step=1,
            success=None,
            success_ci=None,
            episodes=0,
            val_pos_err_cm=err,
            val_within_2cm=None,
            checkpoint="x",
        )
        for m, t, err in [(1, 100, 9.0), (1, 400, 6.0), (64, 50, 7.0), (64, 100, 5.0)]
    ]
    target, rows = time_to_quality(val, "val_pos_err_cm")  # lower is better
    assert target == 6.0 and {r.m: r.time_to_target_s for r in rows} == {1: 400, 64: 100}


def _report(success: float, episodes: int = 20) -> EvalReport:
    k = round(success * episodes)
    task = TaskSummary(
        task="reach-v3",
        episodes=episodes,
        successes=k,
        success_rate=k / episodes,
        status_counts={"ok": episodes},
        mean_steps=3.0,
    )
    return EvalReport(
        tasks={"reach-v3": task},
        episodes=episodes,
        successes=k,
        mean_success=k / episodes,
        status_counts={"ok": episodes},
        wall_s=1.0,
        episodes_per_s=1.0,
        time_shares={},
    )


def test_report_only_writes_the_table_figure_and_points(tmp_path, capsys):
    sweep_dir = tmp_path / "ttq"
    curves = {1: [(10, 0.1), (20, 0.3)], 64: [(10, 0.35), (20, 0.6)]}
    for m, curve in curves.items():
        trial = sweep_dir / "trials" / f"trial_m{m}"
        src = trial / "checkpoints" / "step_1"
        src.mkdir(parents=True)
        (src / "experiment.yaml").write_text(to_yaml(load_config(None, [f"policy.m={m}"])))
        marks = TimeMarks([t for t, _ in curve], trial)
        for t, success in curve:
            rec = marks.record(src, step=t, train_time_s=t + 0.5, val={"val/pos_err_cm": 10.0 / t})
            (trial / rec.checkpoint / REPORT_FILE).write_text(_report(success).to_json())
    args = build_parser().parse_args(
        ["--report-only", "--name", "ttq", f"output_dir={tmp_path}", "tracking.enabled=false"]
    )
    assert main(args, load_config(None, list(args.overrides))) == 0
    out = sweep_dir / "quality"
    for name in ("time_to_quality.png", "time_to_quality.md", "points.csv", "points.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = {r["m"]: r for r in json.loads((out / "time_to_quality.json").read_text())["rows"]}
    assert rows[1]["time_to_target_s"] == 20.5 and rows[64]["time_to_target_s"] == 10.5
    assert rows[64]["ratio_to_m1"] == pytest.approx(10.5 / 20.5)
    assert "| 64 | 60.0 | 10 | 0.512 |" in capsys.readouterr().out


def test_report_only_without_runs_is_a_clear_error(tmp_path):
    args = build_parser().parse_args(["--report-only", "--name", "none", f"output_dir={tmp_path}"])
    with pytest.raises(UserFacingError, match="no kept checkpoints"):
        main(args, load_config(None, list(args.overrides)))


def test_others_budget_keeps_m1s_marks_and_cuts_the_others_on_the_same_axis():
    from platform.quality import marks_per_m

    marks = geometric_marks(800, 5)  # 50, 100, 200, 400, 800
    per = marks_per_m([1, 16, 64], marks, 200)
    assert per[1] == marks and per[16] == per[64] == (50.0, 100.0, 200.0)
    assert marks_per_m([1, 4], marks, None) == {1: marks, 4: marks}
    for bad in (0, 10, 900):  # not positive, below the first mark, beyond the budget
        with pytest.raises(UserFacingError):
            marks_per_m([1, 4], marks, bad)
