"""The coordinator on a local Ray cluster with the fake simulator: complete and ordered results,
determinism, crash containment (R5), hang containment (R6), start-up failures, no processes left.

One warm pool of 4 actors is shared by the module (actor start-up costs seconds on 2 cores); its
simulators crash on the seeds in ``CRASH`` and hang on those in ``HANG``, which normal plans never use.
"""

from __future__ import annotations

import collections
import time

import pytest

from evaluation.runtime.coordinator import Coordinator, EvaluationStartupError, PoolConfig, RunStats
from evaluation.runtime.episode import EpisodeSpec, LocalInference, run_episode
from evaluation.runtime.evaluate import evaluate, plan_episodes
from evaluation.runtime.metrics import summarize
from evaluation.simulators.fake_sim import FakeSimConfig
from tests.evaluation.eval_fakes import (
    BrokenSimFactory,
    FakePolicyFactory,
    conditioner,
    fake_instructions,
    start_local_ray,
    wait_gone,
)

pytestmark = pytest.mark.integration

TASKS = FakeSimConfig().tasks
INSTR = fake_instructions(TASKS)
POLICY = FakePolicyFactory(max_step=0.06, noise=0.005)
CRASH, HANG = 900_001, 900_002
SIM = FakeSimConfig(step_delay_s=0.05, crash_at=1, crash_seeds=(CRASH,), hang_at=0, hang_seeds=(HANG,))
EPISODE_TIMEOUT_S = 3.0


def _pool(**kw) -> PoolConfig:
    base = {
        "num_actors": 4,
        "progress": False,
        "episode_timeout_s": EPISODE_TIMEOUT_S,
        "startup_timeout_s": 120.0,
    }
    return PoolConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def pool():
    ray = start_local_ray(num_cpus=6)  # 4 for the shared pool, 2 for the others
    coord = Coordinator(SIM.build, POLICY, INSTR, conditioner(), _pool(max_attempts=2)).start().wait_ready()
    yield coord
    coord.shutdown()
    ray.shutdown()


def _run(coord: Coordinator, specs, **kw):
    coord.stats = RunStats()
    start = time.monotonic()
    outputs = coord.run(specs, **kw)
    return outputs, time.monotonic() - start


def _key(out):
    r = out.result
    return (r.task, r.variation, r.seed, r.success, r.steps, r.status)


def test_results_complete_ordered_and_deterministic(pool):
    specs = plan_episodes(TASKS, 3, seed=0, variations=range(4))
    first, _ = _run(pool, specs)
    second, _ = _run(pool, list(reversed(specs)))
    assert [(o.result.task, o.result.variation, o.result.seed) for o in first] == [
        (s.task, s.variation, s.seed) for s in specs
    ]
    assert [_key(o) for o in first] == [_key(o) for o in second[::-1]]  # same seeds, same results
    local = [_key(run_episode(SIM.build(), LocalInference(POLICY()), conditioner(), INSTR, s)) for s in specs]
    assert [_key(o) for o in first] == local  # identical to running each episode in this process
    assert all(o.result.status == "ok" for o in first) and sum(o.result.success for o in first) >= 7
    assert len({o.actor_pid for o in first + second}) >= 2


def test_several_seeds_run_on_one_pool_and_report_each_seed(pool, tmp_path):
    """The RLBench protocol's 3 seeds: each seed plans its own episodes; per-task rates are the seed mean."""
    from evaluation.checkpoint_format import CheckpointBundle, Instructions
    from evaluation.runtime.evaluate import evaluate_checkpoint
    from evaluation.runtime.metrics import EvalReport

    bundle = CheckpointBundle(
        source=str(tmp_path),
        policy_config={},
        weights=b"",
        weights_file="-",
        instructions=Instructions.of(INSTR),
        max_points=256,
        pointcloud=conditioner().config.model_dump(mode="json"),
    )
    kw = {
        "tasks": TASKS,
        "episodes_per_task": 2,
        "num_actors": 2,
        "sim_factory": SIM.build,
        "variations": range(4),
        "policy_factory": POLICY,
        "pool": _pool(),
    }
    report = evaluate_checkpoint(bundle, seed=[0, 1, 2], **kw)
    singles = []  # each seed alone, on the module's warm pool (same simulator, policy and conditioner)
    for seed in (0, 1, 2):
        outputs, wall_s = _run(pool, plan_episodes(TASKS, 2, seed=seed, variations=range(4)))
        singles.append(summarize(outputs, wall_s))
    assert report.episodes == 3 * 2 * len(TASKS) and report.meta["seed"] == [0, 1, 2]
    assert report.seed_success == {s: r.mean_success for s, r in zip((0, 1, 2), singles, strict=True)}
    for task, summary in report.tasks.items():
        assert summary.success_rate == pytest.approx(sum(r.tasks[task].success_rate for r in singles) / 3)
    assert not singles[0].seed_success and "eval/success_seed_std" not in singles[0].mlflow_metrics()
    metrics = report.mlflow_metrics()
    assert metrics["eval/success_seed1"] == report.seed_success[1] and "eval/success_seed_std" in metrics
    assert EvalReport.from_json(report.to_json()) == report and "3 seeds" in report.table()
    with pytest.raises(ValueError, match="distinct"):
        evaluate_checkpoint(bundle, seed=[1, 1], **kw)


def test_r5_crash_is_replaced_retried_then_sim_error_with_full_denominator(pool):
    specs = plan_episodes(TASKS, 3, seed=1, variations=range(4))
    specs[4] = EpisodeSpec(specs[4].task, specs[4].variation, CRASH)
    outputs, elapsed = _run(pool, specs)
    report = summarize(outputs, elapsed, pool.stats.retries, pool.stats.actor_restarts, pool.stats.failures)
    assert report.episodes == len(specs)
    assert all(t.episodes == 3 for t in report.tasks.values())  # the denominator stays complete
    crashed = report.results[4]
    assert (crashed.seed, crashed.status, crashed.success) == (CRASH, "sim_error", False)
    assert "attempt 2 of 2" in crashed.message and "ActorDiedError" in crashed.message
    assert report.status_counts == {
        "ok": 8,
        "timeout": 0,
        "sim_error": 1,
        "planner_error": 0,
        "oom_killed": 0,
    }
    assert report.retries == 1 and report.actor_restarts == 2 and len(report.failures) == 2
    assert report.tasks[specs[4].task].success_rate <= 2 / 3
    assert "sim_error" in report.table() and report.mlflow_metrics()["eval/sim_error"] == 1.0


def test_an_actor_killed_for_memory_is_reported_as_such_not_as_a_crash(pool, monkeypatch):
    from evaluation.runtime import memory

    kills = iter(range(1, 1000))  # a fake kernel counter: every actor death below is seen with it risen
    monkeypatch.setattr(memory, "oom_kill_count", lambda counters=(): next(kills))
    monkeypatch.setattr(pool, "_oom", memory.OomWatch())
    specs = plan_episodes(TASKS, 1, seed=1, variations=range(4))
    specs[0] = EpisodeSpec(specs[0].task, specs[0].variation, CRASH)  # its actor dies, as an OOM kill would
    outputs, elapsed = _run(pool, specs)
    report = summarize(outputs, elapsed, pool.stats.retries, pool.stats.actor_restarts, pool.stats.failures)
    killed = report.results[0]
    assert killed.status == "oom_killed" and "out-of-memory killer" in killed.message and not killed.success
    assert report.status_counts["oom_killed"] == 1 and report.status_counts["sim_error"] == 0
    assert report.mlflow_metrics()["eval/oom_killed"] == 1.0 and "oom_killed" in report.table()
    assert all("killed for memory" in line for line in report.failures) and report.episodes == len(specs)


def test_r6_hang_times_out_actor_replaced_others_unaffected(pool):
    specs = plan_episodes(TASKS, 12, seed=3, variations=range(5))  # 36 episodes
    clean, _ = _run(pool, specs, max_attempts=1)
    faulty_specs = [EpisodeSpec(specs[0].task, specs[0].variation, HANG), *specs[1:]]
    faulty, _ = _run(pool, faulty_specs, max_attempts=1)
    hung = faulty[0].result
    assert (hung.status, hung.success, hung.seed) == ("timeout", False, HANG)
    assert f"exceeded {EPISODE_TIMEOUT_S:.1f} s" in hung.message
    assert [_key(o) for o in faulty[1:]] == [_key(o) for o in clean[1:]]  # other episodes unaffected
    assert pool.stats.actor_restarts == 1 and pool.stats.retries == 0
    hung_pid = int(pool.stats.failures[0].split("(pid ")[1].split(")")[0])
    assert wait_gone([hung_pid]) == [], "the hung actor was not killed"
    # The pool kept dispatching to its other actors while the hung episode waited for its timeout. (A wall-clock
    # bound such as "under twice the fault-free run" failed under a loaded machine: 5.0 s against 2 x 2.5 s.)
    others = {o.actor_pid for o in faulty[1:]} - {hung_pid}
    assert len(others) >= 3, f"the other episodes ran on {sorted(others)} only"


def test_transient_simulator_error_is_retried_on_a_fresh_actor(pool, tmp_path):
    specs = plan_episodes(TASKS[:1], 3, seed=2, variations=range(4))
    sim = FakeSimConfig(
        crash_at=0,
        crash_mode="raise",
        crash_seeds=(specs[1].seed,),
        fault_attempts=1,
        state_dir=str(tmp_path),
    )
    report = evaluate(sim.build, POLICY, INSTR, specs, conditioner(), _pool(num_actors=1, max_attempts=2))
    assert report.status_counts["ok"] == 3 and report.retries == 1 and report.actor_restarts == 1
    assert "SimulatorError: FakeSimulator crash_at=0" in report.failures[0]
    local = [
        run_episode(SIM.build(), LocalInference(POLICY()), conditioner(), INSTR, s).result for s in specs
    ]
    assert [(r.success, r.steps) for r in report.results] == [(r.success, r.steps) for r in local]


def test_actors_that_cannot_start_raise_a_typed_error(pool):
    coord = Coordinator(
        BrokenSimFactory(), POLICY, INSTR, conditioner(), _pool(num_actors=1, max_startup_failures=1)
    )
    with pytest.raises(
        EvaluationStartupError, match="failed to start.*ValueError: cannot open the simulator"
    ):
        coord.start().wait_ready()
    coord.shutdown()


def test_a_per_task_keypose_limit_replaces_the_pool_limit_for_that_task_only(pool):
    stuck = FakePolicyFactory(max_step=0.0)  # never reaches a goal: every episode runs to its limit
    cfg = _pool(num_actors=1, max_keyposes=4, max_keyposes_per_task={TASKS[0]: 2})
    coord = Coordinator(SIM.build, stuck, INSTR, conditioner(), cfg).start().wait_ready()
    try:
        outputs = coord.run([EpisodeSpec(TASKS[0], 0, 0), EpisodeSpec(TASKS[1], 0, 0)])
    finally:
        coord.shutdown()
    assert [(o.result.task, o.result.steps, o.result.success) for o in outputs] == [
        (TASKS[0], 2, False),
        (TASKS[1], 4, False),
    ]


def test_actor_resources_use_the_sim_resource_only_when_present(pool):
    from evaluation.runtime.actors import actor_resources

    assert "resources" not in actor_resources(1.0)  # this local cluster has no "sim" resource
    assert actor_resources(0.5, use_sim_resource=True) == {
        "num_cpus": 0.5,
        "max_restarts": 0,
        "max_task_retries": 0,
        "resources": {"sim": 1},
    }


def test_no_actor_processes_left_after_shutdown(pool):
    pids = pool.wait_ready().actor_pids()  # replacements of crashed actors may still be starting
    assert len(pids) == 4
    pool.shutdown()
    assert wait_gone(pids) == [], "actor processes left after shutdown"


def test_videos_record_a_success_and_a_failure_per_task_without_changing_results(pool):
    specs = plan_episodes(TASKS, 3, seed=0, variations=range(4))
    plain, _ = _run(pool, specs)
    assert pool.videos == {}  # videos off: nothing recorded
    cfg = pool.cfg
    pool.cfg = cfg.model_copy(update={"videos": True, "video_camera": "cam1"})
    try:
        recorded, _ = _run(pool, specs)
    finally:
        pool.cfg = cfg
    assert [_key(o) for o in recorded] == [_key(o) for o in plain]  # recording changes no outcome
    assert all(o.frames is None for o in recorded)  # frames travel only in pool.videos
    outcomes = {(o.result.task, o.result.success) for o in recorded}
    assert set(pool.videos) <= outcomes and {t for t, _ in pool.videos} == set(TASKS)
    for (task, _), (spec, frames) in pool.videos.items():
        assert spec.task == task and len(frames) >= 2 and frames[0].ndim == 3


def test_task_affinity_changes_no_result(pool):
    specs = plan_episodes(TASKS, 8, seed=4, variations=range(4))
    cfg = pool.cfg
    pool.cfg = cfg.model_copy(update={"task_affinity": False})
    try:
        fifo, _ = _run(pool, specs)
    finally:
        pool.cfg = cfg
    affine, _ = _run(pool, specs)
    assert [_key(o) for o in affine] == [_key(o) for o in fifo]


def test_task_affinity_keeps_each_of_two_actors_on_two_of_three_tasks(pool):
    """As an MT50 evaluation (more tasks than actors): each actor starts on its own task and keeps to it;
    FIFO order hands both actors every task in turn (2 x 3 = 6 task envs to build, here 4)."""
    specs = plan_episodes(TASKS, 6, seed=4, variations=range(4))
    coord = Coordinator(SIM.build, POLICY, INSTR, conditioner(), _pool(num_actors=2)).start().wait_ready()
    try:  # both actors up before the first episode (else the first one up could run every task alone)
        outputs = coord.run(specs)
    finally:
        coord.shutdown()
    assert all(o.result.status == "ok" for o in outputs)
    tasks_per_actor = collections.Counter(pid for pid, _ in {(o.actor_pid, o.result.task) for o in outputs})
    assert sorted(tasks_per_actor.values()) == [2, 2], tasks_per_actor


def test_a_long_run_prints_progress_lines_with_eta(pool, capsys):
    specs = plan_episodes(
        TASKS, 8, seed=5, variations=range(4)
    )  # 24 episodes: about 2 s, ten 0.2 s intervals
    cfg = pool.cfg
    pool.cfg = cfg.model_copy(update={"progress": True, "progress_every_s": 0.2})
    try:
        outputs, _ = _run(pool, specs)
    finally:
        pool.cfg = cfg
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[eval] ")]
    assert lines and "ETA" in lines[0] and "episodes/s" in lines[0], lines
    successes = sum(o.result.success for o in outputs)
    assert lines[-1].startswith(f"[eval] 24/24 episodes (100%)  success {100 * successes / 24:.1f}% so far")
    assert "took" in lines[-1]
