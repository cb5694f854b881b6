"""``python -m platform.bench eval``: parallel headless evaluation throughput.

For each actor count N (default 1, 2, 4, ... up to the cores available) it starts a pool of N simulator
actors (+ the policy server when one is used), waits until every actor is up (start-up is not timed),
runs one untimed warm-up episode per actor, then times ``--episodes-per-actor * N`` episodes. Reported per
N: episodes per second, scaling efficiency ``throughput(N) / (N * throughput(1))``, and the share of the
actors' time spent in simulation (controller + physics), rendering, point-cloud preprocessing and policy
inference (in server mode: the wait for the server, whose own forward time and mean batch are listed).

The policy is a checkpoint (``--checkpoint``) or, by default, a freshly initialised policy of ``--preset``
with random instruction embeddings: throughput does not depend on the weights, and an untrained policy
runs every episode to the keypose limit, so all episodes cost the same. ``--json PATH`` writes
``{"device": str, "rows": [{"actors", "episodes_per_s", "efficiency", ...}], "settings": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m platform.bench eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="metaworld", choices=["metaworld", "fake"],
                   help="simulator backend (fake: the test simulator, for smoke tests)")
    p.add_argument("--tasks", default="reach-v3", help="comma-separated tasks (episodes cycle over them)")
    p.add_argument("--actors", default=None, help="comma-separated actor counts (default 1,2,4,... <= cores)")
    p.add_argument("--episodes-per-actor", type=int, default=3, help="timed episodes per actor")
    p.add_argument("--max-keyposes", type=int, default=10, help="keypose limit per episode")
    p.add_argument("--checkpoint", type=Path, default=None, help="policy checkpoint (default: random --preset)")
    p.add_argument("--preset", default="tiny", choices=["tiny", "laptop", "paper"])
    p.add_argument("--policy-server", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--cpus-per-actor", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    p.add_argument("--videos", default="off", choices=["off", "on", "compare"],
                   help="record rollout videos (eval.videos; GIF writing timed too); compare: each actor count "
                        "without then with videos, and the throughput ratio")
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
        model = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
        cpu += f" ({model})"
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        return f"{cpu}; cuda: {torch.cuda.get_device_name(0)}"
    return cpu


def _random_checkpoint(directory: Path, preset: str, tasks: list[str], seed: int) -> Path:
    """A freshly initialised policy of ``preset`` plus random instruction embeddings, as a checkpoint dir."""
    import torch

    from evaluation.runtime.bundle import INSTRUCTIONS_FILE, save_instructions
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
    from evaluation.runtime.evaluate import metaworld_factory, metaworld_test_variations

    return metaworld_factory("mt10" if set(tasks) <= _mt10() else "mt50"), list(metaworld_test_variations())


def _mt10() -> set[str]:
    from evaluation.simulators.metaworld_backend import suite_task_names

    return set(suite_task_names("mt10"))


def measure(n: int, args: argparse.Namespace, checkpoint: Path, tasks: list[str], videos: bool = False) -> dict[str, Any]:
    """Throughput of a warm pool of ``n`` actors on ``episodes_per_actor * n`` episodes (``videos``: recording
    rollout videos, their GIF files written inside the timed span)."""
    import ray

    from evaluation.runtime.bundle import BundlePolicy, CheckpointBundle
    from evaluation.runtime.coordinator import Coordinator, PoolConfig
    from evaluation.runtime.evaluate import plan_episodes
    from evaluation.runtime.metrics import summarize

    sim_factory, variations = _backend(args, tasks)
    pool = PoolConfig(num_actors=n, cpus_per_actor=args.cpus_per_actor, max_keyposes=args.max_keyposes,
                      policy_server=args.policy_server, progress=False, episode_timeout_s=1800.0, videos=videos)
    per_task = -(-args.episodes_per_actor * n // len(tasks))  # ceil
    specs = plan_episodes(tasks, per_task, args.seed, variations)[: args.episodes_per_actor * n]
    warmup = plan_episodes(tasks, n, args.seed + 1, variations)[:n]
    deadline = time.monotonic() + 30.0  # the previous pool's CPUs are released a moment after its shutdown
    while ray.available_resources().get("CPU", 0) < n * args.cpus_per_actor and time.monotonic() < deadline:
        time.sleep(0.2)
    bundle = CheckpointBundle.read(checkpoint)
    coord = Coordinator(sim_factory, BundlePolicy(ray.put(bundle)), bundle.instructions, bundle.condition_fn(), pool)
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
        "policy_server": server is not None,
        "load_avg_1min": [round(load_before, 2), round(load_after, 2)],  # other work on a shared machine
        "videos": written if videos else None,  # GIFs written (None: videos off)
    }
    if server is not None:
        row["server_mean_batch"] = server["mean_batch"]
        row["server_forward_share"] = server["forward_s"] / elapsed
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'actors':>6} {'episodes/s':>11} {'efficiency':>10} {'cpu s/ep':>9} {'sim':>5} {'render':>6} {'prep':>5} "
            f"{'policy':>6} {'errors':>6} {'load':>10} {'videos':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        s = r["time_shares"]
        lo, hi = r.get("load_avg_1min", (0.0, 0.0))
        lines.append(
            f"{r['actors']:>6} {r['episodes_per_s']:>11.3f} {r['efficiency']:>10.2f} "
            f"{r.get('actor_cpu_s_per_episode', 0.0):>9.2f} {100 * s['sim']:>4.0f}% "
            f"{100 * s['render']:>5.0f}% {100 * s['preprocess']:>4.0f}% {100 * s['policy']:>5.0f}% {r['errors']:>6} "
            f"{f'{lo:.1f}-{hi:.1f}':>10} {'-' if r.get('videos') is None else r['videos']:>6}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = _parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from evaluation.raysession import ray_session

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.backend == "fake" and args.tasks == "reach-v3":
        tasks = ["fake-reach"]
    cores = _cores()
    counts = actor_counts(args.actors, cores)
    device = device_description()
    print(f"[bench eval] {device}; backend {args.backend}; tasks {tasks}; actors {counts}; "
          f"{args.episodes_per_actor} episodes per actor, <= {args.max_keyposes} keyposes each", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        checkpoint = args.checkpoint or _random_checkpoint(Path(tmp) / "policy", args.preset, tasks, args.seed)
        num_cpus = max(cores, int(np.ceil(max(counts) * args.cpus_per_actor)))
        with ray_session(num_cpus=num_cpus):
            modes = {"off": [False], "on": [True], "compare": [False, True]}[args.videos]
            for n in counts:
                for videos in modes:
                    row = measure(n, args, checkpoint, tasks, videos)
                    base = rows[0]["episodes_per_s"] / rows[0]["actors"] if rows else row["episodes_per_s"] / n
                    row["efficiency"] = row["episodes_per_s"] / (n * base)
                    rows.append(row)
                    print(f"[bench eval] {n} actors{', videos' if videos else ''}: {row['episodes_per_s']:.3f} "
                          f"episodes/s, efficiency {row['efficiency']:.2f}", flush=True)
    print(format_table(rows))
    for off, on in zip(rows, rows[1:], strict=False):
        if args.videos == "compare" and off["videos"] is None and on["videos"] is not None and off["actors"] == on["actors"]:
            ratio = on["episodes_per_s"] / off["episodes_per_s"]
            print(f"[bench eval] {on['actors']} actors: with videos ({on['videos']} GIFs) {100 * ratio:.1f}% of the "
                  f"throughput without ({100 * (1 - ratio):+.1f}% slower)")
    if args.json is not None:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": device, "rows": rows, "settings": settings}, indent=2))
        print(f"[bench eval] results written to {args.json}")
    return 0
