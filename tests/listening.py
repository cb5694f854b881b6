"""Listening TCP sockets of this process and its descendants, read from ``/proc/net/tcp{,6}`` (Linux): what a
private Ray cluster started by a test listens on (tests/platform/test_loopback.py, the policy server's replica in
tests/platform/test_recorded_episodes.py). Another Ray cluster on the machine does not count."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

HAS_PROC_NET = Path("/proc/net/tcp").exists()


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


def assert_loopback_only(what: str, also: str | None = None) -> None:
    """Every socket this process's cluster listens on is on loopback, and the GCS, the raylet (and ``also``, a
    process title such as ``ServeReplica``) are among the listeners, so an empty list cannot pass."""
    sockets = cluster_sockets()
    kinds = {command.split()[0] for _, _, command in sockets}
    assert len(sockets) >= 5, f"{what}: expected the GCS, raylet, agents and workers to listen; saw {sockets}"
    assert any("gcs_server" in kind for kind in kinds) and any("raylet" in kind for kind in kinds), sockets
    assert also is None or any(also in command for _, _, command in sockets), f"{what}: no {also}: {sockets}"
    outside = [s for s in sockets if not is_loopback(s[0])]
    assert not outside, (
        f"{what}: {len(outside)} of {len(sockets)} listening sockets outside loopback: {outside}"
    )
