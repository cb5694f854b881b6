"""The checkpoint format that training writes and evaluation reads, beside the policy's own files
(``policies.base``: ``policy.json``, ``model.pt``, ``ema.pt``) and the manifest (``evaluation.checkpoint_manifest``):

- ``instructions.npz``: the instruction embeddings of the checkpoint's tasks (``save_instructions`` /
  ``load_instructions``; in memory an :class:`Instructions`);
- ``pointcloud.json``: the point-cloud settings the policy was trained with (an
  ``evaluation.pointcloud.PointCloudConfig``);
- ``instruction_texts.json``: each task's instruction text and the text encoder's name.

Training (``platform.loop``) and evaluation (``evaluation.runtime.bundle``) both import it from here.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evaluation.datasets.text import pad_tokens
from policies.base import CheckpointError

INSTRUCTIONS_FILE = "instructions.npz"
POINTCLOUD_FILE = "pointcloud.json"
# {"encoder": "<name>", "tasks": {task: instruction text}}: how the policy server (platform.serve) recognises a
# training instruction by its text and encodes a new one with the same encoder. Optional (older checkpoints).
INSTRUCTION_TEXTS_FILE = "instruction_texts.json"
TEXTS_PREFIX = "__texts__/"  # npz keys of the per-instruction-text table (no task name starts with it)


Instruction = tuple[np.ndarray, np.ndarray]  # tokens (L, D) float32, mask (L,) bool


class InstructionError(KeyError):
    """No instruction embedding for a task."""


@dataclass(frozen=True)
class Instructions:
    """Instruction embeddings of a checkpoint (``instructions.npz``).

    ``tasks``: one per task (``{task: (tokens (L, D) float32, mask (L,) bool)}``), always present.
    ``texts``: one per distinct instruction text, for datasets whose variations differ by language
    (RLBench: "close the red jar" / "close the blue jar"); empty for Meta-World, whose instruction is
    the task's.
    """

    tasks: Mapping[str, Instruction]
    texts: Mapping[str, Instruction] = field(default_factory=dict)

    @classmethod
    def of(cls, value: Instructions | Mapping[str, Instruction]) -> Instructions:
        """``value`` itself, or a plain ``{task: embedding}`` mapping as task-level instructions."""
        return value if isinstance(value, Instructions) else cls(tasks=dict(value))

    def for_episode(self, task: str, text: str) -> Instruction:
        """The embedding of instruction ``text`` when the checkpoint has it, else the task's."""
        if text in self.texts:
            return self.texts[text]
        if task not in self.tasks:
            raise InstructionError(
                f"no instruction embedding for task {task!r} (have {sorted(self.tasks)}): the checkpoint's "
                "instructions.npz must contain '<task>/tokens' and '<task>/mask'"
            )
        return self.tasks[task]

    def writable(self) -> Instructions:
        """A copy whose arrays are writable (Ray hands actors read-only views of its object store)."""

        def copy(table: Mapping[str, Instruction]) -> dict[str, Instruction]:
            return {k: (tokens.copy(), mask.copy()) for k, (tokens, mask) in table.items()}

        return Instructions(tasks=copy(self.tasks), texts=copy(self.texts))


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
