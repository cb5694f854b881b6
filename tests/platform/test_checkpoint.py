"""Checkpoints are atomic, verified by their manifest, pruned to keep-last + best (R4)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from platform.train.checkpoint import (
    CorruptCheckpointError,
    best_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    set_checkpoint_metric,
    verify_checkpoint,
    write_checkpoint,
)
from tests import REPO_ROOT


def writers(payload: bytes):
    return {"a.bin": lambda p: p.write_bytes(payload), "b.txt": lambda p: p.write_text("hello")}


@pytest.mark.unit
def test_write_verify_latest(tmp_path):
    for step in (10, 20, 30):
        write_checkpoint(tmp_path, step, writers(bytes([step]) * 100))
    assert [c.step for c in list_checkpoints(tmp_path)] == [10, 20, 30]
    assert latest_checkpoint(tmp_path).step == 30
    assert verify_checkpoint(latest_checkpoint(tmp_path).path).step == 30


@pytest.mark.unit
def test_corrupted_checkpoint_is_detected_and_skipped(tmp_path):
    write_checkpoint(tmp_path, 10, writers(b"x" * 100))
    newest = write_checkpoint(tmp_path, 20, writers(b"y" * 100))
    data = (newest / "a.bin").read_bytes()
    (newest / "a.bin").write_bytes(data[:50] + b"Z" + data[51:])  # same size, different content
    with pytest.raises(CorruptCheckpointError, match="a.bin"):
        verify_checkpoint(newest)
    with pytest.warns(UserWarning, match="corrupt"):
        assert latest_checkpoint(tmp_path).step == 10
    (newest / "manifest.json").unlink()
    with pytest.raises(CorruptCheckpointError, match="manifest"):
        verify_checkpoint(newest)


@pytest.mark.unit
def test_failed_writer_leaves_nothing(tmp_path):
    def boom(p):
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_checkpoint(tmp_path, 5, {"a.bin": boom})
    assert list((tmp_path / "checkpoints").iterdir()) == []


@pytest.mark.unit
def test_prune_keeps_last_k_and_best(tmp_path):
    paths = [write_checkpoint(tmp_path, s, writers(b"z")) for s in (1, 2, 3, 4, 5)]
    set_checkpoint_metric(paths[1], 0.9)
    set_checkpoint_metric(paths[3], 0.5)
    prune_checkpoints(tmp_path, keep_last=2)
    assert [c.step for c in list_checkpoints(tmp_path)] == [2, 4, 5]
    assert best_checkpoint(tmp_path).step == 2


@pytest.mark.process
def test_sigkill_during_write_leaves_complete_or_nothing(tmp_path):
    """A writer process is SIGKILLed mid-write, repeatedly; every surviving checkpoint verifies."""
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from platform.train.checkpoint import write_checkpoint
        print("ready", flush=True)
        def slow(p):
            with open(p, "wb") as f:
                for _ in range(200):
                    f.write(b"x" * 4096); f.flush(); time.sleep(0.001)
        step = 0
        while True:
            step += 1
            write_checkpoint({str(tmp_path)!r}, step, {{"big.bin": slow, "small.txt": lambda p: p.write_text("ok")}})
            print(step, flush=True)
    """)
    for delay in (0.15, 0.4, 0.7):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO_ROOT)
        assert proc.stdout.readline() == b"ready\n"  # imports done (torch takes about a second): now writing
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    ckpts = list_checkpoints(tmp_path)  # verifies every manifest; raises warnings for corrupt ones
    for c in ckpts:
        verify_checkpoint(c.path)
    leftovers = [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    prune_checkpoints(tmp_path, keep_last=100)
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    assert (
        leftovers or ckpts
    )  # the kill happened while writing or between writes; either way nothing is corrupt


@pytest.mark.unit
def test_a_checkpoint_keeps_the_datasets_settings_render_only_for_meta_world():
    """``worker.dataset_files``: the point-cloud settings and instruction texts of any dataset, and the camera
    settings (``render.json``) of a Meta-World collection, which evaluation renders with; none for a fake."""
    import json
    from types import SimpleNamespace

    from evaluation.checkpoint_format import INSTRUCTION_TEXTS_FILE, POINTCLOUD_FILE, RENDER_FILE
    from evaluation.pointcloud import PointCloudConfig
    from platform.train.worker import dataset_files

    render = {"width": 64, "height": 64}
    metaworld = SimpleNamespace(
        pointcloud_config=PointCloudConfig(hide_arm=True),
        instruction_texts={"reach-v3": "reach the goal position"},
        text_encoder="minilm",
        manifest={"suite": "mt50", "render": render},
    )
    files = dataset_files(metaworld)
    assert set(files) == {POINTCLOUD_FILE, INSTRUCTION_TEXTS_FILE, RENDER_FILE}
    assert json.loads(files[RENDER_FILE]) == render and json.loads(files[POINTCLOUD_FILE])["hide_arm"] is True
    recorded = SimpleNamespace(**{**vars(metaworld), "manifest": {"suite": "recorded", "render": render}})
    assert RENDER_FILE not in dataset_files(recorded)  # not a Meta-World camera rig
    assert dataset_files(SimpleNamespace()) == {}
