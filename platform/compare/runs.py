"""Our training runs as comparable summaries: success, wall-clock and GPU-hours to a level, memory, speed."""

from __future__ import annotations

import functools
import re
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from evaluation.metaworld_tiers import TIERS
from platform.config import ExperimentConfig
from platform.tracking import TAG_KIND, TAG_NUM_GPUS, TAG_POLICY_TYPE, TAG_SUITE
from platform.tracking.params import flatten_config

if TYPE_CHECKING:  # type-only: MLflow's client is imported where it is used
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

OUR_KINDS = ("train", "sweep_trial")
SEED_PARAM = "train.seed"
# Params that name or place a run without changing what it trains or measures: two runs that differ only in
# these and the seed are seeds of one experiment (``seed_groups``).
RUN_ONLY_PARAMS = frozenset(
    {"name", "output_dir", "data.path", "data.collect_if_missing", "data.collect_workers", "ray.address",
     "tracking.enabled", "tracking.uri", "tracking.experiment", "eval.videos", "eval.video_camera"}
)  # fmt: skip
TIER_AVERAGES = (
    *TIERS,
    "tier_average",
)  # eval/success/<name> of a Meta-World evaluation (EvalReport.mlflow_metrics)
# The tier average counting only successes within Meta-World's 500-step episodes (EvalReport.within_steps):
# this platform's keypose episodes may run longer (docs/evaluation.md)
WITHIN_500_METRIC = "eval/success/within_500_steps/tier_average"
_TASK_METRIC = re.compile(r"^eval/(?P<task>.+)/success$")
_NOT_TASKS = {
    "difficulty"
}  # eval/difficulty/<level>/success of reference runs logged before MT50 (published/metaworld/*)


@dataclass
class RunSummary:
    """What the comparison shows of one run. Success values are fractions; times in seconds."""

    run_id: str
    run_name: str
    policy_type: str
    kind: str
    status: str
    suite: str  # tag platform.suite (mt10 | mt50 | rlbench); "unknown" for runs logged before the tag existed
    steps: int | None
    final_success: float | None
    best_success: float | None
    per_task: dict[str, float]
    episodes: float | None
    wall_s: float | None
    num_gpus: int
    time_to_level: dict[float, float | None]
    peak_mem_bytes: float | None
    samples_per_s: float | None
    conditions_per_s: float | None
    success_curve: list[tuple[float, float]] = field(default_factory=list)  # (elapsed s, success)
    success_ci: tuple[float, float] | None = None  # 95 % interval of final_success (eval/success_ci_low/high)
    demos_per_task: int | None = None  # training episodes per task (param data.episodes_per_task)
    # Meta-World: final eval/success/<tier> and eval/success/tier_average, with their 95 % intervals
    tier_success: dict[str, float] = field(default_factory=dict)
    tier_ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    per_episode_success: float | None = None  # eval/success/per_episode
    tier_average_500: float | None = None  # WITHIN_500_METRIC
    params: dict[str, str] = field(default_factory=dict)  # the run's MLflow params (its flattened config)

    @property
    def seed(self) -> str | None:
        return self.params.get(SEED_PARAM)

    @property
    def eval_episodes_per_task(self) -> float | None:
        """Episodes of the final evaluation per evaluated task (every seed's episodes counted)."""
        return None if self.episodes is None or not self.per_task else self.episodes / len(self.per_task)

    @property
    def gpu_hours(self) -> float | None:
        return None if self.wall_s is None else self.wall_s / 3600.0 * self.num_gpus

    def gpu_hours_to(self, level: float) -> float | None:
        seconds = self.time_to_level.get(level)
        return None if seconds is None else seconds / 3600.0 * self.num_gpus


def _truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in ("true", "1", "yes")


def gpu_count(run: Run) -> int:
    """GPUs a run trained on: tag ``platform.num_gpus``, else param ``resources.gpus``, else
    ``ray.num_workers`` when ``ray.use_gpu`` is true (or unset with a CUDA ``env.device``), else 0 (CPU)."""
    tags, params = run.data.tags, run.data.params
    for text in (tags.get(TAG_NUM_GPUS), params.get("resources.gpus")):
        if text not in (None, "", "null"):
            return int(float(text))
    use_gpu = params.get("ray.use_gpu")
    if _truthy(use_gpu) or (use_gpu in (None, "null") and params.get("env.device", "").startswith("cuda")):
        return max(1, int(float(params.get("ray.num_workers") or 1)))
    return 0


def elapsed_at(step: int, elapsed: list[tuple[int, float]]) -> float | None:
    """``time/elapsed_s`` at ``step``: the logged value, else linearly interpolated between the nearest
    logged steps; None outside the logged range."""
    points = sorted(elapsed)
    exact = [v for s, v in points if s == step]
    if exact:
        return exact[-1]
    below = [(s, v) for s, v in points if s < step]
    above = [(s, v) for s, v in points if s > step]
    if not below or not above:
        return None
    (s0, v0), (s1, v1) = below[-1], above[0]
    return v0 + (v1 - v0) * (step - s0) / (s1 - s0)


def time_to_level(
    success: list[tuple[int, float]], elapsed: list[tuple[int, float]], level: float
) -> float | None:
    """Training seconds until ``eval/success`` first reached ``level``: the elapsed time at the step of
    the first evaluated checkpoint with success >= level (``success`` and ``elapsed`` are (step, value)
    histories of ``eval/success`` and ``time/elapsed_s``). None if never reached or not timed."""
    hit = next((step for step, value in sorted(success) if value >= level), None)
    return None if hit is None else elapsed_at(hit, elapsed)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def summarize_run(client: MlflowClient, run: Run, levels: tuple[float, ...]) -> RunSummary:
    info, data = run.info, run.data
    rid = info.run_id
    success = _history(client, rid, "eval/success")
    elapsed = _history(client, rid, "time/elapsed_s")
    steps = [s for s, _ in _history(client, rid, "train/loss")]
    peak = _history(client, rid, "train/peak_mem_bytes")
    samples = _history(client, rid, "train/samples_per_s")
    conditions = _history(client, rid, "train/conditions_per_s")
    if elapsed:
        wall_s: float | None = max(v for _, v in elapsed)
    elif info.end_time and info.start_time:
        wall_s = (info.end_time - info.start_time) / 1000.0
    else:
        wall_s = None
    per_task = {}
    for key, value in data.metrics.items():
        match = _TASK_METRIC.match(key)
        if match and match["task"].split("/")[0] not in _NOT_TASKS:
            per_task[match["task"]] = value
    curve = [(t, v) for step, v in sorted(success) if (t := elapsed_at(step, elapsed)) is not None]
    return RunSummary(
        run_id=rid,
        run_name=info.run_name or rid,
        policy_type=data.tags.get(TAG_POLICY_TYPE, "unknown"),
        kind=data.tags.get(TAG_KIND, "unknown"),
        status=info.status,
        suite=data.tags.get(TAG_SUITE, "unknown"),
        steps=max(steps) if steps else None,
        final_success=data.metrics.get("eval/success"),
        best_success=max(v for _, v in success) if success else None,
        per_task=per_task,
        episodes=data.metrics.get("eval/episodes"),
        wall_s=wall_s,
        num_gpus=gpu_count(run),
        time_to_level={lv: time_to_level(success, elapsed, lv) for lv in levels},
        peak_mem_bytes=max(v for _, v in peak) if peak else None,
        samples_per_s=statistics.median(v for _, v in samples) if samples else None,
        conditions_per_s=statistics.median(v for _, v in conditions) if conditions else None,
        success_curve=curve,
        success_ci=_ci(data.metrics),
        demos_per_task=_int_param(data.params, "data.episodes_per_task"),
        tier_success={
            n: data.metrics[f"eval/success/{n}"] for n in TIER_AVERAGES if f"eval/success/{n}" in data.metrics
        },
        tier_ci={n: ci for n in TIER_AVERAGES if (ci := _ci(data.metrics, f"eval/success/{n}")) is not None},
        per_episode_success=data.metrics.get("eval/success/per_episode"),
        tier_average_500=data.metrics.get(WITHIN_500_METRIC),
        params=dict(data.params),
    )


def _ci(metrics: dict[str, float], key: str = "eval/success") -> tuple[float, float] | None:
    """The 95 % interval logged beside metric ``key`` (``<key>_ci_low`` / ``<key>_ci_high``)."""
    lo, hi = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
    return None if lo is None or hi is None else (lo, hi)


def _int_param(params: dict[str, str], key: str) -> int | None:
    try:
        return int(float(params[key]))
    except (KeyError, ValueError):
        return None


@dataclass
class QualityRow:
    """One row of a ``platform.quality`` sweep's time-to-quality table (from its parent run's metrics)."""

    sweep: str
    m: int
    time_to_target_s: float | None
    ratio_to_m1: float | None


_QUALITY = re.compile(r"^quality/m(?P<m>\d+)/(?P<what>time_to_target_s|ratio_to_m1)$")


def find_quality_rows(client: MlflowClient, experiment_id: str | None) -> list[QualityRow]:
    """Time-to-quality rows of every ``platform.quality`` sweep of the experiment (tag platform.quality)."""
    if experiment_id is None:
        return []
    rows = []
    for run in client.search_runs(
        [experiment_id], filter_string="tags.`platform.quality` = 'true'", max_results=100
    ):
        values: dict[int, dict[str, float]] = {}
        for key, value in run.data.metrics.items():
            match = _QUALITY.match(key)
            if match:
                values.setdefault(int(match["m"]), {})[match["what"]] = value
        name = run.info.run_name or run.info.run_id
        rows += [
            QualityRow(name, m, v.get("time_to_target_s"), v.get("ratio_to_m1"))
            for m, v in sorted(values.items())
        ]
    return rows


def find_our_runs(client: MlflowClient, experiment_id: str | None, run_ids: list[str] | None) -> list[Run]:
    """Runs given by id, or every active train / sweep-trial run of the experiment (newest first)."""
    if run_ids:
        return [client.get_run(rid) for rid in run_ids]
    if experiment_id is None:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token,
                                  order_by=["attributes.start_time DESC"])  # fmt: skip
        runs.extend(r for r in page if r.data.tags.get(TAG_KIND) in OUR_KINDS)
        token = page.token
        if not token:
            return runs


@functools.cache
def default_params() -> dict[str, str]:
    """The default experiment's settings as MLflow params (``flatten_config``)."""
    return flatten_config(ExperimentConfig().model_dump(mode="json"))


def same_experiment(a: RunSummary, b: RunSummary) -> bool:
    """Whether two runs differ at most in their seed and ``RUN_ONLY_PARAMS``. A setting only one of them logged
    (added to the platform between the two runs) counts as its default in the other, which ran before it
    existed: a run that set it to something else is another experiment (MT50's surface drop beside runs
    collected before it); settings without a platform-wide default (a policy type's own) are not compared."""
    if (a.policy_type, a.suite) != (b.policy_type, b.suite):
        return False
    defaults = default_params()
    for key in (a.params.keys() | b.params.keys()) - RUN_ONLY_PARAMS - {SEED_PARAM}:
        va, vb = a.params.get(key, defaults.get(key)), b.params.get(key, defaults.get(key))
        if va is not None and vb is not None and va != vb:
            return False
    return True


def seed_groups(summaries: list[RunSummary]) -> list[list[RunSummary]]:
    """Runs of one experiment with different training seeds (``same_experiment``), in groups of two or
    more evaluated runs. A run joins the first group without its seed, in the order of ``summaries``
    (newest first from ``find_our_runs``): a seed run twice is averaged by its newest run."""
    groups: list[list[RunSummary]] = []
    for s in summaries:
        if s.seed is None or s.final_success is None:
            continue
        home = next((g for g in groups if all(same_experiment(s, o) and o.seed != s.seed for o in g)), None)
        if home is None:
            groups.append([s])
        else:
            home.append(s)
    return [g for g in groups if len(g) > 1]


def best_per_policy_type(summaries: list[RunSummary]) -> dict[str, RunSummary]:
    """The run with the highest final ``eval/success`` per policy type (then the most steps)."""
    best: dict[str, RunSummary] = {}
    for s in summaries:
        key = (s.final_success if s.final_success is not None else -1.0, s.steps or 0)
        cur = best.get(s.policy_type)
        if cur is None or key > (
            cur.final_success if cur.final_success is not None else -1.0,
            cur.steps or 0,
        ):
            best[s.policy_type] = s
    return dict(sorted(best.items()))
