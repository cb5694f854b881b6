"""End-to-end collection on 2 tasks x tiny episode counts: dataset, determinism, resume, interruption,
bad inputs, replay verify, preview, and train/eval input equality."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from evaluation.datasets.collect import CollectError, collect_dataset
from evaluation.datasets.collect_cli import main, verify_dataset
from evaluation.datasets.dataset import MANIFEST, DatasetError, KeyframeDataset
from evaluation.datasets.keyframes import KeyframeConfig
from evaluation.simulators.metaworld_backend import FIXED_QUAT_XYZW
from evaluation.simulators.rendering import RenderConfig
from evaluation.simulators.sim import UnknownTaskError
from tests import REPO_ROOT

pytestmark = pytest.mark.sim
TASKS = ["reach-v3", "pick-place-v3"]
SMALL = RenderConfig(width=48, height=48)


def _collect(out: Path, episodes: int = 1, **kw) -> dict:
    return collect_dataset(
        suite="mt10",
        tasks=TASKS,
        episodes_per_task=episodes,
        out=out,
        workers=1,
        render=SMALL,
        progress=False,
        **kw,
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "ds"
    _collect(out)
    return out


def test_tiny_collection_is_a_valid_dataset(tiny):
    ds = KeyframeDataset(tiny)
    m = ds.manifest
    assert m["tasks"] == TASKS and m["episodes"] == {"reach-v3": [0], "pick-place-v3": [0]}
    assert len(ds) == m["total_samples"] == sum(c["samples"] for c in m["counts"].values())
    assert m["counts"]["pick-place-v3"]["samples"] >= 3  # approach, grasp, carry
    assert [c["name"] for c in m["render"]["cameras"]] == [
        "left_shoulder",
        "right_shoulder",
        "front",
        "overhead",
    ]
    assert m["text"]["dim"] == 384 and m["versions"]["mujoco"]
    batch = ds.batch(list(range(len(ds))), max_points=256)
    assert batch.target is not None and torch.isfinite(batch.points).all()
    assert (batch.target[:, 7] <= 1).all() and batch.point_mask.sum(1).min() > 50
    fixed = torch.tensor(FIXED_QUAT_XYZW, dtype=torch.float32).expand(len(ds), 4)
    assert torch.allclose(batch.target[:, 3:7], fixed)  # Meta-World's fixed orientation, stored anyway
    # the targets of an episode end where the expert solved the task: the reach goal
    last = batch.target[ds.task_index == 0][-1, :3].numpy()
    goal_dist = np.linalg.norm(last - _reach_goal())
    assert goal_dist < 0.05


def _reach_goal() -> np.ndarray:
    from evaluation.simulators.metaworld_backend import MetaWorldSimulator

    with MetaWorldSimulator() as sim:
        sim.reset_state("reach-v3", 0, 0)
        return sim.extras()["goal_pos"]


def test_live_observation_gives_the_same_condition_as_the_dataset(tiny):
    from evaluation.pointcloud import observation_to_condition
    from evaluation.simulators.metaworld_backend import MetaWorldConfig, MetaWorldSimulator

    ds = KeyframeDataset(tiny)
    first = [i for i in range(len(ds)) if ds.task_index[i] == 1][0]  # pick-place, reset observation
    with MetaWorldSimulator(MetaWorldConfig(render=SMALL)) as sim:
        obs = sim.reset("pick-place-v3", 0, 0)
    live = observation_to_condition(obs, ds.instruction_embedding("pick-place-v3"), 512, ds.pointcloud_config)
    stored = ds.batch([first], 512)
    assert torch.equal(live.points, stored.points) and torch.equal(live.point_mask, stored.point_mask)
    assert torch.allclose(live.gripper, stored.gripper, atol=1e-6)
    assert torch.equal(live.text, stored.text)


def test_surface_fraction_and_hide_arm_shape_the_clouds_at_collection_and_evaluation(tmp_path):
    """``--surface-fraction 0.5 --hide-arm``: hand-insert's box top (z = 5 cm, most of the scene's voxels) and the
    robot's arm (everything above 30 cm here) are in no stored cloud, the gripper is, the settings are in the
    manifest, and a live observation from the simulator evaluation builds for the manifest's config equals the
    stored one."""
    from evaluation.checkpoint_format import CheckpointBundle, Instructions
    from evaluation.pointcloud import PointCloudConfig, observation_to_condition
    from evaluation.runtime.evaluate import metaworld_factory
    from evaluation.simulators.metaworld_backend import MetaWorldConfig, MetaWorldSimulator

    out = tmp_path / "surface"
    args = ["--suite", "mt50", "--tasks", "hand-insert-v3", "--episodes-per-task", "1", "--workers", "1"]
    assert (
        main(
            [*args, "--out", str(out), "--surface-fraction", "0.5", "--hide-arm", "--image-size", "64"]
            + ["--no-progress"]
        )
        == 0
    )
    ds = KeyframeDataset(out)
    cfg = ds.pointcloud_config
    assert cfg.surface_fraction == 0.5 and ds.manifest["pointcloud"]["surface_fraction"] == 0.5
    assert cfg.hide_arm and ds.manifest["render"]["hide_arm"] is True
    z = ds.points[:, 2]
    # what is left at the top's height: the edges of objects standing on it (without the option: 75-88 %)
    assert np.mean(np.abs(z - 0.05) <= cfg.table_margin) < 0.02, "the box top is dropped"
    assert np.any((z > 0.06) & (z < 0.1)), "the puck on it is kept"
    assert z.max() < 0.3, "no point of the arm"
    first = ds.points[ds.offsets[0] : ds.offsets[1]]  # (n, 7) the first sample's cloud
    tcp = ds.gripper[0, :3]
    assert np.sum(np.linalg.norm(first[:, :3] - tcp, axis=1) < 0.08) >= 5, "the gripper is kept"
    # what evaluate_checkpoint renders with for a policy trained on it (worker.dataset_files -> CheckpointBundle)
    bundle = CheckpointBundle(
        source="test",
        policy_config={},
        weights=b"",
        weights_file="model.pt",
        instructions=Instructions({}),
        max_points=4000,
        pointcloud=cfg.model_dump(),
        render=ds.manifest["render"],
    )
    render = bundle.render_config()
    assert render.hide_arm and render.width == render.height == 64  # (--image-size 64 above)
    with metaworld_factory("mt50", render)() as sim:
        obs = sim.reset("hand-insert-v3", 0, 0)
    with MetaWorldSimulator(MetaWorldConfig(suite="mt50", render=RenderConfig(width=64, height=64))) as sim:
        obs_arm = sim.reset("hand-insert-v3", 0, 0)
    text = ds.instruction_embedding("hand-insert-v3")
    live = observation_to_condition(obs, text, 4000, cfg)
    assert torch.equal(live.points, ds.batch([0], 4000).points)
    kept_without = observation_to_condition(obs_arm, text, 4000, PointCloudConfig()).point_mask.sum()
    assert live.point_mask.sum() < kept_without / 2, "the top and the arm were most of the cloud"


def test_same_arguments_give_the_same_bytes(tiny, tmp_path):
    _collect(tmp_path / "again")
    assert (tmp_path / "again" / MANIFEST).read_bytes() == (tiny / MANIFEST).read_bytes()


def test_resume_keeps_finished_shards_and_rebuilds_the_same_manifest(tiny, tmp_path):
    import shutil

    out = tmp_path / "resume"
    shutil.copytree(tiny, out)
    kept = out / "shards/reach-v3/var00.parquet"
    before = kept.stat().st_mtime_ns
    (out / MANIFEST).unlink()
    (out / "shards/pick-place-v3/var00.parquet").unlink()
    _collect(out)
    assert kept.stat().st_mtime_ns == before  # not re-collected
    assert (out / MANIFEST).read_bytes() == (tiny / MANIFEST).read_bytes()


def test_killed_collection_loses_no_finished_episode(tmp_path):
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "evaluation.collect",
        "--tasks",
        *TASKS,
        "--episodes-per-task",
        "2",
        "--workers",
        "1",
        "--image-size",
        "48",
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 120
        while (
            not list(out.glob("shards/*/*.parquet")) and time.monotonic() < deadline and proc.poll() is None
        ):
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = {p: p.read_bytes() for p in out.glob("shards/*/*.parquet")}
    assert finished, "no shard was written before the kill"
    assert not (out / MANIFEST).exists()
    with pytest.raises(DatasetError, match="interrupted"):
        KeyframeDataset(out)
    manifest = _collect(out, episodes=2)
    for path, data in finished.items():
        assert path.read_bytes() == data  # kept as it was
    assert sum(c["episodes"] for c in manifest["counts"].values()) == 4
    assert len(KeyframeDataset(out)) == manifest["total_samples"]


def test_bad_inputs_are_clear_errors(tmp_path, tiny, capsys):
    with pytest.raises(UnknownTaskError, match="pick-place-v3"):
        collect_dataset(tasks=["pick-plase-v3"], out=tmp_path / "x", progress=False)
    with pytest.raises(CollectError, match="between 1 and 25"):
        collect_dataset(tasks=TASKS, episodes_per_task=0, out=tmp_path / "x", progress=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(CollectError, match="cannot write to output directory"):
        collect_dataset(tasks=TASKS, episodes_per_task=1, out=blocker / "sub", progress=False)
    with pytest.raises(CollectError, match="different settings.*seed"):
        _collect(tiny, episodes=1, seed=7)
    assert main(["--tasks", "pick-plase-v3", "--out", str(tmp_path / "y"), "--no-progress"]) == 2
    assert "error: unknown Meta-World task 'pick-plase-v3'" in capsys.readouterr().err


def test_a_larger_episode_count_extends_a_collection(tiny, tmp_path):
    """Validation episodes are added to an existing dataset by collecting more: finished shards are kept."""
    import shutil

    out = tmp_path / "extend"
    shutil.copytree(tiny, out)
    before = {p: p.read_bytes() for p in out.glob("shards/**/*.parquet")}
    manifest = _collect(out, episodes=2)
    assert {t: len(v) for t, v in manifest["episodes"].items()} == {"reach-v3": 2, "pick-place-v3": 2}
    assert all(p.read_bytes() == data for p, data in before.items())
    assert len(KeyframeDataset(out)) == manifest["total_samples"]


def test_corrupt_shard_is_detected(tiny, tmp_path):
    import shutil

    out = tmp_path / "corrupt"
    shutil.copytree(tiny, out)
    shard = out / "shards/pick-place-v3/var00.parquet"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(DatasetError, match="var00.parquet.*python -m evaluation.collect"):
        KeyframeDataset(out)


def test_verify_replays_the_stored_keyposes(tiny):
    report = verify_dataset(tiny, workers=1, progress=False)
    assert report["episodes"] == 2 and report["success_rate"] == 1.0
    assert json.loads((tiny / "verify.json").read_text())["per_task"]["pick-place-v3"]["success_rate"] == 1.0


def test_replay_observations_are_what_the_keypose_controller_reaches(tiny, tmp_path):
    """``observe=replay``: each sample observes the state the keypose controller reached replaying the
    episode's keyframes (so replaying the stored keyposes meets every stored gripper pose), the keyposes are
    the expert mode's up to the replay's first success, and the setting is recorded and not mixed. With
    ``recoveries=1`` pick-place's grasp also gets a recovery sample: the gripper closed 3-6 cm beside the grasp,
    labelled with the pose the grasp started from, open; reach has no grasp and gets none."""
    from evaluation.datasets.dataset import RECOVERY_FRAME, recovery_frame
    from evaluation.simulators.metaworld_backend import MetaWorldConfig, MetaWorldSimulator

    out = tmp_path / "replay"
    manifest = _collect(out, keyframes=KeyframeConfig(observe="replay", recoveries=1))
    assert (
        manifest["keyframes"]["observe"] == "replay"
        and manifest["keyframes"]["recoveries"] == 1
        and "observe" not in json.loads((tiny / MANIFEST).read_text())["keyframes"]
        and "recoveries" not in json.loads((tiny / MANIFEST).read_text())["keyframes"]
    )  # the defaults are not written: datasets collected before the options keep their settings
    replayed, expert = KeyframeDataset(out), KeyframeDataset(tiny)
    assert manifest["counts"]["pick-place-v3"]["recovery_samples"] == 2  # one recovery, two steps
    assert manifest["counts"]["reach-v3"]["recovery_samples"] == 0
    missed, lifted = np.flatnonzero(replayed.recovery)
    grasp = replayed.previous[missed]  # the sample of the grasp it missed
    assert replayed.previous[lifted] == missed and not replayed.recovery[grasp]
    assert replayed.task_names[replayed.task_index[grasp]] == "pick-place-v3"
    assert replayed.target[grasp, 7] == 0 and replayed.gripper[grasp, 7] == 1  # the grasp closes the gripper
    assert replayed.gripper[missed, 7] == 0  # closed, on nothing, 3-6 cm beside the grasp
    assert 0.025 <= np.linalg.norm(replayed.gripper[missed, :2] - replayed.target[grasp, :2]) <= 0.065
    start = replayed.gripper[grasp, :3]  # where the grasp started: the lift rises straight up to its height
    np.testing.assert_allclose(replayed.target[missed, :2], replayed.gripper[missed, :2], atol=1e-6)
    assert replayed.target[missed, 2] == pytest.approx(max(start[2], replayed.gripper[missed, 2] + 0.03))
    assert replayed.target[missed, 7] == 1 and replayed.gripper[lifted, 7] == 1
    np.testing.assert_allclose(replayed.target[lifted, :3], start)  # then back where it started, open
    assert replayed.target[lifted, 7] == 1 and np.allclose(replayed.target[lifted, 3:7], FIXED_QUAT_XYZW)
    (shard,) = [s for s in manifest["shards"] if s["task"] == "pick-place-v3"]
    table = pq.read_table(out / shard["file"], columns=["frame", "target_pose"]).to_pydict()
    f = min(f for f in table["frame"] if f >= RECOVERY_FRAME)
    g = table["frame"].index((f - RECOVERY_FRAME) // 10)  # the grasp's row, by the recovery's frame number
    assert f == recovery_frame(table["frame"][g], 0)
    np.testing.assert_array_equal(table["target_pose"][g], replayed.target[grasp])
    report = verify_dataset(out, workers=1, progress=False)  # replays the keyframes, not the recoveries
    assert report["success_rate"] == 1.0
    with MetaWorldSimulator(MetaWorldConfig(render=SMALL)) as sim:
        for task_index, task in enumerate(TASKS):
            rows = np.flatnonzero((replayed.task_index == task_index) & ~replayed.recovery)
            expert_rows = np.flatnonzero(expert.task_index == task_index)
            assert 1 <= len(rows) <= len(expert_rows)
            assert np.array_equal(replayed.target[rows], expert.target[expert_rows[: len(rows)]])
            sim.reset_state(task, 0, 0)
            for k, row in enumerate(rows):
                assert np.allclose(sim.gripper_pose(), replayed.gripper[row], atol=1e-5), (task, k)
                outcome = sim.step_keypose(replayed.target[row].astype(np.float64))
                assert outcome.success == (k == len(rows) - 1), (task, k)  # ends at the first success
    assert replayed.manifest["total_samples"] - 2 <= expert.manifest["total_samples"]  # less the recovery
    with pytest.raises(CollectError, match="different settings.*keyframes"):
        _collect(tiny, keyframes=KeyframeConfig(observe="replay"))


def test_aim_goal_moves_the_completing_keypose_onto_the_goal(tiny, tmp_path):
    """``aim_goal``: reach's expert stops 4.6 cm from its goal (the success radius is 5 cm); aimed, the keypose
    that completes the demonstration is the goal itself, pick-place's carry puts the puck nearer its goal, the
    other keyposes are the un-aimed ones, the setting is recorded (absent by default) and the dataset replays."""
    out = tmp_path / "aimed"
    manifest = _collect(out, keyframes=KeyframeConfig(observe="replay", aim_goal=True))
    assert manifest["keyframes"]["aim_goal"] is True and manifest["aimed_tasks"] == TASKS
    assert "aim_goal" not in json.loads((tiny / MANIFEST).read_text())["keyframes"]
    aimed, plain = KeyframeDataset(out), KeyframeDataset(tiny)
    reach = lambda ds: ds.target[ds.task_index == 0][-1, :3]  # noqa: E731
    assert np.linalg.norm(reach(plain) - _reach_goal()) > 0.04  # at the edge of the radius
    assert np.linalg.norm(reach(aimed) - _reach_goal()) < 1e-4
    a, p = (ds.target[ds.task_index == 1] for ds in (aimed, plain))
    assert (
        len(a) <= len(p)
        and np.array_equal(a[:-1], p[: len(a) - 1])
        and not np.array_equal(a[-1], p[len(a) - 1])
    )
    assert verify_dataset(out, workers=1, progress=False)["success_rate"] == 1.0


def test_preview_writes_pictures(tmp_path):
    from evaluation.datasets.preview import write_preview

    paths = write_preview("reach-v3", tmp_path, render=SMALL)
    assert [p.name for p in paths] == ["reach-v3_cameras.png", "reach-v3_pointcloud.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_a_second_collection_into_the_same_directory_waits_for_the_first(tiny, capsys):
    import fcntl
    import threading

    from evaluation.datasets.collect import LOCK

    done = threading.Event()
    with (tiny / LOCK).open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as if another process were collecting into `tiny`
        worker = threading.Thread(
            target=lambda: (
                collect_dataset(
                    suite="mt10", tasks=TASKS, episodes_per_task=1, out=tiny, workers=1, render=SMALL
                ),
                done.set(),
            )
        )
        worker.start()
        time.sleep(1.0)
        assert not done.is_set()
        fcntl.flock(held, fcntl.LOCK_UN)
    worker.join(timeout=60)
    assert done.is_set()  # the dataset was already complete: nothing re-collected
    assert "another collection is writing" in capsys.readouterr().out


def test_plan_keeps_the_sparsest_rung_that_replays(monkeypatch):
    """The ladder logic, with the replay faked: keyframes 'replay' once they follow the pushed object
    (contact frames); the first such rung is kept; no rung replays -> NO_RUNG and the config's own."""
    from evaluation.datasets import demos
    from evaluation.datasets.keyframes import KeyframeConfig, refinement_ladder

    tcp = np.concatenate([np.zeros((1, 3)), np.linspace([0, 0, 0], [0.2, 0.1, 0.0], 40)[1:]])
    objects = np.zeros((len(tcp), 3))
    objects[10:30, 0] = np.arange(20) * 0.002
    objects[30:, 0] = objects[29, 0]
    traj = demos.Trajectory(
        "reach-v3",
        0,
        0,
        tcp,
        np.ones(len(tcp), bool),
        np.zeros((len(tcp), 4)),
        np.ones(len(tcp)),
        objects,
        [np.zeros(1)] * len(tcp),
        True,
    )
    tried: list[int] = []

    def fake_replay(sim, traj, keyframes):
        tried.append(len(keyframes))
        rollout = demos.KeyposeRollout(traj.task, traj.variation, traj.seed)
        rollout.success = any(k.kind == "contact" for k in keyframes)
        return rollout

    monkeypatch.setattr(demos, "replay", fake_replay)
    keyframes, rung, replayed = demos.plan_keyframes(None, traj, KeyframeConfig())
    first_contact = next(i for i, c in enumerate(refinement_ladder(KeyframeConfig())) if c.contact_stride)
    assert rung == first_contact == len(tried) - 1
    assert len(keyframes) == tried[-1] > tried[0]  # denser than the config's own keyframes
    assert replayed is not None and replayed.success  # the replay that chose them
    monkeypatch.setattr(demos, "replay", lambda *a: demos.KeyposeRollout("reach-v3", 0, 0))
    keyframes, rung, replayed = demos.plan_keyframes(None, traj, KeyframeConfig())
    assert (
        rung == demos.NO_RUNG and keyframes == demos.keyframes_of(traj, KeyframeConfig()) and replayed is None
    )


@pytest.mark.slow  # builds Meta-World's MT50 task list (about 55 s on 2 cores) the first time
def test_mt50_tasks_whose_sparse_keyframes_fail_replay_after_refinement(tmp_path):
    """handle-pull-v3 variation 0 and basketball-v3 variation 0: the config's keyframes do not solve the
    task when replayed; the collected (refined) ones do, and the manifest says which rung was needed."""
    tasks = ["handle-pull-v3", "basketball-v3"]
    m = collect_dataset(
        suite="mt50",
        tasks=tasks,
        episodes_per_task=1,
        out=tmp_path / "ds",
        workers=1,
        render=SMALL,
        progress=False,
    )
    assert all(m["keyframe_rungs"][t].get("0", 0) > 0 for t in tasks), m["keyframe_rungs"]
    assert verify_dataset(tmp_path / "ds", workers=1, progress=False)["success_rate"] == 1.0
    from evaluation.datasets.keyframes import KeyframeConfig

    # without refinement variation 0 does not replay: collection skips it for the next one that does
    plain = collect_dataset(
        suite="mt50",
        tasks=tasks,
        episodes_per_task=1,
        out=tmp_path / "plain",
        workers=1,
        render=SMALL,
        progress=False,
        keyframes=KeyframeConfig(refine=False),
    )
    for t in tasks:
        assert plain["replay_failures"][t][0] == 0 and plain["episodes"][t][0] > 0, (t, plain["episodes"])
    assert verify_dataset(tmp_path / "plain", workers=1, progress=False)["success_rate"] == 1.0


@pytest.mark.slow  # builds Meta-World's MT50 task list (about 55 s on 2 cores) the first time
def test_a_keypose_expert_demonstrates_handle_pull_side(tmp_path):
    """handle-pull-side-v3's Meta-World expert gives keyframes that rarely replay; its keypose expert's
    demonstrations replay (they were made through the same controller) and are marked in the manifest."""
    m = collect_dataset(
        suite="mt50",
        tasks=["handle-pull-side-v3"],
        episodes_per_task=2,
        out=tmp_path / "ds",
        workers=1,
        render=SMALL,
        progress=False,
    )
    assert (
        m["keypose_experts"] == ["handle-pull-side-v3"] and m["counts"]["handle-pull-side-v3"]["samples"] >= 8
    )
    assert verify_dataset(tmp_path / "ds", workers=1, progress=False)["success_rate"] == 1.0
