"""Starting or joining Ray, the way every platform command does it (README "Running on a cluster").

- Inside ``ray job submit --working-dir . -- python -m platform.train``: join the job's cluster; the job's
  runtime env already ships the repo, and gets the platform's environment variables added (``runtime_env``).
- ``ray.address`` / ``$RAY_ADDRESS`` set: join that cluster, shipping the repo as ``working_dir``.
- Otherwise: a private local cluster (``address="local"``), listening on loopback only
  (``evaluation.raysession.start_local_ray``), with the repo as ``working_dir``, so that workers import this
  repo's ``platform`` package and not the stdlib module.
"""

from __future__ import annotations

import json
import math
import os
import time

from platform.config import REPO_ROOT, ExperimentConfig

# Never ship datasets, results or environments to workers.
WORKING_DIR_EXCLUDES = [
    ".venv",
    ".git",
    "data",
    "runs",
    "mlflow.db",
    "mlartifacts",
    "ray_results",
    ".bench",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    ".whl",
    ".gl",
]
TRAIN_POLL_S = "0.5"  # Ray Train's controller poll (its default: 2 s), see runtime_env


def runtime_env() -> dict:
    return {
        "working_dir": str(REPO_ROOT),
        "excludes": WORKING_DIR_EXCLUDES,
        "env_vars": {
            "HF_HUB_OFFLINE": "1",
            "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
            "PYTHONUNBUFFERED": "1",
            # Ray Train V2 would also route print() through its logger: every line twice.
            "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
            # Its controller takes the workers' reports once per poll: with the default 2 s poll, each
            # checkpoint's report held training up to 2 s, and starting and ending a run 2 s more.
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": TRAIN_POLL_S,
        },
    }


def connect_ray(cfg: ExperimentConfig, quiet: bool = False) -> float:
    """Start or join Ray as described above; returns the seconds it took. No-op when already connected."""
    import ray

    if ray.is_initialized():
        return 0.0
    from evaluation.raysession import quiet_ray_console, quiet_ray_notices, start_local_ray

    quiet_ray_notices()  # before ray.init, which prints them
    t0 = time.perf_counter()
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    in_job = _in_job()
    log_level = "ERROR" if quiet else "WARNING"
    if in_job:  # the job already ships the repo; its workers still need the platform's variables
        ray.init(
            address=address or "auto", runtime_env={"env_vars": _job_env_vars()}, logging_level=log_level
        )
    elif address:
        ray.init(address=address, runtime_env=runtime_env(), logging_level=log_level)
    else:
        _start_private_cluster(cfg, log_level, start_local_ray)
    quiet_ray_console()
    return time.perf_counter() - t0


DASHBOARD_PORT = 8265  # Ray's default; a second cluster on the machine gets another free port
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"  # read by Ray's State API before any auto-detection


def _start_private_cluster(cfg: ExperimentConfig, log_level: str, start_local_ray) -> None:
    """A private local cluster whose processes query its own dashboard.

    The dashboard serves the State API (and the UI). Ray Train's ``PlacementGroupCleaner`` asks it every second
    whether the training controller is alive, at an address it auto-detects: the *newest* Ray cluster on the
    machine. When another one starts (a second ``platform.train``, ``evaluation.run``, a test suite), it asks that
    cluster, does not find the controller, removes the training placement group and so kills the train worker
    (seen here: an MT50 run lost its first 350 steps when a test suite started beside it). So the dashboard gets a
    known port and every worker the address (``RAY_API_SERVER_ADDRESS``), which the State API reads first."""
    for attempt in range(3):
        port = _free_port(DASHBOARD_PORT if attempt == 0 else 0)
        env = runtime_env()
        env["env_vars"][API_SERVER_ENV] = f"http://127.0.0.1:{port}"
        try:
            start_local_ray(
                num_cpus=local_cluster_cpus(cfg, os.cpu_count() or 1),
                include_dashboard=True,
                dashboard_port=port,
                runtime_env=env,
                logging_level=log_level,
                configure_logging=True,
            )
            return
        except Exception as exc:  # taken between the probe and the start: another port
            if not port_was_taken(exc) or attempt == 2:
                raise
            import ray

            ray.shutdown()  # the half-started head (its GCS came up before the dashboard failed)


def port_was_taken(exc: Exception) -> bool:
    """Whether ``ray.init`` failed because the dashboard's port was taken after ``_free_port`` saw it free: Ray
    checks it first (``ValueError``, "already occupied"), or its dashboard process fails to bind later (a plain
    ``Exception`` quoting the dashboard log; seen when two test-suite workers started clusters at once)."""
    text = str(exc)
    return "already occupied" in text or ("dashboard" in text and "address already in use" in text)


def _free_port(preferred: int) -> int:
    """``preferred`` when nothing listens on it on 127.0.0.1, else a free port the OS picks."""
    import socket

    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free TCP port on 127.0.0.1 for the Ray dashboard")


HEAD_RESOURCE = "node:__internal_head__"  # Ray's own marker resource of the head node (1 unit)


def on_head(cfg: ExperimentConfig) -> dict[str, float]:
    """The resource that pins a task or actor to the head node (a sliver of Ray's head marker), when training
    belongs on the head (``ray.train_on_head``; None: when the cluster has simulation nodes), else nothing."""
    pinned = cfg.ray.train_on_head
    if pinned is None:
        import ray

        pinned = ray.is_initialized() and ray.cluster_resources().get("sim", 0) >= 1
    return {HEAD_RESOURCE: 0.001} if pinned else {}


def train_worker_resources(cfg: ExperimentConfig) -> dict[str, float]:
    """``resources_per_worker`` of the Ray Train workers: their CPUs, pinned to the head when it trains."""
    return {"CPU": cfg.ray.cpus_per_worker, **on_head(cfg)}


def _in_job() -> bool:
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ


def _job_env_vars() -> dict[str, str]:
    """``runtime_env()``'s variables for a job's workers, less those the job's own runtime env sets: Ray merges a
    job driver's runtime env into the job's per variable and refuses a variable set by both (the job's wins)."""
    try:
        job = json.loads(os.environ["RAY_JOB_CONFIG_JSON_ENV_VAR"]).get("runtime_env") or {}
        taken = set((job.get("env_vars") or {}) if isinstance(job, dict) else {})
    except (KeyError, ValueError, AttributeError):
        taken = set()
    return {k: v for k, v in runtime_env()["env_vars"].items() if k not in taken}


def joins_cluster(cfg: ExperimentConfig) -> bool:
    """Whether ``connect_ray`` joins an existing cluster (job, ``ray.address``, ``$RAY_ADDRESS``), which may
    grow or shrink, rather than starting a private local one whose size it chose."""
    return bool(_in_job() or cfg.ray.address or os.environ.get("RAY_ADDRESS"))


def local_cluster_cpus(cfg: ExperimentConfig, cores: int) -> int:
    """Logical CPUs of a private local cluster: ``ray.num_cpus`` if set, else sized by the machine. The
    train worker(s) plus the evaluation actors may oversubscribe a small machine, but by at most its number of
    cores (``eval.actors`` beyond that could never run at once: ``platform.train`` caps them)."""
    if cfg.ray.num_cpus:
        return cfg.ray.num_cpus
    train = math.ceil(cfg.ray.cpus_per_worker * max(1, cfg.ray.num_workers))
    actors = min(cfg.eval.actors, cores) if cfg.eval.enabled else 0
    return max(cores, train + actors)
