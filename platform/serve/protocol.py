"""The policy server's wire format (JSON over HTTP), parsed and checked in one place (docs/serving.md).

One request is one observation:

    {"instruction": "open the drawer",                  # text; encoded on the server
     "gripper_pose": [x, y, z, qx, qy, qz, qw, open],   # world frame, quaternion xyzw, open in {0, 1}
     "cameras": [{"name": "front", "rgb": ARRAY (H, W, 3) uint8, "depth": ARRAY (H, W) metres,
                  "intrinsics": (3, 3), "extrinsics": (4, 4) camera-to-world, OpenCV axes}, ...],
     -- or, instead of cameras --
     "points": ARRAY (P, 6) [x, y, z, r, g, b], world frame, metres, rgb in [0, 255],
     "previous_poses": ARRAY (K, 8),                    # optional: gripper poses at the episode's earlier
                                                        # keyposes, oldest first (policies with history)
     "seed": 123}                                       # optional: makes the answer reproducible

An ARRAY is a nested JSON list, or ``{"dtype": "float32", "shape": [H, W], "b64": "<base64 of the C-order
bytes>"}`` (what ``platform.serve.Client`` sends: a 480 x 640 depth image is 1.6 MB instead of ~5 MB of digits).
Cameras follow the episode format of docs/importing.md, so what a robot records for training it can send here.

Every problem is a :class:`RequestError` with an HTTP status (400 malformed, 413 too large, 422 a valid request
the server cannot answer) and one line that names the field and what to send instead.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation.datasets.episodes import POSE_WIDTH as POSE_DIM  # 8: [x, y, z, qx, qy, qz, qw, open]
from evaluation.datasets.episodes import metric_depth, non_rigid
from evaluation.simulators.sim import CameraFrame

MAX_SEED = 2**63 - 1
_DTYPES = ("uint8", "uint16", "float16", "float32", "float64")
MAX_CAMERAS = 16
MAX_PREVIOUS_POSES = 64  # a policy reads at most 8 (policies.config: history); more is a client's mistake
MAX_PIXELS = (
    4096 * 4096
)  # per image: far above any depth camera; bounds what one request can make us allocate


class RequestError(ValueError):
    """A request the server refuses; ``status`` is its HTTP status code, the message one line."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ServeRequest:
    """One parsed observation (exactly one of ``cameras`` and ``points`` is set)."""

    instruction: str
    gripper_pose: np.ndarray  # (8,) float64
    cameras: list[CameraFrame] | None
    points: np.ndarray | None  # (P, 6) float64 [x, y, z, r, g, b]
    seed: int | None
    previous_poses: np.ndarray | None = None  # (K, 8) float64, oldest first


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """An ARRAY in the compact form (dtype, shape, base64 of the C-order bytes)."""
    array = np.ascontiguousarray(array)
    if array.dtype.name not in _DTYPES:
        array = array.astype(np.float64)
    return {
        "dtype": array.dtype.name,
        "shape": list(array.shape),
        "b64": base64.b64encode(array.tobytes()).decode(),
    }


def decode_array(
    value: Any, field: str, ndim: int, last: int | None = None, finite: bool = True
) -> np.ndarray:
    """An ARRAY (nested list or compact form) of ``ndim`` dimensions (the last of size ``last`` when given);
    ``finite``: refuse NaN and infinity."""
    if isinstance(value, dict):
        dtype, shape, data = value.get("dtype"), value.get("shape"), value.get("b64")
        if dtype not in _DTYPES:
            raise RequestError(f"{field}.dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise RequestError(f"{field}.shape must be a list of non-negative integers, got {shape!r}")
        if not isinstance(data, str):
            raise RequestError(f"{field}.b64 must be a base64 string of the array's bytes")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"{field}.b64 is not valid base64") from None
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if len(raw) != expected:
            raise RequestError(f"{field}: {len(raw)} bytes for shape {shape} of {dtype} (needs {expected})")
        array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    elif isinstance(value, list):
        try:
            array = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise RequestError(f"{field} must be a rectangular list of numbers") from None
    else:
        raise RequestError(
            f"{field} must be a list of numbers or {{dtype, shape, b64}}, got {type(value).__name__}"
        )
    if array.ndim != ndim or (last is not None and array.shape[-1] != last):
        if ndim == 1 and last is not None:
            want = f"shape [{last}]"
        else:
            want = f"{ndim} dimensions" + (f", the last of size {last}" if last is not None else "")
        raise RequestError(f"{field} has shape {list(array.shape)}, needs {want}")
    if finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        raise RequestError(f"{field} contains NaN or infinity")
    return array


def _camera(value: Any, i: int) -> CameraFrame:
    field = f"cameras[{i}]"
    if not isinstance(value, dict):
        raise RequestError(f"{field} must be an object with rgb, depth, intrinsics, extrinsics")
    missing = [k for k in ("rgb", "depth", "intrinsics", "extrinsics") if k not in value]
    if missing:
        raise RequestError(f"{field} lacks {', '.join(missing)} (see docs/serving.md)")
    rgb = decode_array(value["rgb"], f"{field}.rgb", 3, 3)
    depth = decode_array(value["depth"], f"{field}.depth", 2, finite=False)  # holes (NaN, inf) become 0
    if rgb.shape[:2] != depth.shape:
        raise RequestError(f"{field}: rgb is {list(rgb.shape[:2])} pixels but depth {list(depth.shape)}")
    if depth.size > MAX_PIXELS:
        raise RequestError(
            f"{field}: {depth.shape[0]} x {depth.shape[1]} pixels is more than {MAX_PIXELS}", 413
        )
    if rgb.dtype != np.uint8:
        if rgb.size and (rgb.min() < 0 or rgb.max() > 255):
            raise RequestError(f"{field}.rgb must be colours in [0, 255]")
        rgb = rgb.astype(np.uint8)
    intrinsics = decode_array(value["intrinsics"], f"{field}.intrinsics", 2).astype(np.float64)
    extrinsics = decode_array(value["extrinsics"], f"{field}.extrinsics", 2).astype(np.float64)
    if intrinsics.shape != (3, 3) or extrinsics.shape != (4, 4):
        raise RequestError(
            f"{field}: intrinsics must be 3 x 3 and extrinsics 4 x 4, got "
            f"{list(intrinsics.shape)} and {list(extrinsics.shape)}"
        )
    problem = non_rigid(extrinsics[None])
    if problem is not None:
        raise RequestError(f"{field}.extrinsics {problem[1]}", 422)
    metres, why = metric_depth(depth)
    if metres is None:
        raise RequestError(f"{field}.depth {why}", 422)
    name = str(value.get("name", f"camera{i}"))
    return CameraFrame(name=name, rgb=rgb, depth=metres, intrinsics=intrinsics, extrinsics=extrinsics)


def parse_request(body: bytes) -> ServeRequest:
    """The request body (JSON) as a :class:`ServeRequest`; :class:`RequestError` otherwise."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(
            f"the body is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})"
        ) from None
    if not isinstance(data, dict):
        raise RequestError(
            "the body must be a JSON object with instruction, gripper_pose and cameras or points"
        )
    unknown = sorted(
        set(data) - {"instruction", "gripper_pose", "cameras", "points", "previous_poses", "seed"}
    )
    if unknown:
        raise RequestError(
            f"unknown field(s) {', '.join(unknown)}: a request has instruction, gripper_pose, "
            "cameras or points, previous_poses and seed"
        )
    instruction = data.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise RequestError("instruction must be a non-empty string (the task's instruction text)")
    if "gripper_pose" not in data:
        raise RequestError("gripper_pose is missing: [x, y, z, qx, qy, qz, qw, open]")
    pose = decode_array(data["gripper_pose"], "gripper_pose", 1, POSE_DIM).astype(np.float64)
    has_cameras, has_points = "cameras" in data, "points" in data
    if has_cameras == has_points:
        raise RequestError("send exactly one of cameras (RGB-D frames) and points (a ready point cloud)")
    cameras, points = None, None
    if has_cameras:
        if not isinstance(data["cameras"], list) or not data["cameras"]:
            raise RequestError("cameras must be a non-empty list of camera frames")
        if len(data["cameras"]) > MAX_CAMERAS:
            raise RequestError(f"{len(data['cameras'])} cameras is more than {MAX_CAMERAS}", 413)
        cameras = [_camera(c, i) for i, c in enumerate(data["cameras"])]
    else:
        points = decode_array(data["points"], "points", 2, 6).astype(np.float64)
        if len(points) > MAX_PIXELS:
            raise RequestError(f"points has {len(points)} rows, more than {MAX_PIXELS}", 413)
    previous = None
    if data.get("previous_poses") is not None:
        previous = decode_array(data["previous_poses"], "previous_poses", 2, POSE_DIM).astype(np.float64)
        if len(previous) > MAX_PREVIOUS_POSES:
            raise RequestError(
                f"previous_poses has {len(previous)} rows; send at most the last {MAX_PREVIOUS_POSES}", 413
            )
    seed = data.get("seed")
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED
    ):
        raise RequestError(f"seed must be an integer in [0, 2^63 - 1], got {seed!r}")
    return ServeRequest(
        instruction=instruction,
        gripper_pose=pose,
        cameras=cameras,
        points=points,
        seed=seed,
        previous_poses=previous,
    )
