"""``python -m platform.quality``: time to quality, the paper's claim, measured.

    python -m platform.quality --ms 1,4,16,64 --budget-s 1800 --marks 7 --name ttq
    python -m platform.quality --name ttq --report-only      # tables and figure from what is there

1. A Ray Tune grid over ``policy.m`` (M = 1 is one-to-one training) at equal training time: every trial
   trains for ``--budget-s`` seconds of training steps (validation and checkpointing excluded) and keeps a
   validated checkpoint at each of ``--marks`` training-time marks, geometrically spaced up to the budget
   (``train.time_marks_s``, ``platform.train.marks``). The learning rate is constant after warm-up (the
   schedule cannot know how many steps fit in the budget).
2. After the trials (so the simulator never takes the training's CPU on a small machine), every kept
   checkpoint is evaluated in the simulator on the test variations; reports are cached beside the
   checkpoints, so a rerun with the same ``--name`` (also after an interruption) resumes both the trials and
   the evaluations.
3. One figure (success and validation error against training time, one line per M), a table (the training
   time each M needs to reach the final success of M = 1, and its ratio to M = 1's), JSON and CSV under
   ``runs/<name>/quality/``, all logged to the sweep's parent MLflow run.
"""

from __future__ import annotations

import sys

if not __package__:
    sys.stderr.write("error: run this as a module from the repository root: python -m platform.quality\n")
    raise SystemExit(2)

# Ray Tune, the training stage and MLflow are imported in the functions that use them, not here: `--help`
# and a bad override answer at once instead of after torch and Ray load (as in platform/train/command.py).
import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from evaluation.files import atomic_write_json, atomic_write_text
from platform.cli import UserFacingError, add_config_arguments, run_cli
from platform.config import ExperimentConfig, load_config
from platform.train.marks import read_marks

REPORT_FILE = "eval_report.json"  # beside a kept mark checkpoint
OUT_DIR = "quality"


def geometric_marks(budget_s: float, count: int) -> tuple[float, ...]:
    """``count`` marks ending at ``budget_s``, each half the next: fine resolution where ratios are read."""
    if budget_s <= 0 or count < 1:
        raise UserFacingError(f"--budget-s must be > 0 and --marks >= 1 (got {budget_s}, {count})")
    return tuple(round(budget_s / 2 ** (count - 1 - k), 3) for k in range(count))


def marks_per_m(
    ms: list[int], marks: tuple[float, ...], others_budget_s: float | None
) -> dict[int, tuple[float, ...]]:
    """Each trial's marks: M = 1 (the reference) keeps all of them; with ``others_budget_s`` the other trials
    stop at the last mark within it (the same time axis, so their points line up with M = 1's). The figure
    they exist for is the time each needs to reach M = 1's final success, so they need not train longer."""
    if others_budget_s is None:
        return {m: marks for m in ms}
    if others_budget_s <= 0 or others_budget_s > marks[-1] + 1e-9:
        raise UserFacingError(
            f"--others-budget-s must be in (0, --budget-s = {marks[-1]:g}], got {others_budget_s:g}"
        )
    short = tuple(t for t in marks if t <= others_budget_s + 1e-9)
    if not short:
        raise UserFacingError(
            f"--others-budget-s {others_budget_s:g} is below the first mark ({marks[0]:g} s): "
            "raise it or use more --marks"
        )
    return {m: marks if m == 1 else short for m in ms}


@dataclass(frozen=True)
class Point:
    """One kept checkpoint of one trial: where it is on the time axis and how good it is."""

    m: int
    mark: int
    train_time_s: float
    step: int
    success: float | None
    success_ci: tuple[float, float] | None
    episodes: int
    val_pos_err_cm: float | None
    val_within_2cm: float | None
    checkpoint: str


@dataclass(frozen=True)
class TimeToQuality:
    """Training time each M needs to reach M = 1's final success (None: not reached within the budget)."""

    m: int
    final_success: float | None
    time_to_target_s: float | None
    ratio_to_m1: float | None


def trial_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in (sweep_dir / "trials").glob("*") if p.is_dir())


def collect_points(sweep_dir: Path) -> list[Point]:
    """Every kept mark of every trial with its evaluation report (when evaluated)."""
    from evaluation.runtime.metrics import EvalReport

    points = []
    for trial in trial_dirs(sweep_dir):
        for rec in read_marks(trial):
            ckpt = trial / rec.checkpoint
            m = int(load_config(ckpt / "experiment.yaml").policy.m)
            report = None
            if (ckpt / REPORT_FILE).is_file():
                report = EvalReport.from_json((ckpt / REPORT_FILE).read_text())
            points.append(
                Point(
                    m=m,
                    mark=rec.index,
                    train_time_s=rec.train_time_s,
                    step=rec.step,
                    success=None if report is None else report.mean_success,
                    success_ci=None if report is None else report.mean_ci,
                    episodes=0 if report is None else report.episodes,
                    val_pos_err_cm=rec.val.get("val/pos_err_cm"),
                    val_within_2cm=rec.val.get("val/within_2cm"),
                    checkpoint=str(ckpt),
                )
            )
    return sorted(points, key=lambda p: (p.m, p.train_time_s))


def time_to_quality(points: list[Point], metric: str = "success") -> tuple[float | None, list[TimeToQuality]]:
    """(M = 1's final value, per-M rows). A row's time is the training time of its first mark whose
    ``metric`` reaches M = 1's final value (``success``: at least it; ``val_pos_err_cm``: at most it); the
    ratio divides it by M = 1's own such time. The rows' ``final_success`` holds the metric's final value."""
    higher_is_better = metric == "success"
    by_m: dict[int, list[Point]] = {}
    for p in points:
        if getattr(p, metric) is not None:
            by_m.setdefault(p.m, []).append(p)
    if 1 not in by_m:
        return None, [
            TimeToQuality(m, getattr(curve[-1], metric), None, None) for m, curve in sorted(by_m.items())
        ]
    target = getattr(by_m[1][-1], metric)
    assert target is not None

    def reached(value: float) -> bool:
        return value >= target - 1e-9 if higher_is_better else value <= target + 1e-9

    def first_reaching(curve: list[Point]) -> float | None:
        return next((p.train_time_s for p in curve if reached(getattr(p, metric))), None)

    base = first_reaching(by_m[1])
    rows = []
    for m, curve in sorted(by_m.items()):
        t = first_reaching(curve)
        ratio = None if t is None or not base else t / base
        rows.append(TimeToQuality(m, getattr(curve[-1], metric), t, ratio))
    return target, rows


def evaluate_marks(cfg: ExperimentConfig, sweep_dir: Path) -> None:
    """Evaluate every kept mark checkpoint that has no report yet (with ``cfg.eval``), caching each report."""
    from platform.evaluate import eval_request

    todo = [p for p in collect_points(sweep_dir) if p.success is None]
    for i, p in enumerate(todo, 1):
        ckpt = Path(p.checkpoint)
        print(
            f"[quality] evaluating {i}/{len(todo)}: M={p.m} mark {p.mark} ({p.train_time_s:.0f} s of training, "
            f"step {p.step}) with {cfg.eval.actors} actors, {cfg.eval.episodes_per_task} episodes per task",
            flush=True,
        )
        report = eval_request(cfg, ckpt).run(ckpt)
        atomic_write_text(ckpt / REPORT_FILE, report.to_json())
        print(
            f"[quality]   success {100 * report.mean_success:.1f}% over {report.episodes} episodes",
            flush=True,
        )


def table_markdown(
    target: float | None,
    rows: list[TimeToQuality],
    val_target: float | None = None,
    val_rows: list[TimeToQuality] | None = None,
) -> str:
    fmt = lambda v, f: "–" if v is None else f.format(v)  # noqa: E731
    lines = [
        f"Target: M = 1's final success, {fmt(None if target is None else 100 * target, '{:.1f} %')}",
        "",
        "| M | final success % | training time to target s | ratio to M = 1 |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.m} | {fmt(None if r.final_success is None else 100 * r.final_success, '{:.1f}')} | "
            f"{fmt(r.time_to_target_s, '{:.0f}')} | {fmt(r.ratio_to_m1, '{:.3f}')} |"
        )
    if val_rows:
        lines += [
            "",
            f"Target: M = 1's final validation position error, {fmt(val_target, '{:.2f} cm')}",
            "",
            "| M | final validation error cm | training time to target s | ratio to M = 1 |",
            "|---|---|---|---|",
        ]
        for r in val_rows:
            lines.append(
                f"| {r.m} | {fmt(r.final_success, '{:.2f}')} | {fmt(r.time_to_target_s, '{:.0f}')} | "
                f"{fmt(r.ratio_to_m1, '{:.3f}')} |"
            )
    return "\n".join(lines)


def plot(points: list[Point], path: Path) -> Path:
    """Success (with its 95 % interval) and validation position error against training time, one line per M."""
    from platform.tracking.plots import pyplot, save_figure

    plt = pyplot()
    fig, (ax_s, ax_v) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m in sorted({p.m for p in points}):
        curve = [p for p in points if p.m == m]
        evald = [p for p in curve if p.success is not None]
        if evald:
            t = [p.train_time_s for p in evald]
            (line,) = ax_s.plot(t, [100 * p.success for p in evald], marker="o", label=f"M = {m}")
            ax_s.fill_between(
                t,
                [100 * p.success_ci[0] for p in evald],
                [100 * p.success_ci[1] for p in evald],
                color=line.get_color(),
                alpha=0.12,
            )
        vals = [p for p in curve if p.val_pos_err_cm is not None]
        if vals:
            ax_v.plot(
                [p.train_time_s for p in vals], [p.val_pos_err_cm for p in vals], marker="o", label=f"M = {m}"
            )
    for ax, ylabel in ((ax_s, "mean success % (test variations)"), (ax_v, "validation position error, cm")):
        ax.set_xscale("log")
        ax.set_xlabel("training time, s (log)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Time to quality: two-level mini-batches (M > 1) vs one-to-one (M = 1)")
    return save_figure(fig, plt, path)


def write_outputs(sweep_dir: Path, points: list[Point]) -> tuple[Path, str]:
    target, rows = time_to_quality(points)
    val_target, val_rows = time_to_quality(points, "val_pos_err_cm")
    out = sweep_dir / OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "points.json", [asdict(p) for p in points])
    atomic_write_json(
        out / "time_to_quality.json",
        {
            "target": target,
            "rows": [asdict(r) for r in rows],
            "val_target_cm": val_target,
            "val_rows": [asdict(r) for r in val_rows],
        },
    )
    lines = ["m,mark,train_time_s,step,success,ci_low,ci_high,episodes,val_pos_err_cm,val_within_2cm"]
    for p in points:
        lo, hi = p.success_ci or (math.nan, math.nan)
        lines.append(
            f"{p.m},{p.mark},{p.train_time_s:.2f},{p.step},{p.success},{lo},{hi},{p.episodes},"
            f"{p.val_pos_err_cm},{p.val_within_2cm}"
        )
    atomic_write_text(out / "points.csv", "\n".join(lines) + "\n")
    text = table_markdown(target, rows, val_target, val_rows)
    atomic_write_text(out / "time_to_quality.md", text + "\n")
    if points:
        plot(points, out / "time_to_quality.png")
    return out, text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m platform.quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ms", default="1,4,16,64", help="values of policy.m, one trial each (1 = one-to-one)")
    p.add_argument("--budget-s", type=float, default=1800.0, help="training time of every trial, seconds")
    p.add_argument(
        "--marks", type=int, default=7, help="checkpoints kept per trial, geometric up to the budget"
    )
    p.add_argument(
        "--others-budget-s",
        type=float,
        default=None,
        help="training time of the M > 1 trials (default: --budget-s); they keep the marks within it. "
        "M = 1 needs the long budget to reach a meaningful success, the others only need to reach it",
    )
    p.add_argument("--name", help="sweep name (default: <config name>-quality); the same name resumes")
    p.add_argument(
        "--max-concurrent",
        type=int,
        default=1,
        help="trials training at once (on a small CPU machine, with train.cpu_threads=1 each)",
    )
    p.add_argument(
        "--report-only", action="store_true", help="no training or evaluation: tables and figure only"
    )
    add_config_arguments(p)
    return p


def main(args: argparse.Namespace, cfg: ExperimentConfig) -> int:
    try:
        ms = sorted({int(x) for x in args.ms.split(",") if x.strip()})
    except ValueError:
        raise UserFacingError(f"--ms {args.ms!r}: give integers, e.g. 1,4,16,64") from None
    if not ms or min(ms) < 1:
        raise UserFacingError(f"--ms {args.ms!r}: every M must be >= 1")
    cfg = cfg.with_absolute_paths()
    sweep = args.name or f"{cfg.name}-quality"
    from platform.train.preflight import check_tracking

    check_tracking(cfg)  # an impossible tracking URI fails now, not after the trials
    sweep_dir = cfg.resolve_path(cfg.output_dir) / sweep
    if not args.report_only:
        if args.max_concurrent < 1:
            raise UserFacingError(f"--max-concurrent must be >= 1, got {args.max_concurrent}")
        marks = marks_per_m(ms, geometric_marks(args.budget_s, args.marks), args.others_budget_s)
        _train_and_evaluate(cfg, sweep, sweep_dir, marks, args.max_concurrent)
    points = collect_points(sweep_dir)
    if not points:
        raise UserFacingError(
            f"no kept checkpoints under {sweep_dir / 'trials'}: run without --report-only first"
        )
    out, text = write_outputs(sweep_dir, points)
    print(text)
    print(f"[quality] figure, table and points in {out}", flush=True)
    _log_to_parent(cfg, sweep, sweep_dir, out)
    return 0


def _train_and_evaluate(
    cfg: ExperimentConfig,
    sweep: str,
    sweep_dir: Path,
    marks: dict[int, tuple[float, ...]],
    max_concurrent: int = 1,
) -> None:
    from ray import tune

    from platform.session import connect_ray
    from platform.sweep import _end_unfinished_trial_runs, _parent_run, ranking_metric, run_tuner, trial_meta
    from platform.train.dataset import ensure_dataset

    trial_cfg = cfg.model_copy(
        update={
            "train": cfg.train.model_copy(
                update={"time_marks_s": (), "steps": 10_000_000, "time_budget_s": None, "min_lr_ratio": 1.0}
            ),
            "eval": cfg.eval.model_copy(update={"every_steps": 0}),
        }
    )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    ensure_dataset(cfg)
    connect_ray(cfg)
    ms = sorted(marks)
    params = argparse.Namespace(param=[f"policy.m={','.join(map(str, ms))}"], search="grid", scheduler="none")
    parent = _parent_run(trial_cfg, sweep, sweep_dir, params)
    for m, ts in marks.items():
        print(f"[quality] M = {m}: {ts[-1]:g} s of training, marks at {[round(t) for t in ts]} s", flush=True)
    # One grid variant per M; its marks follow from its M (a dict lookup Tune resolves per variant).
    space = {
        "policy.m": tune.grid_search(ms),
        "train.time_marks_s": tune.sample_from(lambda spec: list(marks[spec.config["policy.m"]])),
    }
    results = run_tuner(
        trial_meta(trial_cfg, sweep, sweep_dir, parent),
        space,
        ranking_metric(trial_cfg),
        max_concurrent=max_concurrent,
    )
    if parent is not None:
        _end_unfinished_trial_runs(parent.tracking_uri, cfg.tracking.experiment, sweep)
        parent.close("FINISHED")
    if results.errors:
        print(f"[quality] {len(results.errors)} trial(s) failed; evaluating what they kept", flush=True)
    if cfg.eval.enabled:
        evaluate_marks(cfg, sweep_dir)


def _log_to_parent(cfg: ExperimentConfig, sweep: str, sweep_dir: Path, out: Path) -> None:
    if not cfg.tracking.enabled:
        return
    from platform.config import data_root
    from platform.tracking import BUFFER_ROOT, TAG_KIND, TAG_QUALITY, RunTracker, resolve_tracking_uri

    uri = resolve_tracking_uri(cfg.tracking.uri, data_root())
    run = RunTracker.open(
        uri,
        cfg.tracking.experiment,
        sweep,
        buffer_dir=sweep_dir / BUFFER_ROOT,
        tags={TAG_KIND: "sweep_parent", TAG_QUALITY: "true"},
    )
    for path in sorted(out.iterdir()):
        run.log_artifact(path, artifact_path=OUT_DIR)
    data = json.loads((out / "time_to_quality.json").read_text())
    metrics = {
        f"quality/m{r['m']}/time_to_target_s": r["time_to_target_s"]
        for r in data["rows"]
        if r["time_to_target_s"] is not None
    }
    metrics.update(
        {
            f"quality/m{r['m']}/ratio_to_m1": r["ratio_to_m1"]
            for r in data["rows"]
            if r["ratio_to_m1"] is not None
        }
    )
    metrics.update(
        {
            f"quality/m{r['m']}/val_ratio_to_m1": r["ratio_to_m1"]
            for r in data["val_rows"]
            if r["ratio_to_m1"] is not None
        }
    )
    if metrics:
        run.log_metrics(metrics, step=0)
    run.close("FINISHED")
    print(f"[quality] logged to the MLflow run '{sweep}' ({uri})", flush=True)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
