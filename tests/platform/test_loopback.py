"""A private local cluster listens on loopback only (issue "Reliability", item 4; docs/design.md R16).

The listening TCP sockets are read from ``/proc/net/tcp{,6}`` and matched to the processes of the cluster this
test started (the driver and its descendants: GCS, raylet, dashboard, agents, workers), so that another Ray
cluster on the machine does not count. Linux only, like the platform's simulators.
"""

from __future__ import annotations

import os

import pytest

from tests.listening import HAS_PROC_NET, assert_loopback_only

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not HAS_PROC_NET, reason="reads listening sockets from /proc (Linux)"),
]


def _exercise_cluster() -> None:
    """A task and an actor, so that worker processes (each with its own server) are running."""
    import ray

    @ray.remote(num_cpus=0)
    def pid() -> int:
        return os.getpid()

    @ray.remote(num_cpus=0)
    class Pid:
        def get(self) -> int:
            return os.getpid()

    actor = Pid.remote()
    assert ray.get(pid.remote()) != ray.get(actor.get.remote())


def test_the_platforms_private_cluster_listens_on_loopback_only(monkeypatch):
    import ray

    from platform.config import load_config
    from platform.session import connect_ray, joins_cluster

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = load_config("configs/tiny.yaml")
    assert not joins_cluster(cfg)
    connect_ray(
        cfg, quiet=True
    )  # what platform.train, platform.sweep and platform.quality start (dashboard on)
    try:
        _exercise_cluster()
        assert_loopback_only("platform.session.connect_ray")
    finally:
        ray.shutdown()
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") is None  # restored for later joins


def test_the_evaluation_commands_private_cluster_listens_on_loopback_only():
    from evaluation.raysession import ray_session

    with ray_session(num_cpus=1, log_to_driver=False) as started:  # evaluation.run, collection, benchmarks
        assert started
        _exercise_cluster()
        assert_loopback_only("evaluation.raysession.ray_session")


def test_the_loopback_setting_is_restored_after_start(monkeypatch):
    """Joining a real cluster later from the same process still finds the machine's own address."""
    from ray._private import ray_constants

    from evaluation.raysession import loopback_node

    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")
    before = ray_constants.ENABLE_RAY_CLUSTER
    with loopback_node():
        assert ray_constants.ENABLE_RAY_CLUSTER is False
        assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert ray_constants.ENABLE_RAY_CLUSTER == before
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"
