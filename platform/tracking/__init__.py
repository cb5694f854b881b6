"""MLflow tracking: one buffered, outage-proof writer per run (docs/design.md: data flow stage 8, R3, R9).

Usage (rank 0 of a training run, or one Tune trial)::

    tracker = RunTracker.open(default_tracking_uri(repo_root), "minidiffuser", "md-mt10-m64",
                              buffer_dir=run_dir / BUFFER_ROOT,
                              tags={TAG_KIND: "train", TAG_POLICY_TYPE: "mini_diffuser"})
    tracker.log_params(flatten_config(cfg.model_dump(mode="json")) | run_environment_params(repo_root))
    tracker.log_metrics({"train/loss": 0.31, "train/lr": 3e-4}, step=100)
    tracker.close("FINISHED")          # or "FAILED" / "KILLED"; also a context manager

**Runs are found by name (R3).** ``open`` continues the active run called ``run_name`` in the
experiment (the oldest if there are several; its status goes back to RUNNING) or creates it; relaunching
the same command with the same run name continues the same MLflow run. Several trackers may write one
run (the driver and a train worker, each with its own ``buffer_dir``). Params are immutable in MLflow: re-logging an identical value
is a no-op, a changed value on resume is recorded as tag ``platform.param_changed.<key>`` with one warning.

**Outages lose nothing and never stop training (R9).** Every call is first appended to a JSONL buffer in
``buffer_dir`` (fsync'd per call; see ``platform.tracking.buffer``) and returns at once; a background
thread sends the records with ``log_batch`` every ``upload_interval_s`` (or sooner when many are
pending). When MLflow is unreachable (server down, sqlite locked or corrupt, bad URI) the thread logs
one warning line, retries with exponential backoff (1 s to 60 s) and logs one line when it recovers.
If MLflow is down at ``open`` time training starts anyway: ``run_id`` stays ``None`` until the run is
found or created. ``flush()`` and ``close()`` force an attempt. Acknowledged positions are stored per
tracking URI, so a restarted process with the same ``buffer_dir`` uploads what was left, once.
``python -m platform.tracking sync <dir>`` uploads, without training, the buffer ``<dir>`` or every buffer
below it: ``sync runs/<name>/mlflow_buffer`` sends a training run's driver and worker buffers alike.

**Every (metric, step) once.** A metric value at a step the run already holds (a replayed step after a
resume from an older checkpoint, a re-evaluated last step) is not sent again: the first value stays
(``platform.tracking.upload``).

**Metric names** (logged at the training step; names are sanitised to MLflow's character set):

- ``train/loss``, ``train/loss/<part>`` (e.g. ``position``, ``rotation``, ``gripper``), ``train/lr``,
  ``train/samples_per_s`` (noised action samples per second, B*M per step), ``train/conditions_per_s``
  (encoded conditions per second, B per step), ``train/peak_mem_bytes``, ``time/elapsed_s`` (wall clock
  since the run first started, across resumes).
- ``eval/success`` (mean over tasks, 0..1) with ``eval/success_ci_low`` / ``_ci_high`` (95 %),
  ``eval/<task>/success`` (0..1), ``eval/success/per_episode`` (successes / episodes); Meta-World only:
  ``eval/success/<tier>`` (easy, medium, hard, very_hard; the tier's episodes pooled) and
  ``eval/success/tier_average`` (mean of the four tiers, only when all four were evaluated), each with
  ``_ci_low`` / ``_ci_high``; ``eval/episodes``, ``eval/timeout``, ``eval/sim_error``,
  ``eval/planner_error``, ``eval/oom_killed`` (episode counts by status). Names: ``EvalReport.mlflow_metrics``.

**Tags**: ``platform.kind`` in {train, reference, sweep_parent, sweep_trial, comparison},
``platform.policy_type`` (mini_diffuser | one_to_one | dda_style), ``platform.suite`` (mt10 | mt50 |
rlbench: the benchmark; ``platform.compare --suite`` filters on it), ``platform.num_gpus`` (GPUs the run
trains on; read by ``platform.compare`` for GPU-hours), ``mlflow.runName`` (set by MLflow from run_name),
``mlflow.parentRunId`` (from ``parent_run_id``, nests sweep trials under their sweep).
"""

from __future__ import annotations

from platform.tracking.buffer import TrackingBufferError, sanitize_key
from platform.tracking.params import flatten_config, run_environment_params
from platform.tracking.plots import plot_loss_curves, plot_success_per_task
from platform.tracking.sync import buffer_backlog, find_buffers, main, sync_all, sync_buffer
from platform.tracking.tags import TAG_KIND, TAG_NUM_GPUS, TAG_POLICY_TYPE, TAG_QUALITY, TAG_SUITE, TAG_SWEEP
from platform.tracking.tracker import (
    BUFFER_ROOT,
    DEFAULT_EXPERIMENT,
    TERMINAL_STATUSES,
    RunTracker,
    default_artifact_location,
    default_tracking_uri,
    sync_root,
)
from platform.tracking.uri import TrackingUriError, check_tracking_uri, resolve_tracking_uri

__all__ = [
    "RunTracker", "TrackingBufferError", "TrackingUriError", "check_tracking_uri", "resolve_tracking_uri",
    "default_tracking_uri", "default_artifact_location", "buffer_backlog",
    "find_buffers", "sync_all", "sync_buffer", "sync_root", "main",
    "flatten_config", "run_environment_params", "plot_loss_curves", "plot_success_per_task", "sanitize_key",
    "BUFFER_ROOT", "DEFAULT_EXPERIMENT", "TERMINAL_STATUSES",
    "TAG_KIND", "TAG_NUM_GPUS", "TAG_POLICY_TYPE", "TAG_QUALITY", "TAG_SUITE", "TAG_SWEEP",
]  # fmt: skip
