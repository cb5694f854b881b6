"""Bind a Serve replica's internal gRPC server to its node's address instead of every interface.

Ray Serve 2.60 starts, in each replica, an inter-deployment gRPC server on ``[::]:0`` (hard-coded in
``ray/serve/_private/replica.py``, ``_on_initialized``; no setting), so a policy server started on the
platform's private loopback cluster would still listen on every interface of the machine. Its callers dial the
replica at the address Ray gives for the replica's node (``RunningReplicaInfo.node_ip`` + the port), so binding
the server to that address serves them all: 127.0.0.1 on the private cluster, the node's cluster address on a
joined one. ``PolicyDeployment.__init__`` calls ``bind_internal_grpc_to_node_ip`` in the replica process,
before Serve starts that server (Serve constructs the deployment first, then calls ``_on_initialized``).

This replaces a name inside Ray's private module, so it is checked: if a Ray version no longer has the name,
``InternalBindError`` says so instead of the server silently listening everywhere again
(``tests/platform/test_recorded_episodes.py`` reads the replica's listening sockets).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

import ray
from ray.serve._private import replica

EVERY_INTERFACE = "[::]:0"  # the address Serve 2.60 passes for the inter-deployment server


class InternalBindError(RuntimeError):
    """This Ray Serve does not bind its replica server the way this module rewrites."""


def node_address(ip: str, port: int = 0) -> str:
    """``host:port`` for gRPC: IPv6 addresses in brackets."""
    return f"[{ip}]:{port}" if ipaddress.ip_address(ip).version == 6 else f"{ip}:{port}"


def rebinding(add_port: Callable[[Any, str], int], ip: str) -> Callable[[Any, str], int]:
    """``add_port`` with Serve's every-interface address replaced by ``ip``'s; other addresses unchanged."""

    original = getattr(add_port, "original", add_port)  # rebinding twice still rewrites once

    def add_port_on_node(server: Any, address: str) -> int:
        return original(server, node_address(ip) if address == EVERY_INTERFACE else address)

    add_port_on_node.original = original  # type: ignore[attr-defined]
    return add_port_on_node


def bind_internal_grpc_to_node_ip() -> str:
    """In a replica process: make Serve bind its internal gRPC server to this node's IP; returns that IP."""
    add_port = getattr(replica, "add_port_to_grpc_server", None)
    if add_port is None:
        raise InternalBindError(
            f"ray {ray.__version__}: ray.serve._private.replica has no add_port_to_grpc_server, so the "
            "replica's internal gRPC server cannot be kept off other interfaces; use Ray 2.60 "
            "(pyproject.toml) or update platform/serve/replica_bind.py"
        )
    ip = ray.util.get_node_ip_address()
    replica.add_port_to_grpc_server = rebinding(add_port, ip)
    return ip
