"""EvalReport aggregation: full denominators, status counts, JSON round trip, MLflow names; CLI errors."""

from __future__ import annotations

import pytest

from evaluation.runtime.bundle import load_instructions, save_instructions
from evaluation.runtime.episode import EpisodeOutput, StageTimes
from evaluation.runtime.evaluate import plan_episodes
from evaluation.runtime.metrics import EvalReport, summarize
from evaluation.runtime.run import main as run_main
from evaluation.simulators.sim import EpisodeResult
from policies.base import CheckpointError

pytestmark = pytest.mark.unit


def _out(task: str, success: bool, status: str = "ok", sim: float = 1.0) -> EpisodeOutput:
    result = EpisodeResult(task, 0, 0, success, 3, status, "", 0.5)  # type: ignore[arg-type]
    return EpisodeOutput(result, StageTimes(render=1.0, preprocess=0.0, policy=2.0, sim=sim))


def test_errors_stay_in_the_denominator_and_are_counted():
    outputs = [_out("a", True), _out("a", False, "timeout"), _out("a", False, "sim_error"), _out("a", True),
               _out("b", False, "planner_error"), _out("b", True)]
    report = summarize(outputs, wall_s=3.0, retries=2, actor_restarts=3, failures=["x"])
    assert report.tasks["a"].success_rate == 0.5 and report.tasks["a"].episodes == 4
    assert report.tasks["b"].success_rate == 0.5
    assert report.mean_success == 0.5 and report.successes == 3 and report.episodes == 6
    assert report.status_counts == {"ok": 3, "timeout": 1, "sim_error": 1, "planner_error": 1}
    assert report.errors == 3 and report.episodes_per_s == 2.0
    assert report.time_shares == pytest.approx({"render": 0.25, "preprocess": 0.0, "policy": 0.5, "sim": 0.25})
    metrics = report.mlflow_metrics("eval")
    assert metrics["eval/a/success"] == 0.5 and metrics["eval/success"] == 0.5
    assert metrics["eval/timeout"] == 1.0 and metrics["eval/planner_error"] == 1.0 and "eval/ok" not in metrics
    again = EvalReport.from_json(report.to_json())
    assert again == report
    table = report.table()
    assert "mean over tasks" in table and "50.0%" in table


def test_plan_is_fixed_by_seed_and_cycles_test_variations():
    a = plan_episodes(["t1", "t2"], 3, seed=4, variations=[25, 26])
    assert a == plan_episodes(["t1", "t2"], 3, seed=4, variations=[25, 26])
    assert [s.variation for s in a] == [25, 26, 25, 25, 26, 25]
    assert len({s.seed for s in a}) == 6
    assert a != plan_episodes(["t1", "t2"], 3, seed=5, variations=[25, 26])
    with pytest.raises(ValueError, match="variations"):
        plan_episodes(["t1"], 1, 0, [])


def test_instructions_file_round_trip_and_errors(tmp_path):
    import numpy as np

    text = {"reach-v3": (np.ones((3, 4), np.float32), np.array([True, True, False]))}
    save_instructions(tmp_path / "instructions.npz", text)
    loaded = load_instructions(tmp_path / "instructions.npz")
    assert set(loaded.tasks) == {"reach-v3"} and loaded.tasks["reach-v3"][1].tolist() == [True, True, False]
    assert loaded.texts == {}
    with pytest.raises(CheckpointError, match="instructions.npz is missing"):
        load_instructions(tmp_path / "nope" / "instructions.npz")
    np.savez(tmp_path / "bad.npz", **{"reach-v3/tokens": np.ones((3, 4), np.float32)})
    with pytest.raises(CheckpointError, match="needs both"):
        load_instructions(tmp_path / "bad.npz")


def test_cli_reports_a_bad_checkpoint_before_starting_ray(tmp_path, capsys):
    assert run_main(["--checkpoint", str(tmp_path), "--suite", "fake", "--episodes", "1"]) == 2
    assert "policy.json is missing" in capsys.readouterr().err


def test_instructions_file_keeps_per_text_embeddings_of_any_length(tmp_path):
    import numpy as np

    from evaluation.runtime.episode import Instructions

    short, long = (np.full((2, 4), 1.0, np.float32), np.ones(2, bool)), (np.full((5, 4), 2.0, np.float32), np.ones(5, bool))
    table = Instructions(tasks={"close_jar": short}, texts={"close the red jar": short, "close the jar / lid": long})
    save_instructions(tmp_path / "i.npz", table)
    loaded = load_instructions(tmp_path / "i.npz")
    assert set(loaded.tasks) == {"close_jar"} and set(loaded.texts) == set(table.texts)
    for key, (tokens, mask) in table.texts.items():  # zero-padding is stripped again
        np.testing.assert_array_equal(loaded.texts[key][0], tokens)
        np.testing.assert_array_equal(loaded.texts[key][1], mask)
    assert loaded.for_episode("close_jar", "close the jar / lid")[0].shape == (5, 4)
    assert loaded.for_episode("close_jar", "an unseen phrasing")[0].shape == (2, 4)  # falls back to the task
    np.savez(tmp_path / "bad.npz", **{"t/tokens": np.ones((2, 4), np.float32), "t/mask": np.ones(2, bool),
                                      "__texts__/strings": np.asarray(["a"])})
    with pytest.raises(CheckpointError, match="per-text table"):
        load_instructions(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_instructions(tmp_path / "junk.npz")


def test_success_intervals():
    from evaluation.runtime.metrics import mean_interval, wilson_interval

    lo, hi = wilson_interval(0, 25)
    assert lo == 0.0 and 0.10 < hi < 0.15  # zero successes still leave room up to ~13 %
    lo, hi = wilson_interval(25, 25)
    assert hi == 1.0 and 0.85 < lo < 0.9
    lo, hi = wilson_interval(10, 20)
    assert abs((lo + hi) / 2 - 0.5) < 1e-9 and 0.29 < lo < 0.31
    # ten tasks x 25 episodes at 60 %: the mean's interval is much narrower than one task's
    lo, hi = mean_interval([(15, 25)] * 10)
    assert lo < 0.6 < hi and hi - lo < 0.15
    tlo, thi = wilson_interval(15, 25)
    assert thi - tlo > 2 * (hi - lo)
    assert mean_interval([(25, 25)] * 10)[0] < 1.0  # perfect tasks still carry uncertainty
