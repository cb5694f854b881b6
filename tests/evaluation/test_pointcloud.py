"""Point-cloud pipeline: synthetic cameras (unit) and real Meta-World renders (sim)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.pointcloud import (
    PointCloudConfig,
    cloud_to_points,
    drop_surface,
    frame_to_world,
    frames_to_points,
    fuse_and_crop,
    observation_to_condition,
    select_points,
    subsample,
    voxelize,
)
from evaluation.simulators.rendering import intrinsics_matrix, look_at_quat
from evaluation.simulators.sim import CameraFrame, Observation


def _look_at_extrinsics(eye, target) -> np.ndarray:
    """Camera-to-world (OpenCV axes) looking from eye to target, built independently of the code under test."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, -1.0]) if abs(z[2]) < 0.99 else np.array([1.0, 0.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, y, z], axis=1)
    pose[:3, 3] = eye
    return pose


def _plane_frame(eye, target, height=0.0, size=48, fovy=60.0, colour=(200, 10, 10)) -> CameraFrame:
    """A camera seeing the infinite plane z = height: exact planar depth per pixel."""
    k = intrinsics_matrix(size, size, fovy)
    ext = _look_at_extrinsics(eye, target)
    u = (np.arange(size) + 0.5 - k[0, 2]) / k[0, 0]
    v = (np.arange(size) + 0.5 - k[1, 2]) / k[1, 1]
    rays_cam = np.stack(np.broadcast_arrays(u[None, :], v[:, None], 1.0), axis=-1)  # (H, W, 3), z = 1
    rays_world = rays_cam @ ext[:3, :3].T  # (H, W, 3)
    depth = (height - ext[2, 3]) / rays_world[..., 2]  # planar depth = distance along the optical axis
    depth = np.where(depth > 0, depth, 100.0).astype(np.float32)
    rgb = np.broadcast_to(np.array(colour, np.uint8), (size, size, 3)).copy()
    return CameraFrame("synthetic", rgb, depth, k, ext)


@pytest.mark.unit
def test_back_projection_lands_on_the_plane_and_in_front_of_the_camera():
    frame = _plane_frame(eye=(0.3, 0.1, 0.8), target=(0.0, 0.6, 0.0), height=0.05)
    xyz, rgb = frame_to_world(frame)
    visible = frame.depth.reshape(-1) < 50
    assert visible.sum() > 0.9 * visible.size
    np.testing.assert_allclose(xyz[visible, 2], 0.05, atol=1e-6)  # float32 depth
    assert rgb.shape == (48 * 48, 3) and rgb.dtype == np.uint8


@pytest.mark.unit
def test_crop_removes_table_and_outside_points_and_features_follow_the_batch_layout():
    cfg = PointCloudConfig(voxel_size=0.02, max_points=10_000)
    table = _plane_frame(eye=(0.0, 0.0, 1.0), target=(0.0, 0.6, 0.0), height=0.0)
    block = _plane_frame(eye=(0.0, 0.0, 1.0), target=(0.0, 0.6, 0.0), height=0.1, colour=(0, 255, 0))
    assert len(fuse_and_crop([table], cfg)[0]) == 0  # a bare table is removed entirely
    points = frames_to_points([block], cfg)
    assert points.dtype == np.float32 and points.shape[1] == 7 and len(points) > 0
    low, high = np.array(cfg.workspace_low), np.array(cfg.workspace_high)
    assert np.all(points[:, :3] >= low - 1e-6) and np.all(points[:, :3] <= high + 1e-6)
    np.testing.assert_allclose(points[:, 3:6], np.tile([-1.0, 1.0, -1.0], (len(points), 1)), atol=1e-6)
    np.testing.assert_allclose(points[:, 6], points[:, 2] - cfg.table_height, atol=1e-6)


def _fixture_top_scene() -> tuple[np.ndarray, np.ndarray]:
    """A 40 x 40 cm flat top at z = 5 cm (1 cm grid: 1600 points) with a 4 cm puck on it (z 6-9 cm, 64
    points) and a bare table at z = 0 (removed by the crop): (xyz (P, 3), rgb (P, 3))."""
    g = np.arange(-0.195, 0.2, 0.01)
    top = np.array([[x, 0.6 + y, 0.05] for x in g for y in g])  # (1600, 3)
    c = np.arange(0.005, 0.04, 0.01)  # (4,) voxel centres across 4 cm
    puck = np.array([[0.1 + x, 0.7 + y, 0.055 + z] for x in c for y in c for z in c])  # (64, 3)
    table = np.array([[x, 0.6 + y, 0.0] for x in g[::4] for y in g[::4]])
    xyz = np.concatenate([top, puck, table])
    rgb = np.concatenate(
        [np.full((len(top), 3), 120), np.full((len(puck), 3), 60), np.full((len(table), 3), 90)]
    )
    return xyz, rgb.astype(np.uint8)


@pytest.mark.unit
def test_a_fixture_top_that_holds_most_voxels_is_dropped_and_what_stands_on_it_is_kept():
    xyz, rgb = _fixture_top_scene()
    on = PointCloudConfig(voxel_size=0.01, max_points=10_000, surface_fraction=0.5)
    points = cloud_to_points(xyz, rgb, on)
    assert len(points) == 64, "only the puck's voxels remain"
    assert points[:, 2].min() > 0.05 + on.table_margin and np.allclose(points[:, 3:6], 60 / 127.5 - 1)
    # off (the default), or a top that holds less than the fraction: nothing changes
    assert len(cloud_to_points(xyz, rgb, on.model_copy(update={"surface_fraction": 0.0}))) == 1600 + 64
    assert len(cloud_to_points(xyz, rgb, on.model_copy(update={"surface_fraction": 0.99}))) == 1600 + 64
    assert drop_surface(np.zeros((0, 3)), np.zeros((0, 3)), on)[0].shape == (0, 3)
    # recorded in collection settings only when on, so older datasets keep theirs
    assert (
        "surface_fraction" not in PointCloudConfig().settings()
        and "hide_arm" not in PointCloudConfig().settings()
    )
    assert PointCloudConfig(hide_arm=True).settings()["hide_arm"] is True
    assert on.settings()["surface_fraction"] == 0.5


@pytest.mark.unit
def test_voxelize_means_and_is_order_independent():
    cfg = PointCloudConfig(voxel_size=0.1)
    xyz = np.array([[0.01, 0.31, 0.01], [0.03, 0.33, 0.03], [0.21, 0.51, 0.11]])
    rgb = np.array([[0, 0, 0], [100, 200, 50], [10, 10, 10]], np.uint8)
    out_xyz, out_rgb = voxelize(xyz, rgb, cfg)
    assert len(out_xyz) == 2
    np.testing.assert_allclose(out_xyz[0], [0.02, 0.32, 0.02])
    np.testing.assert_allclose(out_rgb[0], [50, 100, 25])
    perm = np.array([2, 0, 1])
    again_xyz, again_rgb = voxelize(xyz[perm], rgb[perm], cfg)
    np.testing.assert_allclose(again_xyz, out_xyz)
    np.testing.assert_allclose(again_rgb, out_rgb)


@pytest.mark.unit
def test_subsample_and_select_points_are_bounded_and_deterministic():
    assert np.array_equal(subsample(10, 20, 0), np.arange(10))
    a, b = subsample(1000, 100, 3), subsample(1000, 100, 3)
    assert len(a) == 100 and np.array_equal(a, b) and len(np.unique(a)) == 100
    assert np.array_equal(select_points(500, 64, None), select_points(500, 64, None))
    r1 = select_points(500, 64, np.random.default_rng(1))
    r2 = select_points(500, 64, np.random.default_rng(2))
    assert len(r1) == 64 and not np.array_equal(r1, r2)


@pytest.mark.unit
def test_observation_to_condition_shapes_and_padding():
    cfg = PointCloudConfig(voxel_size=0.02)
    frame = _plane_frame(eye=(0.0, 0.0, 1.0), target=(0.0, 0.6, 0.0), height=0.1)
    obs = Observation("t", "do it", [frame], np.arange(8, dtype=np.float64))
    tokens, mask = np.ones((5, 16), np.float32), np.ones(5, bool)
    batch = observation_to_condition(obs, (tokens, mask), max_points=64, cfg=cfg)
    assert batch.points.shape == (1, 64, 7) and batch.point_mask.all()
    assert batch.text.shape == (1, 5, 16) and batch.target is None
    assert torch.equal(batch.gripper[0], torch.arange(8, dtype=torch.float32))
    big = observation_to_condition(obs, (tokens, mask), max_points=60_000, cfg=cfg)
    n = len(frames_to_points([frame], cfg))
    assert big.points.shape[1] == n and big.point_mask.sum() == n


@pytest.mark.unit
def test_config_rejects_inverted_workspace():
    with pytest.raises(ValueError, match="workspace_low"):
        PointCloudConfig(workspace_low=(0, 0, 0), workspace_high=(1, -1, 1))


@pytest.mark.unit
def test_look_at_quaternion_points_the_camera_at_its_target():
    import mujoco

    eye, target = np.array([0.6, 0.0, 0.9]), np.array([0.0, 0.6, 0.0])
    mat = np.zeros(9)
    mujoco.mju_quat2Mat(mat, look_at_quat(eye, target))
    forward = -mat.reshape(3, 3)[:, 2]  # MuJoCo cameras look along -z
    np.testing.assert_allclose(forward, (target - eye) / np.linalg.norm(target - eye), atol=1e-9)


# --------------------------------------------------------------------------- real MuJoCo renders
@pytest.fixture(scope="module")
def mw_obs():
    from evaluation.simulators.metaworld_backend import MetaWorldConfig, MetaWorldSimulator
    from evaluation.simulators.rendering import RenderConfig

    sim = MetaWorldSimulator(MetaWorldConfig(render=RenderConfig(width=96, height=96)))
    try:
        yield sim, sim.reset("pick-place-v3", 0, 0)
    finally:
        sim.close()


@pytest.mark.sim
def test_table_points_are_at_height_zero_on_every_camera(mw_obs):
    _, obs = mw_obs
    assert len(obs.cameras) == 4
    for frame in obs.cameras:
        xyz, _ = frame_to_world(frame)
        near_table = (
            (np.abs(xyz[:, 0]) < 0.5) & (xyz[:, 1] > 0.3) & (xyz[:, 1] < 0.95) & (np.abs(xyz[:, 2]) < 0.02)
        )
        assert near_table.sum() > 500, frame.name
        # the table top dominates this slab: its median and most points sit at z = 0 within a few mm
        assert abs(np.median(xyz[near_table, 2])) < 0.002, frame.name
        assert np.mean(np.abs(xyz[near_table, 2]) < 0.003) > 0.9, frame.name


@pytest.mark.sim
def test_task_object_is_in_the_cloud_near_its_simulator_position(mw_obs):
    _, obs = mw_obs
    points = frames_to_points(obs.cameras, PointCloudConfig())
    puck = obs.extras["object_pos"][:3]
    dist = np.linalg.norm(points[:, :3] - puck, axis=1)
    assert (dist < 0.03).sum() >= 5  # the puck (radius ~2 cm) is seen
    red = (points[:, 3] - points[:, 4] > 0.5) & (points[:, 3] - points[:, 5] > 0.5) & (dist < 0.05)
    assert red.sum() >= 3  # and it is the (dark) red puck


@pytest.mark.sim
def test_camera_extrinsics_round_trip(mw_obs):
    from evaluation.simulators.rendering import DEFAULT_CAMERAS

    _, obs = mw_obs
    for frame, spec in zip(obs.cameras, DEFAULT_CAMERAS, strict=True):
        rot, eye = frame.extrinsics[:3, :3], frame.extrinsics[:3, 3]
        np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-9)
        assert np.linalg.det(rot) == pytest.approx(1.0)
        np.testing.assert_allclose(eye, spec.eye, atol=1e-9)
        forward = np.subtract(spec.target, spec.eye) / np.linalg.norm(np.subtract(spec.target, spec.eye))
        np.testing.assert_allclose(rot[:, 2], forward, atol=1e-6)  # OpenCV z = optical axis
        xyz, _ = frame_to_world(frame)  # pixel -> world ...
        cam = (xyz - eye) @ rot  # ... -> camera frame -> pixel again
        uv = cam[:, :2] / cam[:, 2:3] @ frame.intrinsics[:2, :2].T + frame.intrinsics[:2, 2]
        h, w = frame.depth.shape
        grid = np.stack(np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5), axis=-1).reshape(-1, 2)
        np.testing.assert_allclose(uv, grid, atol=1e-6)
        np.testing.assert_allclose(cam[:, 2], frame.depth.reshape(-1), rtol=1e-5)
