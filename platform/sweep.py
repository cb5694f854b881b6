"""``python -m platform.sweep``: Ray Tune sweeps over the actions-per-condition ratio M or any config key.

    python -m platform.sweep --param policy.m=1,4,16,64 train.time_budget_s=300          # grid, equal compute
    python -m platform.sweep --param policy.m=4,16,64 --param "train.lr=loguniform(1e-4,1e-3)" \\
        --search random --num-samples 6 --scheduler asha
    python -m platform.sweep --name m-sweep ...     # rerun after the driver died: resumes, finished trials kept

Each trial is a Tune function trainable that builds a ``TorchTrainer`` (Ray Train V2 pattern, docs/design.md
section 4) running the same ``train_loop_per_worker`` as ``platform.train``, with its own run directory under
``runs/<sweep>/trials/<trial id>`` and its own MLflow run (a child of the sweep's parent run). Give every
trial the same ``train.time_budget_s`` to compare values of M at equal compute.
"""

from __future__ import annotations

import sys

if not __package__:
    sys.stderr.write("error: run this as a module from the repository root: python -m platform.sweep\n")
    raise SystemExit(2)

# Ray Tune, the training stage and MLflow are imported in the functions that use them, not here: `--help`
# and a bad override answer at once instead of after torch and Ray load (as in platform/train/command.py).
import argparse
import math
import re
from pathlib import Path
from typing import Any

from platform.cli import UserFacingError, add_config_arguments, run_cli
from platform.config import ConfigError, ExperimentConfig, parse_override, set_dotted

_DIST = re.compile(r"^(uniform|loguniform|randint|choice)\((.*)\)$")
VAL_METRIC = (
    "val_pos_err_cm"  # validation keypose position error (platform.train.validation), reported by trials
)
LOSS_METRIC = "train_loss"


def ranking_metric(cfg: ExperimentConfig) -> str:
    """Trials are ranked (and ASHA stops them) by the validation position error, or by the training loss
    when there is no validation (``train.val_every=0``, ``data.val_episodes_per_task=0``, or a dataset with
    no episode beyond the training ones). Call it once the dataset exists."""
    from platform.train.dataset import has_validation

    return VAL_METRIC if has_validation(cfg) else LOSS_METRIC


def parse_param(text: str, search: str) -> tuple[str, Any, list[Any]]:
    """``"policy.m=1,4,16"`` -> (key, tune domain, candidate values to validate)."""
    from ray import tune

    key, value = parse_override(text)
    raw = text.partition("=")[2].strip()
    m = _DIST.match(raw)
    if m:
        kind, args = (
            m.group(1),
            [parse_override(f"x={a.strip()}")[1] for a in m.group(2).split(",") if a.strip()],
        )
        if kind == "choice":
            return key, tune.choice(args), args
        if len(args) != 2 or not all(isinstance(a, int | float) for a in args) or args[0] >= args[1]:
            raise ConfigError(f"--param {text!r}: {kind}(low, high) needs two numbers with low < high")
        if kind == "loguniform" and args[0] <= 0:
            raise ConfigError(f"--param {text!r}: loguniform needs low > 0")
        dom = {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[kind](*args)
        return key, dom, [args[0], args[1] if kind != "randint" else args[1] - 1]
    values = (
        value if isinstance(value, list) else [parse_override(f"x={v.strip()}")[1] for v in raw.split(",")]
    )
    if not values or raw == "":
        raise ConfigError(f"--param {text!r}: give values, e.g. policy.m=1,4,16")
    return key, (tune.grid_search(values) if search == "grid" else tune.choice(values)), values


def trial_config(base: dict[str, Any], overrides: dict[str, Any]) -> ExperimentConfig:
    raw = base
    for key, value in overrides.items():
        raw = set_dotted(raw, key, value)
    try:
        return ExperimentConfig.model_validate(raw)
    except Exception as exc:
        raise ConfigError(f"trial overrides {overrides}: {exc}") from None


def _trial(tune_cfg: dict[str, Any], meta: dict[str, Any]) -> None:
    """The Tune function trainable: one Ray Train run per trial (``meta``: the sweep's fixed settings)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from platform.tracking import TAG_KIND, TAG_POLICY_TYPE, TAG_SUITE, TAG_SWEEP
    from platform.train.launch import build_trainer
    from platform.train.worker import WorkerPayload

    overrides = dict(tune_cfg)
    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(meta["base"], {**overrides, "name": f"{meta['sweep']}-{trial_id}"})
    run_dir = Path(meta["sweep_dir"]) / "trials" / trial_id
    run_dir.mkdir(parents=True, exist_ok=True)
    tags = {
        TAG_KIND: "sweep_trial",
        TAG_POLICY_TYPE: cfg.policy.type,
        TAG_SUITE: cfg.data.suite,
        TAG_SWEEP: meta["sweep"],
        **({"mlflow.parentRunId": meta["parent_run_id"]} if meta.get("parent_run_id") else {}),
    }
    payload = WorkerPayload.for_run(
        cfg,
        run_dir,
        meta["tracking_uri"],
        tags,
        close_run=True,
        params={f"sweep.{k}": str(v) for k, v in overrides.items()},
    )
    build_trainer(cfg, payload, bool(meta["use_gpu"]), callbacks=[TuneReportCallback()]).fit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m platform.sweep",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=SPEC",
        required=True,
        help="swept key: values a,b,c (grid or choice) or uniform(lo,hi) / loguniform(lo,hi) / "
        "randint(lo,hi) / choice(a,b); repeatable",
    )
    p.add_argument("--search", choices=["grid", "random"], default="grid")
    p.add_argument("--num-samples", type=int, default=1, help="random: trials; grid: repeats of the grid")
    p.add_argument(
        "--scheduler",
        choices=["none", "asha"],
        default="none",
        help="asha stops poor trials early on train loss (grace period: a quarter of the steps)",
    )
    p.add_argument("--max-concurrent", type=int, default=1, help="trials running at once (default 1)")
    p.add_argument("--name", help="sweep name (default: <config name>-sweep); the same name resumes")
    add_config_arguments(p)
    return p


def main(args: argparse.Namespace, cfg: ExperimentConfig) -> int:
    from ray import tune

    from platform.session import connect_ray
    from platform.train.dataset import ensure_dataset

    if args.num_samples < 1 or args.max_concurrent < 1:
        raise UserFacingError("--num-samples and --max-concurrent must be >= 1")
    space, candidates = {}, {}
    for text in args.param:
        key, domain, values = parse_param(text, args.search)
        space[key], candidates[key] = domain, values
    cfg = cfg.with_absolute_paths()
    base = cfg.model_dump(mode="json")
    from platform.train.preflight import check_tracking

    check_tracking(cfg)  # an impossible tracking URI fails now, not after the trials
    for key, values in candidates.items():  # fail before launching anything
        for v in values:
            trial_config(base, {key: v})
    sweep = args.name or f"{cfg.name}-sweep"
    sweep_dir = cfg.resolve_path(cfg.output_dir) / sweep
    sweep_dir.mkdir(parents=True, exist_ok=True)
    ensure_dataset(cfg)
    connect_ray(cfg)
    parent = _parent_run(cfg, sweep, sweep_dir, args)
    meta = trial_meta(cfg, sweep, sweep_dir, parent)
    metric = ranking_metric(cfg)
    scheduler = None
    if args.scheduler == "asha":
        scheduler = tune.schedulers.ASHAScheduler(
            time_attr="step", max_t=cfg.train.steps * 10, grace_period=max(1, cfg.train.steps // 4)
        )
    results = run_tuner(meta, space, metric, scheduler, args.num_samples, args.max_concurrent)
    print(_summary(results, list(candidates), metric))
    if parent is not None:
        _end_unfinished_trial_runs(parent.tracking_uri, cfg.tracking.experiment, sweep)
        parent.close("FINISHED")
    return 0 if not results.errors else 1


def trial_meta(cfg: ExperimentConfig, sweep: str, sweep_dir: Path, parent: Any) -> dict[str, Any]:
    """The fixed settings every trial of sweep ``sweep`` gets (``cfg``: absolute paths; Ray connected)."""
    import ray

    use_gpu = cfg.ray.use_gpu if cfg.ray.use_gpu is not None else ray.cluster_resources().get("GPU", 0) > 0
    return {
        "base": cfg.model_dump(mode="json"),
        "sweep": sweep,
        "sweep_dir": str(sweep_dir),
        "use_gpu": use_gpu,
        "tracking_uri": parent.tracking_uri if parent else None,
        "parent_run_id": parent.run_id if parent else None,
    }


def run_tuner(
    meta: dict[str, Any],
    space: dict[str, Any],
    metric: str,
    scheduler: Any = None,
    num_samples: int = 1,
    max_concurrent: int = 1,
) -> Any:
    """Run (or resume, when the sweep's Tune state exists) the trials of ``space``; returns Tune's results."""
    from ray import tune

    sweep = meta["sweep"]
    from platform.session import on_head

    # The trial's driver writes the run directory its train workers use: on the head with them.
    head = on_head(ExperimentConfig.model_validate(meta["base"]))
    trainable = tune.with_resources(
        tune.with_parameters(_trial, meta=meta), tune.PlacementGroupFactory([{"CPU": 0.05, **head}])
    )
    storage = str(Path(meta["sweep_dir"]) / "tune")
    path = str(Path(storage) / sweep)
    if tune.Tuner.can_restore(path):
        print(f"[sweep] resuming {sweep} from {path} (finished trials are kept)", flush=True)
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric=metric,
                mode="min",
                num_samples=num_samples,
                scheduler=scheduler,
                max_concurrent_trials=max_concurrent,
            ),
            run_config=tune.RunConfig(name=sweep, storage_path=storage, verbose=1),
        )
    return tuner.fit()


def _parent_run(cfg: ExperimentConfig, sweep: str, sweep_dir: Path, args: argparse.Namespace) -> Any:
    if not cfg.tracking.enabled:
        return None
    from platform.config import data_root
    from platform.tracking import (
        BUFFER_ROOT,
        TAG_KIND,
        TAG_POLICY_TYPE,
        RunTracker,
        flatten_config,
        resolve_tracking_uri,
    )

    uri = resolve_tracking_uri(cfg.tracking.uri, data_root())
    parent = RunTracker.open(
        uri,
        cfg.tracking.experiment,
        sweep,
        buffer_dir=sweep_dir / BUFFER_ROOT,
        tags={TAG_KIND: "sweep_parent", TAG_POLICY_TYPE: cfg.policy.type},
    )
    parent.log_params(
        {
            **flatten_config(cfg.model_dump(mode="json")),
            "sweep.params": " ".join(args.param),
            "sweep.search": args.search,
            "sweep.scheduler": args.scheduler,
        }
    )
    return parent


def _end_unfinished_trial_runs(uri: str, experiment: str, sweep: str) -> None:
    """Trials stopped early (ASHA) or failed never close their own MLflow run: mark them KILLED."""
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return
        flt = f"tags.`platform.sweep` = '{sweep}' and attributes.status = 'RUNNING'"
        for run in client.search_runs([exp.experiment_id], filter_string=flt, max_results=10000):
            client.set_terminated(run.info.run_id, status="KILLED")
    except Exception as exc:  # tracking problems never fail the sweep
        print(f"[sweep] could not mark unfinished trial runs: {exc}", flush=True)


def _summary(results: Any, keys: list[str], metric: str = LOSS_METRIC) -> str:
    """The trials, best first by ``metric`` (lower is better)."""
    label = "val pos err cm" if metric == VAL_METRIC else "train loss"
    lines = [
        f"[sweep] results, best first (lower {label} is better):",
        f"  {'trial':<14}" + "".join(f"{k:>22}" for k in keys) + f"{'steps':>8}{label:>16}",
    ]
    rows = sorted(results, key=lambda r: (r.metrics or {}).get(metric, math.inf))
    for r in rows:
        cfg = r.config or {}
        m = r.metrics or {}
        status = "error" if r.error else ""
        lines.append(
            f"  {m.get('trial_id', '?'):<14}"
            + "".join(f"{str(cfg.get(k)):>22}" for k in keys)
            + f"{m.get('step', 0):>8}{m.get(metric, math.nan):>16.4f} {status}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_cli(main, build_parser()))
