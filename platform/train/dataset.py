"""The training dataset: found, collected (Meta-World) or imported (RLBench) when missing, checked, and split
into training and validation episodes.

The driver calls ``ensure_dataset`` before Ray starts (a missing Meta-World dataset is collected, a short one
topped up, an RLBench one imported from ``data.rlbench_root``, and the result checked against the config); each
training worker then opens it with ``open_split``: the first ``data.episodes_per_task`` episodes of every task
train, the next ``data.val_episodes_per_task`` validate.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evaluation.checkpoint_format import Instruction
from evaluation.datasets.dataset import DatasetError, DatasetSummary, KeyframeDataset
from evaluation.datasets.text import TextEncoderError
from evaluation.pointcloud import PointCloudConfig
from platform.cli import UserFacingError
from platform.config import ExperimentConfig
from policies.batch import ConditionBatch


def ensure_dataset(cfg: ExperimentConfig) -> Path:
    """The dataset directory of ``cfg.data``; collected (Meta-World) or imported from ``data.rlbench_root``
    (RLBench) first, with progress output, when missing.

    Raises ``platform.cli.UserFacingError`` when it is missing and ``data.collect_if_missing`` is false, or
    when it exists but does not validate (the reader names the file and the fix).
    """
    path = cfg.resolve_path(cfg.data.path)
    if (path / "manifest.json").is_file() and cfg.data.suite != "rlbench" and cfg.data.collect_if_missing:
        _top_up(cfg, path)
    if not (path / "manifest.json").is_file():
        if cfg.data.suite == "rlbench":
            _import_rlbench(cfg, path)
            return _check_dataset(cfg, path)
        if not cfg.data.collect_if_missing:
            raise UserFacingError(
                f"no dataset at {path} and data.collect_if_missing=false: collect one with "
                f"python -m evaluation.collect --suite {cfg.data.suite} --episodes-per-task "
                f"{cfg.data.episodes_per_task} --out {path}"
            )

        print(
            f"[data] no dataset at {path}: collecting {cfg.data.suite} x {_episodes_needed(cfg)} episodes per "
            f"task ({cfg.data.episodes_per_task} training + {cfg.data.val_episodes_per_task} validation) with "
            f"{cfg.data.collect_workers} workers (one-time)",
            flush=True,
        )
        _collect(cfg, path)
    return _check_dataset(cfg, path)


def _episodes_needed(cfg: ExperimentConfig) -> int:
    return cfg.data.episodes_per_task + cfg.data.val_episodes_per_task


def _collect(cfg: ExperimentConfig, path: Path) -> None:
    # Lazy: the simulator stack (MuJoCo, Meta-World) loads only when a dataset is collected.
    from evaluation.datasets.collect import CollectError, collect_dataset

    try:
        collect_dataset(
            suite=cfg.data.suite,
            tasks=list(cfg.data.tasks) if cfg.data.tasks else None,
            episodes_per_task=_episodes_needed(cfg),
            out=path,
            workers=cfg.data.collect_workers,
            seed=cfg.data.seed,
            pointcloud=PointCloudConfig(
                surface_fraction=cfg.data.surface_fraction, hide_arm=cfg.data.hide_arm
            ),
            keyframes=cfg.data.keyframes(),
        )
    except CollectError as exc:
        raise UserFacingError(f"collecting {path} failed: {exc}") from None


def _top_up(cfg: ExperimentConfig, path: Path) -> None:
    """A Meta-World dataset with fewer episodes per task than training + validation need is extended
    (collection is per variation and deterministic: existing episodes are kept as they are)."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        have = min(len(manifest["episodes"][t]) for t in (cfg.data.tasks or manifest["tasks"]))
    except (OSError, ValueError, KeyError, TypeError):
        return  # unreadable or foreign: the dataset reader reports it with the fix
    if manifest.get("suite") not in ("mt10", "mt50"):
        return  # imported (recorded episodes): nothing to collect more of
    if have >= _episodes_needed(cfg):
        return
    print(
        f"[data] {path} has {have} episodes per task; collecting up to {_episodes_needed(cfg)} "
        f"({cfg.data.episodes_per_task} training + {cfg.data.val_episodes_per_task} validation; existing "
        "episodes are kept)",
        flush=True,
    )
    _collect(cfg, path)


def _import_rlbench(cfg: ExperimentConfig, path: Path) -> None:
    """Import RLBench demonstrations from ``data.rlbench_root`` into ``path`` (the one-command path)."""
    root = cfg.data.rlbench_root
    how = (
        f"python -m evaluation.rlbench_import --root <RLBench data> --tasks peract18 --out {path}, or set "
        "data.rlbench_root=<RLBench data> (docs/rlbench.md)"
    )
    if root is None or not cfg.data.collect_if_missing:
        raise UserFacingError(f"no RLBench dataset at {path}: import demonstrations with {how}")
    # Lazy: RLBench's reader needs its optional packages only when a dataset is imported.
    from evaluation.datasets.rlbench_import import RLBenchImportError, import_dataset

    src = cfg.resolve_path(root)
    tasks = list(cfg.data.tasks) if cfg.data.tasks else "peract18"
    print(
        f"[data] no dataset at {path}: importing RLBench demonstrations from {src} (first "
        f"{_episodes_needed(cfg)} episodes per task, {cfg.data.collect_workers} workers; one-time, "
        "restartable)",
        flush=True,
    )
    try:
        manifest = import_dataset(src, path, tasks, _episodes_needed(cfg), workers=cfg.data.collect_workers)
    except (RLBenchImportError, TextEncoderError, FileNotFoundError, ValueError) as exc:
        raise UserFacingError(f"importing RLBench data from {src} failed: {exc}") from None
    print(
        f"[data] imported {len(manifest['tasks'])} tasks, {manifest['total_samples']} keyframe samples into "
        f"{path}",
        flush=True,
    )


def _check_dataset(cfg: ExperimentConfig, path: Path) -> Path:
    """Check the dataset against the config (text features, workspace, tasks) without loading it: the
    manifest and the keypose targets only (``DatasetSummary``). Each training worker loads and verifies the
    whole dataset once (``open_split``); loading it here too would only delay the start (docs/design.md)."""
    try:
        ds = DatasetSummary.read(path)
    except DatasetError as exc:
        raise UserFacingError(str(exc)) from None
    text_dim = int(ds.manifest.get("text", {}).get("dim", cfg.policy.text_dim))
    if text_dim != cfg.policy.text_dim:
        raise UserFacingError(
            f"the dataset's instruction features are {text_dim}-d but policy.text_dim is "
            f"{cfg.policy.text_dim}: set policy.text_dim={text_dim}"
        )
    check_workspace(cfg, ds)
    observed = ds.manifest.get("keyframes", {}).get("observe", "expert")
    if ds.manifest.get("suite") in ("mt10", "mt50") and observed != cfg.data.observe:
        raise UserFacingError(
            f"the dataset at {path} was collected with observations from the {observed} (data.observe="
            f"{observed}) but data.observe is {cfg.data.observe}: set data.observe={observed}, or use another "
            "data.path (collected on first use)"
        )
    collected = {  # collection settings that shape the samples, as the manifest records them (default: absent)
        "recoveries": int(ds.manifest.get("keyframes", {}).get("recoveries", 0)),
        "aim_goal": bool(ds.manifest.get("keyframes", {}).get("aim_goal", False)),
        "surface_fraction": float(ds.manifest["pointcloud"].get("surface_fraction", 0.0)),
        "hide_arm": bool(ds.manifest["pointcloud"].get("hide_arm", False)),
    }
    for key, have in collected.items():
        want = getattr(cfg.data, key)
        if ds.manifest.get("suite") in ("mt10", "mt50") and have != want:
            raise UserFacingError(
                f"the dataset at {path} was collected with data.{key}={have} but data.{key} is {want}: set "
                f"data.{key}={have}, or use another data.path (collected on first use)"
            )
    if cfg.data.tasks and set(cfg.data.tasks) - set(ds.task_names):
        raise UserFacingError(
            f"data.tasks {sorted(set(cfg.data.tasks) - set(ds.task_names))} are not in the "
            f"dataset at {path} (it has {ds.task_names}); use another data.path"
        )
    return path


def check_workspace(cfg: ExperimentConfig, ds: DatasetSummary | KeyframeDataset) -> None:
    """Every target position must lie in the policy's workspace (positions are normalised over it and
    sampled keyposes are clipped to it): a Meta-World workspace on RLBench data would silently clip."""
    low, high = np.asarray(cfg.policy.workspace_low), np.asarray(cfg.policy.workspace_high)
    xyz = ds.target[:, :3]  # (S, 3)
    lo, hi = xyz.min(0), xyz.max(0)
    if np.all(lo >= low - 1e-6) and np.all(hi <= high + 1e-6):
        return
    crop = ds.manifest.get("pointcloud", {})  # the dataset's point-cloud crop, widened to hold every target
    suggest_lo = np.minimum(lo, np.asarray(crop.get("workspace_low", lo))).tolist()
    suggest_hi = np.maximum(hi, np.asarray(crop.get("workspace_high", hi))).tolist()
    fmt = lambda v: "[" + ",".join(f"{x:g}" for x in v) + "]"  # noqa: E731
    raise UserFacingError(
        f"the dataset's target positions span {fmt(lo.round(3))}..{fmt(hi.round(3))} (metres), outside the "
        f"policy workspace {fmt(low)}..{fmt(high)}: set policy.workspace_low={fmt(suggest_lo)} "
        f"policy.workspace_high={fmt(suggest_hi)} (the dataset's crop; configs/rlbench18.yaml has RLBench's)"
    )


class DatasetSubset:
    """Samples ``index`` of a dataset (a task subset, the training or the validation episodes), with the
    interface of the dataset it wraps."""

    def __init__(self, dataset: KeyframeDataset, index: np.ndarray) -> None:
        self._dataset = dataset
        self._index = np.asarray(index, np.int64)  # (S_subset,) indices into the full dataset
        kept = set(np.unique(dataset.task_index[self._index]).tolist())
        self.task_names = [t for i, t in enumerate(dataset.task_names) if i in kept]
        self.pointcloud_config = getattr(dataset, "pointcloud_config", None)
        self.manifest = getattr(dataset, "manifest", {})
        self.task_index = dataset.task_index[self._index]  # (S_subset,) into the full dataset's task_names
        self.full_task_names = list(dataset.task_names)
        texts = getattr(dataset, "instruction_texts", None) or {}  # for the checkpoint (platform.serve)
        self.instruction_texts = {t: texts[t] for t in self.task_names if t in texts}
        self.text_encoder = getattr(dataset, "text_encoder", None)

    def __len__(self) -> int:
        return len(self._index)

    def instruction_embedding(self, task: str) -> Instruction:
        return self._dataset.instruction_embedding(task)

    def variation_instructions(self) -> dict[str, Instruction]:
        """The per-text embeddings of the kept tasks (see ``KeyframeDataset``): every text any of their
        episodes was recorded with (training or not: evaluation may meet any variation), and every other
        description of those variations (manifest ``text_variations.alternatives``)."""
        texts = getattr(self._dataset, "variation_instructions", dict)()
        if not texts:
            return {}
        tasks = np.unique(self._dataset.task_index[self._index])
        kept = {
            self._dataset.sample_instructions[i]
            for i in np.flatnonzero(np.isin(self._dataset.task_index, tasks))
        }
        alternatives = (self.manifest.get("text_variations") or {}).get("alternatives") or {}
        kept |= {a for k in list(kept) for a in alternatives.get(k, [])}
        return {k: v for k, v in texts.items() if k in kept}

    def batch(
        self,
        indices: Sequence[int],
        max_points: int,
        generator: np.random.Generator | None = None,
        history: int = 0,
    ) -> ConditionBatch:
        return self._dataset.batch(
            self._index[np.asarray(indices)], max_points=max_points, generator=generator, history=history
        )


def split_episodes(
    dataset: KeyframeDataset, tasks: Sequence[str] | None, train_per_task: int, val_per_task: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train sample indices, validation sample indices) of ``dataset``.

    Per task (restricted to ``tasks`` when given), episodes in manifest order (Meta-World: train variations
    0, 1, ...; RLBench: the imported episodes): the first ``train_per_task`` train, the next
    ``val_per_task`` validate. Validation episodes are therefore other train-set variations, never the test
    variations that evaluation uses, and never episodes the training set sees. Recovery samples
    (``KeyframeConfig.recoveries``) train but are not validated: the held-out error stays the demonstrations'.
    """
    names = list(dataset.task_names)
    if tasks:
        missing = sorted(set(tasks) - set(names))
        if missing:
            raise ValueError(f"data.tasks {missing} are not in the dataset (it has {names})")
    wanted = [names.index(t) for t in (tasks or names)]
    train, val = [], []
    for task in wanted:
        in_task = np.flatnonzero(dataset.task_index == task)
        episodes = list(dict.fromkeys(dataset.sample_episode[in_task].tolist()))  # manifest order
        train_eps = set(episodes[:train_per_task])
        val_eps = set(episodes[train_per_task : train_per_task + val_per_task])
        train.append(in_task[np.isin(dataset.sample_episode[in_task], list(train_eps))])
        val.append(in_task[np.isin(dataset.sample_episode[in_task], list(val_eps))])
    val_rows = np.sort(np.concatenate(val))
    recovery = getattr(dataset, "recovery", None)  # (S,) recovery samples: trained on, never validated
    if recovery is not None:
        val_rows = val_rows[~recovery[val_rows]]
    return np.sort(np.concatenate(train)), val_rows


def has_validation(cfg: ExperimentConfig) -> bool:
    """Whether training will validate: ``train.val_every`` and ``data.val_episodes_per_task`` are set and the
    dataset's manifest holds more episodes of every task than ``data.episodes_per_task`` (read without
    loading the dataset; False when it is missing or unreadable)."""
    if cfg.train.val_every <= 0 or cfg.data.val_episodes_per_task <= 0:
        return False
    try:
        manifest = json.loads((cfg.resolve_path(cfg.data.path) / "manifest.json").read_text())
        counts: dict[str, int] = {}
        for shard in manifest["shards"]:
            counts[shard["task"]] = counts.get(shard["task"], 0) + 1
        tasks = cfg.data.tasks or manifest["tasks"]
        return any(counts.get(t, 0) > cfg.data.episodes_per_task for t in tasks)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def open_split(cfg: ExperimentConfig) -> tuple[DatasetSubset, DatasetSubset | None]:
    """(training subset, validation subset or None when ``data.val_episodes_per_task`` is 0 or the dataset
    holds no episode beyond the training ones); see ``split_episodes``."""
    dataset = KeyframeDataset(cfg.resolve_path(cfg.data.path))
    train, val = split_episodes(
        dataset, cfg.data.tasks, cfg.data.episodes_per_task, cfg.data.val_episodes_per_task
    )
    return DatasetSubset(dataset, train), (DatasetSubset(dataset, val) if len(val) else None)
