"""Import of RLBench demonstrations (dataset generator layout) into the keyframe dataset format.

Synthetic datasets are written by the stand-in's ``rlbench.dataset_generator`` (RLBench's file names,
PNG encodings and pickles); the import itself runs with no ``rlbench`` importable.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from evaluation.datasets.dataset import KeyframeDataset
from evaluation.datasets.rlbench_import import (
    VARIATION_INSTRUCTIONS,
    RLBenchImportError,
    decode_depth,
    import_dataset,
    load_demo,
    main,
)
from evaluation.datasets.rlbench_keyframes import demo_keyframes
from evaluation.simulators.rlbench_backend import list_episodes
from evaluation.simulators.rlbench_tasks import TABLE_HEIGHT
from tests import REPO_ROOT
from tests.evaluation.rlbench_standin import standin as standin_helpers

pytestmark = pytest.mark.unit

BLOCK_TOP = TABLE_HEIGHT + 0.05


def write_dataset(
    root: Path,
    tasks: tuple[str, ...],
    episodes: int,
    all_variations: bool,
    monkeypatch,
    flavour: str = "upstream",
) -> None:
    """Generate with the stand-in, then make ``rlbench``/``pyrep`` unimportable again."""
    gen = standin_helpers.activate(monkeypatch, flavour)
    next(gen)
    from rlbench.backend.utils import task_file_to_task_class
    from rlbench.dataset_generator import generate

    generate(
        str(root),
        [task_file_to_task_class(t) for t in tasks],
        episodes,
        variations=2,
        all_variations=all_variations,
        image_size=(24, 24),
        seed=3,
    )
    next(gen, None)
    for name in ("rlbench", "pyrep"):
        monkeypatch.setitem(sys.modules, name, None)  # any import of RLBench now fails


@pytest.fixture(scope="module")
def peract_split(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("peract_train")
    write_dataset(root, ("close_jar", "open_drawer"), 3, True, mp)
    mp.undo()
    return root


def test_depth_png_decoding_round_trip(tmp_path):
    from PIL import Image

    depth = np.random.default_rng(0).random((5, 7))
    scaled = np.floor(depth * (2**24 - 1) + 0.5).astype(np.uint32)
    rgb = np.stack([(scaled >> 16) & 255, (scaled >> 8) & 255, scaled & 255], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "0.png")
    np.testing.assert_allclose(decode_depth(tmp_path / "0.png"), depth, atol=1e-7)


def test_import_opens_like_a_metaworld_dataset(peract_split, tmp_path, monkeypatch):
    for name in ("rlbench", "pyrep"):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "ds"
    manifest = import_dataset(
        peract_split,
        out,
        "close_jar,open_drawer",
        text_encoder=standin_helpers.FakeTextEncoder(),
        progress=False,
    )
    ds = KeyframeDataset(out)
    assert ds.task_names == ["close_jar", "open_drawer"] and len(ds) == manifest["total_samples"] > 0
    assert manifest["counts"]["close_jar"]["episodes"] == 3
    # every sample: the observation at keyframe j -> the demo's pose at keyframe j+1
    row = 0
    for shard in manifest["shards"]:
        demo = load_demo(Path(shard["source"]) / "low_dim_obs.pkl")
        keys = demo_keyframes(demo)
        observed = [0, *keys[:-1]]
        assert shard["rows"] == len(keys) == 4  # stand-in expert: above, at the top, closing, final
        for f, k in zip(observed, keys, strict=True):
            np.testing.assert_allclose(
                ds.target[row], [*demo[k].gripper_pose, demo[k].gripper_open], atol=1e-6
            )
            np.testing.assert_allclose(
                ds.gripper[row], [*demo[f].gripper_pose, demo[f].gripper_open], atol=1e-6
            )
            row += 1
    assert ds.target[:, 7].min() == 0.0 and ds.target[:, 7].max() == 1.0  # the grasp closes the gripper
    # points: depth decoded from the PNGs and the camera matrices from misc put the block top where it is
    batch = ds.batch(list(range(len(ds))), max_points=4000)
    for i in range(len(ds)):
        pts = batch.points[i][batch.point_mask[i]].numpy()
        red = (pts[:, 3] > 0.5) & (pts[:, 4] < -0.5)
        assert red.sum() >= 3
        np.testing.assert_allclose(pts[red, 2], BLOCK_TOP, atol=2e-3)
        np.testing.assert_allclose(pts[red, 6], BLOCK_TOP - TABLE_HEIGHT, atol=2e-3)
        assert np.all(pts[:, 2] >= TABLE_HEIGHT)  # table removed, workspace crop applied
    assert manifest["pointcloud"]["table_height"] == TABLE_HEIGHT
    assert manifest["render"]["cameras"] == ["left_shoulder", "right_shoulder", "wrist", "front"]


def test_instructions_per_task_and_per_variation(peract_split, tmp_path, monkeypatch):
    for name in ("rlbench", "pyrep"):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "ds"
    manifest = import_dataset(
        peract_split, out, ["close_jar"], text_encoder=standin_helpers.FakeTextEncoder(), progress=False
    )
    import pyarrow.parquet as pq

    rows = pq.read_table(out / "shards" / "close_jar" / "ep0001.parquet").to_pydict()
    episode = list_episodes(peract_split, "close_jar")[1]
    assert set(rows["instruction"]) == {episode.descriptions[0]} == {"close jar with the maroon block"}
    variations = pq.read_table(out / VARIATION_INSTRUCTIONS).to_pydict()
    assert sorted(variations["instruction"]) == [  # every description of every variation
        "close jar with the maroon block",
        "close jar with the red block",
        "maroon block: close jar",
        "red block: close jar",
    ]
    assert manifest["text_variations"]["file"] == VARIATION_INSTRUCTIONS
    assert manifest["text_variations"]["alternatives"]["close jar with the red block"] == [
        "close jar with the red block",
        "red block: close jar",
    ]
    ds = KeyframeDataset(out)
    tokens, mask = ds.instruction_embedding("close_jar")
    assert tokens.shape == (2, 4) and mask.all()  # "close jar": the task-level text
    assert len(ds.variation_instructions()) == 4  # the checkpoint can condition on any of them

    # training draws one of the sample's variation's descriptions; without a generator, the first
    encoder = standin_helpers.FakeTextEncoder()
    emb = {t: encoder.encode([t])[0].tokens for t in variations["instruction"]}

    def texts_of(batch):
        out = []
        for i in range(batch.batch_size):
            tok = batch.text[i][batch.text_mask[i]].numpy()
            out.append(next(t for t, e in emb.items() if e.shape == tok.shape and np.array_equal(e, tok)))
        return out

    everything = list(range(len(ds)))
    assert texts_of(ds.batch(everything, max_points=16)) == ds.sample_instructions
    drawn = [texts_of(ds.batch(everything, 16, np.random.default_rng(s))) for s in range(24)]
    for i, first in enumerate(ds.sample_instructions):
        seen = {d[i] for d in drawn}
        assert seen <= set(manifest["text_variations"]["alternatives"][first]) and len(seen) == 2, (i, seen)
    again = [texts_of(ds.batch(everything, 16, np.random.default_rng(s))) for s in range(24)]
    assert drawn == again  # deterministic given the generator (exact resume)


def test_variation_folder_layout_and_episode_limit(tmp_path, monkeypatch):
    root = tmp_path / "rlbench_data"
    write_dataset(root, ("open_drawer",), 2, False, monkeypatch)
    assert (root / "open_drawer" / "variation1" / "episodes" / "episode0" / "low_dim_obs.pkl").is_file()
    episodes = list_episodes(root, "open_drawer")
    assert [(e.variation, e.path.name) for e in episodes] == [
        (0, "episode0"),
        (0, "episode1"),
        (1, "episode0"),
        (1, "episode1"),
    ]
    manifest = import_dataset(
        root,
        tmp_path / "ds",
        "open_drawer",
        episodes_per_task=3,
        text_encoder=standin_helpers.FakeTextEncoder(),
        progress=False,
    )
    assert [s["variation"] for s in manifest["shards"]] == [0, 0, 1]
    assert len(KeyframeDataset(tmp_path / "ds")) == 12

    # PerAct's fork with --all_variations=False: the descriptions sit in each episode, not the variation
    v1 = root / "open_drawer" / "variation1"
    for ep in (v1 / "episodes").iterdir():
        (ep / "variation_descriptions.pkl").write_bytes((v1 / "variation_descriptions.pkl").read_bytes())
    expected = list_episodes(root, "open_drawer")[2].descriptions
    (v1 / "variation_descriptions.pkl").unlink()
    (root / "open_drawer" / "variation_notes.txt").write_text("a stray file a user left there")
    episodes = list_episodes(root, "open_drawer")
    assert [(e.variation, e.path.name) for e in episodes][2:] == [(1, "episode0"), (1, "episode1")]
    assert episodes[2].descriptions == expected and expected


def test_data_written_by_peracts_fork_imports(tmp_path, monkeypatch):
    """The fork's demos carry no misc['variation_index']: the variation comes from variation_number.pkl."""
    root = tmp_path / "fork_data"
    write_dataset(root, ("close_jar",), 3, True, monkeypatch, flavour="fork")
    episodes = list_episodes(root, "close_jar")
    assert "variation_index" not in load_demo(episodes[1].path / "low_dim_obs.pkl")[0].misc
    manifest = import_dataset(
        root, tmp_path / "ds", "close_jar", text_encoder=standin_helpers.FakeTextEncoder(), progress=False
    )
    assert [s["variation"] for s in manifest["shards"]] == [e.variation for e in episodes] == [0, 1, 0]
    assert len(KeyframeDataset(tmp_path / "ds")) == 12


def test_restart_keeps_finished_shards_and_refuses_other_settings(peract_split, tmp_path, monkeypatch):
    for name in ("rlbench", "pyrep"):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "ds"
    enc = standin_helpers.FakeTextEncoder()
    import_dataset(peract_split, out, "close_jar", text_encoder=enc, progress=False)
    shard = out / "shards" / "close_jar" / "ep0000.parquet"
    before = shard.stat().st_mtime_ns
    (out / "manifest.json").unlink()  # as if killed before the manifest
    import_dataset(peract_split, out, "close_jar", text_encoder=enc, progress=False)
    assert shard.stat().st_mtime_ns == before and KeyframeDataset(out)
    with pytest.raises(RLBenchImportError, match="different settings"):
        import_dataset(peract_split, out, "close_jar", cameras=("front",), text_encoder=enc, progress=False)


def test_clear_errors_for_bad_input(peract_split, tmp_path, monkeypatch, capsys):
    enc = standin_helpers.FakeTextEncoder()
    with pytest.raises(RLBenchImportError, match="not a directory"):
        import_dataset(tmp_path / "nowhere", tmp_path / "a", "close_jar", text_encoder=enc)
    with pytest.raises(RLBenchImportError, match="no RLBench data for task 'stack_cups'"):
        import_dataset(peract_split, tmp_path / "b", "stack_cups", text_encoder=enc)
    with pytest.raises(RLBenchImportError, match="3 episodes, 5 were asked for"):
        import_dataset(peract_split, tmp_path / "c", "close_jar", episodes_per_task=5, text_encoder=enc)
    broken = tmp_path / "broken"
    for src in (peract_split / "close_jar").rglob("*"):
        dst = broken / "close_jar" / src.relative_to(peract_split / "close_jar")
        if src.is_dir():
            dst.mkdir(parents=True, exist_ok=True)
        else:
            dst.write_bytes(src.read_bytes())
    (broken / "close_jar/all_variations/episodes/episode1/front_depth/0.png").unlink()
    with pytest.raises(RLBenchImportError, match=r"episode1/front_depth/0.png is missing"):
        import_dataset(broken, tmp_path / "d", "close_jar", text_encoder=enc, progress=False)
    (broken / "close_jar/all_variations/episodes/episode0/low_dim_obs.pkl").write_bytes(b"not a pickle")
    with pytest.raises(RLBenchImportError, match="not a readable RLBench demo pickle"):
        import_dataset(broken, tmp_path / "e", "close_jar", text_encoder=enc, progress=False)
    assert (
        main(["--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "f"), "--tasks", "close_jar"]) == 2
    )
    assert "not a directory" in capsys.readouterr().err


def test_demo_pickle_loads_without_rlbench(peract_split, monkeypatch):
    for name in ("rlbench", "pyrep"):
        monkeypatch.setitem(sys.modules, name, None)
    path = peract_split / "close_jar" / "all_variations" / "episodes" / "episode0" / "low_dim_obs.pkl"
    with pytest.raises(ImportError):
        pickle.loads(path.read_bytes())  # the plain unpickler needs RLBench ...
    demo = load_demo(path)  # ... the importer does not
    assert len(demo) > 10 and demo[0].gripper_pose.shape == (7,)
    assert demo[0].front_rgb is None and "front_camera_extrinsics" in demo[0].misc
    assert demo[0].misc["variation_index"] == 0


def test_samples_are_conditioned_on_their_own_variation_instruction(peract_split, tmp_path, monkeypatch):
    """RLBench variations differ by language: each sample's text is its variation's embedding."""
    for name in ("rlbench", "pyrep"):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "ds"
    encoder = standin_helpers.FakeTextEncoder()
    import_dataset(peract_split, out, ["close_jar"], text_encoder=encoder, progress=False)
    ds = KeyframeDataset(out)
    batch = ds.batch(list(range(len(ds))), max_points=64)
    by_instruction = {}
    for i, instr in enumerate(ds.sample_instructions):
        text = batch.text[i][batch.text_mask[i]].numpy()  # (L_i, D) real tokens of sample i
        by_instruction.setdefault(instr, []).append(text)
    assert set(by_instruction) == {"close jar with the maroon block", "close jar with the red block"}
    for instr, texts in by_instruction.items():
        expected = encoder.encode([instr])[0].tokens
        assert all(np.array_equal(t, expected) for t in texts), instr


def test_training_checkpoint_carries_variation_texts_and_evaluation_uses_them(
    peract_split, tmp_path, monkeypatch
):
    """Import -> train (2 steps, in process) -> checkpoint -> an RLBench episode restored from a demo: the
    policy is conditioned on the variation's own instruction, exactly as its training samples were."""
    from evaluation.checkpoint_format import INSTRUCTIONS_FILE, CheckpointBundle, load_instructions
    from evaluation.datasets.rlbench_import import rlbench_pointcloud_config
    from evaluation.pointcloud import PointCloudConditioner
    from evaluation.runtime.episode import EpisodeSpec, LocalInference, run_episode
    from evaluation.simulators.rlbench_backend import RLBenchConfig, RLBenchSimulator
    from platform.cli import UserFacingError
    from platform.config import load_config
    from platform.train.checkpoint import latest_checkpoint
    from platform.train.dataset import ensure_dataset
    from platform.train.worker import train_loop_per_worker

    for name in ("rlbench", "pyrep"):
        monkeypatch.setitem(sys.modules, name, None)
    out = tmp_path / "ds"
    encoder = standin_helpers.FakeTextEncoder()
    import_dataset(peract_split, out, ["close_jar"], text_encoder=encoder, progress=False)
    overrides = [
        "data.suite=rlbench",
        f"data.path={out}",
        "data.collect_if_missing=false",
        "policy.preset=tiny",
        "policy.text_dim=4",
        "policy.m=2",
        "train.batch_size=2",
        "train.steps=2",
        "train.warmup_steps=1",
        "train.checkpoint_every=2",
        "train.log_every=1",
        "train.device=cpu",
        "eval.enabled=false",
        f"output_dir={tmp_path / 'runs'}",
    ]
    with pytest.raises(
        UserFacingError, match=r"outside the policy workspace.*policy.workspace_low=\[-0.3,-0.5,0.6\]"
    ):
        ensure_dataset(
            load_config(None, overrides)
        )  # Meta-World's default workspace would clip RLBench targets
    cfg = load_config(REPO_ROOT / "configs" / "rlbench18.yaml", overrides)  # PerAct's bounds
    assert ensure_dataset(cfg) == out
    train_loop_per_worker({"config": cfg.model_dump(mode="json"), "run_dir": str(cfg.run_dir)})
    info = latest_checkpoint(cfg.run_dir)
    assert info is not None and info.step == 2
    ckpt = info.path
    stored = load_instructions(ckpt / INSTRUCTIONS_FILE)
    texts = {
        "close jar with the red block",
        "close jar with the maroon block",
        "red block: close jar",
        "maroon block: close jar",
    }  # every description: evaluation may state any of them
    assert set(stored.tasks) == {"close_jar"} and set(stored.texts) == texts
    for text, (tokens, mask) in stored.texts.items():
        np.testing.assert_array_equal(tokens, encoder.encode([text])[0].tokens)
        assert mask.all()

    for name in ("rlbench", "pyrep"):
        monkeypatch.delitem(sys.modules, name)
    gen = standin_helpers.activate(monkeypatch)
    next(gen)
    sim = RLBenchSimulator(RLBenchConfig(tasks=("close_jar",), image_size=24, demo_root=str(peract_split)))
    seen: list[np.ndarray] = []
    conditioner = PointCloudConditioner(max_points=cfg.policy.max_points, config=rlbench_pointcloud_config())

    def recording_condition_fn(obs, text, previous=()):
        seen.append(text[0])
        return conditioner(obs, text, previous)

    infer = LocalInference(CheckpointBundle.read(ckpt).build_policy())
    for variation, text in ((0, "close jar with the red block"), (1, "close jar with the maroon block")):
        seen.clear()
        out_ep = run_episode(
            sim, infer, recording_condition_fn, stored, EpisodeSpec("close_jar", variation, 0), 2
        )
        assert out_ep.result.steps >= 1 and seen
        assert all(np.array_equal(s, encoder.encode([text])[0].tokens) for s in seen), variation
    sim.close()
    next(gen, None)


def test_platform_train_imports_rlbench_data_on_first_run(peract_split, tmp_path, monkeypatch, capsys):
    """One command: with data.rlbench_root set, a missing dataset is imported (real MiniLM encoder)."""
    from platform.cli import UserFacingError
    from platform.config import load_config
    from platform.train.dataset import ensure_dataset

    for name in ("rlbench", "pyrep"):
        monkeypatch.setitem(sys.modules, name, None)
    config = REPO_ROOT / "configs" / "rlbench18.yaml"
    base = [
        f"data.path={tmp_path / 'ds'}",
        "data.tasks=[close_jar]",
        "data.episodes_per_task=2",
        "data.collect_workers=1",
    ]
    with pytest.raises(UserFacingError, match="not a directory of RLBench data"):
        ensure_dataset(load_config(config, [*base, f"data.rlbench_root={tmp_path / 'nowhere'}"]))
    with pytest.raises(UserFacingError, match="data.rlbench_root=<RLBench data>"):
        ensure_dataset(load_config(config, [*base, "data.rlbench_root=null"]))
    path = ensure_dataset(load_config(config, [*base, f"data.rlbench_root={peract_split}"]))
    assert "importing RLBench demonstrations" in capsys.readouterr().out
    ds = KeyframeDataset(path)
    assert ds.task_names == ["close_jar"] and ds.manifest["counts"]["close_jar"]["episodes"] == 2
    assert (
        ds.manifest["text"]["dim"] == 384 and len(ds.variation_instructions()) == 4
    )  # 2 variations x 2 phrasings
