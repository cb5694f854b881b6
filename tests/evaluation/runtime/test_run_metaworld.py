"""A real Meta-World evaluation of a tiny (untrained) checkpoint with 2 actors, through the CLI:
per-task table, JSON report and MLflow metrics. Test variations only, full denominators."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.checkpoint_format import INSTRUCTIONS_FILE, save_instructions
from evaluation.runtime.evaluate import plan_episodes
from evaluation.runtime.metrics import EvalReport
from evaluation.runtime.run import main
from evaluation.simulators.metaworld_backend import TEST_VARIATIONS, TRAIN_VARIATIONS
from policies.registry import build_policy, parse_policy_config
from tests.evaluation.eval_fakes import start_local_ray

pytestmark = [pytest.mark.sim, pytest.mark.integration]

TASKS = ["reach-v3", "push-v3"]


@pytest.fixture(scope="module")
def ray_cluster():
    ray = start_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture()
def tiny_checkpoint(tmp_path):
    directory = tmp_path / "ckpt"
    policy = build_policy(parse_policy_config({"type": "mini_diffuser", "preset": "tiny"}))
    policy.save_pretrained(directory)
    rng = np.random.default_rng(0)
    text = {
        t: (rng.standard_normal((6, policy.config.text_dim)).astype(np.float32), np.ones(6, bool))
        for t in TASKS
    }
    save_instructions(directory / INSTRUCTIONS_FILE, text)
    return directory


def test_metaworld_cli_two_actors_json_and_mlflow(ray_cluster, tiny_checkpoint, tmp_path, capsys):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("eval", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    out = tmp_path / "report.json"
    argv = [
        "--checkpoint",
        str(tiny_checkpoint),
        "--suite",
        "mt10",
        "--tasks",
        ",".join(TASKS),
        "--episodes",
        "2",
        "--actors",
        "2",
        "--max-keyposes",
        "2",
        "--max-keyposes-per-task",
        "push-v3=3",
        "--set",
        "diffusion.inference_samples=2",
        "--timeout",
        "120",
        "--json",
        str(out),
        "--no-progress",
        "--mlflow-run-id",
        run_id,
        "--mlflow-tracking-uri",
        uri,
        "--mlflow-step",
        "7",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "reach-v3" in printed and "mean over tasks" in printed
    assert "policy settings: diffusion.inference_samples=2" in printed

    report = EvalReport.from_json(out.read_text())
    assert report.episodes == 4 and set(report.tasks) == set(TASKS)
    assert all(t.episodes == 2 for t in report.tasks.values())
    assert report.status_counts["ok"] == 4, report.failures
    assert all(1 <= r.steps <= (3 if r.task == "push-v3" else 2) for r in report.results)
    assert all(r.steps == 3 or r.success for r in report.results if r.task == "push-v3")  # its own limit
    assert {r.variation for r in report.results} <= set(TEST_VARIATIONS)
    assert not set(TEST_VARIATIONS) & set(TRAIN_VARIATIONS)
    expected = plan_episodes(
        TASKS, 2, 0, TEST_VARIATIONS
    )  # fixed by the seed: reruns evaluate the same episodes
    assert [(r.task, r.variation, r.seed) for r in report.results] == [
        (s.task, s.variation, s.seed) for s in expected
    ]
    assert (
        report.time_shares["render"] > 0
        and report.time_shares["sim"] > 0
        and report.time_shares["policy"] > 0
    )

    metrics = client.get_run(run_id).data.metrics
    assert metrics["eval/reach-v3/success"] == report.tasks["reach-v3"].success_rate
    assert metrics["eval/episodes"] == 4.0
    history = client.get_metric_history(run_id, "eval/success")
    assert [m.step for m in history] == [7]


def test_a_per_task_limit_must_name_an_evaluated_task_as_task_equals_n(tiny_checkpoint, capsys):
    base = ["--checkpoint", str(tiny_checkpoint), "--suite", "mt10", "--tasks", ",".join(TASKS)]
    assert main([*base, "--max-keyposes-per-task", "pick-place-v3=5"]) == 2  # before any Ray start
    assert "--max-keyposes-per-task names ['pick-place-v3']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--max-keyposes-per-task", "push-v3"])
    assert "TASK=N with N >= 1, got 'push-v3'" in capsys.readouterr().err


def test_policy_settings_are_checked_before_ray_starts(tiny_checkpoint, capsys):
    base = ["--checkpoint", str(tiny_checkpoint), "--suite", "mt10", "--tasks", ",".join(TASKS)]
    assert main([*base, "--set", "diffusion.inference_samples=0"]) == 2
    err = capsys.readouterr().err
    assert "the policy settings {'diffusion': {'inference_samples': 0}} are not valid" in err
    assert "greater than or equal to 1" in err
    with pytest.raises(SystemExit):
        main([*base, "--set", "diffusion.inference_samples"])
    assert "expected dotted.key=value" in capsys.readouterr().err
