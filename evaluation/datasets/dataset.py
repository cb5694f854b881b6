"""Keyframe dataset on disk: Parquet shards + instruction embeddings + a manifest written last.

Layout of a dataset directory::

    manifest.json                  schema version, tasks, episodes, counts, configs, every file's sha256
    instructions.parquet           one row per task: instruction text + token features (L, D)
    shards/<task>/var<VV>.parquet  one shard per (task, variation) episode, one row per sample
    collection_stats.json          timings of the run that wrote it (not part of the dataset's identity)

A shard row is one ``KeyframeSample``: task, variation, episode, frame, state_index, instruction,
points (N x 7 float32, flattened), gripper_pose (8), target_pose (8). Every file is written to a
temporary name and renamed, so a killed collection leaves only complete files; the manifest is written
after all shards, so a directory without one is an unfinished collection.

``KeyframeDataset`` (used by training) validates everything on open and loads it into memory; any
missing, truncated, corrupt or mismatched file raises ``DatasetError`` naming the file and the fix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from evaluation.datasets.text import pad_tokens
from evaluation.files import atomic_write_bytes, atomic_write_json, sha256_file
from evaluation.pointcloud import PointCloudConfig, collate_points, select_points
from policies.batch import POINT_DIM, POSE_DIM, ConditionBatch

SCHEMA_VERSION = 1
FORMAT = "minidiffuser-keyframes"
MANIFEST = "manifest.json"
INSTRUCTIONS = "instructions.parquet"
VARIATION_INSTRUCTIONS = "variation_instructions.parquet"  # one embedding per distinct instruction
STATS = "collection_stats.json"

SAMPLE_SCHEMA = pa.schema(
    [
        ("task", pa.string()),
        ("variation", pa.int32()),
        ("episode", pa.int32()),
        ("frame", pa.int32()),
        ("state_index", pa.int32()),
        ("instruction", pa.string()),
        ("num_points", pa.int32()),
        ("points", pa.list_(pa.float32())),  # (num_points * 7,) row-major [x y z r g b h]
        ("gripper_pose", pa.list_(pa.float32(), POSE_DIM)),
        ("target_pose", pa.list_(pa.float32(), POSE_DIM)),
    ],
    metadata={"format": FORMAT, "schema_version": str(SCHEMA_VERSION)},
)
INSTRUCTION_SCHEMA = pa.schema(
    [
        ("task", pa.string()),
        ("instruction", pa.string()),
        ("encoder", pa.string()),
        ("num_tokens", pa.int32()),
        ("dim", pa.int32()),
        ("tokens", pa.list_(pa.float32())),  # (num_tokens * dim,)
    ],
    metadata={"format": FORMAT, "schema_version": str(SCHEMA_VERSION)},
)


# Frame numbers of recovery samples (``KeyframeConfig.recoveries``): RECOVERY_FRAME + 10 x the grasp's keyframe
# number + the step's number (``demos.Recovery``: 0 after the missed grasp, 1 after lifting from it; 2, 3 for a
# second recovery ...), after any episode's keyframes (the longest MT50 episodes have about 70). They are not
# part of the episode's keyframe sequence: replays skip them, validation does not score them, and the keyframe
# before one (``history``) is the step before it (the grasp's, for a step 0, 2, ...).
RECOVERY_FRAME = 100_000


def recovery_frame(grasp: int, number: int) -> int:
    """The frame number of recovery step ``number`` (0..9) of the grasp at keyframe ``grasp``."""
    return RECOVERY_FRAME + 10 * grasp + number


def is_recovery(frame: np.ndarray) -> np.ndarray:
    """(S,) frame numbers -> (S,) bool: recovery samples."""
    return np.asarray(frame) >= RECOVERY_FRAME


class DatasetError(RuntimeError):
    """A dataset directory is missing, truncated, corrupt or does not match what was asked for."""


def write_table(table: pa.Table, path: Path) -> None:
    """Parquet (zstd) written to a temporary file then renamed: readers never see a partial file."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", write_statistics=False)
    atomic_write_bytes(path, sink.getvalue().to_pybytes())


@dataclass
class KeyframeSample:
    """One training sample, whoever made it (Meta-World collection, RLBench import): the observation at a
    keyframe and the next keypose."""

    task: str
    variation: int
    episode: int
    frame: int  # keyframe number within the episode (0 = the first observation)
    state_index: int  # the trajectory / demo frame that was observed
    points: np.ndarray  # (N, 7) float32
    gripper_pose: np.ndarray  # (8,) float32
    target_pose: np.ndarray  # (8,) float32


def samples_table(samples: Sequence[KeyframeSample], instruction: str) -> pa.Table:
    """``KeyframeSample`` rows as a table of ``SAMPLE_SCHEMA`` (one episode's shard)."""
    return pa.Table.from_pydict(
        {
            "task": [s.task for s in samples],
            "variation": [s.variation for s in samples],
            "episode": [s.episode for s in samples],
            "frame": [s.frame for s in samples],
            "state_index": [s.state_index for s in samples],
            "instruction": [instruction] * len(samples),
            "num_points": [len(s.points) for s in samples],
            "points": [np.asarray(s.points, np.float32).reshape(-1) for s in samples],
            "gripper_pose": [np.asarray(s.gripper_pose, np.float32) for s in samples],
            "target_pose": [np.asarray(s.target_pose, np.float32) for s in samples],
        },
        schema=SAMPLE_SCHEMA,
    )


def instructions_table(rows: Sequence[tuple[str, str, str, np.ndarray]]) -> pa.Table:
    """``(task, instruction, encoder name, tokens (L, D))`` rows as a table of ``INSTRUCTION_SCHEMA``."""
    return pa.Table.from_pydict(
        {
            "task": [r[0] for r in rows],
            "instruction": [r[1] for r in rows],
            "encoder": [r[2] for r in rows],
            "num_tokens": [int(r[3].shape[0]) for r in rows],
            "dim": [int(r[3].shape[1]) for r in rows],
            "tokens": [np.asarray(r[3], np.float32).reshape(-1) for r in rows],
        },
        schema=INSTRUCTION_SCHEMA,
    )


POINT_LAYOUT = "[x, y, z, r, g, b, h], world frame, rgb in [-1, 1], h above table"


def sample_fields(
    counts: dict[str, dict[str, int]], pointcloud: dict[str, Any], pose_layout: str
) -> dict[str, Any]:
    """The manifest fields every dataset writer (collection, RLBench import) shares: counts and layouts."""
    return {
        "counts": counts,
        "total_samples": sum(c["samples"] for c in counts.values()),
        "max_points": pointcloud["max_points"],
        "point_dim": 7,
        "pose_dim": 8,
        "pose_layout": pose_layout,
        "point_layout": POINT_LAYOUT,
        "pointcloud": pointcloud,
    }


class ImportDirError(DatasetError):
    """An import's output directory holds something else; the message names it and the fix."""


def claim_import_dir(out: Path, settings: dict[str, Any], settings_file: str, what: str) -> None:
    """Make ``out`` the home of an import with ``settings`` (written to ``settings_file``), or check that it
    already is: a restarted import keeps its finished shards; other settings or a foreign folder are refused."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / settings_file
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise ImportDirError(
                f"{out} holds an import made with different settings ({', '.join(changed)} differ, see {path}); "
                "use another --out, or delete it to start over"
            )
        return
    if any(p.name != ".write_probe" for p in out.iterdir()):
        raise ImportDirError(f"{out} is not empty and is not {what}; use an empty or new --out")
    atomic_write_json(path, settings, sort_keys=True)


def write_instructions(out: Path, rows: Sequence[tuple[str, str]], file: str, encoder: Any) -> dict[str, Any]:
    """Encode ``(task, text)`` rows with ``encoder`` into the instruction table ``out/file``; its manifest entry."""
    embeddings = encoder.encode([text for _, text in rows])
    table = instructions_table(
        [(t, e.text, encoder.name, e.tokens) for (t, _), e in zip(rows, embeddings, strict=True)]
    )
    write_table(table, out / file)
    return {
        "file": file,
        "sha256": sha256_file(out / file),
        "encoder": encoder.name,
        "dim": int(embeddings[0].tokens.shape[1]),
    }


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(root / MANIFEST, manifest, sort_keys=True)


def read_table(path: Path, schema: pa.Schema, fix: str) -> pa.Table:
    """Read a Parquet file and check its schema; ``DatasetError`` naming ``path`` and ``fix`` otherwise."""
    if not path.is_file():
        raise DatasetError(f"{path} is missing; {fix}")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DatasetError(f"{path} is corrupt or truncated ({err}); {fix}") from err
    if not table.schema.equals(schema, check_metadata=False):
        raise DatasetError(f"{path} has schema {table.schema}, expected {schema}; {fix}")
    return table


def _flat_list(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A list<float32> column as (values (total,), offsets (rows + 1,))."""
    arr = column.combine_chunks()
    offsets = np.asarray(arr.offsets, np.int64)
    values = np.asarray(arr.values, np.float32)
    return values[offsets[0] : offsets[-1]], offsets - offsets[0]


def recollect_hint(root: Path) -> str:
    """The fix every ``DatasetError`` about a broken dataset at ``root`` ends with."""
    return f"re-collect it: python -m evaluation.collect --suite mt10 --episodes-per-task 20 --out {root}"


def read_manifest(root: Path, fix: str) -> dict[str, Any]:
    """``root/manifest.json``, checked for the format, the schema version and every required entry."""
    path = root / MANIFEST
    if not root.is_dir():
        raise DatasetError(f"no dataset directory at {root}; {fix.replace('re-collect it', 'collect one')}")
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing (an unfinished or interrupted collection); finish it with the same "
            f"command (finished episodes are kept) or {fix}"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); {fix}") from err
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}; {fix}")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise DatasetError(
            f"{path}: schema_version {manifest.get('schema_version')} but this code reads version "
            f"{SCHEMA_VERSION}; {fix}"
        )
    for key in ("tasks", "shards", "counts", "pointcloud", "render", "text", "total_samples"):
        if key not in manifest:
            raise DatasetError(f"{path} has no {key!r} entry; {fix}")
    return manifest


def listed_file(root: Path, rel: str, fix: str) -> Path:
    """``root / rel``, a file the manifest lists; ``DatasetError`` when it is missing."""
    path = root / rel
    if not path.is_file():
        raise DatasetError(f"{path} is listed in {root / MANIFEST} but missing; {fix}")
    return path


@dataclass(frozen=True)
class DatasetSummary:
    """A dataset checked without loading or hashing it: the validated manifest, every listed file present,
    and the keypose target of every sample (one column of each shard, about 1 % of its bytes). What a
    driver checks before Ray starts; the training workers then load and verify the whole dataset once
    (``KeyframeDataset``), where a corrupt shard is named."""

    root: Path
    manifest: dict[str, Any]
    task_names: list[str]
    target: np.ndarray  # (S, 8) float32, in manifest order

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> DatasetSummary:
        root = Path(path)
        fix = recollect_hint(root)
        manifest = read_manifest(root, fix)
        listed_file(root, manifest["text"]["file"], fix)
        if manifest.get("text_variations"):
            listed_file(root, manifest["text_variations"]["file"], fix)
        targets = []
        for shard in manifest["shards"]:
            file = listed_file(root, shard["file"], fix)
            try:
                column = pq.read_table(file, columns=["target_pose"]).column("target_pose")
            except (pa.ArrowException, OSError, KeyError) as err:
                raise DatasetError(f"{file} is corrupt or truncated ({err}); {fix}") from err
            if len(column) != shard["rows"]:
                raise DatasetError(f"{file} has {len(column)} rows, the manifest says {shard['rows']}; {fix}")
            targets.append(np.asarray(column.combine_chunks().values, np.float32))
        target = (
            np.concatenate(targets).reshape(-1, POSE_DIM) if targets else np.zeros((0, POSE_DIM), np.float32)
        )
        return cls(root=root, manifest=manifest, task_names=list(manifest["tasks"]), target=target)


def previous_keyframes(episode: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """(S,) episode and frame of every sample -> (S,) the index of the sample one keyframe earlier in the same
    episode (the sample itself for an episode's first keyframe). A recovery step's is the step before it: the
    miss for the lift, and for the miss the grasp's sample (the gripper was where the grasp started)."""
    recovery = is_recovery(frame)
    chain = np.flatnonzero(~recovery)
    order = chain[np.lexsort((frame[chain], episode[chain]))]  # keyframes by episode, then frame
    previous = np.arange(len(episode))
    same = episode[order[1:]] == episode[order[:-1]]  # consecutive in one episode
    previous[order[1:][same]] = order[:-1][same]
    if not recovery.any():
        return previous
    index = {(int(episode[i]), int(frame[i])): int(i) for i in range(len(frame))}
    for i in np.flatnonzero(recovery):
        grasp, number = divmod(int(frame[i]) - RECOVERY_FRAME, 10)
        before = frame[i] - 1 if number % 2 else grasp  # a lift follows its miss; a miss, its grasp's sample
        previous[i] = index.get((int(episode[i]), int(before)), int(i))
    return previous


class KeyframeDataset:
    """A validated, in-memory keyframe dataset (see the module docstring for the files).

    ``len(ds)`` samples; ``ds.manifest`` (dict: tasks, counts, camera config, schema version, max points,
    point-cloud config, ...); ``ds.task_names``; ``ds.pointcloud_config``;
    ``ds.instruction_embedding(task) -> (tokens (L, D) float32, mask (L,) bool)``;
    ``ds.batch(indices, max_points, generator) -> ConditionBatch`` with ``target`` and ``task_index``.
    """

    def __init__(self, path: str | os.PathLike[str], verify_hashes: bool = True) -> None:
        self.root = Path(path)
        self.fix = recollect_hint(self.root)
        self.manifest = read_manifest(self.root, self.fix)
        self.task_names: list[str] = list(self.manifest["tasks"])
        self.pointcloud_config = PointCloudConfig.model_validate(self.manifest["pointcloud"])
        self._load_instructions(verify_hashes)
        self._load_shards(verify_hashes)
        if self.manifest.get("text_variations"):
            self._load_variation_text(verify_hashes)

    # ------------------------------------------------------------------ validation + loading
    def _check_file(self, rel: str, expected_sha: str, verify: bool) -> Path:
        path = listed_file(self.root, rel, self.fix)
        if verify and sha256_file(path) != expected_sha:
            raise DatasetError(
                f"{path} does not match its sha256 in the manifest (modified or corrupt); {self.fix}"
            )
        return path

    def _load_instructions(self, verify: bool) -> None:
        text = self.manifest["text"]
        path = self._check_file(text["file"], text["sha256"], verify)
        table = read_table(path, INSTRUCTION_SCHEMA, self.fix).to_pydict()
        self._text: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # What a served policy needs to recognise a training instruction and to encode a new one the same way.
        self.instruction_texts: dict[str, str] = dict(zip(table["task"], table["instruction"], strict=True))
        self.text_encoder: str | None = text.get("encoder")
        for task, n, dim, tokens in zip(
            table["task"], table["num_tokens"], table["dim"], table["tokens"], strict=True
        ):
            if dim != text["dim"] or len(tokens) != n * dim:
                raise DatasetError(
                    f"{path}: task {task} has {len(tokens)} values for {n} x {dim} tokens; {self.fix}"
                )
            self._text[task] = (np.asarray(tokens, np.float32).reshape(n, dim), np.ones(n, bool))
        missing = [t for t in self.task_names if t not in self._text]
        if missing:
            raise DatasetError(f"{path} has no instruction embedding for {missing}; {self.fix}")
        # (T, L, D) tokens and (T, L) mask, zero-padded to the longest instruction
        self._text_tokens, self._text_mask = pad_tokens([self._text[t] for t in self.task_names])

    def _load_shards(self, verify: bool) -> None:
        task_index = {t: i for i, t in enumerate(self.task_names)}
        points, offsets, gripper, target, tasks, episodes, frames = [], [0], [], [], [], [], []
        instructions: list[str] = []
        for shard_no, shard in enumerate(self.manifest["shards"]):
            path = self._check_file(shard["file"], shard["sha256"], verify)
            table = read_table(path, SAMPLE_SCHEMA, self.fix)
            if table.num_rows != shard["rows"]:
                raise DatasetError(
                    f"{path} has {table.num_rows} rows, the manifest says {shard['rows']}; {self.fix}"
                )
            values, offs = _flat_list(table.column("points"))
            counts = np.asarray(table.column("num_points"), np.int64)
            if not np.array_equal(np.diff(offs), counts * POINT_DIM):
                raise DatasetError(f"{path}: point lists do not match num_points x {POINT_DIM}; {self.fix}")
            names = table.column("task").to_pylist()
            if set(names) != {shard["task"]}:
                raise DatasetError(
                    f"{path} holds tasks {sorted(set(names))}, expected {shard['task']}; {self.fix}"
                )
            points.append(values.reshape(-1, POINT_DIM))
            offsets.extend((offsets[-1] + np.cumsum(counts)).tolist())
            gripper.append(np.asarray(table.column("gripper_pose").combine_chunks().values, np.float32))
            target.append(np.asarray(table.column("target_pose").combine_chunks().values, np.float32))
            tasks.extend([task_index[shard["task"]]] * table.num_rows)
            episodes.extend([shard_no] * table.num_rows)
            frames.append(np.asarray(table.column("frame"), np.int64))
            instructions.extend(table.column("instruction").to_pylist())
        n = len(tasks)
        if n != self.manifest["total_samples"] or n == 0:
            raise DatasetError(
                f"{self.root}: {n} samples in the shards, the manifest says {self.manifest['total_samples']}; {self.fix}"
            )
        self.points = np.concatenate(points)  # (total points, 7)
        self.offsets = np.asarray(offsets, np.int64)  # (S + 1,)
        self.gripper = np.concatenate(gripper).reshape(n, POSE_DIM)  # (S, 8)
        self.target = np.concatenate(target).reshape(n, POSE_DIM)  # (S, 8)
        self.task_index = np.asarray(tasks, np.int64)  # (S,)
        self.sample_episode = np.asarray(episodes, np.int64)  # (S,) its shard (= episode) in manifest order
        frame = np.concatenate(frames)  # (S,)
        self.previous = previous_keyframes(self.sample_episode, frame)  # (S,)
        self.recovery = is_recovery(frame)  # (S,) recovery samples (KeyframeConfig.recoveries)
        self.sample_instructions = instructions  # (S,) the instruction text each sample was recorded with
        self._variation_text: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._text_choices: np.ndarray | None = None  # (K, W) rows a sample's text may be drawn from
        self._text_choice_count: np.ndarray | None = None  # (K,)
        self._sample_text = self.task_index  # (S,) row of _text_tokens each sample is conditioned on

    def _load_variation_text(self, verify: bool) -> None:
        """Datasets whose variations differ by language (RLBench) store one embedding per distinct
        instruction (manifest ``text_variations``): each sample is conditioned on its own instruction."""
        text = self.manifest["text_variations"]
        path = self._check_file(text["file"], text["sha256"], verify)
        table = read_table(path, INSTRUCTION_SCHEMA, self.fix).to_pydict()
        rows = {
            instr: np.asarray(tok, np.float32).reshape(n, dim)
            for instr, n, dim, tok in zip(
                table["instruction"], table["num_tokens"], table["dim"], table["tokens"], strict=True
            )
        }
        missing = sorted(set(self.sample_instructions) - set(rows))
        if missing:
            raise DatasetError(f"{path} has no embedding for the instructions {missing[:3]}; {self.fix}")
        order = sorted(rows)
        # (K, L, D) tokens and (K, L) mask, zero-padded to the longest description
        self._text_tokens, self._text_mask = pad_tokens(
            [(rows[k], np.ones(len(rows[k]), bool)) for k in order]
        )
        row_of = {k: i for i, k in enumerate(order)}
        self._sample_text = np.asarray([row_of[k] for k in self.sample_instructions], np.int64)  # (S,)
        self._variation_text = {k: (rows[k], np.ones(len(rows[k]), bool)) for k in order}
        # Variations described several ways (RLBench): training draws one description per sample
        alternatives = text.get("alternatives") or {}
        missing = sorted({a for alts in alternatives.values() for a in alts} - set(rows))
        if missing:
            raise DatasetError(f"{path} has no embedding for the descriptions {missing[:3]}; {self.fix}")
        choices = [[row_of[a] for a in alternatives.get(k, [k])] for k in order]  # per text row: its variants
        width = max(len(c) for c in choices)
        self._text_choices = np.array([c + [c[0]] * (width - len(c)) for c in choices], np.int64)  # (K, W)
        self._text_choice_count = np.array([len(c) for c in choices], np.int64)  # (K,)

    # ------------------------------------------------------------------ public API
    def __len__(self) -> int:
        return len(self.task_index)

    def instruction_embedding(self, task: str) -> tuple[np.ndarray, np.ndarray]:
        """(tokens (L, D) float32, mask (L,) bool) of a task's instruction."""
        if task not in self._text:
            raise KeyError(f"task {task!r} is not in the dataset at {self.root}; it has {self.task_names}")
        tokens, mask = self._text[task]
        return tokens.copy(), mask.copy()

    def variation_instructions(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{instruction text: (tokens (L, D), mask (L,))}`` for datasets whose variations differ by
        language (manifest ``text_variations``, RLBench); empty otherwise (Meta-World)."""
        return {k: (tokens.copy(), mask.copy()) for k, (tokens, mask) in self._variation_text.items()}

    def sample_points(self, index: int) -> np.ndarray:
        """All stored points of sample ``index``: (n, 7) float32 (a view)."""
        return self.points[self.offsets[index] : self.offsets[index + 1]]

    def history(self, indices: np.ndarray, length: int) -> np.ndarray:
        """(B,) sample indices -> (B, length, 8) gripper poses of each sample's ``length`` previous keyframes
        in its episode, most recent first; an episode's first keyframe stands in for the ones before it
        (what an evaluation episode passes before it has made that many keyposes)."""
        rows, out = np.asarray(indices, np.int64), []
        for _ in range(length):
            rows = self.previous[rows]
            out.append(self.gripper[rows])
        return np.stack(out, axis=1) if out else np.zeros((len(rows), 0, POSE_DIM), np.float32)

    def batch(
        self,
        indices: Sequence[int],
        max_points: int,
        generator: np.random.Generator | None = None,
        history: int = 0,
    ) -> ConditionBatch:
        """Collate samples into a ``ConditionBatch`` (points zero-padded to at most ``max_points``).

        With ``generator``: a random subset of each cloud (training) and, for variations described several
        ways (RLBench), one of the descriptions at random; without: the first ``max_points`` of a
        fixed-seed permutation (the rule ``observation_to_condition`` uses at evaluation) and the first
        description. ``history`` > 0 adds the gripper poses of that many previous keyframes (``history``).
        """
        idx = np.asarray(indices, np.int64).reshape(-1)
        if len(idx) == 0 or idx.min() < 0 or idx.max() >= len(self):
            raise IndexError(f"batch indices must be in [0, {len(self)}), got {list(idx[:8])}")
        seed = self.pointcloud_config.subsample_seed
        clouds = []
        for i in idx:
            cloud = self.sample_points(int(i))  # (n, 7)
            clouds.append(cloud[select_points(len(cloud), max_points, generator, seed)])
        points, mask = collate_points(clouds, max_points)  # (B, N, 7), (B, N)
        task = self.task_index[idx]  # (B,)
        text = self._sample_text[idx]  # (B,) the task's instruction, or the sample's own (RLBench variations)
        if generator is not None and self._text_choices is not None:  # one of its variation's descriptions
            pick = generator.integers(0, self._text_choice_count[text])  # (B,) each below its row's count
            text = self._text_choices[text, pick]
        return ConditionBatch(
            points=points,
            point_mask=mask,
            text=torch.from_numpy(self._text_tokens[text]),  # (B, L, D)
            text_mask=torch.from_numpy(self._text_mask[text]),  # (B, L)
            gripper=torch.from_numpy(self.gripper[idx]),  # (B, 8)
            target=torch.from_numpy(self.target[idx]),  # (B, 8)
            task_index=torch.from_numpy(task),
            history=torch.from_numpy(self.history(idx, history)) if history else None,  # (B, H, 8)
        )
