"""Figures logged as MLflow artifacts: loss curves and per-task success. matplotlib (Agg) is imported lazily."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_loss_curves(history: Sequence[Mapping[str, float]], path: Path | str) -> Path:
    """Plot every ``train/loss*`` series against ``step`` (log scale), and ``eval/success`` if present.

    ``history`` is a list of per-step dicts such as ``{"step": 100, "train/loss": 0.3, "eval/success": 0.4}``
    (``RunTracker.history()`` returns this shape). Returns the written PNG path.
    """
    if not history:
        raise ValueError(f"plot_loss_curves: empty history, nothing to plot into {path}")
    plt = pyplot()
    loss_keys = sorted({k for row in history for k in row if k.startswith("train/loss")})
    has_eval = any("eval/success" in row for row in history)
    fig, axes = plt.subplots(1, 2 if has_eval else 1, figsize=(11 if has_eval else 6, 4), squeeze=False)
    ax = axes[0][0]
    for key in loss_keys:
        pts = [(row["step"], row[key]) for row in history if key in row and row[key] == row[key]]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, label=key, linewidth=2.0 if key == "train/loss" else 1.0)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if loss_keys and all(row.get(k, 1.0) > 0 for row in history for k in loss_keys):
        ax.set_yscale("log")
    ax.set_title("training loss")
    ax.grid(True, alpha=0.3)
    if loss_keys:
        ax.legend(fontsize=8)
    if has_eval:
        ax2 = axes[0][1]
        pts = [(row["step"], row["eval/success"]) for row in history if "eval/success" in row]
        xs, ys = zip(*pts, strict=True)
        ax2.plot(xs, ys, marker="o")
        ax2.set_ylim(0, 1)
        ax2.set_xlabel("step")
        ax2.set_ylabel("mean success")
        ax2.set_title("evaluation")
        ax2.grid(True, alpha=0.3)
    return save_figure(fig, plt, path)


def plot_success_per_task(
    per_task: Mapping[str, float], path: Path | str, title: str = "success per task"
) -> Path:
    """Horizontal bar chart of success rates in 0..1 per task, with the mean as a dashed line."""
    if not per_task:
        raise ValueError(f"plot_success_per_task: no tasks to plot into {path}")
    plt = pyplot()
    tasks = sorted(per_task)
    values = [per_task[t] for t in tasks]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(tasks) + 1.5))
    ax.barh(tasks, values, color="tab:blue")
    mean = sum(values) / len(values)
    ax.axvline(mean, color="k", linestyle="--", linewidth=1, label=f"mean {mean:.1%}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("success rate")
    ax.set_title(title)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, plt, path)


def save_figure(fig: Any, plt: Any, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
