"""One Ray Train run, as ``platform.train`` and every sweep trial start it: the typed worker payload, the
``TorchTrainer`` built from it (each worker runs ``platform.train.worker.train_loop_per_worker``), and
``fit``, which runs it with Ctrl-C handling and a one-line error naming a worker's root cause."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import ray
from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from platform.cli import UserFacingError
from platform.config import ExperimentConfig
from platform.session import joins_cluster, train_worker_resources
from platform.train.worker import WorkerPayload, train_loop_per_worker


def build_trainer(
    cfg: ExperimentConfig,
    payload: WorkerPayload,
    use_gpu: bool,
    callbacks: list[Any] | None = None,
    trainer_class: type | None = None,
) -> TorchTrainer:
    """The ``TorchTrainer`` of one run: ``cfg.ray.num_workers`` workers (pinned to the head when simulation
    nodes exist), Ray Train's fault tolerance, its storage under the run directory, no per-report INFO lines."""
    return (trainer_class or TorchTrainer)(
        train_loop_per_worker,
        train_loop_config=payload.to_dict(),
        scaling_config=ScalingConfig(
            num_workers=max(1, cfg.ray.num_workers),
            use_gpu=use_gpu,
            resources_per_worker=train_worker_resources(cfg),
        ),
        run_config=RunConfig(
            name=cfg.name,
            storage_path=str(Path(payload.run_dir) / "ray"),
            callbacks=callbacks,
            failure_config=FailureConfig(max_failures=cfg.ray.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


class _Interrupted:
    """Set by Ctrl-C during ``trainer.fit()``: the first asks Ray Train's controller to abort the run (its
    workers stop; written checkpoints stay), a second one stops waiting for that."""

    def __init__(self) -> None:
        self.count = 0

    def handler(self, controller: Any) -> Any:
        def on_sigint(signum: int, frame: Any) -> None:
            self.count += 1
            if self.count > 1:
                raise KeyboardInterrupt
            print(
                "[train] Ctrl-C: stopping training (checkpoints are kept; Ctrl-C again to stop at once)",
                file=sys.stderr,
                flush=True,
            )
            try:
                controller.abort.remote()
            except Exception:  # the controller is gone already: fit() returns or raises by itself
                raise KeyboardInterrupt from None

        return on_sigint


def _trainer_class(interrupted: _Interrupted) -> type:
    """``TorchTrainer`` whose Ctrl-C handler records the interrupt (Ray Train's own one calls sys.exit)."""

    class InterruptibleTrainer(TorchTrainer):
        def _register_sigint_handler(self, controller: Any) -> None:
            signal.signal(signal.SIGINT, interrupted.handler(controller))

    return InterruptibleTrainer


def fit(cfg: ExperimentConfig, payload: WorkerPayload, run_dir: Path) -> None:
    """Train: the loop in this process (``ray.num_workers=0``) or a ``TorchTrainer``'s workers; Ctrl-C aborts
    the run (checkpoints stay) and raises ``KeyboardInterrupt``, a worker's failure is one ``UserFacingError``."""
    if cfg.ray.num_workers == 0:  # the loop in the driver (tests, debugging)
        train_loop_per_worker(payload.to_dict())
        return
    gpu = use_gpu(cfg)
    if gpu and not joins_cluster(cfg):  # a joined cluster may add GPU nodes: Ray Train waits for them there
        problem = too_few_gpus(cfg.ray.num_workers, int(ray.cluster_resources().get("GPU", 0)))
        if problem:
            raise UserFacingError(problem)
    interrupted = _Interrupted()
    trainer = build_trainer(cfg, payload, gpu, trainer_class=_trainer_class(interrupted))
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main_thread else None
    try:
        trainer.fit()
    except KeyboardInterrupt:
        raise
    except (Exception, SystemExit) as exc:  # Ray wraps worker errors; surface the root cause in one line
        if interrupted.count:
            raise KeyboardInterrupt from None  # the aborted run's controller/worker errors are expected
        if isinstance(exc, SystemExit):
            raise
        cause = exc
        while getattr(cause, "__cause__", None) is not None:
            cause = cause.__cause__
        raise UserFacingError(
            f"training failed: {type(cause).__name__}: {cause} (run dir {run_dir}; rerun the "
            "same command to resume from the last valid checkpoint)"
        ) from exc
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    if interrupted.count:
        raise KeyboardInterrupt


def use_gpu(cfg: ExperimentConfig) -> bool:
    """Train on GPUs when asked, or (``ray.use_gpu`` unset) when the cluster has one and train.device allows."""
    if cfg.ray.use_gpu is not None:
        return cfg.ray.use_gpu
    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0 and cfg.train.device != "cpu"


def too_few_gpus(num_workers: int, gpus: int) -> str | None:
    """The one-line problem when ``num_workers`` GPU workers cannot start on a private cluster with ``gpus``
    GPUs (Ray Train would wait for the missing ones forever), else None."""
    want = max(1, num_workers)
    if gpus >= want:
        return None
    fix = ""
    if gpus:
        fix = f"set ray.num_workers={gpus} (configs/mt50.yaml sets 2 data-parallel CPU workers), or "
    return f"ray.num_workers={want} trains on {want} GPUs but this machine has {gpus}: {fix}set ray.use_gpu=false"
