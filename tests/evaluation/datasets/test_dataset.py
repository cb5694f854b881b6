"""KeyframeDataset: loading, batching, and a clear DatasetError for every kind of bad directory; the
DatasetSummary a driver checks without loading the shards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.datasets.dataset import (
    FORMAT,
    INSTRUCTIONS,
    MANIFEST,
    SCHEMA_VERSION,
    DatasetError,
    DatasetSummary,
    KeyframeDataset,
    KeyframeSample,
    instructions_table,
    previous_keyframes,
    samples_table,
    write_manifest,
    write_table,
)
from evaluation.files import sha256_file
from evaluation.pointcloud import PointCloudConfig, past_poses, select_points
from evaluation.simulators.rendering import RenderConfig

pytestmark = pytest.mark.unit

TASKS = ["task-a", "task-b"]
DIM = 6


def _write_synthetic_dataset(root: Path, samples_per_shard: int = 3) -> Path:
    """Two tasks x two episodes of random samples, written with the real writer functions."""
    rng = np.random.default_rng(0)
    shards = []
    for t, task in enumerate(TASKS):
        for variation in range(2):
            samples = [
                KeyframeSample(
                    task,
                    variation,
                    variation,
                    f,
                    f * 10,
                    rng.normal(size=(int(rng.integers(20, 80)), 7)).astype(np.float32),
                    np.full(8, 100 * t + 10 * variation + f, np.float32),  # the gripper pose names its row
                    np.full(8, 10 * t + f, np.float32),
                )
                for f in reversed(range(samples_per_shard))  # rows need not be in frame order
            ]
            rel = f"shards/{task}/var{variation:02d}.parquet"
            write_table(samples_table(samples, f"do {task}"), root / rel)
            shards.append(
                {
                    "file": rel,
                    "task": task,
                    "variation": variation,
                    "rows": samples_per_shard,
                    "sha256": sha256_file(root / rel),
                }
            )
    rows = [
        (task, f"do {task}", "fake-encoder", rng.normal(size=(3 + i, DIM)).astype(np.float32))
        for i, task in enumerate(TASKS)
    ]
    write_table(instructions_table(rows), root / INSTRUCTIONS)
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "suite": "fake",
        "tasks": TASKS,
        "shards": shards,
        "counts": {t: {"episodes": 2, "samples": 2 * samples_per_shard} for t in TASKS},
        "total_samples": len(shards) * samples_per_shard,
        "pointcloud": PointCloudConfig(max_points=80).model_dump(mode="json"),
        "render": RenderConfig().model_dump(mode="json"),
        "max_points": 80,
        "text": {
            "file": INSTRUCTIONS,
            "sha256": sha256_file(root / INSTRUCTIONS),
            "encoder": "fake-encoder",
            "dim": DIM,
        },
    }
    write_manifest(root, manifest)
    return root


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory) -> Path:
    return _write_synthetic_dataset(tmp_path_factory.mktemp("ds"))


@pytest.fixture
def copy_dir(dataset_dir, tmp_path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(dataset_dir, dst)
    return dst


def test_loads_everything_and_collates_batches(dataset_dir):
    ds = KeyframeDataset(dataset_dir)
    assert len(ds) == 12 and ds.task_names == TASKS
    assert ds.manifest["schema_version"] == SCHEMA_VERSION
    tokens, mask = ds.instruction_embedding("task-b")
    assert tokens.shape == (4, DIM) and tokens.dtype == np.float32 and mask.all()
    batch = ds.batch([0, 7, 11], max_points=32)
    assert batch.points.shape[0] == 3 and batch.points.shape[1] <= 32 and batch.points.shape[2] == 7
    assert batch.text.shape == (3, 4, DIM) and batch.text_mask[0].sum() == 3  # task-a has 3 tokens, padded
    assert batch.task_index.tolist() == [0, 1, 1]
    assert torch.equal(batch.target[1], torch.full((8,), 11.0))  # task-b (10), frame 1
    for row, index in enumerate([0, 7, 11]):
        cloud = ds.sample_points(index)
        n = min(32, len(cloud))
        assert int(batch.point_mask[row].sum()) == n
        expected = cloud[select_points(len(cloud), 32, None)]
        assert torch.equal(batch.points[row, :n], torch.from_numpy(expected))
        assert not batch.points[row, n:].any()  # zero padding


def test_history_is_the_previous_keyframes_of_the_same_episode_as_an_evaluation_episode_passes_them(
    dataset_dir,
):
    ds = KeyframeDataset(dataset_dir)
    # rows are stored in reverse frame order: sample 2 is frame 0 of task-a's variation 0, sample 0 frame 2
    assert ds.previous.tolist()[:3] == [1, 2, 2]
    batch = ds.batch([0, 1, 2, 9], max_points=16, history=3)
    assert batch.history.shape == (4, 3, 8)
    assert batch.history[:, :, 0].tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0], [111, 110, 110]]
    assert ds.batch([0], max_points=16).history is None
    # what the evaluation loop builds from the poses it saw at frames 0 and 1 (oldest first) for frame 2
    poses = [ds.gripper[2], ds.gripper[1]]
    assert np.array_equal(past_poses(ds.gripper[0], poses, 3), batch.history[0].numpy())
    assert np.array_equal(past_poses(ds.gripper[2], [], 3), ds.batch([2], 16, history=3).history[0].numpy())
    assert past_poses(ds.gripper[0], poses, 0).shape == (0, 8)


def test_previous_keyframes_follow_frames_within_each_episode():
    episode = np.array([1, 0, 1, 0, 1])
    frame = np.array([5, 3, 2, 1, 9])
    assert previous_keyframes(episode, frame).tolist() == [2, 3, 2, 3, 0]


def test_a_recovery_step_follows_the_step_before_it_and_is_outside_the_keyframe_chain():
    """Recovery samples (KeyframeConfig.recoveries): the miss after grasp keyframe 1 follows the grasp's sample,
    the lift follows the miss; the keyframes' own chain is unchanged (keyframe 2 still follows keyframe 1)."""
    from evaluation.datasets.dataset import is_recovery, recovery_frame

    frame = np.array([0, 1, 2, recovery_frame(1, 1), recovery_frame(1, 0), 0])
    episode = np.array([0, 0, 0, 0, 0, 1])
    assert previous_keyframes(episode, frame).tolist() == [0, 0, 1, 4, 1, 5]
    assert is_recovery(frame).tolist() == [False, False, False, True, True, False]


def test_batches_are_deterministic_without_generator_and_random_with_one(dataset_dir):
    ds = KeyframeDataset(dataset_dir)
    a, b = ds.batch([3, 4], 16), ds.batch([3, 4], 16)
    assert torch.equal(a.points, b.points)
    r1 = ds.batch([3, 4], 16, np.random.default_rng(1))
    r2 = ds.batch([3, 4], 16, np.random.default_rng(2))
    assert not torch.equal(r1.points, r2.points)
    with pytest.raises(IndexError):
        ds.batch([12], 16)


def test_missing_directory_and_missing_manifest(tmp_path, copy_dir):
    with pytest.raises(DatasetError, match="no dataset directory.*python -m evaluation.collect"):
        KeyframeDataset(tmp_path / "nope")
    (copy_dir / MANIFEST).unlink()
    with pytest.raises(DatasetError, match="manifest.json is missing.*interrupted"):
        KeyframeDataset(copy_dir)


def test_truncated_manifest(copy_dir):
    path = copy_dir / MANIFEST
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DatasetError, match="not valid JSON"):
        KeyframeDataset(copy_dir)


def test_schema_version_mismatch(copy_dir):
    path = copy_dir / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="schema_version"):
        KeyframeDataset(copy_dir)


def test_truncated_shard_is_detected_by_hash_and_by_parquet(copy_dir):
    shard = copy_dir / "shards/task-b/var01.parquet"
    shard.write_bytes(shard.read_bytes()[:-200])
    with pytest.raises(DatasetError, match="var01.parquet does not match its sha256"):
        KeyframeDataset(copy_dir)
    with pytest.raises(DatasetError, match="var01.parquet is corrupt or truncated"):
        KeyframeDataset(copy_dir, verify_hashes=False)


def test_missing_shard_and_row_count_mismatch(copy_dir):
    path = copy_dir / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["shards"][0]["rows"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="has 3 rows, the manifest says 99"):
        KeyframeDataset(copy_dir)
    (copy_dir / "shards/task-a/var00.parquet").unlink()
    with pytest.raises(DatasetError, match="var00.parquet is listed .* but missing"):
        KeyframeDataset(copy_dir)


def test_summary_has_the_manifest_and_every_target_without_loading_the_points(dataset_dir):
    full = KeyframeDataset(dataset_dir)
    summary = DatasetSummary.read(dataset_dir)
    assert summary.task_names == full.task_names and summary.manifest == full.manifest
    np.testing.assert_array_equal(summary.target, full.target)  # (S, 8), same order


def test_summary_names_a_missing_or_unreadable_shard(copy_dir):
    shard = copy_dir / "shards/task-b/var01.parquet"
    data = shard.read_bytes()
    shard.write_bytes(data[:-200])
    with pytest.raises(DatasetError, match="var01.parquet is corrupt or truncated"):
        DatasetSummary.read(copy_dir)
    shard.unlink()
    with pytest.raises(DatasetError, match="var01.parquet is listed in .* but missing"):
        DatasetSummary.read(copy_dir)
    with pytest.raises(DatasetError, match="no dataset directory"):
        DatasetSummary.read(copy_dir / "absent")


def test_wrong_schema_shard(copy_dir):
    import pyarrow as pa

    shard = copy_dir / "shards/task-a/var01.parquet"
    write_table(pa.table({"task": ["task-a"]}), shard)
    with pytest.raises(DatasetError, match="has schema"):
        KeyframeDataset(copy_dir, verify_hashes=False)


def test_missing_instruction_embedding(copy_dir):
    rows = [("task-a", "do task-a", "fake-encoder", np.ones((2, DIM), np.float32))]
    write_table(instructions_table(rows), copy_dir / INSTRUCTIONS)
    with pytest.raises(DatasetError, match="no instruction embedding for \\['task-b'\\]"):
        KeyframeDataset(copy_dir, verify_hashes=False)
