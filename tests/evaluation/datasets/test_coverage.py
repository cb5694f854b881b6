"""How far test scenes lie outside a dataset's demonstrations (evaluation/datasets/coverage.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.datasets.coverage import bin_label, coverage, main, outside_distance, success_by_distance
from evaluation.datasets.dataset import FORMAT, MANIFEST, SCHEMA_VERSION
from evaluation.runtime.metrics import EpisodeRecord, EvalReport, TaskSummary


@pytest.mark.unit
def test_outside_distance_is_the_largest_excess_over_the_coordinates_that_vary():
    demos = np.array([[0.0, 0.0, 5.0], [1.0, 1.0, 5.0]])  # z is fixed: a scene's z is not compared
    scenes = np.array([[0.5, 0.5, 9.0], [1.2, 0.5, 5.0], [-0.1, 1.3, 5.0], [1.0, 0.0, 5.0]])
    np.testing.assert_allclose(outside_distance(demos, scenes), [0.0, 0.2, 0.3, 0.0], atol=1e-12)


def _report(episodes: list[tuple[str, int, bool]]) -> EvalReport:
    results = [
        EpisodeRecord(task=t, variation=v, seed=0, success=ok, steps=3, status="ok", message="", wall_s=0.1)
        for t, v, ok in episodes
    ]
    tasks = {}
    for name in {t for t, _, _ in episodes}:
        mine = [ok for t, _, ok in episodes if t == name]
        tasks[name] = TaskSummary(
            task=name,
            episodes=len(mine),
            successes=sum(mine),
            success_rate=sum(mine) / len(mine),
            status_counts={"ok": len(mine)},
            mean_steps=3.0,
        )
    k = sum(ok for _, _, ok in episodes)
    return EvalReport(
        tasks=tasks,
        episodes=len(episodes),
        successes=k,
        mean_success=k / len(episodes),
        status_counts={"ok": len(episodes)},
        wall_s=1.0,
        episodes_per_s=1.0,
        time_shares={},
        results=results,
    )


@pytest.mark.unit
def test_success_is_pooled_by_the_scenes_distance_outside():
    cover = {"reach-v3": {25: 0.0, 26: 0.002, 27: 0.007, 28: 0.03}, "push-v3": {25: 0.0}}
    report = _report(
        [
            ("reach-v3", 25, True),
            ("reach-v3", 26, True),
            ("reach-v3", 27, False),
            ("reach-v3", 28, False),
            ("push-v3", 25, False),
            ("push-v3", 30, True),
        ]  # push-v3 30 has no distance: left out
    )
    assert success_by_distance(report, cover) == {
        "inside": (1, 2),
        "0-5 mm": (1, 1),
        "5-10 mm": (0, 1),
        ">= 10 mm": (0, 1),
    }
    assert [bin_label(d) for d in (0.0, 0.0049, 0.005, 0.0099, 0.01)] == [
        "inside",
        "0-5 mm",
        "5-10 mm",
        "5-10 mm",
        ">= 10 mm",
    ]


@pytest.mark.sim
def test_a_demonstrated_variation_is_inside_and_another_goal_is_outside():
    """Reach's goal moves with every variation: variation 1 lies outside a box of variation 0 alone, and
    variations a dataset holds lie inside the box they span."""
    out = coverage({"reach-v3": [0, 1, 2]}, "mt10", variations=[0, 2])
    assert out == {"reach-v3": {0: 0.0, 2: 0.0}}
    single = coverage({"reach-v3": [0]}, "mt10", variations=[1])
    assert (
        single["reach-v3"][1] == 0.0
    )  # one demonstration spans no coordinate: nothing varies, nothing compared
    pair = coverage({"reach-v3": [0, 1]}, "mt10", variations=[0, 2, 30])
    assert pair["reach-v3"][0] == 0.0 and max(pair["reach-v3"][2], pair["reach-v3"][30]) > 0.001


@pytest.mark.unit
def test_the_command_names_a_missing_dataset_and_exits_2(tmp_path, capsys):
    assert main(["--dataset", str(tmp_path / "none")]) == 2
    assert "no dataset directory" in capsys.readouterr().err


@pytest.mark.sim
def test_the_command_prints_each_tasks_scenes_outside_and_writes_them(tmp_path, capsys):
    """A manifest with reach's variations 0 and 1 (only the entries the command reads, plus the required ones)."""
    root = tmp_path / "ds"
    root.mkdir()
    manifest = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "suite": "mt10", "benchmark_seed": 0}
    manifest |= {k: {} for k in ("shards", "counts", "pointcloud", "render", "text")}
    manifest |= {"tasks": ["reach-v3"], "total_samples": 0, "episodes": {"reach-v3": [0, 1]}}
    (root / MANIFEST).write_text(json.dumps(manifest))
    out = tmp_path / "cover.json"
    assert main(["--dataset", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    cover = {int(v): d for v, d in json.loads(out.read_text())["reach-v3"].items()}
    assert sorted(cover) == list(range(25, 50))
    outside = sum(d > 0 for d in cover.values())
    assert outside > 0 and f"{outside} of 25 test scenes start outside" in printed
