"""Published numbers (``platform/reference/*.csv``) and their MLflow reference runs.

Reference runs are named ``published/<benchmark>/<method>`` and tagged ``platform.kind=reference``;
their metrics use our names, as fractions: ``eval/success`` (the published average),
``eval/<task>/success`` (RLBench-18 per task), ``eval/difficulty/<level>/success`` (Meta-World, DP3
paper), ``published/train_gpu_hours`` and ``published/peak_mem_gb`` where published. Logging is
idempotent: an existing reference run only receives the metrics it lacks or that changed.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from platform.tracking import TAG_KIND

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference"
RLBENCH_FILE = "rlbench18_published.csv"
SUMMARY_FILE = "published_summary.csv"
METAWORLD_FILE = "metaworld_published.csv"
REFERENCE_PREFIX = "published/"


@dataclass(frozen=True)
class PublishedMethod:
    """One method's published numbers. Success values are fractions in 0..1."""

    method: str
    benchmark: str
    avg_success: float
    per_task: dict[str, float] = field(default_factory=dict)
    train_hardware: str = ""
    train_gpu_hours: float | None = None
    peak_memory_gb: float | None = None
    source: str = ""

    @property
    def run_name(self) -> str:
        return f"{REFERENCE_PREFIX}{self.benchmark}/{self.method}"


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        raise FileNotFoundError(f"published reference table {path} is missing; restore it from git")
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _number(row: dict[str, str], key: str, path: Path) -> float | None:
    text = (row.get(key) or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError as e:
        raise ValueError(f"{path}: column {key!r} of row {row} is not a number: {text!r}") from e


def load_published(reference_dir: Path = REFERENCE_DIR) -> list[PublishedMethod]:
    """RLBench-18 methods from the summary table, with per-task numbers where they are public."""
    per_task_path = reference_dir / RLBENCH_FILE
    per_task_rows = _read_csv(per_task_path)
    summary_path = reference_dir / SUMMARY_FILE
    methods = []
    for row in _read_csv(summary_path):
        method = row["method"]
        per_task: dict[str, float] = {}
        if row.get("per_task_public", "").strip() == "yes":
            if method not in per_task_rows[0]:
                raise ValueError(
                    f"{summary_path}: method {method!r} has per-task numbers but {per_task_path} lacks it"
                )
            per_task = {r["task"]: round(_number(r, method, per_task_path) / 100.0, 6) for r in per_task_rows}
        methods.append(
            PublishedMethod(
                method=method,
                benchmark=row["benchmark"],
                avg_success=round(_number(row, "avg_success_pct", summary_path) / 100.0, 6),
                per_task=per_task,
                train_hardware=row.get("train_hardware", ""),
                train_gpu_hours=_number(row, "train_gpu_hours", summary_path),
                peak_memory_gb=_number(row, "peak_memory_gb", summary_path),
                source=row.get("source", ""),
            )
        )
    return methods


def load_metaworld(reference_dir: Path = REFERENCE_DIR) -> dict[str, dict[str, float]]:
    """``{method: {difficulty: success fraction}}`` from the DP3 paper's Meta-World table."""
    path = reference_dir / METAWORLD_FILE
    return {
        row["method"]: {k: round(_number(row, k, path) / 100.0, 6) for k in row if k != "method"}
        for row in _read_csv(path)
    }


def _reference_specs(
    reference_dir: Path,
) -> list[tuple[str, dict[str, str], dict[str, float], dict[str, str]]]:
    """(run name, tags, metrics, params) of every reference run."""
    specs = []
    for m in load_published(reference_dir):
        metrics = {"eval/success": m.avg_success}
        metrics.update({f"eval/{task}/success": v for task, v in m.per_task.items()})
        if m.train_gpu_hours is not None:
            metrics["published/train_gpu_hours"] = m.train_gpu_hours
        if m.peak_memory_gb is not None:
            metrics["published/peak_mem_gb"] = m.peak_memory_gb
        params = {
            "published.source": m.source,
            "published.protocol": "RLBench-18, PerAct protocol: 100 demos/task, 25 test episodes/task, 3 seeds",
            "published.per_task_public": str(bool(m.per_task)).lower(),
            "published.train_hardware": m.train_hardware or "not published",
        }
        specs.append((m.run_name, _tags(m.benchmark, m.method), metrics, params))
    for method, levels in load_metaworld(reference_dir).items():
        metrics = {f"eval/difficulty/{level}/success": v for level, v in levels.items()}
        params = {"published.source": "DP3 paper (Ze et al. 2024), Meta-World v2, 10 demos per task"}
        specs.append((f"{REFERENCE_PREFIX}metaworld/{method}", _tags("metaworld", method), metrics, params))
    return specs


def _tags(benchmark: str, method: str) -> dict[str, str]:
    return {
        TAG_KIND: "reference",
        "platform.benchmark": benchmark,
        "platform.reference_method": method,
    }


def log_reference_runs(
    client: Any, experiment_id: str, reference_dir: Path = REFERENCE_DIR
) -> tuple[int, int]:
    """Create or complete the reference runs in ``experiment_id``. Returns (created, updated) counts."""
    from mlflow.entities import Metric, Param

    found = client.search_runs(
        [experiment_id], filter_string="tags.`platform.kind` = 'reference'", max_results=1000
    )
    existing = {r.info.run_name: r for r in sorted(found, key=lambda r: r.info.start_time, reverse=True)}
    created = updated = 0
    ts = int(time.time() * 1000)
    for name, tags, metrics, params in _reference_specs(reference_dir):
        run = existing.get(name)
        if run is None:
            run = client.create_run(experiment_id, run_name=name, tags=tags)
            created += 1
            new_params = [Param(k, v) for k, v in params.items()]
        else:
            new_params = [Param(k, v) for k, v in params.items() if k not in run.data.params]
        have = run.data.metrics
        todo = [Metric(k, v, ts, 0) for k, v in metrics.items() if have.get(k) != v]
        if todo or new_params:
            client.log_batch(run.info.run_id, metrics=todo, params=new_params)
            updated += name in existing
        if run.info.status != "FINISHED":
            client.set_terminated(run.info.run_id, "FINISHED")
    return created, updated
