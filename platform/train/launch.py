"""One Ray Train run, as ``platform.train`` and every sweep trial start it: the typed worker payload and the
``TorchTrainer`` built from it (the loop each worker runs is ``platform.train.worker.train_loop_per_worker``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from platform.config import ExperimentConfig


@dataclass(frozen=True)
class WorkerPayload:
    """What every Ray Train worker of a run receives (Ray Train passes it on as a plain dict)."""

    config: dict[str, Any]  # ExperimentConfig.model_dump(mode="json")
    run_dir: str
    run_name: str = ""
    experiment: str = ""
    tracking_uri: str | None = None  # None: no MLflow from the workers
    tags: dict[str, str] = field(default_factory=dict)
    periodic_eval: bool = False
    params: dict[str, str] = field(
        default_factory=dict
    )  # sweep trials: extra MLflow params (the worker logs them)
    close_run: bool = False  # sweep trials: the worker owns the MLflow run and closes it
    fault_crash_at_step: str | None = None  # reliability tests only (R1), see platform.train.worker

    @classmethod
    def for_run(
        cls,
        cfg: ExperimentConfig,
        run_dir: Path,
        tracking_uri: str | None,
        tags: dict[str, str],
        **extra: Any,
    ) -> WorkerPayload:
        return cls(
            config=cfg.model_dump(mode="json"),
            run_dir=str(run_dir),
            run_name=cfg.name,
            experiment=cfg.tracking.experiment,
            tracking_uri=tracking_uri,
            tags=tags,
            periodic_eval=cfg.eval.enabled and cfg.eval.every_steps > 0,
            **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | WorkerPayload) -> WorkerPayload:
        return data if isinstance(data, WorkerPayload) else cls(**data)


def build_trainer(
    cfg: ExperimentConfig,
    payload: WorkerPayload,
    use_gpu: bool,
    callbacks: list[Any] | None = None,
    trainer_class: type | None = None,
) -> Any:
    """The ``TorchTrainer`` of one run: ``cfg.ray.num_workers`` workers (pinned to the head when simulation
    nodes exist), Ray Train's fault tolerance, its storage under the run directory, no per-report INFO lines."""
    from ray.train import FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from platform.session import train_worker_resources
    from platform.train.worker import train_loop_per_worker

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
