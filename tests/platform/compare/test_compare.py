"""``python -m platform.compare`` on tiny fake runs written with MlflowClient into a temp sqlite DB."""

from __future__ import annotations

import csv
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from platform.compare.cli import main
from platform.compare.published import load_mt50, load_published
from platform.compare.runs import gpu_count, time_to_level

pytestmark = pytest.mark.unit

EXPERIMENT = "cmp-test"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _log_fake_run(client, exp_id: str, name: str, policy_type: str, success: list[float], hours_per_eval: float,
                  samples_per_s: float, peak_gib: float, suite: str = "rlbench") -> str:  # fmt: skip
    """A fake finished training run: evaluations at steps 100, 200, 300 on two RLBench task names."""
    from mlflow.entities import Metric, Param

    run = client.create_run(
        exp_id,
        run_name=name,
        tags={"platform.kind": "train", "platform.policy_type": policy_type, "platform.suite": suite},
    )
    ts = int(time.time() * 1000)
    metrics = []
    for i, step in enumerate((100, 200, 300)):
        metrics += [
            Metric("eval/success", success[i], ts, step),
            Metric("eval/close_jar/success", success[i] + 0.1, ts, step),
            Metric("eval/open_drawer/success", success[i] - 0.1, ts, step),
            Metric("eval/episodes", 50.0, ts, step),
            Metric("time/elapsed_s", (i + 1) * hours_per_eval * 3600, ts, step),
            Metric("train/loss", 1.0 / step, ts, step),
            Metric("train/samples_per_s", samples_per_s, ts, step),
            Metric("train/conditions_per_s", samples_per_s / 64, ts, step),
            Metric("train/peak_mem_bytes", peak_gib * 2**30, ts, step),
            Metric("eval/success_ci_low", success[i] - 0.05, ts, step),
            Metric("eval/success_ci_high", success[i] + 0.05, ts, step),
        ]
    params = [
        Param("ray.use_gpu", "true"),
        Param("ray.num_workers", "2"),
        Param("data.episodes_per_task", "18"),
    ]
    client.log_batch(run.info.run_id, metrics=metrics, params=params)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


@pytest.fixture
def fake_runs(tmp_path: Path) -> tuple[str, dict[str, str]]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = _client(uri)
    exp_id = client.create_experiment(EXPERIMENT, artifact_location=str(tmp_path / "mlartifacts"))
    ids = {
        "mini_diffuser": _log_fake_run(
            client, exp_id, "fake-md", "mini_diffuser", [0.3, 0.6, 0.8], 1.0, 6400, 1.0
        ),
        "one_to_one": _log_fake_run(client, exp_id, "fake-o2o", "one_to_one", [0.2, 0.3, 0.5], 3.0, 400, 4.0),
    }
    return uri, ids


def _run(uri: str, out: Path, *extra: str) -> int:
    return main(["--tracking-uri", uri, "--experiment", EXPERIMENT, "--out", str(out), *extra])


def test_compare_table_from_fake_runs(fake_runs, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri, ids = fake_runs
    from mlflow.entities import Metric

    client = _client(uri)
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    sweep = client.create_run(
        exp_id, run_name="ttq", tags={"platform.kind": "sweep_parent", "platform.quality": "true"}
    )
    ts = int(time.time() * 1000)
    client.log_batch(
        sweep.info.run_id,
        metrics=[
            Metric("quality/m1/time_to_target_s", 800.0, ts, 0),
            Metric("quality/m1/ratio_to_m1", 1.0, ts, 0),
            Metric("quality/m64/time_to_target_s", 100.0, ts, 0),
            Metric("quality/m64/ratio_to_m1", 0.125, ts, 0),
        ],
    )
    out = tmp_path / "cmp"
    assert _run(uri, out) == 0
    printed = capsys.readouterr().out
    assert "| mini_diffuser | fake-md" in printed and "| one_to_one | fake-o2o" in printed
    assert "| 18 | 80.0 / 80.0 | 75.0-85.0 |" in printed  # demonstrations per task, success and its interval
    assert "| ttq | 64 | 100 | 0.125 |" in printed and "| ttq | 1 | 800 | 1.000 |" in printed
    # per task: best run per policy type beside 3DDA's published numbers (close_jar 96.0, open_drawer 89.6)
    assert "| close_jar | 90.0 | 60.0 |" in printed and "96.0" in printed and "89.6" in printed
    # Mini-Diffuser vs one-to-one: +30 points, 16x samples/s, 0.25x memory, 25 % in 1 h vs 6 h, 50 % in 2 h vs 9 h
    assert "| one_to_one | +30.0 | 16.00x | 16.00x | 0.25x | 0.17x | 0.22x | – |" in printed
    for name in ("comparison.md", "comparison.csv", "comparison_success.png", "success_vs_time.png"):
        assert (out / name).stat().st_size > 0
    rows = {r["name"]: r for r in csv.DictReader(open(out / "comparison.csv"))}
    md = rows["fake-md"]
    assert md["run_id"] == ids["mini_diffuser"] and md["num_gpus"] == "2"
    assert float(md["mean_success"]) == pytest.approx(0.8)
    assert float(md["h_to_50%"]) == pytest.approx(2.0) and float(md["gpu_h_to_50%"]) == pytest.approx(4.0)
    assert float(md["wall_clock_h"]) == pytest.approx(3.0) and float(md["gpu_h"]) == pytest.approx(6.0)
    assert rows["fake-o2o"]["h_to_75%"] == ""  # never reached
    assert float(rows["diffuser_actor_3dda"]["success/close_jar"]) == pytest.approx(0.96)
    client = _client(uri)
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (comparison,) = [
        r for r in client.search_runs([exp_id]) if r.data.tags.get("platform.kind") == "comparison"
    ]
    assert {a.path for a in client.list_artifacts(comparison.info.run_id)} >= {
        "comparison.md",
        "comparison.csv",
    }


def test_reference_runs_are_logged_once(fake_runs, tmp_path: Path) -> None:
    uri, _ = fake_runs
    assert _run(uri, tmp_path / "a") == 0
    assert _run(uri, tmp_path / "b") == 0
    client = _client(uri)
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    runs = client.search_runs([exp_id])
    kinds = Counter(r.data.tags.get("platform.kind") for r in runs)
    assert kinds == {"reference": len(load_published()) + len(load_mt50()), "train": 2, "comparison": 1}
    by_name = {r.info.run_name: r for r in runs}
    dda = by_name["published/rlbench18/diffuser_actor_3dda"]
    assert dda.data.metrics["eval/success"] == pytest.approx(0.813)
    assert dda.data.metrics["eval/close_jar/success"] == pytest.approx(0.96)
    assert len(client.get_metric_history(dda.info.run_id, "eval/close_jar/success")) == 1
    mini = by_name["published/rlbench18/mini_diffuser"]
    assert mini.data.metrics["eval/success"] == pytest.approx(0.776)
    assert not [k for k in mini.data.metrics if k.startswith("eval/") and k != "eval/success"]
    smolvla = by_name["published/mt50/SmolVLA 2.25B"]  # the names our MT50 runs log, as fractions
    assert smolvla.data.metrics["eval/success/very_hard"] == pytest.approx(0.64)
    assert smolvla.data.metrics["eval/success/tier_average"] == pytest.approx(0.682)
    assert "eval/success" not in smolvla.data.metrics  # its per-task mean is not published
    assert (
        "1 policies trained, 50 demos/task, 10 evaluation episodes/task"
        in smolvla.data.params["published.protocol"]
    )
    assert by_name["published/mt50/DP3"].data.metrics["eval/success"] == pytest.approx(0.731)


def test_compare_without_runs_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert _run(uri, tmp_path / "cmp") == 0
    printed = capsys.readouterr().out
    assert "No runs of ours yet" in printed and "| diffuser_actor_3dda | 81.3 |" in printed
    assert "No MT50 runs of ours yet" in printed and "python -m platform.train data.suite=mt50" in printed
    assert (
        "| FabriVLA | 1 | 50 | 10 | images + language | 95.0 | 88.2 | 86.7 | 90.0 | 90.0 | – | 92.0 |"
        in printed
    )
    assert (tmp_path / "cmp" / "comparison_success.png").exists()


def test_unreachable_server_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run("http://127.0.0.1:9", tmp_path / "cmp") == 2
    assert "cannot read MLflow at http://127.0.0.1:9" in capsys.readouterr().err


def test_time_to_level_uses_the_elapsed_time_of_the_evaluated_step() -> None:
    success = [(100, 0.2), (200, 0.55), (300, 0.7)]
    elapsed = [(50, 50.0), (100, 100.0), (250, 300.0), (300, 400.0)]
    assert time_to_level(success, elapsed, 0.2) == 100.0  # exact step
    assert time_to_level(success, elapsed, 0.5) == pytest.approx(100.0 + 200.0 * 100 / 150)  # interpolated
    assert time_to_level(success, elapsed, 0.9) is None  # never reached
    assert time_to_level(success, [], 0.2) is None  # not timed


def _fake_run_info(tags: dict[str, str], params: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(data=SimpleNamespace(tags=tags, params=params))


def test_gpu_count_sources() -> None:
    assert gpu_count(_fake_run_info({"platform.num_gpus": "4"}, {"ray.use_gpu": "false"})) == 4
    assert gpu_count(_fake_run_info({}, {"resources.gpus": "2"})) == 2
    assert gpu_count(_fake_run_info({}, {"ray.use_gpu": "true", "ray.num_workers": "3"})) == 3
    assert gpu_count(_fake_run_info({}, {"ray.use_gpu": "null", "env.device": "cuda:NVIDIA H100 x1"})) == 1
    assert gpu_count(_fake_run_info({}, {"ray.use_gpu": "null", "env.device": "cpu"})) == 0
    assert gpu_count(_fake_run_info({}, {})) == 0


def test_published_tables_load() -> None:
    published = {m.method: m for m in load_published()}
    assert published["diffuser_actor_3dda"].avg_success == pytest.approx(0.813)
    assert len(published["diffuser_actor_3dda"].per_task) == 18
    assert published["mini_diffuser"].per_task == {} and published["mini_diffuser"].train_gpu_hours == 13
    mt50 = {r.method: r for r in load_mt50()}
    assert mt50["DP3"].tiers["easy"] == pytest.approx(0.909) and mt50["DP3"].policies_trained.startswith("50")
    assert mt50["FabriVLA"].tier_average == pytest.approx(0.9) and mt50["FabriVLA"].demos_per_task == 50
    assert all(set(r.tiers) == {"easy", "medium", "hard", "very_hard"} and r.source for r in mt50.values())


def test_suite_filter_keeps_one_benchmark(fake_runs, tmp_path: Path) -> None:
    uri, _ = fake_runs
    client = _client(uri)
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    _log_fake_run(
        client, exp_id, "fake-mt10", "mini_diffuser", [0.9, 0.95, 0.99], 0.1, 9000, 1.0, suite="mt10"
    )
    assert _run(uri, tmp_path / "all", "--no-log") == 0
    assert "fake-mt10" in (tmp_path / "all" / "comparison.md").read_text()
    assert _run(uri, tmp_path / "rl", "--no-log", "--suite", "rlbench") == 0
    report = (tmp_path / "rl" / "comparison.md").read_text()
    assert "fake-mt10" not in report and "fake-md" in report and "| rlbench |" in report
    with (tmp_path / "rl" / "comparison.csv").open() as f:
        assert {row["suite"] for row in csv.DictReader(f) if row["source"] == "ours"} == {"rlbench"}


def _log_fake_mt50_run(
    client, exp_id: str, name: str, tiers: dict[str, float] | None, params: dict[str, str] | None = None
) -> str:
    """A finished MT50 run whose final evaluation (10 episodes per task) logged per-tier metrics (or not)."""
    from mlflow.entities import Metric, Param

    run = client.create_run(
        exp_id,
        run_name=name,
        tags={"platform.kind": "train", "platform.suite": "mt50", "platform.policy_type": "mini_diffuser"},
    )
    ts = int(time.time() * 1000)
    metrics = [
        Metric("eval/success", 0.6, ts, 500),
        Metric("eval/episodes", 500.0, ts, 500),
        Metric("eval/success_ci_low", 0.55, ts, 500),
        Metric("eval/success_ci_high", 0.65, ts, 500),
        Metric("train/loss", 0.1, ts, 500),
    ]
    metrics += [Metric(f"eval/task{i}-v3/success", 0.6, ts, 500) for i in range(50)]
    for key, value in (tiers or {}).items():
        metrics += [
            Metric(f"eval/success/{key}", value, ts, 500),
            Metric(f"eval/success/{key}_ci_low", value - 0.1, ts, 500),
            Metric(f"eval/success/{key}_ci_high", value + 0.1, ts, 500),
        ]
    if tiers:
        metrics.append(Metric("eval/success/per_episode", 0.6, ts, 500))
        if (
            "tier_average" in tiers
        ):  # success steps counted: the tier average within 500 steps, 5 points lower
            metrics.append(
                Metric("eval/success/within_500_steps/tier_average", tiers["tier_average"] - 0.05, ts, 500)
            )
    params = {"data.episodes_per_task": "50", **(params or {})}
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def test_suite_mt50_puts_our_tiers_beside_the_published_rows(fake_runs, tmp_path: Path) -> None:
    uri, _ = fake_runs
    client = _client(uri)
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    tiers = {"easy": 0.8, "medium": 0.5, "hard": 0.3, "very_hard": 0.2, "tier_average": 0.45}
    run_id = _log_fake_mt50_run(client, exp_id, "fake-mt50", tiers)
    _log_fake_mt50_run(client, exp_id, "old-mt50", None)  # evaluated before the tier metrics existed
    assert _run(uri, tmp_path / "mt50", "--no-log", "--suite", "mt50") == 0
    report = (tmp_path / "mt50" / "comparison.md").read_text()
    assert "fake-md" not in report  # RLBench runs are left out
    # ours: one policy, 50 demos per task, 500 episodes over 50 tasks; tiers with their intervals; per-task mean
    assert (
        "| **mini_diffuser: fake-mt50** (ours) | 1 | 50 | 10 | fused point cloud + language | 80.0 (70.0-90.0) "
        "| 50.0 (40.0-60.0) | 30.0 (20.0-40.0) | 20.0 (10.0-30.0) | 45.0 (35.0-55.0) | 40.0 | 60.0 (55.0-65.0) | 60.0 "
        f"| this platform, MLflow run `{run_id[:8]}` |"
    ) in report
    assert (
        "| **mini_diffuser: old-mt50** (ours) | 1 | 50 | 10 | fused point cloud + language | – | – | – | – | – | – |"
        in report
    )
    assert "without `eval/success/<tier>` metrics" in report
    # published: setting and source of every number
    assert (
        "| SmolVLA 2.25B | 1 | 50 | 10 | images + language | 87.1 | 51.8 | 70.0 | 64.0 | 68.2 | – | – | – "
        "| arXiv 2506.01844 |"
    ) in report
    assert "| DP3 | 50 (one per task) | 10 | 20 x 3 seeds | 1-camera point cloud | 90.9 |" in report
    assert (
        "Evo-1: re-evaluations of the released checkpoint gave 75.8" in report
        and "compare, do not equate" in report
    )
    with (tmp_path / "mt50" / "comparison.csv").open() as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    ours = rows["fake-mt50"]
    assert float(ours["tier_very_hard"]) == pytest.approx(0.2) and float(
        ours["tier_average_ci_low"]
    ) == pytest.approx(0.35)
    assert ours["policies_trained"] == "1" and float(ours["eval_episodes_per_task"]) == 10
    assert float(ours["tier_average_within_500_steps"]) == pytest.approx(0.40)
    assert "counts only our successes within the first 500 low-level steps" in report
    assert (
        rows["FabriVLA"]["citation"] == "arXiv 2607.08575" and float(rows["FabriVLA"]["tier_average"]) == 0.9
    )
    assert rows["FabriVLA"]["suite"] == "mt50" and rows["FabriVLA"]["policies_trained"] == "1"
    # another benchmark's comparison has no MT50 section
    assert _run(uri, tmp_path / "rl", "--no-log", "--suite", "rlbench") == 0
    assert "## MT50" not in (tmp_path / "rl" / "comparison.md").read_text()


def test_seeds_of_one_mt50_experiment_are_averaged_beside_their_runs(fake_runs, tmp_path: Path) -> None:
    uri, _ = fake_runs
    client = _client(uri)
    exp_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    base = {"train.steps": "7000", "data.path": "/a/data"}
    low = {"easy": 0.8, "medium": 0.5, "hard": 0.3, "very_hard": 0.2, "tier_average": 0.45}
    high = {k: v + 0.1 for k, v in low.items()}
    _log_fake_mt50_run(client, exp_id, "exp-s0", high, {**base, "train.seed": "0", "name": "exp-s0"})
    # another seed of the same experiment, from another checkout, logged after a new setting existed
    _log_fake_mt50_run(client, exp_id, "exp-s1", high,
                       {**base, "train.seed": "1", "name": "exp-s1", "data.path": "/b/data", "policy.history": "0"})  # fmt: skip
    _log_fake_mt50_run(client, exp_id, "short-s1", high, {**base, "train.seed": "1", "train.steps": "4000"})
    # seed 0 again, later: the newest run of each seed is the one averaged
    _log_fake_mt50_run(client, exp_id, "exp-s0-again", low, {**base, "train.seed": "0"})
    # a newer seed 1 with a setting the others ran before it existed, set to other than its default: another
    # experiment (the others ran with the default)
    _log_fake_mt50_run(
        client, exp_id, "surface-s1", high, {**base, "train.seed": "1", "data.surface_fraction": "0.5"}
    )
    assert _run(uri, tmp_path / "seeds", "--no-log", "--suite", "mt50") == 0
    report = (tmp_path / "seeds" / "comparison.md").read_text()
    assert (
        "| **mini_diffuser: mean of 2 seeds (exp-s0-again, exp-s1)** (ours) | 1 | 50 | 10 | fused point cloud + language "
        "| 85.0 (seeds 80.0-90.0) | 55.0 (seeds 50.0-60.0) | 35.0 (seeds 30.0-40.0) | 25.0 (seeds 20.0-30.0) "
        "| 50.0 (seeds 45.0-55.0) | 45.0 (seeds 40.0-50.0) | 60.0 (seeds 60.0-60.0) | 60.0 (seeds 60.0-60.0) |"
    ) in report
    assert report.count("mean of 2 seeds") == 1 and "differ only in `train.seed`" in report
    assert (
        "| **mini_diffuser: exp-s0** (ours) |" in report
        and "| **mini_diffuser: short-s1** (ours) |" in report
        and "| **mini_diffuser: surface-s1** (ours) |" in report
    )
    with (tmp_path / "seeds" / "comparison.csv").open() as f:
        (mean,) = [row for row in csv.DictReader(f) if row["source"] == "ours (mean of seeds)"]
    assert float(mean["tier_average"]) == pytest.approx(0.5) and len(mean["run_id"].split()) == 2
    assert float(mean["tier_average_within_500_steps"]) == pytest.approx(0.45)
