"""The Meta-World backend: interface, variations split, keypose control, GL back-end selection."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.simulators.metaworld_backend import (
    TEST_VARIATIONS,
    TRAIN_VARIATIONS,
    MetaWorldConfig,
    MetaWorldSimulator,
    suite_task_names,
    variations,
)
from evaluation.simulators.rendering import GLBackendError, RenderConfig, select_gl_backend
from evaluation.simulators.sim import Simulator, SimulatorError, UnknownTaskError


@pytest.mark.unit
def test_train_and_test_variations_are_disjoint_and_cover_the_configurations():
    assert set(variations("train")).isdisjoint(variations("test"))
    assert sorted(TRAIN_VARIATIONS + TEST_VARIATIONS) == list(range(50))
    with pytest.raises(ValueError, match="split"):
        variations("val")  # type: ignore[arg-type]


@pytest.mark.unit
def test_suite_task_names():
    mt10 = suite_task_names("mt10")
    assert len(mt10) == 10 and "pick-place-v3" in mt10
    assert len(suite_task_names("mt50")) == 50


@pytest.mark.unit
def test_gl_backend_selection_prefers_egl_then_osmesa_and_names_missing_libraries():
    env: dict[str, str] = {}
    assert select_gl_backend(env, library_loads=lambda lib: True) == "egl" and env["MUJOCO_GL"] == "egl"
    env = {}
    assert select_gl_backend(env, library_loads=lambda lib: lib == "OSMesa") == "osmesa"
    assert env["PYOPENGL_PLATFORM"] == "osmesa"
    with pytest.raises(GLBackendError, match="libegl1.*libosmesa6"):
        select_gl_backend({}, library_loads=lambda lib: False)
    with pytest.raises(GLBackendError, match="libosmesa6"):
        select_gl_backend({"MUJOCO_GL": "osmesa"}, library_loads=lambda lib: False)
    with pytest.raises(GLBackendError, match="cannot render headless"):
        select_gl_backend({"MUJOCO_GL": "glfw"}, library_loads=lambda lib: True)


@pytest.fixture(scope="module")
def sim():
    simulator = MetaWorldSimulator(MetaWorldConfig(render=RenderConfig(width=64, height=48)))
    try:
        yield simulator
    finally:
        simulator.close()


@pytest.mark.sim
def test_reset_returns_a_full_observation(sim):
    assert isinstance(sim, Simulator)
    obs = sim.reset("reach-v3", 3, seed=0)
    assert obs.task == "reach-v3" and obs.instruction == "reach the goal position"
    assert [c.name for c in obs.cameras] == ["left_shoulder", "right_shoulder", "front", "overhead"]
    for cam in obs.cameras:
        assert cam.rgb.shape == (48, 64, 3) and cam.rgb.dtype == np.uint8
        assert cam.depth.shape == (48, 64) and cam.depth.dtype == np.float32
        assert cam.intrinsics[0, 2] == 32 and cam.intrinsics[1, 2] == 24
        assert cam.rgb.std() > 5  # an actual picture, not a blank buffer
    pose = obs.gripper_pose
    assert pose.shape == (8,) and pose[7] == 1.0
    assert np.linalg.norm(pose[3:7]) == pytest.approx(1.0)
    assert {"object_pos", "goal_pos"} <= set(obs.extras)


@pytest.mark.sim
def test_reset_is_deterministic_and_variations_differ(sim):
    a = sim.reset("push-v3", 0, seed=0)
    b = sim.reset("push-v3", 0, seed=0)
    c = sim.reset("push-v3", 1, seed=0)
    np.testing.assert_array_equal(a.cameras[0].rgb, b.cameras[0].rgb)
    np.testing.assert_array_equal(a.extras["object_pos"], b.extras["object_pos"])
    assert not np.allclose(a.extras["object_pos"], c.extras["object_pos"])


@pytest.mark.sim
def test_step_keypose_reaches_a_pose_and_reports_unreachable_ones(sim):
    obs = sim.reset("reach-v3", 0, seed=0)
    target = obs.gripper_pose.copy()
    target[:3] += [0.05, 0.05, -0.03]
    outcome = sim.step_keypose(target)
    assert outcome.reached and 0 < outcome.sim_steps <= sim.config.controller.max_steps
    assert np.linalg.norm(sim.gripper_pose()[:3] - target[:3]) <= sim.config.controller.tolerance_m
    far = target.copy()
    far[:3] = [0.0, 0.6, 2.0]  # above the mocap's reachable box
    outcome = sim.step_keypose(far)
    assert not outcome.reached and outcome.sim_steps == sim.config.controller.max_steps


@pytest.mark.sim
def test_reaching_the_goal_succeeds(sim):
    obs = sim.reset("reach-v3", 5, seed=0)
    goal = obs.extras["goal_pos"]
    outcome = sim.step_keypose(np.array([*goal, *obs.gripper_pose[3:7], 1.0]))
    assert outcome.success
    # counted from the reset, and reach counts within 5 cm: before the hand arrived
    assert outcome.success_step is not None and 0 < outcome.success_step < outcome.sim_steps
    again = sim.step_keypose(np.array([*goal, *obs.gripper_pose[3:7], 1.0]))
    assert again.success and again.success_step == outcome.success_step  # the first success's step stays


@pytest.mark.sim
def test_bad_inputs(sim):
    with pytest.raises(UnknownTaskError, match="pick-place-v3"):
        sim.reset("pick-plaice-v3", 0, 0)
    with pytest.raises(ValueError, match="variation"):
        sim.reset("reach-v3", 50, 0)
    with pytest.raises(ValueError, match="8 finite floats"):
        sim.step_keypose(np.zeros(3))
    fresh = MetaWorldSimulator()
    with pytest.raises(SimulatorError, match="before reset"):
        fresh.step_keypose(np.zeros(8))
    fresh.close()


@pytest.mark.sim
def test_switching_tasks_renders_the_same_pictures(sim):
    """Each task model has its own render context on a shared GL context: switching back must not read
    another context's framebuffer."""
    first = sim.reset("reach-v3", 0, seed=0)
    sim.reset("push-v3", 0, seed=0)
    again = sim.reset("reach-v3", 0, seed=0)
    for a, b in zip(first.cameras, again.cameras, strict=True):
        np.testing.assert_array_equal(a.rgb, b.rgb)
        np.testing.assert_array_equal(a.depth, b.depth)


def _rendered(obs):
    return [(c.rgb, c.depth) for c in obs.cameras]


@pytest.mark.sim
def test_evicted_task_is_rebuilt_and_renders_and_steps_the_same():
    """With room for one task, switching evicts the other's env and render context (freed, not leaked);
    the rebuilt task renders bit-identical pictures and its keyposes end at the same state."""
    sim = MetaWorldSimulator(MetaWorldConfig(render=RenderConfig(width=64, height=48), max_cached_tasks=1))
    try:
        first = sim.reset("reach-v3", 0, seed=0)
        target = first.gripper_pose.copy()
        target[:3] += [0.05, 0.05, -0.03]
        first_step = sim.step_keypose(target)
        first_after = sim.observe()
        assert list(sim._envs) == ["reach-v3"] and list(sim._renderers) == ["reach-v3"]
        sim.reset("push-v3", 0, seed=0)
        assert list(sim._envs) == ["push-v3"] and list(sim._renderers) == ["push-v3"] and sim.evictions == 1
        again = sim.reset("reach-v3", 0, seed=0)
        assert sim.evictions == 2
        again_step = sim.step_keypose(target)
        again_after = sim.observe()
        for (rgb_a, depth_a), (rgb_b, depth_b) in zip(
            _rendered(first) + _rendered(first_after), _rendered(again) + _rendered(again_after), strict=True
        ):
            np.testing.assert_array_equal(rgb_a, rgb_b)
            np.testing.assert_array_equal(depth_a, depth_b)
        assert first_step == again_step
        np.testing.assert_array_equal(first_after.gripper_pose, again_after.gripper_pose)
    finally:
        sim.close()
    assert not sim._envs and not sim._renderers


@pytest.mark.sim
def test_the_cache_keeps_the_most_recently_reset_tasks():
    sim = MetaWorldSimulator(MetaWorldConfig(render=RenderConfig(width=32, height=24), max_cached_tasks=2))
    try:
        for task in ("reach-v3", "push-v3", "reach-v3", "door-open-v3"):
            sim.reset(task, 0, seed=0)
        assert list(sim._envs) == ["reach-v3", "door-open-v3"] and set(sim._renderers) == set(sim._envs)
        assert sim.evictions == 1 and sim.task == "door-open-v3"
    finally:
        sim.close()


@pytest.mark.sim
def test_hide_arm_hides_the_links_above_the_gripper_and_changes_no_physics():
    """``RenderConfig.hide_arm``: the cameras draw the gripper (the subtree of body ``hand``) but none of the rest of
    the robot; the scene, its physics and the other geoms are as before."""
    import mujoco

    from evaluation.pointcloud import PointCloudConfig, fuse_and_crop
    from evaluation.simulators.metaworld_backend import arm_geoms

    clouds, states, near = {}, {}, {}
    for hide in (False, True):
        cfg = MetaWorldConfig(suite="mt50", render=RenderConfig(width=64, height=64, hide_arm=hide))
        with MetaWorldSimulator(cfg) as sim:
            obs = sim.reset("soccer-v3", 0, seed=0)
            sim.step_keypose(np.array([0.0, 0.6, 0.1, 0, 0, 0, 1, 1]))
            states[hide] = sim.get_state()
            model = sim.env.model
            hidden = arm_geoms(model)
            hand = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "hand")
            names = {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, model.geom_bodyid[g]) for g in hidden}
            assert {"right_l0", "right_l6", "pedestal"} <= names and not names & {
                "hand",
                "leftpad",
                "rightclaw",
            }
            assert all(model.geom_bodyid[g] != hand for g in hidden)
        xyz, _ = fuse_and_crop(obs.cameras, PointCloudConfig())
        clouds[hide] = xyz
        near[hide] = np.sum(
            np.linalg.norm(xyz - obs.gripper_pose[:3], axis=1) < 0.08
        )  # within 8 cm of the TCP
    assert near[True] >= max(20, near[False]), "the gripper is drawn (no longer behind the arm)"
    assert np.sum(clouds[False][:, 2] > 0.3) > 100 and np.sum(clouds[True][:, 2] > 0.3) == 0
    assert np.array_equal(states[False], states[True]), "hiding geoms changes no contact or motion"
    assert RenderConfig().model_dump() == RenderConfig(hide_arm=False).model_dump()
    assert (
        "hide_arm" not in RenderConfig().model_dump() and RenderConfig(hide_arm=True).model_dump()["hide_arm"]
    )
