"""``python -m platform.compare``: our Mini-Diffuser runs vs our baselines vs published numbers.

1. Logs the published numbers (``platform/reference/``) as reference runs (``platform.kind=reference``),
   once: running the command again adds nothing.
2. Summarises our runs (``platform.kind`` train or sweep_trial, or the ``--runs`` given), grouped by
   ``platform.policy_type``: final / best ``eval/success``, per-task success, wall-clock and GPU-hours
   (elapsed hours x GPUs, 0 on CPU) to reach each ``--levels`` success, peak memory, throughput.
3. MT50 (``--suite mt50``, or no ``--suite``): our MT50 runs' success per Meta-World difficulty tier and
   tier average (``eval/success/<tier>``, ``eval/success/tier_average``) beside the published MT50 rows,
   each with demonstrations per task, policies trained, evaluation episodes and its source.
4. Prints the tables, writes ``comparison.md``, ``comparison.csv``, ``comparison_success.png`` (and
   ``success_vs_time.png`` when runs have timed evaluations) to ``--out``, and logs them as artifacts of
   the run ``comparison`` (``platform.kind=comparison``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from evaluation.files import atomic_write_text
from platform.compare.published import PublishedMethod, load_mt50, load_published, log_reference_runs
from platform.compare.report import (
    MAIN_POLICY,
    PLOTTED_PUBLISHED,
    per_task_columns,
    render_markdown,
    write_csv,
)
from platform.compare.runs import (
    RunSummary,
    best_per_policy_type,
    find_our_runs,
    find_quality_rows,
    summarize_run,
)
from platform.config import data_root
from platform.tracking import (
    BUFFER_ROOT,
    DEFAULT_EXPERIMENT,
    TAG_KIND,
    RunTracker,
    default_artifact_location,
    default_tracking_uri,
)
from platform.tracking.buffer import sanitize_key
from platform.tracking.upload import probe_http

if TYPE_CHECKING:  # type-only: MLflow's client is imported where it is used
    from mlflow.tracking import MlflowClient

COMPARISON_RUN = "comparison"
DEFAULT_LEVELS = (0.25, 0.5, 0.75)


class CompareError(RuntimeError):
    """MLflow cannot be read, or the arguments name runs that do not exist."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m platform.compare", description=__doc__.splitlines()[0])
    p.add_argument(
        "--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI, else sqlite:////<repo>/mlflow.db"
    )
    p.add_argument(
        "--experiment", default=DEFAULT_EXPERIMENT, help=f"MLflow experiment (default {DEFAULT_EXPERIMENT})"
    )
    p.add_argument("--runs", nargs="+", metavar="RUN_ID", default=None, help="compare these runs only")
    p.add_argument(
        "--suite",
        choices=("mt10", "mt50", "rlbench"),
        default=None,
        help="only our runs on this benchmark (tag platform.suite; runs without the tag are left out); "
        "default: all runs",
    )
    p.add_argument("--out", type=Path, default=data_root() / "runs" / "comparison", help="output folder")
    p.add_argument("--levels", nargs="+", type=float, default=list(DEFAULT_LEVELS),
                   help="success levels (0..1) for the time-to-level columns")  # fmt: skip
    p.add_argument("--no-log", action="store_true", help="write the files but log nothing to MLflow")
    return p


def _experiment_id(client: MlflowClient, name: str, uri: str, create: bool) -> str | None:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return (
        client.create_experiment(name, artifact_location=default_artifact_location(uri, name))
        if create
        else None
    )


def plot_success_bars(best: dict[str, RunSummary], published: list[PublishedMethod], path: Path) -> Path:
    """Grouped bars per task (+ mean): best run per policy type, and 3DDA's published numbers where the
    tasks match. Without runs of ours: the published averages."""
    from platform.tracking.plots import pyplot, save_figure

    plt = pyplot()
    tasks, shown = per_task_columns(best, published)
    series: list[tuple[str, dict[str, float | None]]] = []
    if best:
        for ptype, s in best.items():
            series.append((f"{ptype} ({s.run_name})", {**s.per_task, "mean": s.final_success}))
        for m in shown:
            if m.method == PLOTTED_PUBLISHED:
                series.append((f"{m.method} (published)", {**m.per_task, "mean": m.avg_success}))
        groups = [*tasks, "mean"]
    else:
        groups = [m.method for m in published]
        series.append(("published average", {m.method: m.avg_success for m in published}))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(groups) * max(1, len(series)) + 2), 4.5))
    for i, (label, values) in enumerate(series):
        xs = [g + i * width - 0.4 + width / 2 for g in range(len(groups))]
        ax.bar(xs, [values.get(g) or 0.0 for g in groups], width=width, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate")
    ax.set_title("success per task" if best else "published RLBench-18 averages")
    ax.legend(fontsize=7)
    return save_figure(fig, plt, path)


def plot_success_vs_time(summaries: list[RunSummary], path: Path) -> Path | None:
    """``eval/success`` against training wall-clock hours, one line per run; None if nothing is timed."""
    timed = [s for s in summaries if s.success_curve]
    if not timed:
        return None
    from platform.tracking.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in timed:
        xs, ys = zip(*s.success_curve, strict=True)
        style = "-" if s.policy_type == MAIN_POLICY else "--"
        ax.plot([x / 3600 for x in xs], ys, style, marker="o", label=f"{s.policy_type}: {s.run_name}")
    ax.set_xlabel("training wall-clock (h)")
    ax.set_ylabel("mean success")
    ax.set_ylim(0, 1)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, plt, path)


def run_compare(args: argparse.Namespace) -> tuple[str, list[Path]]:
    """Everything but printing. Returns the markdown report and the written files."""
    from mlflow.tracking import MlflowClient

    uri = args.tracking_uri or default_tracking_uri(data_root())
    levels = tuple(sorted(set(args.levels)))
    suite = args.suite  # None: every benchmark
    if any(not 0.0 < lv <= 1.0 for lv in levels):
        raise CompareError(f"--levels must be success fractions in (0, 1], got {list(levels)}")
    try:
        probe_http(uri)
        client = MlflowClient(tracking_uri=uri)
        exp_id = _experiment_id(client, args.experiment, uri, create=not args.no_log)
        if exp_id is not None and not args.no_log:
            log_reference_runs(client, exp_id)
        runs = find_our_runs(client, exp_id, args.runs)
        summaries = [summarize_run(client, run, levels) for run in runs]
        quality = find_quality_rows(client, exp_id)
        if suite:
            summaries = [s for s in summaries if s.suite == suite]
    except Exception as e:
        raise CompareError(f"cannot read MLflow at {uri} (experiment {args.experiment!r}): "
                           f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e  # fmt: skip
    published, mt50 = load_published(), load_mt50()
    best = best_per_policy_type(summaries)
    context = (f"Experiment `{args.experiment}` at `{uri}`, {len(summaries)} run(s) of ours, generated "
               f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}. Success in %; wall-clock = training time "
               f"(`time/elapsed_s`); GPU-h = wall-clock h x GPUs (0 on CPU); memory = max `train/peak_mem_bytes`; "
               f"throughput = median `train/samples_per_s` (noised actions) and `train/conditions_per_s`.")  # fmt: skip
    report = render_markdown(summaries, best, published, mt50, levels, context, quality, suite=suite)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "comparison.md", report)
    csv_mt50 = mt50 if suite in (None, "mt50") else []  # as the markdown: MT50 rows unless another benchmark
    files = [out / "comparison.md", write_csv(out / "comparison.csv", summaries, published, levels, csv_mt50),
             plot_success_bars(best, published, out / "comparison_success.png")]  # fmt: skip
    curve = plot_success_vs_time(summaries, out / "success_vs_time.png")
    files += [curve] if curve else []
    if not args.no_log:
        _log_comparison(uri, args.experiment, out, files, summaries)
    return report, files


def _log_comparison(
    uri: str, experiment: str, out: Path, files: list[Path], summaries: list[RunSummary]
) -> None:
    buffer_dir = out / f".{BUFFER_ROOT}" / sanitize_key(experiment).replace("/", "_")
    tracker = RunTracker.open(uri, experiment, COMPARISON_RUN, buffer_dir, tags={TAG_KIND: "comparison"})
    tracker.set_tags({"platform.compared_runs": " ".join(s.run_id for s in summaries)[:8000] or "none"})
    for path in files:
        tracker.log_artifact(path)
    tracker.close("FINISHED")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report, files = run_compare(args)
    except CompareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report)
    print("wrote " + ", ".join(str(p) for p in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
