"""The RLBench backend against the stand-in ``rlbench``/``pyrep`` (tests/evaluation/rlbench_standin).

The stand-in reproduces the API surface the backend uses (names, signatures, observation fields,
exceptions, PyRep's camera model) with the fake simulator's physics. Nothing here runs CoppeliaSim.
"""

from __future__ import annotations

import functools
import importlib
import pickle
import sys

import numpy as np
import pytest
import torch

from evaluation.datasets.rlbench_import import rlbench_pointcloud_config
from evaluation.datasets.rlbench_keyframes import demo_keyframes
from evaluation.pointcloud import PointCloudConditioner, frame_to_world
from evaluation.runtime.episode import EpisodeSpec, run_episode
from evaluation.simulators.rlbench_backend import (
    RLBenchConfig,
    RLBenchSimulator,
    RLBenchUnavailableError,
    _uses_peract_layout,
    list_episodes,
    opencv_camera,
    rlbench_factory,
)
from evaluation.simulators.rlbench_tasks import (
    EPISODES_PER_TASK,
    EVAL_SEEDS,
    MAX_KEYPOSES,
    PERACT_TASK_NAMES,
    PERACT_TASKS,
    TABLE_HEIGHT,
    class_name_of,
)
from evaluation.simulators.sim import PlannerError, SimulatorError, UnknownTaskError
from tests.evaluation.rlbench_standin import standin as standin_helpers

pytestmark = pytest.mark.unit

BLOCK_TOP = TABLE_HEIGHT + 0.05  # evaluation.simulators.fake_sim.BLOCK_HEIGHT above RLBench's table
DOWN = [1.0, 0.0, 0.0, 0.0]  # gripper pointing down, xyzw


@pytest.fixture
def standin(monkeypatch):
    yield from standin_helpers.activate(monkeypatch)


@pytest.fixture(params=["upstream", "fork"])
def any_standin(request, monkeypatch):
    """The stand-in as stepjam/RLBench 1.2 and as PerAct's fork (9-value actions, a reset_to_demo that
    does not set the variation, demos without misc['variation_index'])."""
    yield from standin_helpers.activate(monkeypatch, request.param)


def small(**kw) -> RLBenchConfig:
    return RLBenchConfig(**{"tasks": ("close_jar", "open_drawer"), "image_size": 24, **kw})


# -- without RLBench -------------------------------------------------------------------------------------------
def test_module_imports_without_rlbench(monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] in ("rlbench", "pyrep")]:
        monkeypatch.delitem(sys.modules, name)
    for name in (
        "evaluation.simulators.rlbench_backend",
        "evaluation.datasets.rlbench_import",
        "evaluation.simulators.rlbench_tasks",
    ):
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    importlib.import_module("evaluation.datasets.rlbench_import")
    assert [m for m in sys.modules if m.split(".")[0] in ("rlbench", "pyrep")] == []


@pytest.mark.parametrize("missing", ["pyrep", "rlbench"])
def test_missing_install_gives_a_clear_error(standin, monkeypatch, missing):
    monkeypatch.setitem(sys.modules, missing, None)  # import of it raises ImportError
    monkeypatch.delenv("COPPELIASIM_ROOT", raising=False)
    with pytest.raises(RLBenchUnavailableError) as info:
        RLBenchSimulator(small())
    msg = str(info.value)
    assert (
        "PyRep is not installed" in msg
        if missing == "pyrep"
        else "RLBench (>= 1.2 API, or PerAct's fork) is not installed" in msg
    )
    for hint in (
        "COPPELIASIM_ROOT is not set",
        "CoppeliaSim 4.1",
        "xvfb-run -a",
        "docs/rlbench.md",
        "pip install",
    ):
        assert hint in msg
    with pytest.raises(RLBenchUnavailableError):
        rlbench_factory(small())  # checked in the driver, before any actor starts


def test_evaluation_cli_rlbench_suite(standin, tmp_path, monkeypatch, capsys):
    from evaluation.runtime.run import _suite, main, parse_args, seeds_of

    base = ["--checkpoint", str(tmp_path), "--suite", "rlbench"]
    with pytest.raises(SystemExit):
        parse_args(base)  # the test split is required
    assert "--rlbench-demo-root" in capsys.readouterr().err
    args = parse_args([*base, "--rlbench-demo-root", str(tmp_path), "--tasks", "close_jar,open_drawer"])
    tasks, factory, variations = _suite(args)
    assert tasks == ["close_jar", "open_drawer"] and variations == list(range(25))
    assert factory.func is RLBenchSimulator and factory.args[0].demo_root == str(tmp_path)
    assert seeds_of(args) == [0, 1, 2]  # the papers' 3 seeds unless --num-seeds says otherwise
    assert seeds_of(parse_args([*base, "--rlbench-demo-root", ".", "--num-seeds", "1", "--seed", "4"])) == 4
    monkeypatch.setitem(sys.modules, "pyrep", None)
    assert main([*base, "--rlbench-demo-root", str(tmp_path)]) == 2  # before any Ray start
    assert "PyRep is not installed" in capsys.readouterr().err


def test_pyrep_that_cannot_load_coppeliasim_is_not_called_missing(tmp_path, monkeypatch):
    """``import pyrep`` loads CoppeliaSim's library: a broken LD_LIBRARY_PATH is not a missing install."""
    fake = tmp_path / "pyrep"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        "raise ImportError('libcoppeliaSim.so.1: cannot open shared object file')\n"
    )
    for name in [m for m in sys.modules if m.split(".")[0] in ("rlbench", "pyrep")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    from evaluation.simulators.rlbench_backend import require_rlbench

    with pytest.raises(
        RLBenchUnavailableError, match="installed but cannot load CoppeliaSim.*libcoppeliaSim"
    ):
        require_rlbench()
    for name in [m for m in sys.modules if m.split(".")[0] == "pyrep"]:
        monkeypatch.delitem(sys.modules, name)


# -- set-up and tasks --------------------------------------------------------------------------------------------
def test_tasks_and_protocol_constants():
    assert len(PERACT_TASKS) == 18 and len(set(PERACT_TASK_NAMES)) == 18
    counts = {t.name: t.variations for t in PERACT_TASKS}
    assert counts["stack_blocks"] == 60 and counts["push_buttons"] == 50 and counts["close_jar"] == 20
    assert sum(counts.values()) == 249
    assert class_name_of("place_shape_in_shape_sorter") == "PlaceShapeInShapeSorter"
    assert (EPISODES_PER_TASK, EVAL_SEEDS, MAX_KEYPOSES) == (25, (0, 1, 2), 25)


def test_environment_is_set_up_like_peract(standin):
    from rlbench.action_modes.action_mode import MoveArmThenGripper
    from rlbench.action_modes.arm_action_modes import EndEffectorPoseViaPlanning
    from rlbench.action_modes.gripper_action_modes import Discrete
    from rlbench.environment import LAUNCHES

    sim = RLBenchSimulator(small(image_size=32))
    env = sim._env
    mode = env._action_mode
    assert isinstance(mode, MoveArmThenGripper)
    assert (
        isinstance(mode.arm_action_mode, EndEffectorPoseViaPlanning)
        and not mode.arm_action_mode._collision_checking
    )
    assert isinstance(mode.gripper_action_mode, Discrete)
    assert LAUNCHES[-1] == (True,)  # headless
    cfg = env._obs_config
    for cam in ("left_shoulder", "right_shoulder", "wrist", "front"):
        c = getattr(cfg, f"{cam}_camera")
        assert (c.rgb, c.depth, c.point_cloud, c.mask, tuple(c.image_size), c.depth_in_meters) == (
            True,
            True,
            True,
            False,
            (32, 32),
            True,
        )
    assert not any((cfg.overhead_camera.rgb, cfg.overhead_camera.depth, cfg.overhead_camera.point_cloud))
    assert cfg.joint_velocities and cfg.gripper_pose and cfg.gripper_open
    assert sim.task_names() == ["close_jar", "open_drawer"]
    sim.close()


def test_environment_arguments_follow_the_installed_signature(standin, monkeypatch):
    import rlbench.environment as envmod

    seen = {}

    class ForkEnvironment(envmod.Environment):  # PerAct's fork: no arm_max_velocity / arm_max_acceleration
        def __init__(self, action_mode, dataset_root="", obs_config=None, headless=False):
            seen["headless"] = headless
            super().__init__(action_mode, dataset_root, obs_config, headless)

    monkeypatch.setattr(envmod, "Environment", ForkEnvironment)
    RLBenchSimulator(small()).close()
    assert seen == {"headless": True}


def test_factory_is_picklable_and_builds_a_simulator(standin):
    factory = rlbench_factory(small())
    assert isinstance(factory, functools.partial)
    sim = pickle.loads(pickle.dumps(factory))()
    assert isinstance(sim, RLBenchSimulator)
    sim.close()


def test_unknown_task_and_variation(standin):
    sim = RLBenchSimulator(small(tasks=("close_jar", "no_such_task")))
    with pytest.raises(UnknownTaskError, match="configured tasks"):
        sim.reset("open_drawer", 0, 0)
    with pytest.raises(UnknownTaskError, match="no_such_task"):
        sim.reset("no_such_task", 0, 0)
    with pytest.raises(UnknownTaskError, match="variations 0..19"):
        sim.reset("close_jar", 20, 0)


# -- observations ------------------------------------------------------------------------------------------------
def test_opencv_camera_projects_like_pyrep():
    """A world point lands on the same pixel under PyRep's model and the converted OpenCV camera."""
    rng = np.random.default_rng(0)
    f, res = 20.0, (24, 24)
    k_pyrep = np.array([[-f, 0, res[0] / 2], [0, -f, res[1] / 2], [0, 0, 1.0]])
    rot, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rot *= np.linalg.det(rot)  # proper rotation
    ext = np.eye(4)
    ext[:3, :3], ext[:3, 3] = rot, [0.2, -0.1, 1.5]
    k_cv, e_cv = opencv_camera(k_pyrep, ext)
    for _ in range(20):
        x = ext[:3, 3] + rot @ np.array([*rng.uniform(-0.3, 0.3, 2), rng.uniform(0.5, 2.0)])  # in front
        p = rot.T @ (x - ext[:3, 3])  # PyRep sensor frame
        u_pyrep = (k_pyrep @ p)[:2] / p[2]  # integer pixel coordinates
        q = e_cv[:3, :3].T @ (x - e_cv[:3, 3])
        assert q[2] > 0  # in front of the OpenCV camera too
        u_cv = (k_cv @ q)[:2] / q[2]  # pixel-centre coordinates
        np.testing.assert_allclose(u_cv - 0.5, u_pyrep, atol=1e-9)


def test_observation_frames_match_rlbench_point_clouds_and_the_scene(standin):
    sim = RLBenchSimulator(small(point_clouds_in_extras=True))
    obs = sim.reset("close_jar", 3, seed=7)
    assert [f.name for f in obs.cameras] == ["left_shoulder", "right_shoulder", "wrist", "front"]
    assert obs.instruction == "close jar with the green block"  # the first description of variation 3
    assert obs.gripper_pose.shape == (8,) and obs.gripper_pose[7] == 1.0
    assert int(obs.extras["rlbench_variation"]) == 3
    for frame in obs.cameras:
        assert (
            frame.rgb.shape == (24, 24, 3) and frame.rgb.dtype == np.uint8 and frame.depth.dtype == np.float32
        )
        xyz, rgb = frame_to_world(frame)
        pyrep_xyz = obs.extras[f"{frame.name}_point_cloud"].reshape(-1, 3)
        np.testing.assert_allclose(xyz, pyrep_xyz, atol=1e-5)  # same points as PyRep's own point cloud
        red = np.all(rgb == (230, 20, 20), axis=1)
        table = (rgb[:, 0] == rgb[:, 1]) & (rgb[:, 0] > 0)
        assert red.any() or frame.name == "wrist"
        np.testing.assert_allclose(
            xyz[red, 2], BLOCK_TOP, atol=1e-4
        )  # geometry is right, not just consistent
        np.testing.assert_allclose(xyz[table, 2], TABLE_HEIGHT, atol=1e-4)
    cloud = PointCloudConditioner(max_points=512, config=rlbench_pointcloud_config())(obs, fake_text())
    points = cloud.points[0][cloud.point_mask[0]].numpy()  # table removed, the block top kept
    assert len(points) >= 4
    np.testing.assert_allclose(points[:, 2], BLOCK_TOP, atol=1e-3)
    np.testing.assert_allclose(points[:, 6], BLOCK_TOP - TABLE_HEIGHT, atol=1e-3)


def fake_text():
    return np.ones((3, 4), np.float32), np.ones(3, bool)


# -- keyposes and errors -------------------------------------------------------------------------------------
def red_block_top(condition) -> np.ndarray:
    pts = condition.points[0][condition.point_mask[0]].numpy()
    red = (pts[:, 3] > 0.5) & (pts[:, 4] < -0.5)
    return np.array([*pts[red, :2].mean(0), BLOCK_TOP])


class ScriptedGrasp:
    """Inference stand-in: above the red block, down to its top, close the gripper."""

    def __init__(self):
        self.k = 0

    def __call__(self, condition, row_seed: int) -> np.ndarray:
        top = red_block_top(condition)
        plan = [(top + [0, 0, 0.1], 1.0), (top, 1.0), (top, 0.0)]
        xyz, grip = plan[min(self.k, 2)]
        self.k += 1
        return np.array([*xyz, *DOWN, grip])


def test_run_episode_succeeds_with_a_scripted_grasp(any_standin):
    import os

    fork = os.environ["RLBENCH_STANDIN_FLAVOUR"] == "fork"
    sim = RLBenchSimulator(small())
    assert sim._peract_layout == fork  # detected from EndEffectorPoseViaPlanning.action's signature
    conditioner = PointCloudConditioner(max_points=2048, config=rlbench_pointcloud_config())
    out = run_episode(
        sim, ScriptedGrasp(), conditioner, {"close_jar": fake_text()}, EpisodeSpec("close_jar", 1, 3)
    )
    assert (out.result.status, out.result.success, out.result.steps) == ("ok", True, 3)
    assert sim._env._scene.robot.arm.ignore_collisions_requests == [True] * 3  # collision_checking=False
    checked = RLBenchSimulator(small(collision_checking=True))
    assert len(checked.action_of(np.array([0.3, 0.0, 1.0, *DOWN, 1.0]))) == (9 if fork else 8)
    checked.reset("close_jar", 0, 0)
    checked.step_keypose(np.array([0.3, 0.0, 1.0, *DOWN, 1.0]))
    assert checked._env._scene.robot.arm.ignore_collisions_requests == [
        False
    ]  # the 9th value, or the mode's flag


@pytest.mark.parametrize(
    ("xyz", "message"),
    [
        ((0.3, 0.0, 0.65), "outside of workspace"),  # below RLBench's workspace box
        ((0.3, 0.0, 0.72), "A path could not be found"),  # below the table: ConfigurationPathError inside
        ((0.75, 0.55, 1.7), "A path could not be found"),  # out of the arm's reach
    ],
)
def test_unreachable_keyposes_end_the_episode_as_planner_error(standin, xyz, message):
    sim = RLBenchSimulator(small())
    sim.reset("close_jar", 0, 0)
    with pytest.raises(PlannerError, match=message):
        sim.step_keypose(np.array([*xyz, *DOWN, 1.0]))

    def infer(condition, row_seed):
        return np.array([*xyz, *DOWN, 1.0])

    cond = PointCloudConditioner(max_points=256, config=rlbench_pointcloud_config())
    out = run_episode(sim, infer, cond, {"close_jar": fake_text()}, EpisodeSpec("close_jar", 0, 0))
    assert (out.result.status, out.result.success, out.result.steps) == ("planner_error", False, 1)
    assert "InvalidActionError" in out.result.message


def test_pyrep_errors_and_bad_keyposes(standin, monkeypatch):
    from pyrep.errors import ConfigurationPathError, IKError
    from rlbench.action_modes.arm_action_modes import EndEffectorPoseViaPlanning

    sim = RLBenchSimulator(small())
    sim.reset("close_jar", 0, 0)
    good = np.array([0.3, 0.0, 1.0, *DOWN, 1.0])
    for error in (IKError("IK failed"), ConfigurationPathError("no path")):

        def fail(self, scene, action, error=error):
            raise error

        monkeypatch.setattr(EndEffectorPoseViaPlanning, "action", fail)
        with pytest.raises(PlannerError, match=type(error).__name__):
            sim.step_keypose(good)

    def crash(self, scene, action):
        raise RuntimeError("The call failed on the V-REP side")

    monkeypatch.setattr(EndEffectorPoseViaPlanning, "action", crash)
    with pytest.raises(SimulatorError, match="V-REP"):
        sim.step_keypose(good)
    with pytest.raises(PlannerError, match="invalid keypose"):
        sim.step_keypose(np.array([0.3, 0.0, np.nan, *DOWN, 1.0]))
    with pytest.raises(PlannerError, match="invalid keypose"):
        sim.step_keypose(np.array([0.3, 0.0, 1.0, 0, 0, 0, 0, 1.0]))
    with pytest.raises(SimulatorError, match="8 values"):
        sim.step_keypose(np.zeros(7))


def test_action_layout_and_quaternion_normalisation(standin):
    sim = RLBenchSimulator(small())
    action = sim.action_of(np.array([0.1, 0.2, 1.0, 0.0, 2.0, 0.0, 0.0, 0.7]))
    np.testing.assert_allclose(action, [0.1, 0.2, 1.0, 0, 1, 0, 0, 1.0])  # unit quaternion, gripper 0/1
    assert (
        len(RLBenchSimulator(small(action_layout="peract")).action_of(np.array([0, 0, 1, *DOWN, 0.2]))) == 9
    )

    class ForkArm:  # PerAct's fork: EndEffectorPoseViaPlanning.action(scene, action, ignore_collisions)
        def action(self, scene, action, ignore_collisions=True):
            pass

    class UpstreamArm:
        def action(self, scene, action):
            pass

    assert _uses_peract_layout(ForkArm(), "auto") and not _uses_peract_layout(UpstreamArm(), "auto")
    assert _uses_peract_layout(UpstreamArm(), "peract")


# -- PerAct test episodes: reset_to_demo ------------------------------------------------------------------------
@pytest.fixture
def test_split(any_standin, tmp_path):
    from rlbench.backend.utils import task_file_to_task_class
    from rlbench.dataset_generator import generate

    generate(
        str(tmp_path),
        [task_file_to_task_class("close_jar")],
        episodes_per_task=3,
        all_variations=True,
        image_size=(16, 16),
        seed=1,
    )
    return tmp_path


def test_reset_to_demo_restores_each_test_episode(test_split):
    sim = RLBenchSimulator(small(demo_root=str(test_split)))
    episodes = list_episodes(test_split, "close_jar")
    assert [e.variation for e in episodes] == [0, 1, 2]
    for index, ep in enumerate(episodes):
        with open(ep.path / "low_dim_obs.pkl", "rb") as f:
            demo = pickle.load(f)
        first = sim.reset("close_jar", index, seed=123)
        again = sim.reset("close_jar", index, seed=456)  # the demo, not the seed, fixes the scene
        np.testing.assert_array_equal(first.cameras[0].rgb, again.cameras[0].rgb)
        assert int(first.extras["rlbench_variation"]) == ep.variation
        assert first.instruction == ep.descriptions[0]
        np.testing.assert_allclose(first.gripper_pose[:7], demo[0].gripper_pose)
        outcome = None
        for k in demo_keyframes(demo):  # replaying the demo's keyposes solves the restored scene
            outcome = sim.step_keypose(np.array([*demo[k].gripper_pose, demo[k].gripper_open]))
            if outcome.success:
                break
        assert outcome is not None and outcome.success and outcome.reached
    with pytest.raises(UnknownTaskError, match="test episode 3 requested"):
        sim.reset("close_jar", 3, 0)


def test_scene_depends_on_the_seed_without_demos(standin):
    sim = RLBenchSimulator(small())
    a, b, c = (sim.reset("close_jar", 2, seed=s).cameras[0].rgb for s in (5, 5, 6))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert torch.is_tensor(torch.from_numpy(a))  # plain arrays, ready for the point-cloud pipeline


# -- the protocol --------------------------------------------------------------------------------------------
def test_protocol_runs_25_test_episodes_per_task_over_3_seeds(standin, tmp_path, monkeypatch):
    import evaluation.runtime.evaluate
    from evaluation.simulators.rlbench_protocol import evaluate_rlbench, protocol_kwargs

    with pytest.raises(ValueError, match="demo_root"):
        protocol_kwargs(small())
    calls = []

    def fake_evaluate_checkpoint(checkpoint_dir, **kw):
        calls.append(kw)
        return "report"

    monkeypatch.setattr(evaluation.runtime.evaluate, "evaluate_checkpoint", fake_evaluate_checkpoint)
    assert evaluate_rlbench("ckpt", small(demo_root=str(tmp_path))) == "report"
    assert len(calls) == 1  # one pool for all seeds
    kw = calls[0]
    assert kw["seed"] == [0, 1, 2]
    assert kw["episodes_per_task"] == 25 and kw["variations"] == tuple(range(25))
    assert kw["pool"].max_keyposes == 25 and kw["tasks"] == ["close_jar", "open_drawer"]
    assert kw["sim_factory"].func is RLBenchSimulator and kw["sim_factory"].args[0].demo_root == str(tmp_path)


def test_3dda_gripper_step_moves_the_arm_first_then_changes_the_gripper(any_standin, monkeypatch):
    from rlbench.task_environment import TaskEnvironment

    sent = []
    step = TaskEnvironment.step

    def spy(self, action):
        sent.append(np.asarray(action, float).copy())
        return step(self, action)

    monkeypatch.setattr(TaskEnvironment, "step", spy)
    sim = RLBenchSimulator(small(gripper_step="after_arm"))
    opened, closed = [0.3, 0.0, 1.0, *DOWN, 1.0], [0.3, 0.05, 1.0, *DOWN, 0.0]
    for episode in range(2):  # the gripper memory starts afresh with every episode
        sim.reset("close_jar", 0, episode)
        sent.clear()
        sim.step_keypose(np.array(opened))  # first keypose: one step, its own gripper state
        sim.step_keypose(np.array(closed))  # arm first with the gripper still open, then the gripper alone
        sim.step_keypose(np.array(closed))  # no change: one step
        assert [(a[1], a[7]) for a in sent] == [(0.0, 1.0), (0.05, 1.0), (0.05, 0.0), (0.05, 0.0)]
    peract = RLBenchSimulator(small())
    peract.reset("close_jar", 0, 0)
    sent.clear()
    peract.step_keypose(np.array(opened))
    peract.step_keypose(np.array(closed))
    assert [(a[1], a[7]) for a in sent] == [(0.0, 1.0), (0.05, 0.0)]


def test_3dda_protocol_settings(standin, tmp_path):
    from evaluation.simulators.rlbench_protocol import protocol_kwargs

    dda = protocol_kwargs(small(demo_root=str(tmp_path)), protocol="3dda")
    cfg = dda["sim_factory"].args[0]
    assert (cfg.max_tries, cfg.gripper_step, dda["pool"].on_planner_error) == (2, "after_arm", "continue")
    assert cfg.instruction == "random"
    peract = protocol_kwargs(small(demo_root=str(tmp_path)))
    cfg = peract["sim_factory"].args[0]
    assert (cfg.max_tries, cfg.gripper_step, peract["pool"].on_planner_error) == (1, "with_arm", "end")
    with pytest.raises(ValueError, match="protocol must be one of"):
        protocol_kwargs(small(demo_root=str(tmp_path)), protocol="rvt")


def test_training_config_selects_the_protocol(standin, tmp_path):
    from evaluation.checkpoint_format import INSTRUCTIONS_FILE, save_instructions
    from platform.config import load_config
    from platform.evaluate import eval_request

    save_instructions(tmp_path / INSTRUCTIONS_FILE, {"close_jar": fake_text()})
    base = ["data.suite=rlbench", f"eval.rlbench_demo_root={tmp_path}", "eval.max_keyposes=20"]
    request = eval_request(load_config(None, [*base, "eval.rlbench_protocol=3dda"]), tmp_path)
    assert request.tasks == ("close_jar",) and request.seed == (0, 1, 2) and request.suite == "rlbench"
    assert (request.pool.on_planner_error, request.pool.max_keyposes) == ("continue", 20)
    assert request.sim_factory.args[0].gripper_step == "after_arm" and request.variations == tuple(
        range(request.episodes_per_task)
    )
    assert eval_request(load_config(None, base), tmp_path).pool.on_planner_error == "end"


def test_random_instruction_is_one_of_the_descriptions_fixed_by_the_seed(standin):
    first = RLBenchSimulator(small())
    drawn = RLBenchSimulator(small(instruction="random"))
    descriptions = {"close jar with the red block", "red block: close jar"}  # the stand-in's for variation 0
    assert {first.reset("close_jar", 0, s).instruction for s in range(8)} == {"close jar with the red block"}
    picks = [drawn.reset("close_jar", 0, s).instruction for s in range(8)]
    assert set(picks) == descriptions
    assert picks == [drawn.reset("close_jar", 0, s).instruction for s in range(8)]  # the seed decides
