"""What ``python -m platform.train`` checks before it starts Ray or touches a run (one line each, no traceback).

- ``check_data_path``, ``check_output_dir``: ``data.path`` is a directory, or can be created for a dataset to be
  collected or imported into it; ``output_dir`` can hold the run directory (created, and writable).
- ``driver_lock``: one driver per run. The driver holds ``<run dir>/.driver.lock`` (``evaluation.filelock``)
  for its whole life, taken before anything else touches the run (its ``experiment.yaml``, Ray, MLflow), so a
  second command with the same ``name`` is refused within seconds and changes nothing of the first. The
  train worker's own ``.train.lock`` (``platform.train.worker``) stays: it covers a killed driver's worker that Ray
  has not reaped yet.
- ``check_eval_tasks``: ``eval.tasks`` are tasks the run trains on (the dataset's, or the suite's when it is
  not collected yet), so a typo fails now and not after the whole training run.
- ``check_task_weights``: the tasks ``data.task_weights`` names are tasks the run trains on (a misspelt task's
  weight would otherwise fail only after the collection, or a collected dataset's loading).
- ``check_tracking``: a tracking URI no MLflow store can open (``gopher://x``, ``http://`` without a host) is
  refused (``platform.tracking.uri``); a well-formed one of a server that is down is an outage, not an error.
- ``check_resume``: a rerun under an existing ``name`` resumes from the run's newest checkpoint, so a setting
  whose change makes that checkpoint unusable (the policy's parameter shapes, the level-1 training set) is
  refused here, naming the keys, before Ray or MLflow touch the run. Steps, budgets, learning rate,
  evaluation and the like may change on resume (MLflow records them as ``platform.param_changed.*`` tags).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from evaluation.filelock import FileLock, LockBusyError
from evaluation.simulators.rlbench_tasks import resolve_tasks
from platform.cli import UserFacingError
from platform.config import ExperimentConfig, data_root
from platform.tracking.uri import resolve_tracking_uri
from platform.train.checkpoint import latest_checkpoint
from policies.base import POLICY_CONFIG_FILE
from policies.registry import shape_changes

DRIVER_LOCK_FILE = ".driver.lock"
MANIFEST_FILE = "manifest.json"


class RunBusyError(UserFacingError):
    """Another live driver runs an experiment under this name."""


# ---------------------------------------------------------------- paths


def check_output_dir(cfg: ExperimentConfig) -> None:
    """Create the run directory ``<output_dir>/<name>`` and make sure it is writable."""
    _writable_dir(cfg.run_dir, "output_dir", cfg.output_dir, create=True)


def check_data_path(cfg: ExperimentConfig) -> None:
    path = cfg.resolve_path(cfg.data.path)
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise UserFacingError(
            f"data.path={cfg.data.path}: {blocker} is a file, not a directory: point data.path "
            "at a dataset folder (with a manifest.json) or at a new folder to collect into"
        )
    if (path / MANIFEST_FILE).is_file():
        return  # an existing dataset is only read
    if cfg.data.collect_if_missing and (cfg.data.suite != "rlbench" or cfg.data.rlbench_root is not None):
        _writable_dir(path, "data.path", cfg.data.path, create=False)


def _writable_dir(path: Path, key: str, value: str, create: bool) -> None:
    """Raise a one-line ``UserFacingError`` unless ``path`` is (``create``: made) a directory we can write in;
    without ``create``, its nearest existing ancestor must be one."""
    blocker = _file_in_the_way(path)
    if blocker is not None:
        raise UserFacingError(f"{key}={value}: {blocker} is a file, not a directory; choose another {key}")
    target = path
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserFacingError(
                f"{key}={value}: cannot create {path}: {_reason(exc)}; choose a writable {key}"
            ) from None
    else:
        target = next(p for p in (path, *path.parents) if p.exists())
    try:
        _probe_write(target)
    except OSError as exc:
        raise UserFacingError(
            f"{key}={value}: cannot write in {target}: {_reason(exc)}; choose a writable {key}"
        ) from None


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest existing path among ``path`` and its ancestors, if it is not a directory."""
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def _probe_write(directory: Path) -> None:
    fd, name = tempfile.mkstemp(prefix=".write-probe-", dir=directory)
    os.close(fd)
    os.unlink(name)


def _reason(exc: OSError) -> str:
    return f"{exc.strerror or exc} (errno {exc.errno})" if exc.errno else str(exc)


# ---------------------------------------------------------------- one driver per run


@contextlib.contextmanager
def driver_lock(run_dir: Path, name: str) -> Iterator[FileLock]:
    """Hold ``<run_dir>/.driver.lock`` for the ``with`` block; a live holder -> ``RunBusyError`` at once."""
    lock = FileLock(run_dir / DRIVER_LOCK_FILE)
    try:
        lock.acquire(wait_s=0.0)
    except LockBusyError as exc:
        raise RunBusyError(
            f"run {name!r} is already running ({exc.holder} holds {exc.path}): wait for it to "
            "finish or stop it, or start this one under another name="
        ) from None
    except OSError as exc:
        raise UserFacingError(
            f"cannot lock {lock.path}: {_reason(exc)}; choose a writable output_dir"
        ) from None
    try:
        yield lock
    finally:
        lock.release()


# ---------------------------------------------------------------- tasks


def trained_tasks(cfg: ExperimentConfig) -> tuple[list[str] | None, str]:
    """The tasks this run trains on, and where that list comes from: ``data.tasks``, else the dataset's
    manifest, else (not collected yet) the suite's tasks. (None, reason) when it cannot be known here."""
    if cfg.data.tasks:
        return list(cfg.data.tasks), "data.tasks"
    path = cfg.resolve_path(cfg.data.path)
    manifest = path / MANIFEST_FILE
    if manifest.is_file():
        try:
            return [str(t) for t in json.loads(manifest.read_text())["tasks"]], f"the dataset at {path}"
        except (OSError, ValueError, KeyError, TypeError):
            return None, f"unreadable {manifest}"  # the dataset check names the problem
    if cfg.data.suite == "rlbench":
        return list(resolve_tasks(None)), "RLBench's PerAct-18 tasks (imported when data.tasks is unset)"
    # Lazy: Meta-World's task list comes with its simulator (MuJoCo), loaded only when no dataset says it.
    from evaluation.simulators.metaworld_backend import suite_task_names

    return suite_task_names(cfg.data.suite), f"suite {cfg.data.suite}"


def check_eval_tasks(cfg: ExperimentConfig) -> None:
    """``eval.tasks`` and the tasks of ``eval.max_keyposes_per_task`` must be tasks the run trains on (its
    checkpoints hold their instructions only; a misspelt task's limit would silently not apply)."""
    if not cfg.eval.enabled or not (cfg.eval.tasks or cfg.eval.max_keyposes_per_task):
        return
    known, source = trained_tasks(cfg)
    if known is None:
        return
    unknown = [t for t in cfg.eval.tasks or () if t not in known]
    if unknown:
        raise UserFacingError(
            f"eval.tasks {unknown} are not tasks this run trains on ({source} has "
            f"{', '.join(known)}): choose eval.tasks among them, or leave eval.tasks unset to "
            "evaluate every trained task"
        )
    _refuse_unknown_tasks(
        "eval.max_keyposes_per_task", cfg.eval.max_keyposes_per_task, known, source, "handle-pull-v3"
    )


def check_task_weights(cfg: ExperimentConfig) -> None:
    """The tasks of ``data.task_weights`` must be tasks the run trains on."""
    if not cfg.data.task_weights:
        return
    known, source = trained_tasks(cfg)
    if known is not None:
        _refuse_unknown_tasks("data.task_weights", cfg.data.task_weights, known, source, "stick-pull-v3")


def _refuse_unknown_tasks(
    key: str, named: Iterable[str], known: list[str], source: str, example: str
) -> None:
    """One line naming the tasks of a per-task setting that the run does not train on (a misspelt name)."""
    unknown = [t for t in named if t not in known]
    if unknown:
        raise UserFacingError(
            f"{key} names {unknown}, which this run does not train on ({source} has {', '.join(known)}): "
            f"use the tasks' full names (e.g. {example})"
        )


def eval_task_count(cfg: ExperimentConfig) -> int | None:
    """How many tasks the final evaluation runs (None when unknown)."""
    if cfg.eval.tasks:
        return len(cfg.eval.tasks)
    known, _ = trained_tasks(cfg)
    return None if known is None else len(known)


# ---------------------------------------------------------------- tracking


def check_tracking(cfg: ExperimentConfig) -> None:
    """The run's tracking URI can work (when tracking is enabled)."""
    if cfg.tracking.enabled:
        resolve_tracking_uri(cfg.tracking.uri, data_root())


# ---------------------------------------------------------------- resuming a run

# data.* keys that choose the level-1 training set: the checkpoint's sampler state is a position in it, so a
# resume with another set is not exact (data.path is left out: a moved repository keeps its runs)
RESUME_FIXED_DATA_KEYS = (
    "suite",
    "tasks",
    "episodes_per_task",
    "balance",
    "task_weights",
    "observe",
    "recoveries",
    "aim_goal",
    "surface_fraction",
    "hide_arm",
)


def check_resume(cfg: ExperimentConfig) -> None:
    """Refuse, in one line, a resume whose settings cannot continue the run's newest checkpoint."""
    ckpt = latest_checkpoint(cfg.run_dir)
    if ckpt is None:
        return  # a new run (or one with no valid checkpoint yet: it starts over)
    try:
        saved_policy = json.loads((ckpt.path / POLICY_CONFIG_FILE).read_text())
        saved = yaml.safe_load((ckpt.path / "experiment.yaml").read_text()) or {}
        changes = shape_changes(saved_policy, cfg.policy.model_dump(mode="json"))
    except (OSError, ValueError, yaml.YAMLError):
        return  # the worker's own load reports what is wrong with the checkpoint
    blockers = [f"policy.{key}: {_show(old)} -> {_show(new)}" for key, old, new in changes]
    saved_data = saved.get("data") or {}
    current_data = cfg.data.model_dump(mode="json")
    for key in RESUME_FIXED_DATA_KEYS:
        if key in saved_data and saved_data[key] != current_data[key]:
            blockers.append(f"data.{key}: {_show(saved_data[key])} -> {_show(current_data[key])}")
    if not blockers:
        return
    what = "the policy's parameter shapes" if changes else ""
    if len(blockers) > len(changes):
        what += (" and " if what else "") + "the training set"
    raise UserFacingError(
        f"run {cfg.name!r} would resume from {ckpt.path}, but this config changes {what} "
        f"({'; '.join(blockers)}): start a new run with another name=, or rerun with the run's "
        f"values (in {ckpt.path / 'experiment.yaml'})"
    )


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) or value is None else str(value)
