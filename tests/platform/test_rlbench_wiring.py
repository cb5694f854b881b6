"""data.suite=rlbench: clear errors for a missing imported dataset and for RLBench not being installed."""

import sys

import numpy as np
import pytest

from evaluation.checkpoint_format import INSTRUCTIONS_FILE, save_instructions
from platform.cli import UserFacingError
from platform.config import load_config
from platform.evaluate import eval_request
from platform.train.dataset import ensure_dataset
from tests import REPO_ROOT

pytestmark = pytest.mark.unit


def test_missing_rlbench_dataset_points_to_the_importer(tmp_path):
    cfg = load_config(None, ["data.suite=rlbench", f"data.path={tmp_path / 'nothing'}"])
    with pytest.raises(UserFacingError, match="evaluation.rlbench_import"):
        ensure_dataset(cfg)


def test_rlbench_evaluation_needs_a_demo_root_then_rlbench(tmp_path, monkeypatch):
    # PyRep made unimportable (None in sys.modules) so that the missing-package error is checked on every
    # machine, RLBench installed or not.
    monkeypatch.setitem(sys.modules, "pyrep", None)
    save_instructions(
        tmp_path / INSTRUCTIONS_FILE, {"close_jar": (np.zeros((3, 384), np.float32), np.ones(3, bool))}
    )
    with pytest.raises(UserFacingError, match="rlbench_demo_root"):
        eval_request(load_config(None, ["data.suite=rlbench"]), tmp_path)
    cfg = load_config(None, ["data.suite=rlbench", f"eval.rlbench_demo_root={tmp_path}"])
    with pytest.raises(ImportError, match="PyRep is not installed.*docs/rlbench.md"):
        eval_request(cfg, tmp_path)


def test_rlbench_evaluation_defaults_to_three_seeds_and_names_protocol_deviations():

    from platform.evaluate import eval_seeds, protocol_note

    assert eval_seeds(load_config(None, [])) == 0  # Meta-World: one seed
    assert eval_seeds(load_config(None, ["eval.num_seeds=2", "eval.seed=5"])) == [5, 6]
    quick = load_config(None, ["data.suite=rlbench", "eval.episodes_per_task=5"])
    assert eval_seeds(quick) == [0, 1, 2]
    assert "5 episodes per task x 3 seeds" in protocol_note(
        quick
    ) and "not directly comparable" in protocol_note(quick)
    paper = load_config(REPO_ROOT / "configs" / "rlbench18.yaml", [])
    assert protocol_note(paper) is None and eval_seeds(paper) == [0, 1, 2]
    assert protocol_note(load_config(None, [])) is None
