"""The policy server's wire format (platform.serve.protocol): what it accepts exactly and what it refuses in
one line with a 4xx status. No Ray, no simulator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.simulators.sim import CameraFrame
from platform.serve.client import request_body
from platform.serve.protocol import RequestError, decode_array, encode_array, parse_request

pytestmark = pytest.mark.unit


def _frame(depth_scale: float = 1.0, extrinsics: np.ndarray | None = None) -> CameraFrame:
    rng = np.random.default_rng(0)
    return CameraFrame(
        name="front",
        rgb=rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
        depth=(rng.uniform(0.4, 1.2, (6, 8)) * depth_scale).astype(np.float32),
        intrinsics=np.array([[10.0, 0, 4], [0, 10.0, 3], [0, 0, 1]]),
        extrinsics=np.eye(4) if extrinsics is None else extrinsics,
    )


POSE = [0.1, 0.6, 0.2, 0.0, 1.0, 0.0, 0.0, 1.0]


@pytest.mark.parametrize("dtype", ["uint8", "float32", "float64"])
def test_arrays_travel_bit_exactly(dtype):
    array = (np.random.default_rng(1).uniform(0, 200, (5, 4, 3))).astype(dtype)
    out = decode_array(json.loads(json.dumps(encode_array(array))), "x", 3)
    assert out.dtype == array.dtype and np.array_equal(out, array)


def test_a_camera_request_parses_to_the_same_frames():
    frame = _frame()
    req = parse_request(request_body("reach the goal position", POSE, cameras=[frame], seed=7))
    assert req.instruction == "reach the goal position" and req.seed == 7 and req.points is None
    assert np.array_equal(req.gripper_pose, POSE)
    (got,) = req.cameras
    assert np.array_equal(got.rgb, frame.rgb) and np.array_equal(got.depth, frame.depth)
    assert np.array_equal(got.intrinsics, frame.intrinsics) and np.array_equal(
        got.extrinsics, frame.extrinsics
    )


def test_a_point_cloud_request_and_nested_lists():
    body = json.dumps({"instruction": "push", "gripper_pose": POSE, "points": [[0, 0.5, 0.1, 10, 20, 30]]})
    req = parse_request(body.encode())
    assert req.cameras is None and req.points.shape == (1, 6) and req.seed is None
    assert req.previous_poses is None


def test_previous_poses_travel_oldest_first_and_an_empty_list_is_no_history():
    earlier = [[0.0, 0.5, 0.3, 0, 1, 0, 0, 1], [0.05, 0.55, 0.25, 0, 1, 0, 0, 0]]
    req = parse_request(request_body("push", POSE, points=np.zeros((1, 6)), previous_poses=earlier))
    assert np.array_equal(req.previous_poses, earlier)
    assert (
        parse_request(request_body("push", POSE, points=np.zeros((1, 6)), previous_poses=[])).previous_poses
        is None
    )
    many = json.dumps(
        {"instruction": "a", "gripper_pose": POSE, "points": [[0] * 6], "previous_poses": [POSE] * 65}
    )
    with pytest.raises(RequestError, match="at most the last 64") as info:
        parse_request(many.encode())
    assert info.value.status == 413


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (
            json.dumps({"instruction": "", "gripper_pose": POSE, "points": [[0] * 6]}).encode(),
            400,
            "instruction",
        ),
        (
            json.dumps({"instruction": "a", "gripper_pose": POSE[:7], "points": [[0] * 6]}).encode(),
            400,
            "gripper_pose",
        ),
        (json.dumps({"instruction": "a", "gripper_pose": POSE}).encode(), 400, "exactly one of cameras"),
        (json.dumps({"instruction": "a", "gripper_pose": POSE, "points": [[0] * 5]}).encode(), 400, "points"),
        (
            json.dumps({"instruction": "a", "gripper_pose": POSE, "points": [[0] * 6], "seed": -1}).encode(),
            400,
            "seed",
        ),
        (
            json.dumps({"instruction": "a", "gripper_pose": POSE, "points": [[0] * 6], "sed": 1}).encode(),
            400,
            "sed",
        ),
        (
            json.dumps(
                {"instruction": "a", "gripper_pose": POSE, "points": [[0] * 6], "previous_poses": [POSE[:7]]}
            ).encode(),
            400,
            "previous_poses",
        ),
        (
            json.dumps(
                {"instruction": "a", "gripper_pose": [float("nan")] * 8, "points": [[0] * 6]}
            ).encode(),
            400,
            "NaN",
        ),
        (
            json.dumps(
                {
                    "instruction": "a",
                    "gripper_pose": POSE,
                    "points": {"dtype": "float32", "shape": [2, 6], "b64": "AAAA"},
                }
            ).encode(),
            400,
            "bytes for shape",
        ),
    ],
)
def test_malformed_requests_are_refused_in_one_line(body, status, words):
    with pytest.raises(RequestError) as info:
        parse_request(body)
    assert info.value.status == status and words in str(info.value) and "\n" not in str(info.value)


def test_depth_in_millimetres_and_non_rigid_extrinsics_are_refused():
    with pytest.raises(RequestError, match="millimetres") as info:
        parse_request(request_body("a", POSE, cameras=[_frame(depth_scale=1000.0)]))
    assert info.value.status == 422
    scaled = np.diag([2.0, 2.0, 2.0, 1.0])
    with pytest.raises(RequestError, match="not a rigid transform"):
        parse_request(request_body("a", POSE, cameras=[_frame(extrinsics=scaled)]))
    frame = _frame()
    body = json.loads(request_body("a", POSE, cameras=[frame]))
    body["cameras"][0]["depth"] = encode_array(np.zeros((5, 8), np.float32))
    with pytest.raises(RequestError, match="rgb is \\[6, 8\\] pixels but depth \\[5, 8\\]"):
        parse_request(json.dumps(body).encode())
