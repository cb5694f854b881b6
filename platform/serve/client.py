"""``platform.serve.Client``: a small Python client of the policy server (standard library + numpy only, so a
robot's control process needs neither Ray nor torch to call it).

    from platform.serve import Client
    client = Client("http://127.0.0.1:8000/")
    answer = client.predict("open the drawer", gripper_pose, cameras=frames, seed=0)
    answer.pose   # (8,) [x, y, z, qx, qy, qz, qw, open]

Each thread keeps its own HTTP/1.1 connection (keep-alive), so concurrent callers do not share a socket.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from evaluation.simulators.sim import CameraFrame, Observation
from platform.serve.protocol import encode_array


class ServeError(RuntimeError):
    """The server refused the request (``status`` 4xx, the server's one line) or could not be reached."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Prediction:
    pose: np.ndarray  # (8,) float64 [x, y, z, qx, qy, qz, qw, open]
    seed: int  # the seed the answer was drawn with: send it again to get the same pose
    instruction_source: str  # "checkpoint" (seen in training) or "encoder" (encoded on the server)
    timing: dict[str, float] = field(default_factory=dict)  # server-side ms, batch size, and round_trip_ms


def camera_payload(frame: CameraFrame) -> dict[str, Any]:
    return {
        "name": frame.name,
        "rgb": encode_array(np.asarray(frame.rgb, np.uint8)),
        "depth": encode_array(np.asarray(frame.depth, np.float32)),
        "intrinsics": np.asarray(frame.intrinsics, np.float64).tolist(),
        "extrinsics": np.asarray(frame.extrinsics, np.float64).tolist(),
    }


def request_body(
    instruction: str,
    gripper_pose: Sequence[float] | np.ndarray,
    cameras: Sequence[CameraFrame] | None = None,
    points: np.ndarray | None = None,
    seed: int | None = None,
    previous_poses: Sequence[Sequence[float]] | np.ndarray | None = None,
) -> bytes:
    """The JSON body of one request (docs/serving.md); ``points``: (P, 6) ``[x, y, z, r, g, b]``;
    ``previous_poses``: (K, 8) gripper poses at the episode's earlier keyposes, oldest first."""
    body: dict[str, Any] = {
        "instruction": instruction,
        "gripper_pose": [float(v) for v in np.asarray(gripper_pose, np.float64).reshape(-1)],
    }
    if cameras is not None:
        body["cameras"] = [camera_payload(c) for c in cameras]
    if points is not None:
        body["points"] = encode_array(np.asarray(points, np.float32))
    if seed is not None:
        body["seed"] = int(seed)
    if previous_poses is not None and len(previous_poses):
        body["previous_poses"] = np.asarray(previous_poses, np.float64).reshape(-1, 8).tolist()
    return json.dumps(body).encode()


class Client:
    """Calls ``python -m platform.serve`` at ``url``; :class:`ServeError` on a refused or failed request."""

    def __init__(self, url: str = "http://127.0.0.1:8000/", timeout_s: float = 60.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"url must be http://HOST:PORT/[route], got {url!r}")
        self.url = url
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = parts.path or "/"
        self.timeout_s = timeout_s
        self._local = threading.local()

    def info(self) -> dict[str, Any]:
        """The server's description: checkpoint, tasks, instructions seen in training, device, batching."""
        return json.loads(self._send("GET", b""))

    def predict(
        self,
        instruction: str,
        gripper_pose: Sequence[float] | np.ndarray,
        cameras: Sequence[CameraFrame] | None = None,
        points: np.ndarray | None = None,
        seed: int | None = None,
        previous_poses: Sequence[Sequence[float]] | np.ndarray | None = None,
    ) -> Prediction:
        """The next keypose for one observation (cameras, or a ready (P, 6) point cloud); ``previous_poses``:
        the gripper poses at the episode's earlier keyposes, oldest first (read by policies with history)."""
        return self.send(request_body(instruction, gripper_pose, cameras, points, seed, previous_poses))

    def predict_observation(
        self,
        obs: Observation,
        seed: int | None = None,
        previous_poses: Sequence[Sequence[float]] | np.ndarray | None = None,
    ) -> Prediction:
        """``predict`` for a simulator ``Observation`` (its instruction, gripper pose and cameras)."""
        return self.predict(
            obs.instruction, obs.gripper_pose, cameras=obs.cameras, seed=seed, previous_poses=previous_poses
        )

    def send(self, body: bytes) -> Prediction:
        """POST a prepared request body (``request_body``)."""
        t = time.perf_counter()
        data = json.loads(self._send("POST", body))
        timing = dict(data.get("timing", {}))
        timing["round_trip_ms"] = 1e3 * (time.perf_counter() - t)
        return Prediction(
            pose=np.asarray(data["pose"], np.float64),
            seed=int(data["seed"]),
            instruction_source=str(data.get("instruction_source", "")),
            timing=timing,
        )

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        return conn

    def _send(self, method: str, body: bytes) -> bytes:
        headers = {"Content-Type": "application/json"} if body else {}
        for attempt in range(2):  # a kept-alive connection the server closed meanwhile: reconnect once
            conn = self._connection()
            try:
                conn.request(method, self.path, body=body or None, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as exc:
                conn.close()
                self._local.conn = None
                if attempt == 1:
                    raise ServeError(f"the policy server at {self.url} did not answer ({exc})") from None
            except (TimeoutError, OSError) as exc:
                conn.close()
                self._local.conn = None
                raise ServeError(
                    f"the policy server at {self.url} cannot be reached ({exc}): is "
                    "`python -m platform.serve` running?"
                ) from None
        if response.status != 200:
            try:
                message = json.loads(payload)["error"]
            except (ValueError, KeyError, TypeError):
                message = (
                    payload.decode(errors="replace").strip().splitlines()[0] if payload else response.reason
                )
            raise ServeError(f"HTTP {response.status}: {message}", response.status)
        return payload


@dataclass
class HttpInference:
    """Drive ``evaluation.runtime.episode.run_episode`` through the server: the server conditions raw
    observations itself, so ``condition`` hands the observation (and the episode's earlier keypose poses)
    through and ``__call__`` posts it with the episode's row seed (what in-process evaluation seeds its
    sampler with, so outcomes are the same)."""

    client: Client

    def condition(
        self, obs: Observation, text: object, previous: Sequence[np.ndarray] = ()
    ) -> tuple[Observation, list[np.ndarray]]:
        return obs, list(previous)  # the server fuses the cameras and looks the instruction up itself

    def __call__(self, condition: tuple[Observation, list[np.ndarray]], row_seed: int) -> np.ndarray:
        obs, previous = condition
        return self.client.predict_observation(obs, seed=row_seed, previous_poses=previous).pose
