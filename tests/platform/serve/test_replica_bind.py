"""platform.serve.replica_bind: Serve's every-interface address for a replica's internal gRPC server becomes
the node's address; every other address is left alone. (The replica's real sockets, on a private cluster:
tests/platform/test_recorded_episodes.py.)"""

from __future__ import annotations

import pytest

from platform.serve.replica_bind import EVERY_INTERFACE, node_address, rebinding

pytestmark = pytest.mark.unit


def _recorder() -> tuple[list[str], object]:
    seen: list[str] = []

    def add_port(server: object, address: str) -> int:
        seen.append(address)
        return 4321

    return seen, add_port


def test_every_interface_becomes_the_node_address_and_the_port_comes_back():
    seen, add_port = _recorder()
    bound = rebinding(add_port, "127.0.0.1")
    assert bound(object(), EVERY_INTERFACE) == 4321
    assert bound(object(), "10.0.0.5:9000") == 4321  # an explicit address is the caller's choice
    assert seen == ["127.0.0.1:0", "10.0.0.5:9000"]


def test_ipv6_node_addresses_are_bracketed():
    assert node_address("::1") == "[::1]:0" and node_address("10.1.2.3", 7) == "10.1.2.3:7"
    seen, add_port = _recorder()
    rebinding(add_port, "fd00::2")(object(), EVERY_INTERFACE)
    assert seen == ["[fd00::2]:0"]


def test_rebinding_twice_rewrites_once_to_the_latest_address():
    seen, add_port = _recorder()
    twice = rebinding(rebinding(add_port, "127.0.0.1"), "192.168.1.4")
    twice(object(), EVERY_INTERFACE)
    assert seen == ["192.168.1.4:0"]
