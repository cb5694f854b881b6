"""``python -m platform.bench serve``: the policy server (``platform.serve``) over HTTP vs in-process inference.

The inputs are real: Meta-World observations (four 128 x 128 RGB-D cameras, as in evaluation) from resets
of ``--tasks``. In-process, each observation is conditioned (point-cloud fusion) and ``predict_action`` is
called on it, one at a time, with one torch thread (what the server's replica uses). Over HTTP, the same
observations are sent, seeded, by ``--concurrency`` client threads at once (request bodies are built before
the clock starts): round-trip latency p50 / p99, requests per second and the server's mean batch size.

The checkpoint is ``--checkpoint DIR`` or a freshly initialised ``--preset`` policy (speed does not depend on
training). ``--json PATH`` writes ``{"device", "rows": [...], "settings": {...}}``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.files import atomic_write_json
from platform.bench.evaluation import _random_checkpoint, device_description


def _parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m platform.bench serve", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--checkpoint", type=Path, default=None, help="a checkpoint or run directory (default: random)"
    )
    p.add_argument(
        "--preset",
        default="laptop",
        choices=["tiny", "laptop", "paper"],
        help="policy size of the random checkpoint",
    )
    p.add_argument("--tasks", default="reach-v3,drawer-open-v3", help="comma-separated Meta-World tasks")
    p.add_argument("--observations", type=int, default=8, help="distinct observations (resets) sent in turn")
    p.add_argument("--concurrency", default="1,4,16", help="comma-separated numbers of concurrent clients")
    p.add_argument("--requests", type=int, default=64, help="requests per concurrency level")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--json", type=Path, default=None, help="write the results as JSON to this path")
    args = p.parse_args(argv)
    try:
        args.concurrency_levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        p.error(f"--concurrency must be comma-separated integers, got {args.concurrency!r}")
    if (
        not args.concurrency_levels
        or min(args.concurrency_levels) < 1
        or args.requests < 1
        or args.observations < 1
    ):
        p.error("--concurrency levels, --requests and --observations must be >= 1")
    return args


def _observations(tasks: list[str], n: int) -> list[Any]:
    from evaluation.runtime.evaluate import metaworld_factory

    sim = metaworld_factory("mt50")()
    try:
        return [sim.reset(tasks[i % len(tasks)], i // len(tasks), i) for i in range(n)]
    finally:
        sim.close()


def _checkpoint(args: argparse.Namespace, tasks: list[str], tmp: Path) -> Path:
    from evaluation.checkpoint_format import INSTRUCTION_TEXTS_FILE
    from evaluation.simulators.instructions import instruction_for
    from platform.serve.run import resolve_checkpoint

    if args.checkpoint is not None:
        return resolve_checkpoint(args.checkpoint)
    path = _random_checkpoint(tmp / "checkpoint", args.preset, tasks, seed=0)
    texts = {
        "encoder": None,
        "tasks": {t: instruction_for(t) for t in tasks},
    }  # seen texts: no encoder needed
    atomic_write_json(path / INSTRUCTION_TEXTS_FILE, texts)
    return path


def _stats(latencies_s: list[float], wall_s: float) -> dict[str, float]:
    ms = 1e3 * np.asarray(latencies_s)
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "requests_per_s": len(ms) / wall_s,
    }


def in_process(bundle: Any, observations: list[Any], requests: int) -> dict[str, Any]:
    """Condition + ``predict_action`` per observation in this process, one torch thread, one at a time."""
    import torch

    from evaluation.runtime.episode import LocalInference, row_seed

    torch.set_num_threads(1)
    infer, condition = LocalInference(bundle.build_policy()), bundle.condition_fn()
    table = bundle.instructions
    infer(condition(observations[0], table.for_episode(observations[0].task, observations[0].instruction)), 0)
    latencies = []
    start = time.perf_counter()
    for i in range(requests):
        obs = observations[i % len(observations)]
        t = time.perf_counter()
        infer(condition(obs, table.for_episode(obs.task, obs.instruction)), row_seed(0, i))
        latencies.append(time.perf_counter() - t)
    return {
        "mode": "in-process",
        "concurrency": 1,
        "mean_batch": 1.0,
        **_stats(latencies, time.perf_counter() - start),
    }


def over_http(url: str, bodies: list[bytes], concurrency: int, requests: int) -> dict[str, Any]:
    from platform.serve.client import Client

    client = Client(url)
    client.send(bodies[0])  # warm the connection of this thread and the replica

    def one(i: int) -> tuple[float, float]:
        prediction = client.send(bodies[i % len(bodies)])
        return prediction.timing["round_trip_ms"] / 1e3, prediction.timing["batch_size"]

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # every thread's connection opened before the clock starts
        start = time.perf_counter()
        results = list(pool.map(one, range(requests)))
        wall = time.perf_counter() - start
    return {
        "mode": "http",
        "concurrency": concurrency,
        "mean_batch": float(np.mean([b for _, b in results])),
        **_stats([lat for lat, _ in results], wall),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    base = next(r for r in rows if r["mode"] == "in-process")
    lines = [
        f"{'mode':<11}{'clients':>8}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}{'batch':>7}{'req/s vs in-process':>22}",
        "-" * 74,
    ]
    for r in rows:
        lines.append(
            f"{r['mode']:<11}{r['concurrency']:>8}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}"
            f"{r['requests_per_s']:>8.1f}{r['mean_batch']:>7.1f}"
            f"{r['requests_per_s'] / base['requests_per_s']:>21.2f}x"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = _parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from evaluation.checkpoint_format import CheckpointBundle
    from evaluation.raysession import ray_session
    from evaluation.runtime.episode import row_seed
    from platform.serve.app import ServeSettings
    from platform.serve.client import request_body
    from platform.serve.run import start
    from platform.session import _free_port

    tasks = [t for t in args.tasks.split(",") if t]
    device = device_description()
    print(
        f"[bench serve] {device}; {args.observations} Meta-World observations of {', '.join(tasks)}; "
        f"{args.requests} requests per row",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        bundle = CheckpointBundle.read(_checkpoint(args, tasks, Path(tmp)))
        observations = _observations(tasks, args.observations)
        t = time.perf_counter()
        bodies = [
            request_body(o.instruction, o.gripper_pose, cameras=o.cameras, seed=row_seed(1, i))
            for i, o in enumerate(observations)
        ]
        encode_ms = 1e3 * (time.perf_counter() - t) / len(bodies)
        rows = [in_process(bundle, observations, args.requests)]
        print(format_table(rows).splitlines()[-1], flush=True)
        with ray_session():
            from ray import serve

            settings = ServeSettings(max_batch=args.max_batch, batch_wait_s=args.batch_wait_ms / 1e3)
            url, _ = start(bundle, settings, port=_free_port(0), device="cpu")
            try:
                for c in args.concurrency_levels:
                    rows.append(over_http(url, bodies, c, args.requests))
                    print(format_table(rows).splitlines()[-1], flush=True)
            finally:
                serve.shutdown()
    print(
        f"\n{format_table(rows)}\n(client-side request encoding: {encode_ms:.1f} ms per observation, "
        f"{np.mean([len(b) for b in bodies]) / 1e3:.0f} kB per request; not in the latencies)"
    )
    settings_out = {
        "tasks": tasks,
        "observations": args.observations,
        "requests": args.requests,
        "max_batch": args.max_batch,
        "batch_wait_ms": args.batch_wait_ms,
        "preset": args.preset,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "encode_ms": encode_ms,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, {"device": device, "rows": rows, "settings": settings_out}, indent=2)
        print(f"[bench serve] results written to {args.json}")
    return 0
