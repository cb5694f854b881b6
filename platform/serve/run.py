"""``python -m platform.serve --checkpoint DIR``: start the policy server (``platform.serve.app``) and keep it
up until Ctrl-C.

Without ``RAY_ADDRESS`` (or ``--ray-address``) it starts a private local Ray cluster on loopback only
(``evaluation.raysession``) and the HTTP proxy listens on 127.0.0.1; joining a running cluster it deploys
the application there (``--detach`` leaves it running after this command exits). The checkpoint is read and
checked here, before Ray starts (``CheckpointBundle.read``), and reaches the replica by value.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from evaluation.checkpoint_format import CheckpointBundle
from platform.serve.app import ServeSettings
from policies.base import CheckpointError

APP_NAME = "minidiffuser-policy"


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or the newest valid checkpoint of a run directory (``runs/NAME``)."""
    from platform.train.checkpoint import latest_checkpoint

    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"--checkpoint {path} does not exist: pass a run directory (runs/NAME) or one of "
            "its checkpoints (runs/NAME/checkpoints/step_...)"
        )
    if (path / "policy.json").is_file():
        return path
    latest = latest_checkpoint(path)
    if latest is None:
        raise CheckpointError(
            f"--checkpoint {path} is neither a checkpoint (no policy.json) nor a run directory "
            "with a valid checkpoint under checkpoints/"
        )
    return latest.path


def pick_device(requested: str) -> tuple[str, float]:
    """(torch device, GPUs the replica asks Ray for): the GPU when one is present and ``auto`` was asked."""
    import ray
    import torch

    if requested == "cpu":
        return "cpu", 0.0
    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    if requested == "cuda" or (requested == "auto" and (gpus >= 1 or torch.cuda.is_available())):
        if gpus < 1:
            raise ValueError("--device cuda: the Ray cluster has no GPU")
        return "cuda", 1.0
    return "cpu", 0.0


def start(
    bundle: CheckpointBundle,
    settings: ServeSettings,
    host: str = "127.0.0.1",
    port: int = 8000,
    route_prefix: str = "/",
    device: str = "auto",
    num_cpus: float = 1.0,
) -> tuple[str, str]:
    """Deploy the policy on the connected Ray cluster; returns its URL and device. Ray must be initialised."""
    from dataclasses import replace

    from ray import serve

    from platform.serve.app import PolicyDeployment

    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # "Started Serve", "Connecting to existing ..."
    dev, gpus = pick_device(device)
    settings = replace(settings, device=dev)
    serve.start(
        http_options={"host": host, "port": port},
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )
    app = PolicyDeployment.options(
        max_ongoing_requests=max(8, 4 * settings.max_batch),  # >= max_batch, or batches can never fill
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": gpus},
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    ).bind(bundle, settings)
    serve.run(app, name=APP_NAME, route_prefix=route_prefix)
    return f"http://{host}:{port}{route_prefix}", dev


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m platform.serve",
        description="Serve a trained policy over HTTP with Ray Serve (docs/serving.md).",
    )
    p.add_argument(
        "--checkpoint", required=True, help="a checkpoint directory or a run directory (its newest)"
    )
    p.add_argument("--host", default="127.0.0.1", help="HTTP address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--route-prefix", default="/", help="URL path of the application (default /)")
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: the GPU when the cluster has one",
    )
    p.add_argument("--max-batch", type=int, default=16, help="most requests batched into one forward pass")
    p.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        help="how long the first request of a batch waits for others",
    )
    p.add_argument("--max-request-mb", type=float, default=64.0, help="larger requests get HTTP 413")
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs the replica reserves (and torch threads)")
    p.add_argument(
        "--ray-address",
        default=os.environ.get("RAY_ADDRESS", "local"),
        help="a running cluster to deploy on (default: $RAY_ADDRESS, else a private local cluster)",
    )
    p.add_argument(
        "--detach",
        action="store_true",
        help="on a joined cluster: deploy and exit, leaving the application running",
    )
    args = p.parse_args(argv)
    if args.max_batch < 1 or args.batch_wait_ms < 0 or args.max_request_mb <= 0 or args.cpus <= 0:
        p.error("--max-batch must be >= 1, --batch-wait-ms >= 0, --max-request-mb and --cpus > 0")
    if not 1 <= args.port <= 65535:
        p.error(f"--port must be in 1-65535, got {args.port}")
    if args.detach and args.ray_address == "local":
        p.error(
            "--detach needs a running cluster (--ray-address or RAY_ADDRESS): a private cluster ends with "
            "this command"
        )
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from evaluation.raysession import ray_session

    settings = ServeSettings(
        max_batch=args.max_batch,
        batch_wait_s=args.batch_wait_ms / 1e3,
        max_request_bytes=int(args.max_request_mb * 2**20),
        torch_threads=max(1, int(args.cpus)),
    )
    try:
        path = resolve_checkpoint(args.checkpoint)
        bundle = CheckpointBundle.read(path)  # a bad checkpoint fails here, in one line, before Ray starts
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        with ray_session(address=args.ray_address, num_cpus=None):
            from ray import serve

            try:
                url, device = start(
                    bundle, settings, args.host, args.port, args.route_prefix, args.device, args.cpus
                )
            except (ValueError, RuntimeError) as exc:
                print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
                return 2
            print(
                f"[serve] {path} at {url} (device {device}, "
                f"batches of up to {args.max_batch}, {args.batch_wait_ms:g} ms wait; ready in "
                f"{time.perf_counter() - t0:.1f} s)",
                flush=True,
            )
            print(
                f"[serve] try: curl -s {url}   (describes the policy; docs/serving.md has a POST example)",
                flush=True,
            )
            if args.detach:
                print(
                    f"[serve] left running on the cluster as application '{APP_NAME}' "
                    f"(stop it with: serve delete {APP_NAME})"
                )
                return 0
            print("[serve] Ctrl-C to stop", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("[serve] stopping", flush=True)
            serve.shutdown()
    except KeyboardInterrupt:
        return 130
    return 0
