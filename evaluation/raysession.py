"""Using Ray from ``evaluation`` (standalone commands, collection pools): join the running session, or start
a local one for the duration and shut it down after. ``platform.session`` starts Ray for platform commands;
both start a private local cluster the same way (:func:`start_local_ray`: on loopback only) and keep the console
quiet the same way (below).

A private cluster on loopback only. Ray picks a node address reachable from other machines (the machine's own
address) and binds its GCS, raylet, object manager, workers and agents to it or to every interface: 12 of 14
listening sockets of a local cluster were outside loopback (Ray 2.60). A laptop's private cluster has no other
nodes, so :func:`start_local_ray` starts it with the loopback address as its node address, which every Ray
process then binds to (Ray 2.60 has no ``ray.init`` setting for it: ``_node_ip_address="127.0.0.1"`` is
replaced by the machine's address unless Ray believes it runs where clusters are off, as on macOS; see
:func:`loopback_node`). Joining a cluster (``RAY_ADDRESS``, ``ray.address``, a job) is unchanged.

A quiet console: the platform's own lines and real warnings, not Ray's internal chatter.

Ray forwards every line its workers and internal actors print to the driver. On a normal run that includes
lines that look like crashes but are not (verified against Ray 2.60):

- Ray Train's ``PlacementGroupCleaner`` prints a traceback ("Found multiple active Ray instances") when
  another Ray cluster runs on the machine: its monitor thread cannot pick a cluster to poll;
- Ray Train's ``TrainController`` logs a traceback when an autoscaling resource request times out on a
  loaded machine ("Failed to send resource request ... safe to ignore this error"), and one when a worker is gone
  as it shuts the workers down ("Graceful shutdown of backend failed. This is expected if one of the workers has
  crashed"): seen at the end of a finished multi-node run, after the ``PlacementGroupCleaner`` had removed the
  workers' placement group; a crash during training is reported (and recovered from) on its own;
- the controller's C++ core logs an ``E`` line for its own ``PreemptionWatcher`` actor;
- every ``ray.train.report`` logs ``Reporting training result N: TrainingReport(...)`` at INFO;
- driver-side notices that change nothing for the user (token authentication enabled by default on a local
  cluster, ``.git``/``.venv`` left out of the working directory, which the platform excludes anyway).

:func:`quiet_ray_console` filters exactly those (everything else Ray prints still reaches the console) and
turns Ray's coloured log prefix off when stdout is not a terminal, so log files hold no ANSI codes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from evaluation import REPO_ROOT


@contextlib.contextmanager
def ray_session(
    num_cpus: int | None = None, address: str | None = "local", log_to_driver: bool = True, **kwargs: Any
) -> Iterator[bool]:
    """Use the running Ray session, or start one and shut it down afterwards. Yields whether it started one."""
    import ray

    if ray.is_initialized():
        yield False
        return
    if address == "local" and "runtime_env" not in kwargs:
        # Workers import ``evaluation``/``policies`` from this checkout wherever the driver was started.
        env = {"PYTHONPATH": str(REPO_ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        kwargs["runtime_env"] = {"env_vars": env}
    quiet_ray_notices()  # before ray.init, which prints them
    kwargs.setdefault("logging_level", "WARNING")  # no "Started a local Ray instance" line
    if address == "local":
        start_local_ray(num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver, **kwargs)
    else:
        ray.init(
            address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver, **kwargs
        )
    quiet_ray_console()
    try:
        yield True
    finally:
        ray.shutdown()


# Ray reads it at import ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", ray._private.ray_constants): where it is off,
# Ray's node address is the loopback address (what Ray does on macOS and Windows, to avoid firewall prompts).
_CLUSTERS_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK_ADDRESSES = ("127.0.0.1", "::1", "localhost")


@contextlib.contextmanager
def loopback_node() -> Iterator[None]:
    """While a private cluster starts: Ray takes the loopback address for this node's address, in this driver
    (the module constant Ray consults, already imported) and in the processes ``ray.init`` starts (the variable:
    the GCS, raylet and agents inherit it, and the workers the raylet starts inherit it from there). Both are
    restored after, so that joining a real cluster later from this process still finds the machine's address."""
    from ray._private import ray_constants

    saved_constant = ray_constants.ENABLE_RAY_CLUSTER
    saved_env = os.environ.get(_CLUSTERS_ENV)
    ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[_CLUSTERS_ENV] = "0"
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_constant
        if saved_env is None:
            os.environ.pop(_CLUSTERS_ENV, None)
        else:
            os.environ[_CLUSTERS_ENV] = saved_env


def start_local_ray(**kwargs: Any) -> str:
    """``ray.init(address="local", **kwargs)`` bound to loopback only (module docstring). Returns the node's
    address; warns in one line when Ray did not take the loopback address (another Ray version)."""
    import ray

    with loopback_node():
        ray.init(address="local", **kwargs)
    node = ray._private.worker.global_worker.node.node_ip_address
    if node not in LOOPBACK_ADDRESSES:
        print(
            f"[ray] warning: the local cluster's node address is {node}, not loopback: this Ray version "
            "ignores the loopback setting, and its servers listen beyond this machine (token auth guards them)",
            file=sys.stderr,
        )
    return node


# Whole batches (one flush of one process, e.g. a full traceback) to drop: (actor name, text in the batch).
# Ray Train's PlacementGroupCleaner monitor thread dies at shutdown when several Ray nodes share the host
# ("Found multiple active Ray instances"); on a loaded machine its traceback arrives split over several
# batches, so its head and its frame-only continuations are dropped too (_is_traceback_continuation).
_BENIGN_BATCHES: tuple[tuple[str, str], ...] = (
    ("PlacementGroupCleaner", "Found multiple active Ray instances"),
    ("PlacementGroupCleaner", "Exception in thread PlacementGroupCleanerMonitor"),
    ("TrainController", "Failed to send resource request"),
    ("TrainController", "Graceful shutdown of backend failed"),
    # A finished run's controller stopping the cleaner past its timeout on a busy machine (the run is FINISHED;
    # tests/platform/test_train_integration.py's relaunch, 2026-12-06)
    ("TrainController", "Failed to stop PlacementGroupCleaner gracefully"),
    ("PlacementGroupCleaner", "Monitor thread did not exit within"),
)
_SPLIT_TRACEBACK_ACTORS = ("PlacementGroupCleaner",)
# Single lines to drop wherever they come from.
_BENIGN_LINES = re.compile(
    r"Reporting training result \d+: TrainingReport\("
    r"|Actor with class name: 'PreemptionWatcher' .* has constructor arguments in the object store"
    r"|Task ServeController.graceful_shutdown failed"  # serve.shutdown() kills the controller it asked to stop
)
# Driver-side Ray loggers whose warnings are notices, not problems.
_QUIET_LOGGERS = ("ray._private.authentication.authentication_token_setup",)
# Driver-side notices logged through general loggers (which also log real problems): dropped by text.
_NOTICE_LOGGERS = ("ray._private.worker", "ray._private.runtime_env.working_dir")
_NOTICES = ("is now ignored by default when packaging the working directory",)


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in str(record.msg) for text in _NOTICES)


def keep_lines(data: Mapping[str, Any]) -> list[str]:
    """The lines of one forwarded log batch (Ray's ``{"lines": [...], "actor_name": ...}``) worth showing."""
    lines = list(data.get("lines") or [])
    actor = str(data.get("actor_name") or "")
    text = "\n".join(lines)
    if any(actor == name and needle in text for name, needle in _BENIGN_BATCHES):
        return []
    if actor in _SPLIT_TRACEBACK_ACTORS and _is_traceback_continuation(lines):
        return []
    return [ln for ln in lines if not _BENIGN_LINES.search(ln)]


def _is_traceback_continuation(lines: list[str]) -> bool:
    """A batch of traceback frames only (``  File ...`` and the indented source lines under them)."""
    return bool(lines) and all(ln.startswith((" ", "\t")) or not ln.strip() for ln in lines)


def colour_prefix(stream: Any = None) -> bool:
    """Whether Ray may colour its log prefix: only on a terminal (``RAY_COLOR_PREFIX`` set by the user wins)."""
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def quiet_ray_notices() -> None:
    """Before ``ray.init``: the driver-side notices off, and no colour codes unless stdout is a terminal."""
    if "RAY_COLOR_PREFIX" not in os.environ and not colour_prefix():
        os.environ["RAY_COLOR_PREFIX"] = "0"  # read by Ray at each printed line
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in _NOTICE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices())


def quiet_ray_console() -> bool:
    """Install the filter on this driver's Ray log forwarding (after ``ray.init``). Returns whether it
    could (Ray's forwarding hook is internal; without it everything is printed as before)."""
    quiet_ray_notices()
    try:
        from ray._private import worker as ray_worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher
    except ImportError:
        return False
    print_batch: Callable[..., None] | None = getattr(ray_worker, "print_to_stdstream", None)
    names = [pair[0] for pair in getattr(dispatcher, "handlers", [])]
    if print_batch is None or "ray_print_logs" not in names:
        return False  # log_to_driver=False or another Ray version: leave it alone
    ignore_prefix = ray_worker._should_ignore_worker_log_prefix(ray_worker.global_worker)

    def handler(data: dict[str, Any]) -> None:
        lines = keep_lines(data)
        if lines:
            print_batch({**data, "lines": lines}, ignore_prefix=ignore_prefix)

    dispatcher.remove_handler("ray_print_logs")
    dispatcher.add_handler("ray_print_logs", handler)
    return True


def quiet_train_logger() -> None:
    """In a train worker: Ray Train's own INFO lines (one per ``report``) off the console."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
