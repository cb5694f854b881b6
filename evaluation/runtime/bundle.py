"""A checkpoint as evaluation needs it, read once where the checkpoint lives and shipped by value; and the
checkpoint's instruction embeddings file (``instructions.npz``: ``save_instructions`` / ``load_instructions``).

On a cluster the checkpoints are written on the GPU head, while evaluation actors (and the policy server)
run on other machines that need not see that disk. So the evaluating process reads everything an episode
needs into a :class:`CheckpointBundle` (policy config, weight bytes, instruction embeddings, point-cloud
settings), puts it in Ray's object store once, and the actors rebuild the policy from it
(:class:`BundlePolicy`); no actor ever opens a checkpoint path.

``MINIDIFFUSER_TEST_NO_CHECKPOINT_READS=1`` in a process's environment makes reading a checkpoint there an
error: the multi-node test sets it on its simulation nodes to prove the point above.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.checkpoint_manifest import MANIFEST, CorruptCheckpointError, verify_checkpoint
from evaluation.datasets.text import pad_tokens
from evaluation.runtime.episode import ConditionFn, Instruction, Instructions, PointCloudConditioner
from policies.base import CheckpointError, Policy
from policies.registry import load_policy, read_policy_files

INSTRUCTIONS_FILE = "instructions.npz"
POINTCLOUD_FILE = "pointcloud.json"
# {"encoder": "<name>", "tasks": {task: instruction text}}: how the policy server (platform.serve) recognises a
# training instruction by its text and encodes a new one with the same encoder. Optional (older checkpoints).
INSTRUCTION_TEXTS_FILE = "instruction_texts.json"
NO_READS_ENV = "MINIDIFFUSER_TEST_NO_CHECKPOINT_READS"  # tests only (see the module docstring)
TEXTS_PREFIX = "__texts__/"  # npz keys of the per-instruction-text table (no task name starts with it)


def check_reads_allowed(directory: str | Path) -> None:
    if os.environ.get(NO_READS_ENV) == "1":
        raise CheckpointError(
            f"this process may not read checkpoints ({NO_READS_ENV}=1) but was asked to read "
            f"{directory}: the checkpoint should have arrived through Ray's object store"
        )


@dataclass(frozen=True)
class CheckpointBundle:
    """Everything an evaluation episode needs from a checkpoint directory, in memory."""

    source: str  # the directory it was read from: for messages only, never opened again
    policy_config: dict[str, Any]  # policy.json
    weights: bytes  # the weights file's bytes (ema.pt when present, else model.pt)
    weights_file: str
    instructions: Instructions
    max_points: int
    pointcloud: (
        dict[str, Any] | None
    )  # pointcloud.json (an evaluation.pointcloud.PointCloudConfig), if stored
    instruction_texts: dict[str, str] = field(default_factory=dict)  # {task: text} (instruction_texts.json)
    text_encoder: str | None = None  # the dataset's encoder name, e.g. "minilm:all-MiniLM-L6-v2", if stored

    @classmethod
    def read(
        cls, directory: str | Path, prefer_ema: bool = True, instructions: Instructions | None = None
    ) -> CheckpointBundle:
        """Read and check a checkpoint directory (``instructions``: use these instead of its own): every file
        against the checkpoint's manifest when it has one (``evaluation.checkpoint_manifest``), and the
        weights to be used loadable; ``CheckpointError`` names the file otherwise."""
        directory = Path(directory)
        check_reads_allowed(directory)
        if (directory / MANIFEST).is_file():  # written by platform.checkpoint: every file must match it
            try:
                verify_checkpoint(directory)
            except CorruptCheckpointError as exc:
                raise CheckpointError(str(exc)) from None
        config, weights = read_policy_files(directory, prefer_ema)
        data = weights.read_bytes()
        try:  # here, in one line, rather than in every actor that would rebuild the policy from it
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"{weights} cannot be loaded ({type(exc).__name__}: {str(exc).splitlines()[0]}): "
                "use another checkpoint, or retrain"
            ) from None
        if instructions is None:
            instructions = load_instructions(directory / INSTRUCTIONS_FILE)
        pc_path = directory / POINTCLOUD_FILE
        try:
            pointcloud = json.loads(pc_path.read_text()) if pc_path.is_file() else None
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{pc_path} is not valid JSON: {exc}") from exc
        texts_path = directory / INSTRUCTION_TEXTS_FILE
        try:
            texts = json.loads(texts_path.read_text()) if texts_path.is_file() else {}
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{texts_path} is not valid JSON: {exc}") from exc
        return cls(
            source=str(directory),
            policy_config=config,
            weights=data,
            weights_file=weights.name,
            instructions=Instructions.of(instructions),
            max_points=int(config.get("max_points", 2048)),
            pointcloud=pointcloud,
            instruction_texts={str(k): str(v) for k, v in dict(texts.get("tasks") or {}).items()},
            text_encoder=texts.get("encoder"),
        )

    def build_policy(self, map_location: str = "cpu") -> Policy:
        return load_policy(
            self.policy_config, self.weights, map_location, source=f"{self.source}/{self.weights_file}"
        )

    def condition_fn(self) -> ConditionFn:
        """The point-cloud conditioner the policy was trained with (its ``max_points`` and stored settings)."""
        from evaluation.pointcloud import PointCloudConfig

        cfg = (
            PointCloudConfig.model_validate(self.pointcloud)
            if self.pointcloud is not None
            else PointCloudConfig()
        )
        return PointCloudConditioner(max_points=self.max_points, config=cfg)


@dataclass(frozen=True)
class BundlePolicy:
    """Picklable policy factory for actors and the policy server: the bundle travels as an object-store
    reference (``ray.put`` once per evaluation), so a pool of N actors does not copy the weights N times
    through the driver."""

    bundle: Any  # ray.ObjectRef of a CheckpointBundle (or the bundle itself, outside Ray)

    def __call__(self) -> Policy:
        bundle = self.bundle
        if not isinstance(bundle, CheckpointBundle):
            import ray

            bundle = ray.get(bundle)
        return bundle.build_policy()


def save_instructions(path: str | Path, instructions: Instructions | Mapping[str, Instruction]) -> None:
    """Write ``instructions.npz``: ``<task>/tokens`` + ``<task>/mask`` per task, plus the
    ``__texts__/*`` table when there are per-text embeddings."""
    table = Instructions.of(instructions)
    arrays: dict[str, np.ndarray] = {}
    for task, (tokens, mask) in table.tasks.items():
        if task.startswith(TEXTS_PREFIX):
            raise ValueError(f"task name {task!r} may not start with {TEXTS_PREFIX!r}")
        arrays[f"{task}/tokens"] = np.asarray(tokens, np.float32)
        arrays[f"{task}/mask"] = np.asarray(mask, bool)
    if table.texts:
        strings = sorted(table.texts)
        tokens_kld, mask_kl = pad_tokens([table.texts[k] for k in strings])  # (K, L, D), (K, L) zero-padded
        arrays[TEXTS_PREFIX + "strings"] = np.asarray(strings, dtype=np.str_)
        arrays[TEXTS_PREFIX + "tokens"] = tokens_kld
        arrays[TEXTS_PREFIX + "mask"] = mask_kl
    np.savez(path, **arrays)  # type: ignore[arg-type]


def load_instructions(path: str | Path) -> Instructions:
    """Read ``instructions.npz`` (see ``save_instructions``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: the checkpoint needs the instruction embeddings of its tasks "
            f"({INSTRUCTIONS_FILE} with '<task>/tokens' and '<task>/mask'), or pass instructions= explicitly"
        )
    tasks: dict[str, Instruction] = {}
    texts: dict[str, Instruction] = {}
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path} is not a readable .npz file ({err}); re-save the checkpoint") from err
    with data:
        files = [k for k in data.files if not k.startswith(TEXTS_PREFIX)]
        for task in sorted({key.rsplit("/", 1)[0] for key in files}):
            if f"{task}/tokens" not in data.files or f"{task}/mask" not in data.files:
                raise CheckpointError(f"{path}: task {task!r} needs both '{task}/tokens' and '{task}/mask'")
            tokens, mask = data[f"{task}/tokens"].astype(np.float32), data[f"{task}/mask"].astype(bool)
            if tokens.ndim != 2 or mask.shape != tokens.shape[:1]:
                raise CheckpointError(
                    f"{path}: {task} tokens {tokens.shape} / mask {mask.shape} must be (L, D) / (L,)"
                )
            tasks[task] = (tokens, mask)
        text_keys = {k for k in data.files if k.startswith(TEXTS_PREFIX)}
        if text_keys:
            wanted = {TEXTS_PREFIX + n for n in ("strings", "tokens", "mask")}
            if text_keys != wanted:
                raise CheckpointError(
                    f"{path}: the per-text table needs exactly {sorted(wanted)}, has {sorted(text_keys)}"
                )
            strings = [str(s) for s in data[TEXTS_PREFIX + "strings"]]
            tokens_kld = data[TEXTS_PREFIX + "tokens"].astype(np.float32)  # (K, L, D)
            mask_kl = data[TEXTS_PREFIX + "mask"].astype(bool)  # (K, L)
            if (
                tokens_kld.ndim != 3
                or tokens_kld.shape[0] != len(strings)
                or mask_kl.shape != tokens_kld.shape[:2]
            ):
                raise CheckpointError(
                    f"{path}: per-text tokens {tokens_kld.shape} / mask {mask_kl.shape} do not "
                    f"match {len(strings)} strings as (K, L, D) / (K, L)"
                )
            for key, tokens, mask in zip(strings, tokens_kld, mask_kl, strict=True):
                length = int(mask.sum())  # rows were zero-padded to the longest instruction
                texts[key] = (tokens[:length].copy(), mask[:length].copy())
    return Instructions(tasks=tasks, texts=texts)
