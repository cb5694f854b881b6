"""A Ray cluster on the machine does not kill the training of a private ``platform.train`` run beside it.

Ray Train's ``PlacementGroupCleaner`` asks the State API every second whether the training controller is alive,
at an auto-detected address: the cluster named in ``/tmp/ray/ray_current_cluster``, which ``ray start`` (and
``ray.cluster_utils.Cluster``) write. Before ``platform.session`` gave its private cluster's processes their own
dashboard's address, a ``ray start --head`` cluster on the machine (for ``ray job submit``, say) made the cleaner
of a private run ask that cluster, not find the controller, and remove the run's placement group, which killed
the train worker ("Detected that the Ray Train controller actor ... is dead"; training restarted from its last
checkpoint). Seen here when a test suite's cluster started beside an MT50 run: it lost its first 350 steps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.listening import process_tree
from tests.platform.conftest import (
    RayCluster,
    _free_port,
    kill_tree,
    start_platform,
    tiny_overrides,
    wait_for,
)

pytestmark = pytest.mark.integration
CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")  # Ray's default temp dir: what auto-detection reads


def _ray_start_beside(cwd: Path) -> RayCluster:
    """``ray start --head`` with a dashboard, in Ray's default temp dir (so it writes ray_current_cluster)."""
    venv_bin = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "PYTHONPATH": "",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": venv_bin + os.pathsep + os.environ["PATH"],
    }
    port, dash = _free_port(), _free_port()
    cmd = [
        str(Path(venv_bin) / "ray"),
        "start",
        "--head",
        f"--port={port}",
        "--num-cpus=1",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        "--disable-usage-stats",
    ]
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return RayCluster(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}", str(cwd), env)


def _own_gcs_address(pid: int) -> str | None:
    """``ip:port`` of the GCS among ``pid``'s descendants (its port is in the session dir once it listens)."""
    for child in process_tree(pid):
        try:
            args = Path(f"/proc/{child}/cmdline").read_text().split("\0")
        except OSError:
            continue
        if not args or not args[0].endswith("gcs_server"):
            continue
        flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
        session = Path(flags.get("log_dir", "")).parent
        ports = list(session.glob("gcs_server_port_*"))
        if ports and ports[0].read_text().strip():
            return f"{flags['node-ip-address']}:{ports[0].read_text().strip()}"
    return None


def test_a_cluster_started_beside_a_run_does_not_kill_its_training(tmp_path, tiny_dataset):
    """A private run whose cleaner has been asking its own cluster (auto-detection made to find it, as it does
    when the run is the machine's only cluster), then another cluster named the machine's current one (what its
    ``ray start --head`` writes; started before the run only because it takes a while): the cleaner must keep
    asking its own dashboard."""
    previous = CURRENT_CLUSTER.read_text() if CURRENT_CLUSTER.is_file() else None
    (tmp_path / "beside").mkdir()
    beside = _ray_start_beside(tmp_path / "beside")
    beside_address = CURRENT_CLUSTER.read_text()
    args = tiny_overrides(
        tmp_path,
        tiny_dataset,
        "beside",
        "train.steps=100000",
        # about 4 s of training after the switch below: the cleaner checks every second (Ray Train's default),
        # and a cleaner that asks the wrong cluster removes the placement group at its first check
        "train.time_budget_s=6",
        "train.checkpoint_every=100000",
        "eval.enabled=false",
    )
    log = tmp_path / "train.log"
    proc = start_platform("platform.train", args, log, env={"RAY_ADDRESS": ""})
    try:
        wait_for(lambda: _own_gcs_address(proc.pid) is not None, 120, "the run's GCS", poll=0.1)
        CURRENT_CLUSTER.write_text(_own_gcs_address(proc.pid))  # before its Train controller starts
        wait_for(lambda: "[train] starting at step 0" in log.read_text(), 240, "training to start")
        time.sleep(2)  # the cleaner holds the placement group
        CURRENT_CLUSTER.write_text(beside_address)
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            kill_tree(proc)
        beside.stop()
        if previous is None:
            CURRENT_CLUSTER.unlink(missing_ok=True)  # it named a cluster that is gone
        else:
            CURRENT_CLUSTER.write_text(previous)
    text = log.read_text()
    assert "Detected that the Ray Train controller actor" not in text, text[-3000:]
    assert text.count("[train] starting at step 0") == 1, text[-3000:]  # never restarted
