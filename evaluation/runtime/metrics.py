"""Aggregate episode outputs into an ``EvalReport``: per-task success with full denominators, counts by
status, throughput and where the time went. JSON, a terminal table and MLflow metric names.

A success rate is ``successes / episodes requested``: timeouts, simulator and planner errors count as
failures and stay in the denominator; they are also counted separately so that they are visible.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, get_args

from evaluation.runtime.episode import EpisodeOutput, StageTimes
from evaluation.simulators.sim import EpisodeStatus
from policies.config import FrozenModel

STATUSES: tuple[str, ...] = get_args(EpisodeStatus)


class EpisodeRecord(FrozenModel):
    task: str
    variation: int
    seed: int
    success: bool
    steps: int
    status: str
    message: str
    wall_s: float
    node: str = ""  # Ray node id of the actor that ran the episode


Z95 = 1.959964  # two-sided 95 % normal quantile


def wilson_interval(successes: int, episodes: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate (sensible at 0 and 1 successes, unlike the normal one)."""
    if episodes <= 0:
        return 0.0, 1.0
    p = successes / episodes
    denom = 1 + z * z / episodes
    centre = (p + z * z / (2 * episodes)) / denom
    half = z * ((p * (1 - p) + z * z / (4 * episodes)) / episodes) ** 0.5 / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(counts: Sequence[tuple[int, int]], z: float = Z95) -> tuple[float, float]:
    """95 % interval of the mean over tasks of per-task success rates, ``counts``: (successes, episodes) per
    task. Each task's variance uses the Agresti-Coull estimate (k + 2) / (n + 4), so tasks at 0 or 100 %
    still add uncertainty; the tasks are independent, so variances add."""
    counts = [(k, n) for k, n in counts if n > 0]
    if not counts:
        return 0.0, 1.0
    mean = sum(k / n for k, n in counts) / len(counts)
    var = sum(((k + 2) / (n + 4)) * (1 - (k + 2) / (n + 4)) / (n + 4) for k, n in counts) / len(counts) ** 2
    half = z * var**0.5
    return max(0.0, mean - half), min(1.0, mean + half)


class TaskSummary(FrozenModel):
    task: str
    episodes: int
    successes: int
    success_rate: float  # successes / episodes (full denominator)
    status_counts: dict[str, int]
    mean_steps: float


class EvalReport(FrozenModel):
    """Everything one evaluation produced. ``mean_success`` is the mean over tasks of per-task success."""

    tasks: dict[str, TaskSummary]
    episodes: int
    successes: int
    mean_success: float
    status_counts: dict[str, int]
    wall_s: float
    episodes_per_s: float
    time_shares: dict[str, float]  # fraction of actor episode time per stage (render, preprocess, policy, sim)
    retries: int = 0
    actor_restarts: int = 0
    failures: list[str] = []
    results: list[EpisodeRecord] = []
    meta: dict[str, Any] = {}
    # Evaluations over several seeds (RLBench: 3): mean-over-tasks success of each seed's episodes. With
    # equal episodes per seed, each task's success_rate above is the mean of its per-seed rates.
    seed_success: dict[int, float] = {}

    @property
    def seed_std(self) -> float | None:
        """Sample standard deviation of ``seed_success`` (None with fewer than 2 seeds)."""
        values = list(self.seed_success.values())
        if len(values) < 2:
            return None
        mean = sum(values) / len(values)
        return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5

    @property
    def errors(self) -> int:
        return sum(n for s, n in self.status_counts.items() if s != "ok")

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, text: str) -> EvalReport:
        return cls.model_validate(json.loads(text))

    @property
    def mean_ci(self) -> tuple[float, float]:
        """95 % interval of ``mean_success`` (``mean_interval``)."""
        return mean_interval([(s.successes, s.episodes) for s in self.tasks.values()])

    def task_ci(self, task: str) -> tuple[float, float]:
        """95 % Wilson interval of one task's success rate."""
        s = self.tasks[task]
        return wilson_interval(s.successes, s.episodes)

    def mlflow_metrics(self, prefix: str = "eval") -> dict[str, float]:
        """``{prefix}/<task>/success``, ``{prefix}/success``, ``{prefix}/<status>`` counts, throughput."""
        out = {f"{prefix}/{t}/success": s.success_rate for t, s in self.tasks.items()}
        out[f"{prefix}/success"] = self.mean_success
        out[f"{prefix}/success_ci_low"], out[f"{prefix}/success_ci_high"] = self.mean_ci
        out.update({f"{prefix}/{status}": float(n) for status, n in self.status_counts.items() if status != "ok"})
        out[f"{prefix}/episodes"] = float(self.episodes)
        out[f"{prefix}/episodes_per_s"] = self.episodes_per_s
        out[f"{prefix}/retries"] = float(self.retries)
        if len(self.seed_success) > 1:  # names that never match ``{prefix}/<task>/success``
            out.update({f"{prefix}/success_seed{seed}": v for seed, v in self.seed_success.items()})
            out[f"{prefix}/success_seed_std"] = float(self.seed_std or 0.0)
        return out

    def table(self) -> str:
        """Per-task success table for the terminal."""
        err_cols = [s for s in STATUSES if s != "ok"]
        head = (f"{'task':<28} {'success':>8} {'95% interval':>14} {'n':>5} "
                + " ".join(f"{c:>13}" for c in err_cols))
        lines = [head, "-" * len(head)]
        ci = lambda lo_hi: f"{100 * lo_hi[0]:5.1f}-{100 * lo_hi[1]:5.1f}%"  # noqa: E731
        for task, s in self.tasks.items():
            errs = " ".join(f"{s.status_counts.get(c, 0):>13}" for c in err_cols)
            lines.append(f"{task:<28} {100 * s.success_rate:>7.1f}% {ci(self.task_ci(task)):>14} {s.episodes:>5} {errs}")
        lines.append("-" * len(head))
        errs = " ".join(f"{self.status_counts.get(c, 0):>13}" for c in err_cols)
        lines.append(f"{'mean over tasks':<28} {100 * self.mean_success:>7.1f}% {ci(self.mean_ci):>14} "
                     f"{self.episodes:>5} {errs}")
        if len(self.seed_success) > 1:
            per_seed = ", ".join(f"seed {k}: {100 * v:.1f}%" for k, v in self.seed_success.items())
            lines.append(f"{len(self.seed_success)} seeds ({per_seed}); std over seeds {100 * (self.seed_std or 0):.1f} points")
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in self.time_shares.items())
        lines.append(
            f"{self.episodes} episodes in {self.wall_s:.1f} s ({self.episodes_per_s:.2f} ep/s); "
            f"retries {self.retries}, actor restarts {self.actor_restarts}; time: {shares}"
        )
        return "\n".join(lines)


def summarize(
    outputs: Sequence[EpisodeOutput],
    wall_s: float,
    retries: int = 0,
    actor_restarts: int = 0,
    failures: Sequence[str] = (),
    meta: dict[str, Any] | None = None,
) -> EvalReport:
    """Build the report; every output counts in its task's denominator, whatever its status."""
    per_task: dict[str, list[EpisodeOutput]] = {}
    for out in outputs:
        per_task.setdefault(out.result.task, []).append(out)
    tasks = {task: _task_summary(task, outs) for task, outs in per_task.items()}
    counts = {s: sum(t.status_counts.get(s, 0) for t in tasks.values()) for s in STATUSES}
    times = StageTimes()
    for out in outputs:
        times.add(out.times)
    total = sum(times.as_dict().values())
    shares = {k: (v / total if total > 0 else 0.0) for k, v in times.as_dict().items()}
    successes = sum(t.successes for t in tasks.values())
    return EvalReport(
        tasks=tasks,
        episodes=len(outputs),
        successes=successes,
        mean_success=sum(t.success_rate for t in tasks.values()) / len(tasks) if tasks else 0.0,
        status_counts=counts,
        wall_s=wall_s,
        episodes_per_s=len(outputs) / wall_s if wall_s > 0 else 0.0,
        time_shares=shares,
        retries=retries,
        actor_restarts=actor_restarts,
        failures=list(failures),
        results=[EpisodeRecord(**vars(o.result)) for o in outputs],
        meta=meta or {},
    )


def seed_success(report: EvalReport, eval_seeds: Sequence[int]) -> dict[int, float]:
    """Mean-over-tasks success of each evaluation seed; ``eval_seeds[i]`` is the seed that planned
    ``report.results[i]`` (the coordinator returns results in request order)."""
    if len(eval_seeds) != len(report.results):
        raise ValueError(f"{len(eval_seeds)} seeds for {len(report.results)} episode results")
    per_seed: dict[int, dict[str, list[bool]]] = {}
    for seed, record in zip(eval_seeds, report.results, strict=True):
        ok = record.success and record.status == "ok"
        per_seed.setdefault(int(seed), {}).setdefault(record.task, []).append(ok)
    return {
        seed: sum(sum(v) / len(v) for v in tasks.values()) / len(tasks)
        for seed, tasks in sorted(per_seed.items())
    }


def _task_summary(task: str, outs: Sequence[EpisodeOutput]) -> TaskSummary:
    n = len(outs)
    successes = sum(1 for o in outs if o.result.success and o.result.status == "ok")
    counts = {s: sum(1 for o in outs if o.result.status == s) for s in STATUSES}
    return TaskSummary(
        task=task,
        episodes=n,
        successes=successes,
        success_rate=successes / n if n else 0.0,
        status_counts=counts,
        mean_steps=sum(o.result.steps for o in outs) / n if n else 0.0,
    )
