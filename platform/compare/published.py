"""Published numbers (``platform/reference/*.csv``) and their MLflow reference runs.

Reference runs are named ``published/<benchmark>/<method>`` (benchmark ``rlbench18`` or ``mt50``) and
tagged ``platform.kind=reference``; their metrics use our names, as fractions, so they line up with our
runs in the dashboard: ``eval/success`` (the published average; for MT50 the per-task mean, where
published), ``eval/<task>/success`` (RLBench-18 per task), ``eval/success/<tier>`` and
``eval/success/tier_average`` (MT50), ``published/train_gpu_hours`` and ``published/peak_mem_gb`` where
published. Logging is idempotent: an existing reference run only receives the metrics it lacks or that
changed.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from evaluation.metaworld_tiers import TIERS
from platform.tracking import TAG_KIND

if TYPE_CHECKING:  # type-only: MLflow's client is imported where it is used
    from mlflow.tracking import MlflowClient

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference"
RLBENCH_FILE = "rlbench18_published.csv"
SUMMARY_FILE = "published_summary.csv"
MT50_FILE = "metaworld_mt50_published.csv"
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


@dataclass(frozen=True)
class MT50Published:
    """One published MT50 result (all 50 Meta-World tasks) in its setting. Success values are fractions."""

    method: str
    policies_trained: str  # as published: "1" (one policy for all tasks) or "50 (one per task)"
    demos_per_task: int
    eval_episodes_per_task: str  # as published: "10", "20 x 3 seeds"
    inputs: str
    tiers: dict[str, float]  # every tier of evaluation.metaworld_tiers.TIERS
    tier_average: float | None  # mean of the four tiers' rates, as the VLA papers report MT50
    per_task_mean: float | None  # mean over the 50 tasks, where published or computable
    source: str
    note: str = ""

    @property
    def run_name(self) -> str:
        return f"{REFERENCE_PREFIX}mt50/{self.method}"


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


def _fraction(row: dict[str, str], key: str, path: Path) -> float | None:
    """A percentage column as a fraction (None when empty)."""
    value = _number(row, key, path)
    return None if value is None else round(value / 100.0, 6)


def load_mt50(reference_dir: Path = REFERENCE_DIR) -> list[MT50Published]:
    """The published MT50 rows, each with its setting (policies trained, demonstrations, episodes) and source."""
    path = reference_dir / MT50_FILE
    rows = _read_csv(path)
    missing = [c for c in (*TIERS, "tier_average", "demos_per_task", "source") if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: columns {missing} are missing (the tiers are {', '.join(TIERS)})")
    out = []
    for row in rows:
        tiers = {tier: _fraction(row, tier, path) for tier in TIERS}
        if any(v is None for v in tiers.values()):
            raise ValueError(f"{path}: row {row['method']!r} lacks a tier's success ({tiers})")
        out.append(MT50Published(
            method=row["method"], policies_trained=row["policies_trained"],
            demos_per_task=int(_number(row, "demos_per_task", path) or 0),
            eval_episodes_per_task=row["eval_episodes_per_task"], inputs=row.get("inputs", ""),
            tiers={tier: v for tier, v in tiers.items() if v is not None},
            tier_average=_fraction(row, "tier_average", path), per_task_mean=_fraction(row, "per_task_mean", path),
            source=row["source"], note=row.get("note", "")))  # fmt: skip
    return out


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
    for r in load_mt50(reference_dir):
        metrics = {f"eval/success/{tier}": v for tier, v in r.tiers.items()}
        if r.tier_average is not None:
            metrics["eval/success/tier_average"] = r.tier_average
        if r.per_task_mean is not None:
            metrics["eval/success"] = r.per_task_mean
        params = {
            "published.source": r.source,
            "published.protocol": (
                f"MT50: {r.policies_trained} policies trained, {r.demos_per_task} demos/task, "
                f"{r.eval_episodes_per_task} evaluation episodes/task"
            ),
            "published.inputs": r.inputs or "not stated",
            "published.note": r.note or "none",
        }
        specs.append((r.run_name, _tags("mt50", r.method), metrics, params))
    return specs


def _tags(benchmark: str, method: str) -> dict[str, str]:
    return {
        TAG_KIND: "reference",
        "platform.benchmark": benchmark,
        "platform.reference_method": method,
    }


def log_reference_runs(
    client: MlflowClient, experiment_id: str, reference_dir: Path = REFERENCE_DIR
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
