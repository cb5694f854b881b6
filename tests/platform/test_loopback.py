"""A private local cluster listens on loopback only (issue "Reliability", item 4; docs/design.md R16).

The listening TCP sockets are read from ``/proc/net/tcp{,6}`` and matched to the processes of the cluster this
test started (the driver and its descendants: GCS, raylet, dashboard, agents, workers), so that another Ray
cluster on the machine does not count. Linux only, like the platform's simulators.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not Path("/proc/net/tcp").exists(), reason="reads listening sockets from /proc (Linux)"
    ),
]


def _address(hex_address: str, v6: bool) -> str:
    ip = bytes.fromhex(hex_address.split(":")[0])
    if v6:  # four host-order 32-bit words
        return socket.inet_ntop(socket.AF_INET6, b"".join(ip[i : i + 4][::-1] for i in range(0, 16, 4)))
    return socket.inet_ntop(socket.AF_INET, ip[::-1])


def listening_sockets() -> dict[int, tuple[str, int]]:
    """Every listening TCP socket of this machine: inode -> (address, port)."""
    found = {}
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                found[int(fields[9])] = (_address(fields[1], v6), int(fields[1].split(":")[1], 16))
    return found


def process_tree(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, []))
    return tree


def _socket_owners(pids: set[int]) -> dict[int, int]:
    owners = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owners[int(target[8:-1])] = pid
    return owners


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()[:100]
    except OSError:
        return "?"


def cluster_sockets() -> list[tuple[str, int, str]]:
    """(address, port, command) of every socket this process and its descendants listen on."""
    owners = _socket_owners(process_tree(os.getpid()))
    return sorted(
        (ip, port, _command(owners[inode]))
        for inode, (ip, port) in listening_sockets().items()
        if inode in owners
    )


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or ip).is_loopback


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


def _assert_loopback_only(what: str) -> None:
    sockets = cluster_sockets()
    kinds = {command.split()[0] for _, _, command in sockets}
    assert len(sockets) >= 5, f"{what}: expected the GCS, raylet, agents and workers to listen; saw {sockets}"
    assert any("gcs_server" in kind for kind in kinds) and any("raylet" in kind for kind in kinds), sockets
    outside = [s for s in sockets if not is_loopback(s[0])]
    assert not outside, (
        f"{what}: {len(outside)} of {len(sockets)} listening sockets outside loopback: {outside}"
    )


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
        _assert_loopback_only("platform.session.connect_ray")
    finally:
        ray.shutdown()
    assert os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") is None  # restored for later joins


def test_the_evaluation_commands_private_cluster_listens_on_loopback_only():
    from evaluation.raysession import ray_session

    with ray_session(num_cpus=1, log_to_driver=False) as started:  # evaluation.run, collection, benchmarks
        assert started
        _exercise_cluster()
        _assert_loopback_only("evaluation.raysession.ray_session")


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
