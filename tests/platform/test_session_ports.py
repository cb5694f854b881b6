"""A private cluster whose dashboard port is taken between the probe and the start retries on another port."""

from __future__ import annotations

import pytest

import platform.session as session
from platform.config import load_config

pytestmark = pytest.mark.unit

TAKEN_LATE = Exception(
    "The last 20 lines of .../dashboard.log: Exception: Failed to find a valid port for dashboard after 0 "
    "retries: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8265): address already in use"
)


@pytest.mark.parametrize(
    "first_error",
    [
        ValueError("Ray component dashboard is trying to use a port number 8265 that is already occupied"),
        TAKEN_LATE,
    ],
)
def test_a_dashboard_port_taken_after_the_probe_is_retried_elsewhere(monkeypatch, first_error):
    ports, shutdowns = [], []
    monkeypatch.setattr("ray.shutdown", lambda: shutdowns.append(1))

    def start(**kwargs):
        ports.append(kwargs["dashboard_port"])
        if len(ports) == 1:
            raise first_error

    session._start_private_cluster(load_config(None, []), "WARNING", start)
    assert len(ports) == 2 and ports[1] != 8265 and shutdowns == [1]


def test_other_start_failures_are_not_retried(monkeypatch):
    calls = []

    def start(**kwargs):
        calls.append(1)
        raise Exception("the GCS failed to start")

    with pytest.raises(Exception, match="GCS failed"):
        session._start_private_cluster(load_config(None, []), "WARNING", start)
    assert calls == [1]
