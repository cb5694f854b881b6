"""``python -m platform.bench eval``: parallel headless evaluation throughput.

For each actor count N (default 1, 2, 4, ... up to the cores available) it starts a pool of N simulator
actors (+ the policy server when one is used), waits until every actor is up (start-up is not timed),
runs one untimed warm-up episode per actor, then times ``--episodes-per-actor * N`` episodes. Reported per
N: episodes per second, scaling efficiency ``throughput(N) / (N * throughput(1))``, and the share of the
actors' time spent in simulation (controller + physics), rendering, point-cloud preprocessing and policy
inference (in server mode: the wait for the server, whose own forward time and mean batch are listed).

``--suites mt10,mt50`` measures whole suites side by side instead of ``--tasks``: per suite and N, every
task of the suite with ``--episodes-per-task`` episodes (the MT50 protocol: 50 x 10), and per row the
actors' peak RSS (``Coordinator.actor_memory``) and the actor CPU time per keypose step (which a task
switch's env and render-context rebuild adds to), then the ratio of each suite to the first one.
``--max-cached-tasks`` and ``--task-affinity off`` reproduce the former behaviour (every task kept, FIFO).

The policy is a checkpoint (``--checkpoint``) or, by default, a freshly initialised policy of ``--preset``
with random instruction embeddings: throughput does not depend on the weights, and an untrained policy
runs every episode to the keypose limit, so all episodes cost the same. ``--json PATH`` writes
``{"device": str, "rows": [{"actors", "suite", "episodes_per_s", "efficiency", "peak_rss_mb",
"cpu_s_per_keypose", ...}], "settings": {...}}``.
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.files import atomic_write_json


def _parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m platform.bench eval", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--backend",
        default="metaworld",
        choices=["metaworld", "fake"],
        help="simulator backend (fake: the test simulator, for smoke tests)",
    )
    p.add_argument("--tasks", default="reach-v3", help="comma-separated tasks (episodes cycle over them)")
    p.add_argument(
        "--suites",
        default=None,
        help="comma-separated Meta-World suites (mt10,mt50) measured side by side, every task of each "
        "with --episodes-per-task episodes (replaces --tasks and --episodes-per-actor)",
    )
    p.add_argument("--episodes-per-task", type=int, default=10, help="with --suites: timed episodes per task")
    p.add_argument(
        "--max-cached-tasks",
        type=int,
        default=None,
        help="envs + render contexts a simulator keeps (MetaWorldConfig.max_cached_tasks; default its own)",
    )
    p.add_argument(
        "--task-affinity",
        default="on",
        choices=["on", "off"],
        help="the coordinator keeps an actor on one task (PoolConfig.task_affinity); off: FIFO",
    )
    p.add_argument("--actors", default=None, help="comma-separated actor counts (default 1,2,4,... <= cores)")
    p.add_argument("--episodes-per-actor", type=int, default=3, help="timed episodes per actor")
    p.add_argument("--max-keyposes", type=int, default=10, help="keypose limit per episode")
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="policy checkpoint (default: random --preset)"
    )
    p.add_argument("--preset", default="tiny", choices=["tiny", "laptop", "paper"])
    p.add_argument("--policy-server", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--cpus-per-actor", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    p.add_argument(
        "--videos",
        default="off",
        choices=["off", "on", "compare"],
        help="record rollout videos (eval.videos; GIF writing timed too); compare: each actor count "
        "without then with videos, and the throughput ratio",
    )
    return p.parse_args(argv)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def actor_counts(spec: str | None, cores: int) -> list[int]:
    """``"1,2,4"`` -> [1, 2, 4]; default: powers of two up to ``cores``, plus ``cores`` itself."""
    if spec:
        counts = sorted({int(x) for x in spec.split(",") if x.strip()})
        if not counts or counts[0] < 1:
            raise ValueError(f"--actors must list positive integers, got {spec!r}")
        return counts
    counts, n = [], 1
    while n <= cores:
        counts.append(n)
        n *= 2
    return counts if counts[-1] == cores else [*counts, cores]


def device_description() -> str:
    import torch

    cpu = f"cpu: {_cores()} cores"
    try:
        model = next(
            ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")
        )
        cpu += f" ({model})"
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        return f"{cpu}; cuda: {torch.cuda.get_device_name(0)}"
    return cpu


def _random_checkpoint(directory: Path, preset: str, tasks: list[str], seed: int) -> Path:
    """A freshly initialised policy of ``preset`` plus random instruction embeddings, as a checkpoint dir."""
    import torch

    from evaluation.checkpoint_format import INSTRUCTIONS_FILE, save_instructions
    from policies.registry import build_policy, parse_policy_config

    torch.manual_seed(seed)
    policy = build_policy(parse_policy_config({"type": "mini_diffuser", "preset": preset}))
    policy.save_pretrained(directory)
    rng = np.random.default_rng(seed)
    dim = policy.config.text_dim  # type: ignore[attr-defined]
    text = {t: (rng.standard_normal((12, dim)).astype(np.float32), np.ones(12, bool)) for t in tasks}
    save_instructions(directory / INSTRUCTIONS_FILE, text)
    return directory


def _backend(args: argparse.Namespace, tasks: list[str]) -> tuple[Any, list[int]]:
    if args.backend == "fake":
        from evaluation.simulators.fake_sim import FakeSimConfig

        cfg = FakeSimConfig(tasks=tuple(tasks), cameras=4, image_size=64)
        return cfg.build, list(range(25, 50))
    from evaluation.simulators.metaworld_backend import MetaWorldConfig, MetaWorldSimulator, variations

    suite = "mt10" if set(tasks) <= set(_suite_tasks("mt10")) else "mt50"
    cache = {} if args.max_cached_tasks is None else {"max_cached_tasks": args.max_cached_tasks}
    return functools.partial(MetaWorldSimulator, MetaWorldConfig(suite=suite, **cache)), list(
        variations("test")
    )


def _suite_tasks(suite: str) -> list[str]:
    """Every task of a Meta-World suite (with ``--backend fake``, the fake simulator runs tasks of these names)."""
    from evaluation.simulators.metaworld_backend import suite_task_names

    return suite_task_names(suite)  # type: ignore[arg-type]


def _plan(args: argparse.Namespace, n: int, tasks: list[str]) -> tuple[list[Any], list[Any]]:
    """(timed, warm-up) episodes: ``--episodes-per-task`` of every task with ``--suites``, else
    ``--episodes-per-actor * n`` cycling over the tasks; one warm-up episode per actor."""
    from evaluation.runtime.evaluate import plan_episodes

    variations = _backend(args, tasks)[1]
    if args.suites:
        specs = plan_episodes(tasks, args.episodes_per_task, args.seed, variations)
    else:
        per_task = -(-args.episodes_per_actor * n // len(tasks))  # ceil
        specs = plan_episodes(tasks, per_task, args.seed, variations)[: args.episodes_per_actor * n]
    return specs, plan_episodes(tasks, n, args.seed + 1, variations)[:n]


def measure(
    n: int, args: argparse.Namespace, checkpoint: Path, tasks: list[str], videos: bool = False
) -> dict[str, Any]:
    """Throughput of a warm pool of ``n`` actors on ``episodes_per_actor * n`` episodes (``videos``: recording
    rollout videos, their GIF files written inside the timed span)."""
    import ray

    from evaluation.checkpoint_format import CheckpointBundle
    from evaluation.runtime.actors import BundlePolicy
    from evaluation.runtime.coordinator import Coordinator, PoolConfig
    from evaluation.runtime.metrics import summarize

    sim_factory = _backend(args, tasks)[0]
    pool = PoolConfig(
        num_actors=n,
        cpus_per_actor=args.cpus_per_actor,
        max_keyposes=args.max_keyposes,
        policy_server=args.policy_server,
        progress=False,
        episode_timeout_s=1800.0,
        videos=videos,
        task_affinity=args.task_affinity == "on",
    )
    specs, warmup = _plan(args, n, tasks)
    deadline = time.monotonic() + 30.0  # the previous pool's CPUs are released a moment after its shutdown
    while ray.available_resources().get("CPU", 0) < n * args.cpus_per_actor and time.monotonic() < deadline:
        time.sleep(0.2)
    bundle = CheckpointBundle.read(checkpoint)
    coord = Coordinator(
        sim_factory, BundlePolicy(ray.put(bundle)), bundle.instructions, bundle.condition_fn(), pool
    )
    try:
        coord.start().wait_ready()
        coord.run(warmup)
        if coord.server is not None:
            ray.wait([coord.server.reset_stats.remote()], timeout=60.0)
        load_before = os.getloadavg()[0]
        start = time.monotonic()
        outputs = coord.run(specs)
        written = 0
        if videos:
            from evaluation.runtime.video import write_videos

            with tempfile.TemporaryDirectory(prefix="bench_videos_") as out:
                written = len(write_videos(coord.videos, Path(out)))
        elapsed = time.monotonic() - start
        load_after = os.getloadavg()[0]
        server = coord.server_stats()
        memory = coord.actor_memory()
    finally:
        coord.shutdown()
    report = summarize(outputs, elapsed)
    row: dict[str, Any] = {
        "actors": n,
        "episodes_per_s": len(specs) / elapsed,
        "episodes": len(specs),
        "wall_s": elapsed,
        "time_shares": report.time_shares,
        "errors": report.errors,
        "actor_cpu_s_per_episode": sum(o.cpu_s for o in outputs) / len(outputs),
        # A keypose step: observe (render), point cloud, policy, controller; task switches' rebuilds included.
        "cpu_s_per_keypose": sum(o.cpu_s for o in outputs) / max(1, sum(o.result.steps for o in outputs)),
        "keyposes": sum(o.result.steps for o in outputs),
        "tasks": len(tasks),
        "peak_rss_mb": max((m["peak_rss_mb"] for m in memory), default=float("nan")),  # the largest actor's
        "actor_peak_rss_mb": sorted(round(m["peak_rss_mb"], 1) for m in memory),
        "actor_rss_mb": sorted(round(m["rss_mb"], 1) for m in memory),  # after the run
        "policy_server": server is not None,
        "load_avg_1min": [round(load_before, 2), round(load_after, 2)],  # other work on a shared machine
        "videos": written if videos else None,  # GIFs written (None: videos off)
    }
    if server is not None:
        row["server_mean_batch"] = server["mean_batch"]
        row["server_forward_share"] = server["forward_s"] / elapsed
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'actors':>6} {'suite':>6} {'episodes/s':>11} {'efficiency':>10} {'cpu s/ep':>9} {'cpu ms/kp':>9} "
        f"{'peak MB':>8} {'sim':>5} {'render':>6} {'prep':>5} {'policy':>6} {'errors':>6} {'load':>10} {'videos':>6}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        s = r["time_shares"]
        lo, hi = r.get("load_avg_1min", (0.0, 0.0))
        lines.append(
            f"{r['actors']:>6} {r.get('suite') or '-':>6} {r['episodes_per_s']:>11.3f} {r['efficiency']:>10.2f} "
            f"{r.get('actor_cpu_s_per_episode', 0.0):>9.2f} {1000 * r.get('cpu_s_per_keypose', 0.0):>9.1f} "
            f"{r.get('peak_rss_mb', float('nan')):>8.0f} {100 * s['sim']:>4.0f}% "
            f"{100 * s['render']:>5.0f}% {100 * s['preprocess']:>4.0f}% {100 * s['policy']:>5.0f}% {r['errors']:>6} "
            f"{f'{lo:.1f}-{hi:.1f}':>10} {'-' if r.get('videos') is None else r['videos']:>6}"
        )
    return "\n".join(lines)


def suite_comparison(rows: list[dict[str, Any]]) -> list[str]:
    """One line per actor count and suite after the first: its CPU per keypose, peak RSS per actor and
    episodes/s against the first suite's (``--suites mt10,mt50``: MT50 against MT10)."""
    lines = []
    for n in sorted({r["actors"] for r in rows if r.get("suite")}):
        same = [r for r in rows if r["actors"] == n and r.get("suite") and r.get("videos") is None]
        for r in same[1:]:
            b = same[0]
            lines.append(
                f"[bench eval] {n} actors, {r['suite']} vs {b['suite']}: CPU per keypose step "
                f"{1000 * r['cpu_s_per_keypose']:.1f} vs {1000 * b['cpu_s_per_keypose']:.1f} ms "
                f"(x{r['cpu_s_per_keypose'] / b['cpu_s_per_keypose']:.2f}), peak RSS per actor "
                f"{r['peak_rss_mb']:.0f} vs {b['peak_rss_mb']:.0f} MB, {r['episodes_per_s']:.3f} vs "
                f"{b['episodes_per_s']:.3f} episodes/s"
            )
    return lines


def _task_sets(args: argparse.Namespace) -> list[tuple[str | None, list[str]]]:
    """``[(suite, tasks)]``: each of ``--suites``, else ``[(None, --tasks)]``."""
    if args.suites:
        return [
            (suite, _suite_tasks(suite)) for suite in (x.strip() for x in args.suites.split(",")) if suite
        ]
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.backend == "fake" and args.tasks == "reach-v3":
        tasks = ["fake-reach"]
    return [(None, tasks)]


def main(argv: list[str]) -> int:
    args = _parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from evaluation.raysession import ray_session

    task_sets = _task_sets(args)
    all_tasks = sorted({t for _, tasks in task_sets for t in tasks})
    cores = _cores()
    counts = actor_counts(args.actors, cores)
    device = device_description()
    what = (
        f"suites {[s for s, _ in task_sets]}, {args.episodes_per_task} episodes per task"
        if args.suites
        else f"tasks {task_sets[0][1]}; {args.episodes_per_actor} episodes per actor"
    )
    print(
        f"[bench eval] {device}; backend {args.backend}; {what}; actors {counts}; "
        f"<= {args.max_keyposes} keyposes each",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        checkpoint = args.checkpoint or _random_checkpoint(
            Path(tmp) / "policy", args.preset, all_tasks, args.seed
        )
        num_cpus = max(cores, int(np.ceil(max(counts) * args.cpus_per_actor)))
        with ray_session(num_cpus=num_cpus):
            modes = {"off": [False], "on": [True], "compare": [False, True]}[args.videos]
            for n in counts:
                for suite, tasks in task_sets:
                    for videos in modes:
                        row = {**measure(n, args, checkpoint, tasks, videos), "suite": suite}
                        first = next((r for r in rows if r["suite"] == suite), row)
                        row["efficiency"] = row["episodes_per_s"] / (
                            n * first["episodes_per_s"] / first["actors"]
                        )
                        rows.append(row)
                        print(
                            f"[bench eval] {n} actors{f', {suite}' if suite else ''}{', videos' if videos else ''}: "
                            f"{row['episodes_per_s']:.3f} episodes/s, efficiency {row['efficiency']:.2f}, "
                            f"{1000 * row['cpu_s_per_keypose']:.1f} ms CPU per keypose step, peak RSS per actor "
                            f"{row['peak_rss_mb']:.0f} MB",
                            flush=True,
                        )
    print(format_table(rows))
    for line in suite_comparison(rows):
        print(line)
    for off, on in zip(rows, rows[1:], strict=False):
        if (
            args.videos == "compare"
            and off["videos"] is None
            and on["videos"] is not None
            and off["actors"] == on["actors"]
        ):
            ratio = on["episodes_per_s"] / off["episodes_per_s"]
            print(
                f"[bench eval] {on['actors']} actors: with videos ({on['videos']} GIFs) {100 * ratio:.1f}% of the "
                f"throughput without ({100 * (1 - ratio):+.1f}% slower)"
            )
    if args.json is not None:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, {"device": device, "rows": rows, "settings": settings}, indent=2)
        print(f"[bench eval] results written to {args.json}")
    return 0
