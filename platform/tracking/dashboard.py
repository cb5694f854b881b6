"""What the MLflow dashboard opens on: a model-training experiment with the platform's columns, and page URLs.

MLflow 3's UI shows an experiment as a GenAI project (traces, token usage) unless told otherwise. Two
experiment tags, set whenever the platform opens an experiment, make it a training dashboard:

- ``mlflow.experimentKind = custom_model_development``: the UI's model-training view (runs table, charts);
- ``mlflow.sharedViewState.platform``: a saved runs-table view (the state the UI's "Share" button stores)
  whose columns are what a researcher compares first: mean success and its interval, the per-episode
  success, on Meta-World the tier average with its interval and each tier's success (empty for runs of
  other benchmarks; each tier's interval is in the run's metrics), validation error, samples/s, the training
  loss, policy type, M, demonstrations per task. The printed URLs open it with
  ``viewStateShareKey=platform`` (and ``workflowType=machine_learning``, the UI's own switch for the
  same view). The charts page needs no setup: MLflow draws one chart per logged metric, grouped by prefix
  (``train/``, ``val/``, ``eval/``), against step or, from the chart controls, wall-clock time.

Checked against MLflow 3.17's UI with headless Chromium (docs/dashboard_*.png; README "Dashboard").
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from evaluation.metaworld_tiers import TIERS
from platform.tracking.tags import TAG_KIND

if TYPE_CHECKING:  # type-only: MLflow's client is imported where it is used
    from mlflow.tracking import MlflowClient

_log = logging.getLogger(__name__)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
VIEW_KEY = "platform"
VIEW_TAG = "mlflow.sharedViewState." + VIEW_KEY
DEFAULT_UI = "http://127.0.0.1:5000"  # `make mlflow-ui`

# Columns of the runs table, as the UI names them (kind.`key`).
# Success and its averages first (names from evaluation.runtime.metrics.EvalReport.mlflow_metrics).
METRIC_COLUMNS = (
    "eval/success",
    "eval/success_ci_low",
    "eval/success_ci_high",
    "eval/success/per_episode",
    "eval/success/tier_average",
    "eval/success/tier_average_ci_low",
    "eval/success/tier_average_ci_high",
    *(f"eval/success/{tier}" for tier in TIERS),
    "val/pos_err_cm",
    "train/samples_per_s",
    "train/loss",
)
PARAM_COLUMNS = ("policy.type", "policy.m", "data.episodes_per_task", "train.steps")
TAG_COLUMNS = (TAG_KIND,)


def column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"


def default_view_state() -> dict[str, Any]:
    """The runs-table view stored under :data:`VIEW_TAG`: newest runs first, every run shown, our columns."""
    columns = (
        [column("attributes", "Duration")]
        + [column("metrics", k) for k in METRIC_COLUMNS]
        + [column("params", k) for k in PARAM_COLUMNS]
        + [column("tags", k) for k in TAG_COLUMNS]
    )
    return {
        "searchFilter": "",
        "orderByKey": column("attributes", "start_time"),
        "orderByAsc": False,
        "selectedColumns": columns,
        "runsHiddenMode": "SHOW_ALL",
        "hideEmptyCharts": True,
        "globalLineChartConfig": {"xAxisKey": "step", "lineSmoothness": 0, "selectedXAxisMetricKey": ""},
    }


def experiment_tags() -> dict[str, str]:
    return {
        EXPERIMENT_KIND_TAG: TRAINING_KIND,
        VIEW_TAG: json.dumps(default_view_state(), separators=(",", ":")),
    }


def ensure_experiment_view(client: MlflowClient, experiment_id: str) -> None:
    """Set the dashboard tags on an experiment where they differ (idempotent; a failure only warns: the data
    matters, the view does not). A user who changed the kind in the UI keeps their choice."""
    try:
        have = client.get_experiment(experiment_id).tags
        for key, value in experiment_tags().items():
            if key == EXPERIMENT_KIND_TAG and have.get(key):
                continue
            if have.get(key) != value:
                client.set_experiment_tag(experiment_id, key, value)
    except Exception as exc:  # noqa: BLE001 - an old server or a read-only store: the runs still log
        _log.warning("could not set the dashboard view on MLflow experiment %s: %s", experiment_id, exc)


def ui_base(tracking_uri: str | None) -> str:
    """The dashboard's address: the tracking server itself when it is one, else ``make mlflow-ui``'s."""
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return DEFAULT_UI


def _query() -> str:
    return urlencode({"workflowType": "machine_learning", "viewStateShareKey": VIEW_KEY})


def experiment_url(tracking_uri: str | None, experiment_id: str) -> str:
    return f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs?{_query()}"


def run_url(tracking_uri: str | None, experiment_id: str, run_id: str) -> str:
    return (
        f"{ui_base(tracking_uri)}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
    )


def ui_command(tracking_uri: str | None) -> str:
    """How to start the dashboard for a local store (nothing to start for a tracking server)."""
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        return ""
    return f"make mlflow-ui (or: mlflow ui --backend-store-uri {tracking_uri})"
