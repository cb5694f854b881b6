"""Meta-World as the robot: expert episodes exported as recorded episodes (every frame, every camera), imported
with ``python -m evaluation.import_episodes``, trained on with ``platform.train`` like any dataset, and evaluated
in Meta-World (issue "From a robot and back", item 1; docs/importing.md)."""

from __future__ import annotations

import json

import pytest

from evaluation.datasets.episode_export import export_episodes
from tests.platform.conftest import FINAL_LINE, TINY_TASKS, run_platform, tiny_overrides

pytestmark = [pytest.mark.integration, pytest.mark.sim]


def test_exported_episodes_import_and_train_like_a_collection(tmp_path):
    recordings = tmp_path / "recordings"
    export_episodes(TINY_TASKS, 1, recordings, log=lambda _: None)
    dataset = tmp_path / "imported"
    out = run_platform("evaluation.import_episodes", ["--root", str(recordings), "--out", str(dataset), "--no-progress"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "workspace fitted to the data" in out.stdout and "table height 0.00" in out.stdout  # Meta-World's table
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["suite"] == "recorded" and sorted(manifest["tasks"]) == sorted(TINY_TASKS)

    args = tiny_overrides(tmp_path, dataset, "imported", "train.steps=10", "data.episodes_per_task=1",
                          "data.val_episodes_per_task=0", "train.val_every=0")
    run = run_platform("platform.train", args)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    final = FINAL_LINE.match(run.stdout.strip().splitlines()[-1])
    assert final and int(final.group(2)) == len(TINY_TASKS), run.stdout[-2000:]
