"""The console filter: Ray's benign internal tracebacks and per-report lines go, everything else stays."""

from __future__ import annotations

import pytest

from evaluation.raysession import colour_prefix, keep_lines

pytestmark = pytest.mark.unit


def test_benign_ray_internal_tracebacks_are_dropped_whole():
    multiple = [
        "Exception in thread PlacementGroupCleanerMonitor:",
        "Traceback (most recent call last):",
        "ConnectionError: Found multiple active Ray instances: {'a', 'b'}.",
    ]
    assert keep_lines({"actor_name": "PlacementGroupCleaner", "lines": multiple}) == []
    request = [
        "Failed to send resource request for x. ... it's safe to ignore this error.",
        "Traceback (most recent call last):",
        "ray.exceptions.GetTimeoutError: ...",
    ]
    assert keep_lines({"actor_name": "TrainController", "lines": request}) == []
    shutdown = [  # at the end of a finished multi-node run (tests/platform/test_cluster.py, 2026-12-05)
        "Graceful shutdown of backend failed. This is expected if one of the workers has crashed.",
        "Traceback (most recent call last):",
        "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.",
    ]
    assert keep_lines({"actor_name": "TrainController", "lines": shutdown}) == []
    stop = [  # the cleaner stopped past its timeout after a finished run (test_train_integration.py, 2026-12-06)
        "Failed to stop PlacementGroupCleaner gracefully.",
        "Traceback (most recent call last):",
        "ray.exceptions.GetTimeoutError: Get timed out: some object(s) not ready.",
    ]
    assert keep_lines({"actor_name": "TrainController", "lines": stop}) == []
    monitor = ["Monitor thread did not exit within 12.00 seconds"]
    assert keep_lines({"actor_name": "PlacementGroupCleaner", "lines": monitor}) == []
    # The same traceback split over three flushes on a loaded machine: every part goes.
    split = [
        ["Exception in thread PlacementGroupCleanerMonitor:", "Traceback (most recent call last):"],
        ['  File "/usr/lib/python3.11/threading.py", line 1045, in _bootstrap_inner', "    self.run()"],
        ["ConnectionError: Found multiple active Ray instances: {'a', 'b'}."],
    ]
    kept = [keep_lines({"actor_name": "PlacementGroupCleaner", "lines": part}) for part in split]
    assert kept == [[], [], []]


def test_real_errors_and_platform_lines_are_kept():
    crash = ["Traceback (most recent call last):", "RuntimeError: CUDA out of memory"]
    assert keep_lines({"actor_name": "TrainController", "lines": crash}) == crash
    assert keep_lines({"actor_name": "RayTrainWorker", "lines": crash}) == crash
    mixed = [
        "[train] step 10/20  loss 1.0",
        "Reporting training result 3: TrainingReport(checkpoint=None, metrics={}) from rank 0",
        "[core_worker.cc:2465: Actor with class name: 'PreemptionWatcher' and "
        "ID: 'ab' has constructor arguments in the object store and max_restarts > 0",
    ]
    assert keep_lines({"actor_name": "RayTrainWorker", "lines": mixed}) == mixed[:1]
    # The same text from a user's actor is not Ray's: only the named internal actors' batches are dropped.
    assert keep_lines({"actor_name": "MyActor", "lines": ["Found multiple active Ray instances"]})
    frames = ['  File "mine.py", line 3, in f', "    g()"]  # frames of a user's traceback stay
    assert keep_lines({"actor_name": "MyActor", "lines": frames}) == frames
    # Another failure of the same actor is not its known one: kept.
    assert keep_lines({"actor_name": "PlacementGroupCleaner", "lines": crash}) == crash


def test_colour_only_on_a_terminal():
    class Tty:
        def isatty(self):
            return True

    assert colour_prefix(Tty()) and not colour_prefix(object())


def test_driver_notices_are_dropped_and_real_warnings_kept(caplog):
    import logging

    from evaluation.raysession import quiet_ray_notices

    quiet_ray_notices()
    log = logging.getLogger("ray._private.worker")
    with caplog.at_level(logging.WARNING, logger="ray._private.worker"):
        log.warning(
            "Directory %r is now ignored by default when packaging the working directory. ...", ".git"
        )
        log.warning("Failed to connect to GCS")
    assert [r.getMessage() for r in caplog.records] == ["Failed to connect to GCS"]
