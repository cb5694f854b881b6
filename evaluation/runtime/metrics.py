"""Aggregate episode outputs into an ``EvalReport``: per-task success with full denominators, counts by
status, throughput and where the time went. JSON, a terminal table and MLflow metric names.

A success rate is ``successes / episodes requested``: timeouts, simulator and planner errors count as
failures and stay in the denominator; they are also counted separately so that they are visible.

Three averages, because papers report different ones: ``mean_success`` (the mean over tasks of per-task
success, ``eval/success``), ``per_episode_success`` (successes / episodes, ``eval/success/per_episode``)
and, for Meta-World, the difficulty tiers (``evaluation/metaworld_tiers.py``): each tier's success over
its tasks' episodes (``eval/success/<tier>``) and the **tier average**, the mean of the four tiers'
rates as the VLA papers report MT50 (``eval/success/tier_average``), only when all four tiers were
evaluated. With equal episodes per task (every evaluation here) a tier's rate is also the mean of its
tasks' rates. The tiers are derived from ``tasks`` (properties, also written to the JSON), so reports
written before they existed show them too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, get_args

from pydantic import computed_field, model_validator

from evaluation.metaworld_tiers import PUBLISHED_EPISODE_STEPS, TIER_LABELS, TIER_TASKS, TIERS, group_by_tier
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
    sim_steps: int = 0  # low-level simulator steps (0 in reports written before they were counted)
    success_step: int | None = None  # low-level steps to the first success (None: failed, or not counted)


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


class TierSummary(FrozenModel):
    """One Meta-World difficulty tier of a report: its evaluated tasks' episodes pooled."""

    tier: str
    tasks: list[str]  # the tier's tasks in this evaluation
    tier_size: int  # tasks the tier has (easy 28, medium 11, hard 6, very hard 5)
    episodes: int
    successes: int
    success_rate: float  # successes / episodes of the tier's tasks (full denominators)
    ci_low: float  # 95 % Wilson interval of success_rate
    ci_high: float
    status_counts: dict[str, int]


class StepLimitedSuccess(FrozenModel):
    """The successes of a report that came within ``steps`` low-level steps of the reset: what an evaluation
    that ended its episodes there (a published protocol's episode length) would have counted."""

    steps: int
    episodes: int
    successes: int
    per_episode: float
    per_episode_ci: tuple[float, float]
    tiers: dict[str, float]  # tier -> success rate (Meta-World; empty otherwise)
    tier_average: float | None  # the four tiers' mean, None unless all four were evaluated


class EvalReport(FrozenModel):
    """Everything one evaluation produced. ``mean_success`` is the mean over tasks of per-task success."""

    tasks: dict[str, TaskSummary]
    episodes: int
    successes: int
    mean_success: float
    status_counts: dict[str, int]
    wall_s: float
    episodes_per_s: float
    time_shares: dict[
        str, float
    ]  # fraction of actor episode time per stage (render, preprocess, policy, sim)
    retries: int = 0
    actor_restarts: int = 0
    failures: list[str] = []
    results: list[EpisodeRecord] = []
    meta: dict[str, Any] = {}
    # Evaluations over several seeds (RLBench: 3): mean-over-tasks success of each seed's episodes. With
    # equal episodes per seed, each task's success_rate above is the mean of its per-seed rates.
    seed_success: dict[int, float] = {}

    @model_validator(mode="before")
    @classmethod
    def _drop_derived(cls, data: Any) -> Any:
        """A report's JSON holds its computed fields too (tiers, per-episode success); reading it back
        recomputes them from ``tasks`` instead of refusing them as unknown keys."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in cls.model_computed_fields}
        return data

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

    @computed_field  # type: ignore[prop-decorator]
    @property
    def per_episode_success(self) -> float:
        """Successes over all episodes (FabriVLA's "counted per episode"); equals ``mean_success`` when every
        task has as many episodes."""
        return self.successes / self.episodes if self.episodes else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def per_episode_ci(self) -> tuple[float, float]:
        """95 % Wilson interval of ``per_episode_success``."""
        return wilson_interval(self.successes, self.episodes)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tiers(self) -> dict[str, TierSummary]:
        """The Meta-World tiers the evaluated tasks belong to, in tier order (empty for other benchmarks)."""
        out = {}
        for tier, names in group_by_tier(list(self.tasks)).items():
            k, n = sum(self.tasks[t].successes for t in names), sum(self.tasks[t].episodes for t in names)
            lo, hi = wilson_interval(k, n)
            counts = {s: sum(self.tasks[t].status_counts.get(s, 0) for t in names) for s in STATUSES}
            out[tier] = TierSummary(
                tier=tier,
                tasks=names,
                tier_size=len(TIER_TASKS[tier]),
                episodes=n,
                successes=k,
                success_rate=k / n if n else 0.0,
                ci_low=lo,
                ci_high=hi,
                status_counts=counts,
            )
        return out

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tier_average(self) -> float | None:
        """Mean of the four tiers' success rates; None unless every tier has an evaluated task (an average of
        the tiers present would not be the number papers report)."""
        tiers = self.tiers
        if len(tiers) < len(TIERS):
            return None
        return sum(t.success_rate for t in tiers.values()) / len(tiers)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tier_average_ci(self) -> tuple[float, float] | None:
        """95 % interval of ``tier_average``: ``mean_interval`` over the four tiers' pooled counts."""
        if self.tier_average is None:
            return None
        return mean_interval([(t.successes, t.episodes) for t in self.tiers.values()])

    def within_steps(self, steps: int) -> StepLimitedSuccess | None:
        """The successes that came within ``steps`` low-level steps; None where a success's step was not
        counted (RLBench, reports written before it was) or there are no episode results."""
        ok = [r for r in self.results if r.success and r.status == "ok"]
        if not self.results or any(r.success_step is None for r in ok):
            return None
        per_task = {t: 0 for t in self.tasks}
        for r in ok:
            per_task[r.task] += r.success_step is not None and r.success_step <= steps
        k = sum(per_task.values())
        tiers = {
            tier: sum(per_task[t] for t in names) / max(1, sum(self.tasks[t].episodes for t in names))
            for tier, names in group_by_tier(list(self.tasks)).items()
        }
        return StepLimitedSuccess(
            steps=steps,
            episodes=self.episodes,
            successes=k,
            per_episode=k / self.episodes if self.episodes else 0.0,
            per_episode_ci=wilson_interval(k, self.episodes),
            tiers=tiers,
            tier_average=sum(tiers.values()) / len(tiers) if len(tiers) == len(TIERS) else None,
        )

    def published_lengths(self) -> list[StepLimitedSuccess]:
        """``within_steps`` at the published MT50 episode lengths (``PUBLISHED_EPISODE_STEPS``), for a
        Meta-World report whose success steps were counted; empty otherwise."""
        if not self.tiers:
            return []
        out = [self.within_steps(n) for n in sorted(set(PUBLISHED_EPISODE_STEPS.values()), reverse=True)]
        return [s for s in out if s is not None]

    def mlflow_metrics(self, prefix: str = "eval") -> dict[str, float]:
        """``{prefix}/<task>/success``, ``{prefix}/success``, ``{prefix}/<status>`` counts, throughput."""
        out = {f"{prefix}/{t}/success": s.success_rate for t, s in self.tasks.items()}
        out[f"{prefix}/success"] = self.mean_success
        out[f"{prefix}/success_ci_low"], out[f"{prefix}/success_ci_high"] = self.mean_ci
        # Other averages under {prefix}/success/<name>, their intervals as <name>_ci_low / _ci_high (the
        # style of {prefix}/success_ci_*); none of these names ends in /success, so they never read as a task.
        averages = {"per_episode": (self.per_episode_success, self.per_episode_ci)}
        averages.update({tier: (t.success_rate, (t.ci_low, t.ci_high)) for tier, t in self.tiers.items()})
        if self.tier_average is not None and self.tier_average_ci is not None:
            averages["tier_average"] = (self.tier_average, self.tier_average_ci)
        for name, (value, (lo, hi)) in averages.items():
            out[f"{prefix}/success/{name}"] = value
            out[f"{prefix}/success/{name}_ci_low"], out[f"{prefix}/success/{name}_ci_high"] = lo, hi
        for limited in self.published_lengths():  # e.g. eval/success/within_500_steps/tier_average
            head = f"{prefix}/success/within_{limited.steps}_steps"
            out[f"{head}/per_episode"] = limited.per_episode
            out.update({f"{head}/{tier}": rate for tier, rate in limited.tiers.items()})
            if limited.tier_average is not None:
                out[f"{head}/tier_average"] = limited.tier_average
        out.update(
            {f"{prefix}/{status}": float(n) for status, n in self.status_counts.items() if status != "ok"}
        )
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
        head = f"{'task':<28} {'success':>8} {'95% interval':>14} {'n':>5} " + " ".join(
            f"{c:>13}" for c in err_cols
        )
        lines = [head, "-" * len(head)]
        ci = lambda lo_hi: f"{100 * lo_hi[0]:5.1f}-{100 * lo_hi[1]:5.1f}%"  # noqa: E731
        for task, s in self.tasks.items():
            errs = " ".join(f"{s.status_counts.get(c, 0):>13}" for c in err_cols)
            lines.append(
                f"{task:<28} {100 * s.success_rate:>7.1f}% {ci(self.task_ci(task)):>14} {s.episodes:>5} {errs}"
            )
        lines.append("-" * len(head))
        errs = " ".join(f"{self.status_counts.get(c, 0):>13}" for c in err_cols)
        lines.append(
            f"{'mean over tasks':<28} {100 * self.mean_success:>7.1f}% {ci(self.mean_ci):>14} "
            f"{self.episodes:>5} {errs}"
        )
        lines.append(
            f"{'per episode':<28} {100 * self.per_episode_success:>7.1f}% "
            f"{ci(self.per_episode_ci):>14} {self.episodes:>5}"
        )
        lines += self._tier_lines(ci, err_cols, len(head))
        if len(self.seed_success) > 1:
            per_seed = ", ".join(f"seed {k}: {100 * v:.1f}%" for k, v in self.seed_success.items())
            lines.append(
                f"{len(self.seed_success)} seeds ({per_seed}); std over seeds {100 * (self.seed_std or 0):.1f} points"
            )
        shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in self.time_shares.items())
        lines.append(
            f"{self.episodes} episodes in {self.wall_s:.1f} s ({self.episodes_per_s:.2f} ep/s); "
            f"retries {self.retries}, actor restarts {self.actor_restarts}; time: {shares}"
        )
        return "\n".join(lines)

    def _tier_lines(self, ci: Any, err_cols: list[str], width: int) -> list[str]:
        """The table's tier rows and the tier average (or why there is none); nothing without tiers."""
        tiers = self.tiers
        if not tiers:
            return []
        lines = ["-" * width]
        for tier, t in tiers.items():
            label = f"{TIER_LABELS[tier]} ({len(t.tasks)} of {t.tier_size} tasks)"
            errs = " ".join(f"{t.status_counts.get(c, 0):>13}" for c in err_cols)
            lines.append(
                f"{label:<28} {100 * t.success_rate:>7.1f}% {ci((t.ci_low, t.ci_high)):>14} "
                f"{t.episodes:>5} {errs}"
            )
        if self.tier_average is not None:
            lines.append(
                f"{'tier average (4 tiers)':<28} {100 * self.tier_average:>7.1f}% "
                f"{ci(self.tier_average_ci):>14}"
            )
        else:
            missing = " or ".join(TIER_LABELS[t] for t in TIERS if t not in tiers)
            lines.append(
                f"tier average: not shown, it needs all four tiers and no {missing} task was evaluated"
            )
        for limited in self.published_lengths():
            per_tier = ", ".join(f"{TIER_LABELS[t]} {100 * r:.1f}" for t, r in limited.tiers.items())
            average = (
                "" if limited.tier_average is None else f", tier average {100 * limited.tier_average:.1f}%"
            )
            lines.append(
                f"within {limited.steps} low-level steps: {100 * limited.per_episode:.1f}% per episode "
                f"({ci(limited.per_episode_ci)}){average} ({per_tier})"
            )
        return lines


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
