"""The trained policy as a Ray Serve deployment: one observation in (HTTP JSON), the next keypose out.

A request is parsed and turned into the policy's condition in the replica (``platform.serve.protocol``; the
point cloud built exactly as at collection, ``evaluation.pointcloud``), then waits in ``serve.batch`` for
at most ``batch_wait_s`` so that concurrent requests share one forward pass. The batch runs through the same
code as evaluation's policy server (``evaluation.runtime.policy_server.stack_conditions`` / ``predict_rows``):
a request's seed becomes its row's own generator, so a batched answer equals the one the request would get
alone up to float rounding of the batched forward pass (same numbers exactly at batch 1).

Why two servers. Evaluation's ``PolicyServer`` is a plain Ray actor called by simulator actors with an
already-fused ``ConditionBatch`` through the object store; this one speaks HTTP to programs outside Ray (a
robot's control loop) with raw cameras and text. Routing evaluation through Serve's HTTP proxy would add a
JSON round trip of every camera frame per keypose (about 2 MB for Meta-World's three cameras) and an extra hop
through the proxy actor, for no gain: both share the batching arithmetic above, which is what must not differ.

Instructions: a text seen in training is looked up in the checkpoint (``instruction_texts.json`` /
``instructions.npz``), so its embedding is bit-identical to training's; any other text is encoded here with the
checkpoint's text encoder (loaded on first use) and cached.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from evaluation.checkpoint_format import CheckpointBundle, Instruction
from evaluation.pointcloud import PointCloudConfig, cloud_to_points, points_to_condition
from evaluation.runtime.policy_server import predict_rows, stack_conditions
from evaluation.simulators.sim import Observation
from platform.serve.protocol import MAX_SEED, RequestError, ServeRequest, parse_request
from platform.serve.replica_bind import bind_internal_grpc_to_node_ip
from policies.batch import ConditionBatch

MAX_CACHED_TEXTS = 1024  # encoded new instructions kept per replica (an embedding is ~50 KB)


@dataclass(frozen=True)
class ServeSettings:
    """How the deployment batches and what it accepts (``python -m platform.serve --help``)."""

    max_batch: int = 16
    batch_wait_s: float = (
        0.005  # 5 ms: about 1 % of a laptop forward pass, enough for concurrent callers to meet
    )
    max_request_bytes: int = 64 * 2**20  # four 640 x 480 RGB-D cameras in base64 are about 12 MB
    device: str = "cpu"
    torch_threads: int = 1


class InstructionTable:
    """Instruction text -> (tokens (L, D), mask (L,)): the checkpoint's own first, then the encoder."""

    def __init__(self, bundle: CheckpointBundle) -> None:
        self.known: dict[str, Instruction] = dict(bundle.instructions.texts)
        for task, text in bundle.instruction_texts.items():
            if task in bundle.instructions.tasks:
                self.known.setdefault(text, bundle.instructions.tasks[task])
        self.encoder_name = bundle.text_encoder
        self.dim = (
            next(iter(bundle.instructions.tasks.values()))[0].shape[1] if bundle.instructions.tasks else None
        )
        self._encoded: dict[str, Instruction] = {}
        self._encoder: Any = None

    def lookup(self, text: str) -> tuple[Instruction, bool]:
        """The embedding of ``text`` and whether it came from the checkpoint (else the encoder, now or cached)."""
        if text in self.known:
            return self.known[text], True
        if text not in self._encoded:
            encoder = self._load_encoder(text)
            emb = encoder.encode([text])[0]
            if self.dim is not None and emb.tokens.shape[1] != self.dim:
                raise RequestError(
                    f"the server's text encoder {encoder.name} gives {emb.tokens.shape[1]}-d tokens "
                    f"but the policy was trained on {self.dim}-d ones; send an instruction seen in "
                    f"training ({self.examples()})",
                    422,
                )
            if len(self._encoded) >= MAX_CACHED_TEXTS:
                self._encoded.pop(next(iter(self._encoded)))
            self._encoded[text] = (emb.tokens, emb.mask)
        return self._encoded[text], False

    def examples(self, n: int = 3) -> str:
        texts = sorted(self.known)
        more = f", ... {len(texts)} in all" if len(texts) > n else ""
        return ", ".join(repr(t) for t in texts[:n]) + more

    def _load_encoder(self, text: str) -> Any:
        if self._encoder is not None:
            return self._encoder
        from evaluation.datasets.text import TextEncoderConfig, TextEncoderError, get_encoder

        name = self.encoder_name or "minilm"  # checkpoints before instruction_texts.json: the default encoder
        kind = "clip" if name.startswith("clip") else "minilm"
        try:
            self._encoder = get_encoder(TextEncoderConfig(kind=kind))
        except (TextEncoderError, ImportError, OSError) as exc:
            raise RequestError(
                f"instruction {text!r} was not seen in training and the checkpoint's text encoder "
                f"({name}) cannot be loaded here ({exc}); send one seen in training: "
                f"{self.examples()}",
                422,
            ) from None
        return self._encoder


@serve.deployment(name="policy")
class PolicyDeployment:
    """``POST /`` an observation -> ``{"pose": [8], "seed", "instruction_source", "timing"}``; ``GET /`` the
    checkpoint's description (tasks, instructions seen in training, device, batching)."""

    def __init__(self, bundle: CheckpointBundle, settings: ServeSettings) -> None:
        bind_internal_grpc_to_node_ip()  # before Serve starts this replica's gRPC server (replica_bind.py)
        torch.set_num_threads(max(1, settings.torch_threads))
        self.bundle = bundle
        self.settings = settings
        self.device = settings.device
        self.policy = bundle.build_policy().to(self.device).eval()
        self.conditioner = bundle.condition_fn()  # evaluation's own conditioner, built once
        self.pointcloud: PointCloudConfig = self.conditioner.config
        self.instructions = InstructionTable(bundle)
        self._forward_pool = ThreadPoolExecutor(
            max_workers=1
        )  # one forward pass at a time, off the event loop
        self._batch.set_max_batch_size(settings.max_batch)
        self._batch.set_batch_wait_timeout_s(settings.batch_wait_s)

    async def __call__(self, request: Request) -> JSONResponse:
        if request.method == "GET":
            return JSONResponse(self.describe())
        if request.method != "POST":
            return _error(
                RequestError(
                    f"{request.method} is not supported: POST an observation, GET a description", 405
                )
            )
        t0 = time.perf_counter()
        try:
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.settings.max_request_bytes:
                raise RequestError(self._too_large(int(length)), 413)
            body = await request.body()
            if len(body) > self.settings.max_request_bytes:
                raise RequestError(self._too_large(len(body)), 413)
            parsed = parse_request(body)
            condition, from_checkpoint = await asyncio.to_thread(self._condition, parsed)
        except RequestError as exc:
            return _error(exc)
        seed = parsed.seed if parsed.seed is not None else int.from_bytes(os.urandom(8), "little") & MAX_SEED
        t1 = time.perf_counter()
        try:
            pose, batch_size, queued_s, forward_s = await self._batch((condition, seed, t1))
        except Exception as exc:  # the policy failed: one line, never Serve's traceback page
            first = str(exc).splitlines()[0] if str(exc) else ""
            return _error(
                RequestError(f"the policy failed on this observation ({type(exc).__name__}: {first})", 500)
            )
        t2 = time.perf_counter()
        return JSONResponse(
            {
                "pose": [float(v) for v in pose],
                "seed": seed,
                "instruction_source": "checkpoint" if from_checkpoint else "encoder",
                "timing": {
                    "preprocess_ms": 1e3 * (t1 - t0),
                    "queue_ms": 1e3 * queued_s,
                    "inference_ms": 1e3 * forward_s,
                    "total_ms": 1e3 * (t2 - t0),
                    "batch_size": batch_size,
                },
            }
        )

    def describe(self) -> dict[str, Any]:
        return {
            "checkpoint": self.bundle.source,
            "policy": self.bundle.policy_config.get("type", "?"),
            "tasks": sorted(self.bundle.instructions.tasks),
            "instructions": sorted(self.instructions.known),
            "text_encoder": self.instructions.encoder_name,
            "max_points": self.bundle.max_points,
            # how clouds are cropped and filtered; hide_arm: the robot's links above the gripper must be masked out
            "pointcloud": self.pointcloud.settings(),
            "history": self.conditioner.history,  # previous keyposes the policy reads: send previous_poses
            "device": self.device,
            "max_batch": self.settings.max_batch,
            "batch_wait_ms": 1e3 * self.settings.batch_wait_s,
            "max_request_mb": self.settings.max_request_bytes / 2**20,
        }

    def _too_large(self, n: int) -> str:
        return (
            f"the request is {n / 2**20:.1f} MB, more than this server's {self.settings.max_request_bytes / 2**20:.0f}"
            " MB: send fewer or smaller cameras, or a ready point cloud (or start it with --max-request-mb)"
        )

    def _condition(self, req: ServeRequest) -> tuple[ConditionBatch, bool]:
        text, from_checkpoint = self.instructions.lookup(req.instruction)
        # a request without previous_poses is the first keypose of an episode (its pose stands in for the rest)
        previous = [] if req.previous_poses is None else list(req.previous_poses)
        if req.cameras is not None:
            obs = Observation(
                task="", instruction=req.instruction, cameras=req.cameras, gripper_pose=req.gripper_pose
            )
            return self.conditioner(obs, text, previous), from_checkpoint
        assert req.points is not None
        cloud = cloud_to_points(req.points[:, :3], req.points[:, 3:6], self.pointcloud)  # (n, 7)
        if not len(cloud):
            raise RequestError(
                "no point of the cloud lies inside the workspace "
                f"{self.pointcloud.workspace_low}-{self.pointcloud.workspace_high} above the table: "
                "send world-frame metres",
                422,
            )
        condition = points_to_condition(
            cloud,
            req.gripper_pose,
            text,
            self.bundle.max_points,
            self.pointcloud,
            previous,
            self.conditioner.history,
        )
        return condition, from_checkpoint

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005)
    async def _batch(
        self, items: list[tuple[ConditionBatch, int, float]]
    ) -> list[tuple[np.ndarray, int, float, float]]:
        start = time.perf_counter()
        actions = await asyncio.get_running_loop().run_in_executor(
            self._forward_pool, self._forward, [c for c, _, _ in items], [s for _, s, _ in items]
        )  # (B, 8)
        forward_s = time.perf_counter() - start
        return [(actions[i], len(items), start - t, forward_s) for i, (_, _, t) in enumerate(items)]

    def _forward(self, conditions: list[ConditionBatch], seeds: list[int]) -> np.ndarray:
        return predict_rows(self.policy, stack_conditions(conditions), seeds, self.device)


def _error(exc: RequestError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)
