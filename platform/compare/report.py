"""Tables (markdown, CSV) and figures of ``python -m platform.compare``."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from platform.compare.published import PublishedMethod
from platform.compare.runs import QualityRow, RunSummary

MAIN_POLICY = "mini_diffuser"
PLOTTED_PUBLISHED = "diffuser_actor_3dda"
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


def metaworld_table(metaworld: dict[str, dict[str, float]]) -> str:
    levels = sorted(
        {lv for v in metaworld.values() for lv in v}, key=["easy", "medium", "hard", "very_hard"].index
    )
    return md_table(
        ["method"] + levels, [[m] + [_pct(v.get(lv)) for lv in levels] for m, v in metaworld.items()]
    )


def quality_table(rows: list[QualityRow]) -> str:
    """``platform.quality`` sweeps: training time each M needs to reach M = 1's final success."""
    body = [[r.sweep, str(r.m), _num(r.time_to_target_s, ".0f"), _num(r.ratio_to_m1, ".3f")] for r in rows]
    return md_table(["sweep", "M", "training s to M = 1's final success", "ratio to M = 1"], body)


def render_markdown(
    summaries: list[RunSummary],
    best: dict[str, RunSummary],
    published: list[PublishedMethod],
    metaworld: dict[str, dict[str, float]],
    levels: tuple[float, ...],
    context: str,
    quality: list[QualityRow] | None = None,
) -> str:
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
    parts += ["## Published RLBench-18 (reference runs `published/rlbench18/*` in MLflow)", "",
              published_table(published), "",
              "## Published Meta-World, DP3 paper (success % per difficulty; context only)", "",
              metaworld_table(metaworld), ""]  # fmt: skip
    return "\n".join(parts)


def no_runs_message(context: str) -> str:
    return ("No runs of ours yet (MLflow runs tagged `platform.kind` = `train` or `sweep_trial`). "
            "Train one with `python -m platform.train` (or sweep with `python -m platform.sweep`), then run "
            "`python -m platform.compare` again. Only the published numbers are shown.")  # fmt: skip


def write_csv(
    path: Path, summaries: list[RunSummary], published: list[PublishedMethod], levels: tuple[float, ...]
) -> Path:
    """One row per run of ours and per published method; per-task success in ``success/<task>`` columns."""
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
               "conditions_per_s", "train_gpu_hours_published"] + [f"success/{t}" for t in tasks]  # fmt: skip
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
        rows.append(row)
    for m in published:
        row = {"source": "published", "name": m.method, "suite": m.benchmark, "mean_success": m.avg_success,
               "train_gpu_hours_published": m.train_gpu_hours}  # fmt: skip
        row.update({f"success/{t}": m.per_task.get(t) for t in tasks})
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=headers)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in headers})
    return path
