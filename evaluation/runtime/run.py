"""Evaluate a checkpoint headlessly with parallel simulator actors.

    python -m evaluation.run --checkpoint runs/x/checkpoints/step_00001000 --suite mt10 --episodes 25 --actors 4
    xvfb-run -a python -m evaluation.run --checkpoint ... --suite rlbench --rlbench-demo-root data/peract/test

Prints the per-task success table, writes the JSON report (``--json``) and logs to an MLflow run when
``--mlflow-run-id`` is given. The episodes are the suite's *test* variations (disjoint from the
training ones) with seeds derived from ``--seed``, so two runs of one checkpoint give the same numbers;
``--variations 0-17`` evaluates Meta-World's train variations instead (the demonstrations' scenes: how well a
policy does where it was shown how, beside the test figure).
``--suite rlbench`` is the PerAct / 3DDA protocol: the test split's episodes restored with
``reset_to_demo``, 25 per task, 3 seeds, at most 25 keyposes (needs RLBench: docs/rlbench.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from evaluation.files import atomic_write_text
from evaluation.runtime.coordinator import EvaluationStartupError, PoolConfig
from evaluation.runtime.memory import memory_actor_capacity
from evaluation.runtime.metrics import EvalReport
from evaluation.simulators.rlbench_tasks import EVAL_SEEDS
from policies.base import CheckpointError
from policies.config import parse_policy_settings

SUITES = ("mt10", "mt50", "rlbench", "fake")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m evaluation.run", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint", required=True, type=Path, help="checkpoint directory (policy.json, model.pt, ...)"
    )
    p.add_argument("--suite", default="mt10", choices=SUITES, help="task suite (fake: the test simulator)")
    p.add_argument("--tasks", default="", help="comma-separated subset of the suite's tasks")
    p.add_argument("--episodes", type=int, default=25, help="episodes per task (per seed)")
    p.add_argument("--actors", type=int, default=2, help="simulator actors")
    p.add_argument(
        "--variations",
        type=variation_list,
        default=None,
        help="Meta-World: the variations the episodes cycle through, e.g. 0-17 or 0,3,5 (default: the test "
        "variations 25-49; 0-24 are the train variations collection draws demonstrations from)",
    )
    p.add_argument("--seed", type=int, default=0, help="evaluation seed (episode seeds derive from it)")
    p.add_argument(
        "--num-seeds",
        type=int,
        default=None,
        help="seeds --seed, --seed+1, ... on one pool, each with --episodes per task "
        "(default 3 for rlbench, as the papers report, else 1)",
    )
    p.add_argument(
        "--rlbench-demo-root",
        type=Path,
        default=None,
        help="--suite rlbench: the PerAct test split (<task>/all_variations/episodes/episode<i>)",
    )
    p.add_argument(
        "--rlbench-protocol",
        default="peract",
        choices=("peract", "3dda"),
        help="--suite rlbench: PerAct's evaluation rules (a planner error ends the episode) or 3D "
        "Diffuser Actor's (a second try, a separate gripper step, planner errors cost a step)",
    )
    p.add_argument("--max-keyposes", type=int, default=25, help="keypose limit per episode")
    p.add_argument(
        "--max-keyposes-per-task",
        nargs="+",
        default=[],
        metavar="TASK=N",
        help="a limit replacing --max-keyposes for these tasks, as eval.max_keyposes_per_task "
        "(configs/mt50.yaml: handle-pull-v3=50 basketball-v3=40)",
    )
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="policy inference settings laid over the checkpoint's, e.g. diffusion.inference_samples=8 "
        "diffusion.inference_steps=5 (an architecture setting fails to load)",
    )
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds per episode before the actor is replaced"
    )
    p.add_argument("--retries", type=int, default=1, help="retries of an episode whose actor crashed or hung")
    p.add_argument(
        "--policy-server",
        default="auto",
        choices=("auto", "on", "off"),
        help="batch inference in one policy server actor (auto: when the cluster has a GPU)",
    )
    p.add_argument("--cpus-per-actor", type=float, default=1.0)
    p.add_argument(
        "--sim-resource",
        default="auto",
        choices=("auto", "on", "off"),
        help="request the custom 'sim' resource of cluster.yaml (auto: when the cluster has it now; "
        "'on' for autoscaling clusters whose simulation nodes are not up yet)",
    )
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    p.add_argument("--mlflow-run-id", default=None, help="log eval/<task>/success etc. to this MLflow run")
    p.add_argument(
        "--mlflow-tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="sqlite:////abs/path/mlflow.db (default $MLFLOW_TRACKING_URI)",
    )
    p.add_argument("--mlflow-step", type=int, default=0, help="step to log the metrics at")
    p.add_argument(
        "--ray-address", default="local", help="'local' starts a private Ray; 'auto' joins a cluster"
    )
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.episodes < 1 or args.actors < 1 or args.retries < 0 or args.max_keyposes < 1:
        p.error("--episodes, --actors and --max-keyposes must be >= 1, --retries >= 0")
    limits: dict[str, int] = {}
    for item in args.max_keyposes_per_task:
        task, sep, n = item.partition("=")
        if not sep or not task or not n.isdigit() or int(n) < 1:
            p.error(f"--max-keyposes-per-task takes TASK=N with N >= 1, got {item!r}")
        limits[task] = int(n)
    args.max_keyposes_per_task = limits
    try:
        args.policy_settings = parse_policy_settings(args.set)
    except ValueError as exc:
        p.error(f"--set: {exc}")
    if args.num_seeds is not None and not 1 <= args.num_seeds <= 20:
        p.error("--num-seeds must be in 1..20")
    if args.suite == "rlbench" and args.rlbench_demo_root is None:
        p.error("--suite rlbench restores the PerAct test split's episodes: pass --rlbench-demo-root <dir>")
    return args


def cluster_actor_capacity(cpus_per_actor: float = 1.0, use_sim_resource: bool | None = None) -> int | None:
    """How many evaluation actors the connected Ray cluster can run at once (what the coordinator checks
    before it starts them): its CPUs over ``cpus_per_actor``, and at most its ``sim`` slots when actors use
    them. None when unknown (``use_sim_resource=True``: an autoscaler may still add simulation nodes)."""
    import ray

    from evaluation.runtime.actors import SIM_RESOURCE

    if use_sim_resource is True:
        return None
    resources = ray.cluster_resources()
    capacity = int(resources.get("CPU", 0) / cpus_per_actor + 1e-9)
    if use_sim_resource is None and resources.get(SIM_RESOURCE, 0) >= 1:
        capacity = min(capacity, int(resources[SIM_RESOURCE]))
    return capacity


def cap_actors(
    requested: int,
    episodes: int,
    capacity: int | None = None,
    what: str = "--actors",
    memory: tuple[int, str] | None = None,
) -> tuple[int, str | None]:
    """Never more simulator actors than episodes to run, nor than the cluster can run at once (``capacity``,
    None: unknown), nor than fit in this machine's memory (``memory``: ``memory_actor_capacity``'s count and
    reason; a private local cluster only). Returns the number to start and, when it is below ``requested``,
    one line saying why."""
    n, why = requested, []
    if episodes < n:
        n = max(1, episodes)
        why.append(f"{episodes} episode{'s' if episodes != 1 else ''} to run")
    if capacity is not None and 1 <= capacity < n:
        n = capacity
        why.append(f"the Ray cluster runs {capacity} at once")
    if memory is not None and memory[0] < n:
        n = memory[0]
        why.append(memory[1])
    if n == requested:
        return n, None
    return n, f"{what}={requested} capped to {n} simulator actor{'s' if n != 1 else ''}: {' and '.join(why)}"


def seeds_for(seed: int, num_seeds: int | None, suite: str) -> int | list[int]:
    """``seed``, or ``num_seeds`` consecutive seeds from it; by default RLBench's protocol (its 3 evaluation
    seeds), one seed elsewhere. The one rule for this command and ``platform.evaluate``."""
    n = num_seeds if num_seeds is not None else (len(EVAL_SEEDS) if suite == "rlbench" else 1)
    return seed if n == 1 else [seed + k for k in range(n)]


def seeds_of(args: argparse.Namespace) -> int | list[int]:
    return seeds_for(args.seed, args.num_seeds, args.suite)


def variation_list(text: str) -> list[int]:
    """``--variations``: ``A-B`` (inclusive) and single numbers, comma-separated, each in 0..49."""
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a variation list such as 0-17 or 0,3,5") from None
    if not out or not all(0 <= v < 50 for v in out):
        raise argparse.ArgumentTypeError(f"{text!r}: variations are 0..49 (Meta-World's 50 per task)")
    return out


def _suite(args: argparse.Namespace) -> tuple[list[str], object, list[int]]:
    """(tasks, simulator factory, variations: the test ones unless ``--variations``) of the chosen suite; the
    factory is None for Meta-World (``evaluate_checkpoint`` renders as the checkpoint's clouds were built)."""
    if args.variations is not None and args.suite not in ("mt10", "mt50"):
        raise ValueError(f"--variations is for the Meta-World suites (mt10, mt50), not {args.suite}")
    if args.suite == "fake":
        from evaluation.simulators.fake_sim import FakeSimConfig

        cfg = FakeSimConfig()
        tasks, factory, variations = list(cfg.tasks), cfg.build, list(range(25, 50))
    elif args.suite == "rlbench":  # test episode i of each task restores demo i of the test split
        from evaluation.simulators.rlbench_backend import RLBenchConfig
        from evaluation.simulators.rlbench_protocol import protocol_kwargs
        from evaluation.simulators.rlbench_tasks import resolve_tasks

        chosen = resolve_tasks(args.tasks or None)
        proto = protocol_kwargs(
            RLBenchConfig(tasks=chosen, demo_root=str(args.rlbench_demo_root)),
            args.episodes,
            args.rlbench_protocol,
        )
        return list(chosen), proto["sim_factory"], list(proto["variations"])
    else:
        from evaluation.runtime.evaluate import metaworld_test_variations
        from evaluation.simulators.metaworld_backend import suite_task_names

        tasks = suite_task_names(args.suite)
        # no factory: evaluate_checkpoint builds the Meta-World one the checkpoint's point-cloud settings need
        factory, variations = None, list(metaworld_test_variations())
        if args.variations is not None:
            variations = args.variations
    if args.tasks:
        chosen = [t.strip() for t in args.tasks.split(",") if t.strip()]
        unknown = sorted(set(chosen) - set(tasks))
        if unknown:
            raise ValueError(f"--tasks {unknown} are not in suite {args.suite}; it has {', '.join(tasks)}")
        tasks = chosen
    return tasks, factory, variations


def log_to_mlflow(report: EvalReport, run_id: str, tracking_uri: str | None, step: int, name: str) -> bool:
    """Log the report's metrics at ``step`` and the JSON as an artifact of an existing MLflow run. Metrics the
    run already holds at ``step`` are not logged again (one value per metric and step); False when none was
    new."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(tracking_uri=tracking_uri)
    now = int(time.time() * 1000)
    held = set(client.get_run(run_id).data.metrics)
    metrics = [
        Metric(key, float(value), now, step)
        for key, value in report.mlflow_metrics("eval").items()
        if key not in held or all(m.step != step for m in client.get_metric_history(run_id, key))
    ]
    if not metrics:
        return False
    client.log_batch(run_id, metrics=metrics)
    client.log_text(run_id, report.to_json(), f"eval/{name}.json")
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from evaluation.checkpoint_format import CheckpointBundle
    from evaluation.raysession import ray_session
    from evaluation.runtime.evaluate import evaluate_checkpoint

    try:
        tasks, factory, variations = _suite(args)
        unknown = sorted(set(args.max_keyposes_per_task) - set(tasks))
        if unknown:
            raise ValueError(
                f"--max-keyposes-per-task names {unknown}, which are not evaluated tasks of {args.suite}"
            )
        # fails on a bad checkpoint or setting before Ray starts
        bundle = CheckpointBundle.read(args.checkpoint).with_policy_settings(args.policy_settings)
        if args.set:
            print(f"policy settings: {' '.join(args.set)}", flush=True)
        seeds = seeds_of(args)
        episodes = len(tasks) * args.episodes * (len(seeds) if isinstance(seeds, list) else 1)
        memory = (
            memory_actor_capacity(args.suite) if args.ray_address == "local" else None
        )  # a private cluster
        actors, note = cap_actors(args.actors, episodes, memory=memory)  # its CPUs are checked by the pool
        if note:
            print(note, flush=True)
        pool = PoolConfig(
            num_actors=actors,
            cpus_per_actor=args.cpus_per_actor,
            max_keyposes=args.max_keyposes,
            max_keyposes_per_task=args.max_keyposes_per_task,
            on_planner_error="continue"
            if args.suite == "rlbench" and args.rlbench_protocol == "3dda"
            else "end",
            episode_timeout_s=args.timeout,
            max_attempts=args.retries + 1,
            policy_server=args.policy_server,
            use_sim_resource={"auto": None, "on": True, "off": False}[args.sim_resource],
            progress=not args.no_progress,
        )
        with ray_session(address=args.ray_address):
            report = evaluate_checkpoint(
                bundle,
                tasks=tasks,
                episodes_per_task=args.episodes,
                num_actors=actors,
                seed=seeds,
                suite=args.suite,
                sim_factory=factory,
                variations=variations,
                pool=pool,
            )
    except (CheckpointError, EvaluationStartupError, ValueError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.table())
    for line in report.failures:
        print(f"  fault: {line}")
    if args.json is not None:
        atomic_write_text(args.json, report.to_json())
        print(f"report written to {args.json}")
    if args.mlflow_run_id:
        if log_to_mlflow(
            report,
            args.mlflow_run_id,
            args.mlflow_tracking_uri,
            args.mlflow_step,
            f"{args.suite}_seed{args.seed}",
        ):
            print(f"logged to MLflow run {args.mlflow_run_id}")
        else:
            print(
                f"MLflow run {args.mlflow_run_id} already holds these eval/* metrics at step {args.mlflow_step}: "
                "not logged again (pass another --mlflow-step)"
            )
    return 1 if report.episodes and report.errors == report.episodes else 0


if __name__ == "__main__":
    sys.exit(main())
