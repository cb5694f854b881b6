"""Recorded episodes (``evaluation.datasets.episodes``) -> keyframe dataset (``episode_import``).

Synthetic recordings: a table plane at z = TABLE_Z and a gripper that moves, stops, closes and moves on, seen
by a fixed pinhole camera looking straight down (planar depth is exact), so keyframes, poses and the fitted
table are known. The Meta-World round trip (export, import, train, evaluate) is in tests/platform.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.datasets.dataset import DatasetError, KeyframeDataset
from evaluation.datasets.episode_import import import_episodes, main
from evaluation.datasets.episodes import (
    CameraRecording,
    EpisodeFormatError,
    RecordedEpisode,
    read_episode,
    write_episode,
)
from evaluation.datasets.keyframes import KeyframeConfig, detect_keyframes
from tests.evaluation.rlbench_standin.standin import FakeTextEncoder

pytestmark = pytest.mark.unit
TABLE_Z = 0.1
CAMERA_Z = 1.0
SIZE = 32


def _camera() -> tuple[np.ndarray, np.ndarray]:
    k = np.array([[30.0, 0, SIZE / 2], [0, 30.0, SIZE / 2], [0, 0, 1]])
    down = np.eye(4)
    down[:3, :3] = np.diag([1.0, -1.0, -1.0])  # OpenCV camera looking down -z (x right, y down in the image)
    down[:3, 3] = [0.0, 0.5, CAMERA_Z]
    return k, down


def _trajectory() -> np.ndarray:
    """(T, 8): along x for 20 frames, rest 8 (a still keyframe), along y for 15, close and rest 8 (a gripper
    keyframe), up for 15 (the final one)."""
    quat = [0.0, 0.7071068, 0.0, 0.7071068]
    xyz, out = np.array([0.0, 0.5, 0.3]), []
    for step, frames, opening in (
        ((0.01, 0, 0), 20, 1.0),
        ((0, 0, 0), 8, 1.0),
        ((0, 0.01, 0), 15, 1.0),
        ((0, 0, 0), 8, 0.0),
        ((0, 0, 0.005), 15, 0.0),
    ):
        for _ in range(frames):
            xyz = xyz + step
            out.append([*xyz, *quat, opening])
    return np.array(out)


def write_synthetic(path, instruction="move the block", **override) -> RecordedEpisode:
    gripper = override.get("gripper", _trajectory())
    k, ext = _camera()
    t = len(gripper)
    rgb = np.full((SIZE, SIZE, 3), 128, np.uint8)
    depth = np.full((SIZE, SIZE), CAMERA_Z - TABLE_Z, np.float32)
    depth[10:14, 10:14] = CAMERA_Z - TABLE_Z - 0.05  # a 5 cm block
    depth = override.get("depth", depth)
    cams = {"top": CameraRecording(k, override.get("extrinsics", ext), [rgb] * t, [depth] * t)}
    write_episode(path, instruction, gripper, cams)
    return read_episode(path) if not override else None


def test_an_episode_round_trips_and_its_samples_follow_the_collection_rule(tmp_path):
    root = tmp_path / "rec"
    episode = write_synthetic(root / "move-block" / "ep0")
    write_synthetic(root / "move-block" / "ep1")
    out = tmp_path / "ds"
    lines = []
    manifest = import_episodes(root, out, text_encoder=FakeTextEncoder(), progress=False, log=lines.append)
    keyframes = detect_keyframes(episode.gripper[:, :3], episode.gripper_open, KeyframeConfig(refine=False))
    ds = KeyframeDataset(out)
    assert manifest["suite"] == "recorded" and manifest["counts"]["move-block"]["episodes"] == 2
    assert len(ds) == 2 * len(keyframes) and len(keyframes) >= 3  # the stop, the close, the end
    first = np.flatnonzero(ds.sample_episode == 0)
    observed = [0] + [kf.index for kf in keyframes[:-1]]
    for row, kf, obs in zip(first, keyframes, observed, strict=True):
        assert np.allclose(ds.target[row, :7], episode.gripper[kf.index, :7], atol=1e-6)
        assert ds.target[row, 7] == float(episode.gripper_open[kf.index])
        assert np.allclose(ds.gripper[row, :3], episode.gripper[obs, :3], atol=1e-6)
    # the table is fitted (and printed), and cropped away: only the block's top is left
    assert abs(ds.pointcloud_config.table_height - TABLE_Z) < 0.01
    assert any("workspace fitted to the data" in line for line in lines)
    heights = ds.sample_points(0)[:, 6]
    assert len(heights) > 0 and np.allclose(heights, 0.05, atol=0.011)


def test_a_stopped_import_resumes_and_other_settings_are_refused(tmp_path):
    root = tmp_path / "rec"
    write_synthetic(root / "move-block" / "ep0")
    out = tmp_path / "ds"
    import_episodes(root, out, text_encoder=FakeTextEncoder(), progress=False, log=lambda _: None)
    shard = next((out / "shards").rglob("*.parquet"))
    before = shard.stat().st_mtime_ns
    import_episodes(root, out, text_encoder=FakeTextEncoder(), progress=False, log=lambda _: None)
    assert shard.stat().st_mtime_ns == before  # kept
    with pytest.raises(DatasetError, match="different settings"):
        import_episodes(
            root,
            out,
            pointcloud={"voxel_size": 0.02},
            text_encoder=FakeTextEncoder(),
            progress=False,
            log=lambda _: None,
        )


def _scaled_extrinsics():
    _, ext = _camera()
    ext[:3, :3] *= 1.1
    return ext


def _mm_depth():
    return np.full((SIZE, SIZE), 1000 * (CAMERA_Z - TABLE_Z), np.float32)


def _pose_with_gap():
    gripper = _trajectory()
    gripper[7] = np.nan
    return gripper


@pytest.mark.parametrize(
    "case, write, needle",
    [
        (
            "missing frame",
            lambda p: (
                write_synthetic(p, gripper=_trajectory()),
                (p / "top" / "rgb" / "000012.png").unlink(),
            ),
            "000012.png is missing",
        ),
        (
            "depth in mm (uint16)",
            lambda p: write_synthetic(p, depth=_mm_depth().astype(np.uint16)),
            "millimetres",
        ),
        ("depth in mm (float)", lambda p: write_synthetic(p, depth=_mm_depth()), "millimetres"),
        (
            "extrinsics not rigid",
            lambda p: write_synthetic(p, extrinsics=_scaled_extrinsics()),
            "not a rigid transform",
        ),
        (
            "frame without a pose",
            lambda p: write_synthetic(p, gripper=_pose_with_gap()),
            "no pose at frame 7",
        ),
    ],
)
def test_bad_recordings_are_refused_in_one_line_naming_the_episode_and_the_fix(
    tmp_path, capsys, case, write, needle
):
    root = tmp_path / "rec"
    episode = root / "move-block" / "ep0"
    write(episode)
    out = tmp_path / "ds"
    assert main(["--root", str(root), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err and str(episode) in err, (case, err)
    assert "write" in err or "drop" in err or "record" in err  # says what to do
    assert not out.exists()  # refused before anything was written


def test_an_incomplete_episode_json_is_refused(tmp_path):
    episode = tmp_path / "rec" / "t" / "ep0"
    write_synthetic(episode)
    (episode / "episode.json").write_text(json.dumps({"cameras": ["top"]}))
    with pytest.raises(EpisodeFormatError, match='needs "instruction"'):
        read_episode(episode)
