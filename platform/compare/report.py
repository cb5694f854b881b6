"""Tables (markdown, CSV) and figures of ``python -m platform.compare``."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from evaluation.files import atomic_write_text
from evaluation.metaworld_tiers import TIER_LABELS, TIERS
from platform.compare.published import MT50Published, PublishedMethod
from platform.compare.runs import TIER_AVERAGES, QualityRow, RunSummary, seed_groups

MAIN_POLICY = "mini_diffuser"
PLOTTED_PUBLISHED = "diffuser_actor_3dda"
OUR_INPUTS = "fused point cloud + language"  # what every policy of this platform sees (docs/policies.md)
_DASH = "–"


def _pct(x: float | None) -> str:
    return _DASH if x is None else f"{100.0 * x:.1f}"


def _num(x: float | None, fmt: str = ".2f") -> str:
    return _DASH if x is None else format(x, fmt)


def _hours(seconds: float | None) -> str:
    return _DASH if seconds is None else f"{seconds / 3600.0:.2f}"


def _gib(b: float | None) -> str:
    return _DASH if b is None else f"{b / 2**30:.2f}"


def _ratio(a: float | None, b: float | None) -> str:
    return _DASH if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def _cell(value: object) -> object:
    if value is None:
        return ""
    return round(value, 6) if isinstance(value, float) else value


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _level_name(level: float) -> str:
    return f"{100 * level:g}%"


def runs_table(summaries: list[RunSummary], levels: tuple[float, ...]) -> str:
    headers = ["policy type", "run", "suite", "status", "steps", "demos/task", "success % final / best",
               "final 95% interval", "episodes", "wall-clock h", "GPUs", "GPU-h"]  # fmt: skip
    headers += [f"to {_level_name(lv)}: h / GPU-h" for lv in levels]
    headers += ["peak mem GiB", "samples/s", "conditions/s"]
    rows = []
    for s in sorted(summaries, key=lambda s: (s.policy_type, s.run_name)):
        ci = _DASH if s.success_ci is None else f"{_pct(s.success_ci[0])}-{_pct(s.success_ci[1])}"
        row = [s.policy_type, f"{s.run_name} (`{s.run_id[:8]}`)", s.suite, s.status, _num(s.steps, "d"),
               _num(s.demos_per_task, "d"), f"{_pct(s.final_success)} / {_pct(s.best_success)}", ci,
               _num(s.episodes, ".0f"),
               _hours(s.wall_s), str(s.num_gpus), _num(s.gpu_hours)]  # fmt: skip
        row += [f"{_hours(s.time_to_level[lv])} / {_num(s.gpu_hours_to(lv))}" for lv in levels]
        row += [_gib(s.peak_mem_bytes), _num(s.samples_per_s, ".1f"), _num(s.conditions_per_s, ".1f")]
        rows.append(row)
    return md_table(headers, rows)


def ratios_table(best: dict[str, RunSummary], levels: tuple[float, ...]) -> str | None:
    """Mini-Diffuser's best run against the best run of every other policy type."""
    main = best.get(MAIN_POLICY)
    others = [s for t, s in best.items() if t != MAIN_POLICY]
    if main is None or not others:
        return None
    headers = ["baseline", "success points (ours - baseline)", "samples/s ratio", "conditions/s ratio",
               "peak memory ratio"] + [f"time to {_level_name(lv)} ratio" for lv in levels]  # fmt: skip
    rows = []
    for o in others:
        diff = (
            None
            if main.final_success is None or o.final_success is None
            else main.final_success - o.final_success
        )
        row = [o.policy_type, _DASH if diff is None else f"{100 * diff:+.1f}",
               _ratio(main.samples_per_s, o.samples_per_s), _ratio(main.conditions_per_s, o.conditions_per_s),
               _ratio(main.peak_mem_bytes, o.peak_mem_bytes)]  # fmt: skip
        row += [_ratio(main.time_to_level[lv], o.time_to_level[lv]) for lv in levels]
        rows.append(row)
    return md_table(headers, rows)


def per_task_columns(
    best: dict[str, RunSummary], published: list[PublishedMethod]
) -> tuple[list[str], list[PublishedMethod]]:
    """Tasks of our best runs, and the published methods with per-task numbers on any of them."""
    tasks = sorted({t for s in best.values() for t in s.per_task})
    shown = [m for m in published if m.per_task and set(tasks) & set(m.per_task)]
    return tasks, shown


def per_task_table(best: dict[str, RunSummary], published: list[PublishedMethod]) -> str | None:
    tasks, shown = per_task_columns(best, published)
    if not tasks:
        return None
    headers = (
        ["task"]
        + [f"{t} ({s.run_name})" for t, s in best.items()]
        + [f"{m.method} (published)" for m in shown]
    )
    rows = [[task] + [_pct(s.per_task.get(task)) for s in best.values()] + [_pct(m.per_task.get(task)) for m in shown]
            for task in tasks]  # fmt: skip

    def mean(values: dict[str, float]) -> float | None:
        got = [values[t] for t in tasks if t in values]
        return sum(got) / len(got) if got else None

    rows.append(["**mean over these tasks**"] + [_pct(mean(s.per_task)) for s in best.values()]
                + [_pct(mean(m.per_task)) for m in shown])  # fmt: skip
    return md_table(headers, rows)


def published_table(published: list[PublishedMethod]) -> str:
    rows = [[m.method, _pct(m.avg_success), "yes" if m.per_task else "no", m.train_hardware or _DASH,
             _num(m.train_gpu_hours, ".0f"), _num(m.peak_memory_gb, ".0f"), m.source] for m in published]  # fmt: skip
    headers = [
        "method",
        "avg success %",
        "per-task public",
        "training hardware",
        "GPU-h",
        "peak memory GB",
        "source",
    ]
    return md_table(headers, rows)


def _pct_ci(x: float | None, ci: tuple[float, float] | None) -> str:
    return _pct(x) if ci is None or x is None else f"{_pct(x)} ({_pct(ci[0])}-{_pct(ci[1])})"


def _mean_over_seeds(values: Sequence[float | None]) -> float | None:
    """The mean of one figure over a group's seeds; None unless every seed has it."""
    if not values or any(v is None for v in values):
        return None
    return sum(v for v in values if v is not None) / len(values)


def _over_seeds(values: Sequence[float | None]) -> str:
    """The mean over a group's seeds with the lowest and highest seed, or a dash (``_mean_over_seeds``)."""
    mean = _mean_over_seeds(values)
    if mean is None:
        return _DASH
    present = [v for v in values if v is not None]
    return f"{_pct(mean)} (seeds {_pct(min(present))}-{_pct(max(present))})"


def seed_mean_values(group: Sequence[RunSummary]) -> dict[str, float | None]:
    """A seed group's means: per tier (``TIER_AVERAGES``), ``final_success``, ``per_episode_success`` and
    ``tier_average_500``."""
    out = {n: _mean_over_seeds([s.tier_success.get(n) for s in group]) for n in TIER_AVERAGES}
    out["final_success"] = _mean_over_seeds([s.final_success for s in group])
    out["per_episode_success"] = _mean_over_seeds([s.per_episode_success for s in group])
    out["tier_average_500"] = _mean_over_seeds([s.tier_average_500 for s in group])
    return out


def _seed_label(group: Sequence[RunSummary]) -> str:
    return f"{group[0].policy_type}: mean of {len(group)} seeds ({', '.join(s.run_name for s in group)})"


def mt50_table(summaries: list[RunSummary], mt50: list[MT50Published]) -> str:
    """Our MT50 runs (suite mt50) beside the published MT50 rows: success per tier, tier average, the
    per-task and per-episode means, each row with its setting and source. Ours: 95 % intervals in brackets;
    first the mean over the seeds of each experiment run with several (``seed_groups``)."""
    headers = ["method", "policies trained", "demos/task", "eval episodes/task", "inputs",
               *(TIER_LABELS[t] for t in TIERS), "tier average", "tier average, 500 steps", "per-task mean",
               "per-episode", "source"]  # fmt: skip
    rows = []
    for g in seed_groups(summaries):
        rows.append([f"**{_seed_label(g)}** (ours)", "1", _num(g[0].demos_per_task, "d"),
                     _num(g[0].eval_episodes_per_task, "g"), OUR_INPUTS,
                     *(_over_seeds([s.tier_success.get(n) for s in g]) for n in TIER_AVERAGES),
                     _over_seeds([s.tier_average_500 for s in g]), _over_seeds([s.final_success for s in g]), _over_seeds([s.per_episode_success for s in g]),
                     "this platform, MLflow runs " + ", ".join(f"`{s.run_id[:8]}`" for s in g)])  # fmt: skip
    for s in sorted(summaries, key=lambda s: s.tier_success.get("tier_average", -1.0), reverse=True):
        rows.append([f"**{s.policy_type}: {s.run_name}** (ours)", "1", _num(s.demos_per_task, "d"),
                     _num(s.eval_episodes_per_task, "g"), OUR_INPUTS,
                     *(_pct_ci(s.tier_success.get(n), s.tier_ci.get(n)) for n in TIER_AVERAGES),
                     _pct(s.tier_average_500), _pct_ci(s.final_success, s.success_ci), _pct(s.per_episode_success),
                     f"this platform, MLflow run `{s.run_id[:8]}`"])  # fmt: skip
    for m in mt50:
        rows.append([m.method, m.policies_trained, str(m.demos_per_task), m.eval_episodes_per_task, m.inputs or _DASH,
                     *(_pct(m.tiers.get(t)) for t in TIERS), _pct(m.tier_average), _DASH, _pct(m.per_task_mean), _DASH,
                     m.source])  # fmt: skip
    return md_table(headers, rows)


def mt50_notes(summaries: list[RunSummary], mt50: list[MT50Published]) -> list[str]:
    """What the MT50 table's numbers are, and the caveats of each published row."""
    notes = ["Tiers: Seo et al., Masked World Models (arXiv 2206.14244), as used by DP3 and LeRobot (easy 28, "
             "medium 11, hard 6, very hard 5 tasks). A tier's success pools its tasks' episodes (with equal "
             "episodes per task: the mean of its tasks); the tier average is the mean of the four tiers' rates, "
             "the number VLA papers report for MT50; per-task mean = `eval/success`.",
             "Two settings: one policy for all 50 tasks (policies trained 1, as ours) and 50 single-task "
             "policies (DP3's table). Published numbers come from Meta-World v2 and v3 setups that differ in "
             "details: compare, do not equate.",
             "Episode length: ours end after 25 keyposes (more where a task's limit is raised) or 3000 low-level "
             "steps; Meta-World's episodes end at 500 steps (LeRobot's at 400). \"tier average, 500 steps\" counts "
             "only our successes within the first 500 low-level steps (`eval/success/within_500_steps/"
             "tier_average`; –: evaluated before success steps were counted); the published rows use their "
             "own protocol's length."]  # fmt: skip
    if seed_groups(summaries):
        notes.append(
            "Mean of N seeds: runs of one experiment that differ only in `train.seed` (and in their name and "
            "paths); in brackets the lowest and the highest seed."
        )
    if not summaries:
        notes.append(
            "No MT50 runs of ours yet (tag `platform.suite` = `mt50`): train one with "
            "`python -m platform.train data.suite=mt50`, then run `python -m platform.compare --suite mt50`."
        )
    elif any("tier_average" not in s.tier_success for s in summaries):
        notes.append(
            "–: a run of ours without `eval/success/<tier>` metrics (evaluated before they were logged, "
            "or not on all four tiers: the tier average needs every tier)."
        )
    notes += [f"{m.method}: {m.note}." for m in mt50 if m.note]
    return [f"- {n}" for n in notes]


def quality_table(rows: list[QualityRow]) -> str:
    """``platform.quality`` sweeps: training time each M needs to reach M = 1's final success."""
    body = [[r.sweep, str(r.m), _num(r.time_to_target_s, ".0f"), _num(r.ratio_to_m1, ".3f")] for r in rows]
    return md_table(["sweep", "M", "training s to M = 1's final success", "ratio to M = 1"], body)


def render_markdown(
    summaries: list[RunSummary],
    best: dict[str, RunSummary],
    published: list[PublishedMethod],
    mt50: list[MT50Published],
    levels: tuple[float, ...],
    context: str,
    quality: list[QualityRow] | None = None,
    suite: str | None = None,
) -> str:
    """The whole report; the MT50 section unless ``suite`` (``--suite``) names another benchmark."""
    parts = ["# Mini-Diffuser vs baselines: comparison", "", context, ""]
    if quality:
        parts += ["## Time to quality (`python -m platform.quality` sweeps)", "", quality_table(quality), ""]
    parts += ["## Our runs", ""]
    if not summaries:
        parts += [no_runs_message(context), ""]
    else:
        parts += [runs_table(summaries, levels), ""]
        ratios = ratios_table(best, levels)
        if ratios:
            parts += [f"## {MAIN_POLICY} (best run) relative to each baseline (best run)", "", ratios, ""]
        table = per_task_table(best, published)
        if table:
            parts += ["## Success per task (%), best run per policy type", "", table, ""]
            if not per_task_columns(best, published)[1]:
                parts += ["Our tasks are not RLBench-18 tasks: published per-task numbers are not comparable "
                          "task by task; see the published averages below.", ""]  # fmt: skip
    if suite in (None, "mt50"):
        ours = [s for s in summaries if s.suite == "mt50"]
        parts += [
            "## MT50: all 50 Meta-World tasks, success % per difficulty tier (reference runs "
            "`published/mt50/*` in MLflow)",
            "",
            mt50_table(ours, mt50),
            "",
            *mt50_notes(ours, mt50),
            "",
        ]
    parts += ["## Published RLBench-18 (reference runs `published/rlbench18/*` in MLflow)", "",
              published_table(published), ""]  # fmt: skip
    return "\n".join(parts)


def no_runs_message(context: str) -> str:
    return ("No runs of ours yet (MLflow runs tagged `platform.kind` = `train` or `sweep_trial`). "
            "Train one with `python -m platform.train` (or sweep with `python -m platform.sweep`), then run "
            "`python -m platform.compare` again. Only the published numbers are shown.")  # fmt: skip


def write_csv(
    path: Path,
    summaries: list[RunSummary],
    published: list[PublishedMethod],
    levels: tuple[float, ...],
    mt50: Sequence[MT50Published] = (),
) -> Path:
    """One row per run of ours and per published method (RLBench-18, MT50); per-task success in
    ``success/<task>`` columns, Meta-World tiers in ``tier_<tier>`` / ``tier_average`` (with ``_ci_low`` /
    ``_ci_high`` for ours), each published row's reference in ``citation``."""
    ours = sorted({t for s in summaries for t in s.per_task})
    pub_tasks = (
        sorted({t for m in published for t in m.per_task})
        if set(ours) & {t for m in published for t in m.per_task}
        else []
    )
    tasks = sorted(set(ours) | set(pub_tasks))
    level_cols = [c for lv in levels for c in (f"h_to_{_level_name(lv)}", f"gpu_h_to_{_level_name(lv)}")]
    headers = ["source", "name", "policy_type", "suite", "run_id", "status", "steps", "demos_per_task",
               "mean_success", "success_ci_low", "success_ci_high", "best_success", "wall_clock_h", "num_gpus", "gpu_h", *level_cols, "peak_mem_gib", "samples_per_s",
               "conditions_per_s", "train_gpu_hours_published"]  # fmt: skip
    tier_cols = {n: n if n == "tier_average" else f"tier_{n}" for n in TIER_AVERAGES}
    headers += ["policies_trained", "eval_episodes_per_task", "inputs", "per_episode_success",
                "tier_average_within_500_steps"]  # fmt: skip
    headers += [c + suffix for c in tier_cols.values() for suffix in ("", "_ci_low", "_ci_high")]
    headers += ["citation", "note"] + [f"success/{t}" for t in tasks]
    rows = []
    for s in summaries:
        row = {"source": "ours", "name": s.run_name, "policy_type": s.policy_type, "suite": s.suite, "run_id": s.run_id,
               "status": s.status, "steps": s.steps, "demos_per_task": s.demos_per_task,
               "mean_success": s.final_success, "success_ci_low": s.success_ci[0] if s.success_ci else None,
               "success_ci_high": s.success_ci[1] if s.success_ci else None, "best_success": s.best_success,
               "wall_clock_h": None if s.wall_s is None else s.wall_s / 3600, "num_gpus": s.num_gpus,
               "gpu_h": s.gpu_hours, "peak_mem_gib": None if s.peak_mem_bytes is None else s.peak_mem_bytes / 2**30,
               "samples_per_s": s.samples_per_s, "conditions_per_s": s.conditions_per_s}  # fmt: skip
        for lv in levels:
            t = s.time_to_level[lv]
            row[f"h_to_{_level_name(lv)}"] = None if t is None else t / 3600
            row[f"gpu_h_to_{_level_name(lv)}"] = s.gpu_hours_to(lv)
        row.update({f"success/{t}": s.per_task.get(t) for t in tasks})
        row.update({"policies_trained": 1, "eval_episodes_per_task": s.eval_episodes_per_task, "inputs": OUR_INPUTS,
                    "per_episode_success": s.per_episode_success,
                    "tier_average_within_500_steps": s.tier_average_500})  # fmt: skip
        for name, col in tier_cols.items():
            ci = s.tier_ci.get(name)
            row.update({col: s.tier_success.get(name), f"{col}_ci_low": ci[0] if ci else None,
                        f"{col}_ci_high": ci[1] if ci else None})  # fmt: skip
        rows.append(row)
    for g in seed_groups(summaries):
        means = seed_mean_values(g)
        row = {"source": "ours (mean of seeds)", "name": _seed_label(g), "policy_type": g[0].policy_type,
               "suite": g[0].suite, "run_id": " ".join(s.run_id for s in g), "steps": g[0].steps,
               "demos_per_task": g[0].demos_per_task, "mean_success": means["final_success"],
               "policies_trained": 1, "eval_episodes_per_task": g[0].eval_episodes_per_task,
               "inputs": OUR_INPUTS, "per_episode_success": means["per_episode_success"],
               "tier_average_within_500_steps": means["tier_average_500"]}  # fmt: skip
        row.update({col: means[name] for name, col in tier_cols.items()})
        rows.append(row)
    for m in published:
        row = {"source": "published", "name": m.method, "suite": m.benchmark, "mean_success": m.avg_success,
               "train_gpu_hours_published": m.train_gpu_hours, "citation": m.source}  # fmt: skip
        row.update({f"success/{t}": m.per_task.get(t) for t in tasks})
        rows.append(row)
    for r in mt50:
        row = {"source": "published", "name": r.method, "suite": "mt50", "demos_per_task": r.demos_per_task,
               "mean_success": r.per_task_mean, "policies_trained": r.policies_trained,
               "eval_episodes_per_task": r.eval_episodes_per_task, "inputs": r.inputs,
               "tier_average": r.tier_average, "citation": r.source, "note": r.note}  # fmt: skip
        row.update({tier_cols[t]: v for t, v in r.tiers.items()})
        rows.append(row)
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=headers)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in headers})
    atomic_write_text(path, buf.getvalue())
    return path
