"""EvalReport aggregation: full denominators, status counts, JSON round trip, MLflow names; CLI errors."""

from __future__ import annotations

import pytest

from evaluation.checkpoint_format import load_instructions, save_instructions
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
    outputs = [
        _out("a", True),
        _out("a", False, "timeout"),
        _out("a", False, "sim_error"),
        _out("a", True),
        _out("b", False, "planner_error"),
        _out("b", True),
    ]
    report = summarize(outputs, wall_s=3.0, retries=2, actor_restarts=3, failures=["x"])
    assert report.tasks["a"].success_rate == 0.5 and report.tasks["a"].episodes == 4
    assert report.tasks["b"].success_rate == 0.5
    assert report.mean_success == 0.5 and report.successes == 3 and report.episodes == 6
    assert report.status_counts == {
        "ok": 3,
        "timeout": 1,
        "sim_error": 1,
        "planner_error": 1,
        "oom_killed": 0,
    }
    assert report.errors == 3 and report.episodes_per_s == 2.0
    assert report.time_shares == pytest.approx(
        {"render": 0.25, "preprocess": 0.0, "policy": 0.5, "sim": 0.25}
    )
    metrics = report.mlflow_metrics("eval")
    assert metrics["eval/a/success"] == 0.5 and metrics["eval/success"] == 0.5
    assert (
        metrics["eval/timeout"] == 1.0 and metrics["eval/planner_error"] == 1.0 and "eval/ok" not in metrics
    )
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

    from evaluation.checkpoint_format import Instructions

    short, long = (
        (np.full((2, 4), 1.0, np.float32), np.ones(2, bool)),
        (np.full((5, 4), 2.0, np.float32), np.ones(5, bool)),
    )
    table = Instructions(
        tasks={"close_jar": short}, texts={"close the red jar": short, "close the jar / lid": long}
    )
    save_instructions(tmp_path / "i.npz", table)
    loaded = load_instructions(tmp_path / "i.npz")
    assert set(loaded.tasks) == {"close_jar"} and set(loaded.texts) == set(table.texts)
    for key, (tokens, mask) in table.texts.items():  # zero-padding is stripped again
        np.testing.assert_array_equal(loaded.texts[key][0], tokens)
        np.testing.assert_array_equal(loaded.texts[key][1], mask)
    assert loaded.for_episode("close_jar", "close the jar / lid")[0].shape == (5, 4)
    assert loaded.for_episode("close_jar", "an unseen phrasing")[0].shape == (2, 4)  # falls back to the task
    np.savez(
        tmp_path / "bad.npz",
        **{
            "t/tokens": np.ones((2, 4), np.float32),
            "t/mask": np.ones(2, bool),
            "__texts__/strings": np.asarray(["a"]),
        },
    )
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


def _mt_outputs(counts: dict[str, tuple[int, int]]) -> list[EpisodeOutput]:
    """Hand-built Meta-World episodes: ``{task: (successes, episodes)}``; one failure per task is a timeout."""
    outs = []
    for task, (k, n) in counts.items():
        outs += [_out(task, True) for _ in range(k)]
        outs += [_out(task, False, "timeout" if i == 0 else "ok") for i in range(n - k)]
    return outs


def test_tiers_pool_their_tasks_with_wilson_intervals_and_the_tier_average_needs_all_four():
    import json

    from evaluation.runtime.metrics import mean_interval, wilson_interval

    counts = {
        "reach-v3": (8, 10),
        "door-open-v3": (6, 10),  # easy: 14 / 20
        "hammer-v3": (5, 10),  # medium
        "push-v3": (2, 10),  # hard
        "shelf-place-v3": (0, 10),
        "stick-pull-v3": (1, 10),
    }  # very hard: 1 / 20
    report = summarize(_mt_outputs(counts), wall_s=1.0)
    tiers = report.tiers
    assert list(tiers) == ["easy", "medium", "hard", "very_hard"]
    easy = tiers["easy"]
    assert (easy.successes, easy.episodes, easy.tier_size) == (14, 20, 28) and easy.success_rate == 0.7
    assert (easy.ci_low, easy.ci_high) == wilson_interval(14, 20) and easy.status_counts["timeout"] == 2
    assert (
        tiers["very_hard"].tasks == ["shelf-place-v3", "stick-pull-v3"]
        and tiers["very_hard"].success_rate == 0.05
    )
    assert report.tier_average == pytest.approx((0.7 + 0.5 + 0.2 + 0.05) / 4)
    assert report.tier_average_ci == mean_interval([(14, 20), (5, 10), (2, 10), (1, 20)])
    assert report.per_episode_success == pytest.approx(22 / 60) and report.per_episode_ci == wilson_interval(
        22, 60
    )
    assert report.mean_success == pytest.approx(
        (0.8 + 0.6 + 0.5 + 0.2 + 0.0 + 0.1) / 6
    )  # per task: another number
    m = report.mlflow_metrics("eval")
    for name in ("easy", "medium", "hard", "very_hard", "tier_average", "per_episode"):
        assert {f"eval/success/{name}", f"eval/success/{name}_ci_low", f"eval/success/{name}_ci_high"} <= set(
            m
        )
    assert m["eval/success/hard"] == 0.2 and m["eval/success/tier_average"] == pytest.approx(
        report.tier_average
    )
    assert (m["eval/success/easy_ci_low"], m["eval/success/easy_ci_high"]) == wilson_interval(14, 20)
    table = report.table()
    assert "easy (2 of 28 tasks)" in table and "very hard (2 of 5 tasks)" in table
    assert "tier average (4 tiers)" in table and "36.2%" in table  # the tier average, 36.25 %
    data = json.loads(report.to_json())  # the JSON report carries the tiers; reading it back recomputes them
    assert data["tiers"]["medium"]["success_rate"] == 0.5 and data["tier_average"] == pytest.approx(0.3625)
    assert EvalReport.from_json(report.to_json()) == report


def test_a_subset_shows_its_tiers_and_no_tier_average_and_other_benchmarks_no_tiers():
    subset = summarize(_mt_outputs({"reach-v3": (5, 5), "pick-place-v3": (1, 5)}), wall_s=1.0)
    assert (
        list(subset.tiers) == ["easy", "hard"]
        and subset.tier_average is None
        and subset.tier_average_ci is None
    )
    m = subset.mlflow_metrics("eval")
    assert (
        "eval/success/easy" in m and "eval/success/medium" not in m and "eval/success/tier_average" not in m
    )
    assert "needs all four tiers and no medium or very hard task was evaluated" in subset.table()
    other = summarize([_out("a", True), _out("b", False)], wall_s=1.0)  # not Meta-World tasks
    assert other.tiers == {} and other.tier_average is None
    assert not [
        k for k in other.mlflow_metrics("eval") if k.startswith("eval/success/") and "per_episode" not in k
    ]
    assert "tier" not in other.table() and "per episode" in other.table()


def _stepped(task: str, success_step: int | None) -> EpisodeOutput:
    """A Meta-World episode whose success (if any) came after ``success_step`` low-level steps."""
    result = EpisodeResult(task, 0, 0, success_step is not None, 3, "ok", "", 0.5, "", 900, success_step)
    return EpisodeOutput(result, StageTimes())


def test_successes_within_the_published_episode_lengths_count_by_tier():
    import json

    from evaluation.runtime.metrics import wilson_interval

    outputs = [
        _stepped("reach-v3", 120),
        _stepped("reach-v3", 450),  # within 500, not 400
        _stepped("reach-v3", None),
        _stepped("hammer-v3", 700),  # a success only past both lengths
        _stepped("push-v3", 400),  # the step itself counts
        _stepped("stick-pull-v3", 2900),
    ]
    report = summarize(outputs, wall_s=1.0)
    assert report.per_episode_success == pytest.approx(5 / 6)
    at500, at400 = report.published_lengths()
    assert (at500.steps, at500.successes, at400.steps, at400.successes) == (500, 3, 400, 2)
    assert at500.tiers == pytest.approx({"easy": 2 / 3, "medium": 0.0, "hard": 1.0, "very_hard": 0.0})
    assert at500.tier_average == pytest.approx((2 / 3 + 1.0) / 4)
    assert at400.per_episode == pytest.approx(2 / 6) and at400.per_episode_ci == wilson_interval(2, 6)
    m = report.mlflow_metrics("eval")
    assert m["eval/success/within_500_steps/tier_average"] == pytest.approx(at500.tier_average)
    assert m["eval/success/within_400_steps/easy"] == pytest.approx(1 / 3)
    assert not [k for k in m if k.startswith("eval/success/within") and k.endswith("/success")]
    assert "within 500 low-level steps: 50.0% per episode" in report.table()
    again = EvalReport.from_json(report.to_json())  # the steps survive the JSON report
    assert again == report and again.within_steps(500) == at500
    # a report written before success steps were counted (or RLBench's) shows none
    old = json.loads(report.to_json())
    for record in old["results"]:
        record.pop("success_step"), record.pop("sim_steps")
    old_report = EvalReport.from_json(json.dumps(old))
    assert old_report.within_steps(500) is None and old_report.published_lengths() == []
    assert "within" not in old_report.table()
    assert not [k for k in old_report.mlflow_metrics("eval") if "within" in k]
