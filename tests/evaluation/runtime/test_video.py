"""Rollout videos: projection of the predicted keypose, frames per episode, the size bound."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evaluation.runtime.episode import EpisodeSpec, LocalInference, run_episode
from evaluation.runtime.video import RED, SCALE, annotate, project, video_name, write_gif, write_videos
from evaluation.simulators.fake_sim import FakeSimConfig, FakeSimulator
from evaluation.simulators.sim import CameraFrame
from tests.evaluation.eval_fakes import FakeGoalPolicy, conditioner, fake_instructions

pytestmark = pytest.mark.unit

TASKS = FakeSimConfig().tasks
INSTR = fake_instructions(TASKS)


def _camera(size: int = 32) -> CameraFrame:
    """A camera at the origin looking along +x (OpenCV axes: x right = -y world, y down = -z world)."""
    c2w = np.eye(4)
    c2w[:3, :3] = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)  # columns: cam x, y, z in world
    k = np.array([[size / 2, 0, size / 2], [0, size / 2, size / 2], [0, 0, 1]], float)
    return CameraFrame(
        "front", np.zeros((size, size, 3), np.uint8), np.ones((size, size), np.float32), k, c2w
    )


def test_projection_puts_a_point_ahead_at_the_centre_and_behind_nowhere():
    cam = _camera()
    assert project(cam, np.array([2.0, 0.0, 0.0])) == pytest.approx((16.0, 16.0))
    u, v = project(cam, np.array([1.0, -0.5, 0.0]))  # world -y is image right
    assert u == pytest.approx(24.0) and v == pytest.approx(16.0)
    assert project(cam, np.array([-1.0, 0.0, 0.0])) is None


def test_the_predicted_keypose_is_drawn_where_it_projects():
    cam = _camera()
    target = np.array([1.0, -0.5, 0.0, 0, 0, 0, 1, 0.0])  # closes the gripper: a filled red disc
    frame = annotate(cam, "t", target_pose=target)
    assert frame.shape == (32 * SCALE, 32 * SCALE, 3)
    assert tuple(frame[16 * SCALE, 24 * SCALE]) == RED
    assert tuple(frame[16 * SCALE, 8 * SCALE]) == (0, 0, 0)  # elsewhere: the (black) image


def test_an_episode_records_one_frame_per_keypose_plus_the_outcome():
    spec = EpisodeSpec("fake-push", 1, 3)
    out = run_episode(
        FakeSimulator(),
        LocalInference(FakeGoalPolicy(max_step=0.05)),
        conditioner(),
        INSTR,
        spec,
        25,
        record_camera="cam0",
    )
    assert out.result.success and len(out.frames) == out.result.steps + 1
    plain = run_episode(
        FakeSimulator(), LocalInference(FakeGoalPolicy(max_step=0.05)), conditioner(), INSTR, spec
    )
    assert plain.frames is None and plain.result == out.result.__class__(
        **{**out.result.__dict__, "wall_s": plain.result.wall_s}
    )


def test_gifs_stay_under_the_size_bound_and_keep_first_and_last_frames(tmp_path):
    rng = np.random.default_rng(0)
    frames = [
        rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(20)
    ]  # noise compresses badly: about 15 KB a frame
    path = write_gif(frames, tmp_path / "v.gif", max_bytes=75_000)
    assert path.stat().st_size <= 75_000
    with Image.open(path) as gif:
        assert 2 <= gif.n_frames < 20
    names = write_videos(
        {("fake-push", True): (None, frames[:3]), ("fake-push", False): (None, frames[:2])}, tmp_path
    )
    assert names == [video_name("fake-push", False), video_name("fake-push", True)]
    assert all((tmp_path / n).stat().st_size > 0 for n in names)
    assert not list(tmp_path.glob("*.tmp"))
