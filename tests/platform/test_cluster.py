"""cluster.yaml's layout on one machine: a head that trains (no ``sim`` resource) and two simulation nodes
(``sim: 1`` each), as separate Ray nodes (``ray.cluster_utils.Cluster``, Ray's own multi-node test utility).

The simulation nodes' processes may not read checkpoints (``evaluation.checkpoint_format.NO_READS_ENV``): everything an
evaluation actor needs must arrive through the object store. The cluster is shared by the module's tests.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from evaluation.checkpoint_format import NO_READS_ENV
from tests.platform.conftest import (
    FINAL_LINE,
    _free_port,
    assert_videos,
    metric_steps,
    run_platform,
    tiny_overrides,
)

pytestmark = pytest.mark.integration
EPISODE_TIMEOUT_S = 20.0


@pytest.fixture(scope="module")
def sim_cluster():
    import ray
    from ray import cloudpickle
    from ray.cluster_utils import Cluster

    import tests.evaluation.eval_fakes as fakes

    mp = pytest.MonkeyPatch()
    for key, value in {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": ""}.items():
        mp.setenv(key, value)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "include_dashboard": True, "dashboard_port": _free_port()},
    )  # the State API Train polls
    mp.setenv(NO_READS_ENV, "1")  # inherited by the simulation nodes' raylets and their workers only
    sims = [cluster.add_node(num_cpus=1, resources={"sim": 1}) for _ in range(2)]
    mp.delenv(NO_READS_ENV)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address)
    cloudpickle.register_pickle_by_value(fakes)
    try:
        yield cluster, cluster.head_node.node_id, sims
    finally:
        ray.shutdown()
        cluster.shutdown()
        mp.undo()


def test_simulation_nodes_cannot_read_checkpoints(sim_cluster, tmp_path):
    """The guard the next test relies on: on a simulation node, opening a checkpoint is an error."""
    import ray

    def read(path: str) -> str:
        from evaluation.checkpoint_format import CheckpointBundle

        try:
            CheckpointBundle.read(path)
        except Exception as exc:  # noqa: BLE001
            return str(exc)
        return "read"

    on_sim = ray.get(ray.remote(num_cpus=0, resources={"sim": 1})(read).remote(str(tmp_path)))
    on_head = ray.get(
        ray.remote(num_cpus=0)(read)
        .options(resources={"node:__internal_head__": 0.001})
        .remote(str(tmp_path))
    )
    assert NO_READS_ENV in on_sim and NO_READS_ENV not in on_head


def test_training_on_the_head_evaluation_on_the_simulation_nodes(sim_cluster, tmp_path, tiny_dataset):
    """A tiny platform.train joined to the cluster: the train worker on the head, every episode of the
    periodic and the final evaluation on a simulation node, no checkpoint opened there.

    Also the periodic evaluation itself (``eval.every_steps``): checkpoints evaluated in the background while
    training goes on, each logged at its training step, with its rollout videos, and no traceback printed."""
    cluster, head, sims = sim_cluster
    args = tiny_overrides(
        tmp_path,
        tiny_dataset,
        "multinode",
        "train.steps=10",
        "eval.every_steps=5",
        "eval.actors=2",
        "eval.episodes_per_task=2",
    )
    out = run_platform("platform.train", args, env={"RAY_ADDRESS": cluster.address})
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-5000:]
    assert "Traceback" not in text, text[-5000:]
    final = FINAL_LINE.match([ln for ln in out.stdout.splitlines() if ln.strip()][-1])
    assert final, text[-2000:]
    uri, run_id = final.group(4), final.group(3)
    assert metric_steps(uri, run_id, "eval/success") == [5, 10]
    run_dir = tmp_path / "runs" / "multinode"
    assert json.loads((run_dir / "progress.json").read_text())["node"] == head
    sim_ids = {n.node_id for n in sims}
    for step in (5, 10):
        report = json.loads((run_dir / "eval" / f"step_{step:08d}.json").read_text())
        assert report["episodes"] == 4 and report["status_counts"]["sim_error"] == 0, report["failures"]
        assert {r["node"] for r in report["results"]} <= sim_ids, (step, report["results"])
    # the periodic evaluation ran off the head: its videos came back as bytes, to disk and to MLflow
    assert_videos(run_dir, "step_00000005", uri, run_id)
    assert_videos(run_dir, "step_00000010", uri, run_id)


def test_losing_simulation_nodes_mid_evaluation(sim_cluster):
    """One node lost: its episodes are retried on the other, every episode is reported. None left: a clear
    error within the episode timeout (a replacement actor never moves to the head)."""
    import ray

    from evaluation.runtime.coordinator import Coordinator, EvaluationStartupError, PoolConfig
    from evaluation.runtime.evaluate import plan_episodes
    from evaluation.simulators.fake_sim import FakeSimConfig
    from tests.evaluation.eval_fakes import FakePolicyFactory, conditioner, fake_instructions

    cluster, head, sims = sim_cluster
    sim = FakeSimConfig(step_delay_s=0.15)
    pool = PoolConfig(
        num_actors=2, progress=False, episode_timeout_s=EPISODE_TIMEOUT_S, startup_timeout_s=120.0
    )
    coord = Coordinator(
        sim.build, FakePolicyFactory(max_step=0.06), fake_instructions(sim.tasks), conditioner(), pool
    )
    coord.start().wait_ready()
    assert len({ray.get(s.actor.ready.remote())["pid"] for s in coord.slots}) == 2
    specs = plan_episodes(sim.tasks, 4, seed=0, variations=range(4))
    result: dict = {}

    def run() -> None:
        try:
            result["outputs"] = coord.run(specs)
        except Exception as exc:  # noqa: BLE001
            result["error"] = exc

    try:
        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(2.0)
        cluster.remove_node(sims[0])
        worker.join(timeout=300)
        assert "outputs" in result, result
        outputs = result["outputs"]
        assert [(o.result.task, o.result.seed) for o in outputs] == [(s.task, s.seed) for s in specs]
        assert coord.stats.actor_restarts >= 1
        assert {o.result.node for o in outputs if o.result.status == "ok"} <= {n.node_id for n in sims}
        assert sum(o.result.status == "ok" for o in outputs) >= len(specs) - 1  # at most one lost twice

        result.clear()
        worker = threading.Thread(target=run)
        worker.start()
        time.sleep(1.0)
        cluster.remove_node(sims[1])
        lost = time.monotonic()
        worker.join(timeout=300)
        assert isinstance(result.get("error"), EvaluationStartupError), result
        assert "no simulation node is left" in str(result["error"])
        assert time.monotonic() - lost <= EPISODE_TIMEOUT_S + 5.0
    finally:
        coord.shutdown()  # the last test of the module: the cluster keeps no simulation node
