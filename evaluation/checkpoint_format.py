"""The checkpoint format: every file of a checkpoint directory ``step_N/``, written by training
(``platform.train.checkpoint``, ``platform.train.state``) and read by evaluation, the policy server and resume, all
importing it from here.

- the policy's own files (``policies.base``): ``policy.json``, ``model.pt``, ``ema.pt`` (when EMA is on);
- ``train_state.pt``: optimizer, scheduler, AMP scaler, sampler position, RNG states (resume only);
- ``experiment.yaml``: the run's resolved config;
- ``instructions.npz``: the instruction embeddings of the checkpoint's tasks (``save_instructions`` /
  ``load_instructions``; in memory an :class:`Instructions`);
- ``pointcloud.json``: the point-cloud settings the policy was trained with (an
  ``evaluation.pointcloud.PointCloudConfig``);
- ``instruction_texts.json``: each task's instruction text and the text encoder's name;
- ``render.json``: how a Meta-World training set's cameras rendered (an
  ``evaluation.simulators.rendering.RenderConfig``: image size, camera rig), so evaluation renders the same;
- ``manifest.json``, written last: the step, an optional metric, the size and sha256 of every file
  (``write_manifest`` / ``verify_checkpoint``), so a directory with a manifest is complete and a corrupt file
  is named before anything loads it.

:class:`CheckpointBundle` is a checkpoint as evaluation needs it, read once where the checkpoint lives and
shipped by value. On a cluster the checkpoints are written on the GPU head, while evaluation actors (and the
policy server) run on other machines that need not see that disk: the evaluating process reads everything
an episode needs into a bundle (policy config, weight bytes, instruction embeddings, point-cloud settings),
puts it in Ray's object store once, and the actors rebuild the policy from it
(``evaluation.runtime.actors.BundlePolicy``); no actor ever opens a checkpoint path.
``MINIDIFFUSER_TEST_NO_CHECKPOINT_READS=1`` in a process's environment makes reading a checkpoint there an
error: the multi-node test sets it on its simulation nodes to prove that.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import time
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evaluation.datasets.text import pad_tokens
from evaluation.files import atomic_write_json, sha256_file
from evaluation.pointcloud import PointCloudConditioner, PointCloudConfig
from evaluation.simulators.rendering import RenderConfig
from policies.base import CheckpointError, Policy
from policies.config import deep_merge
from policies.registry import load_policy, parse_policy_config, read_policy_files

TRAIN_STATE_FILE = "train_state.pt"
EXPERIMENT_FILE = "experiment.yaml"
INSTRUCTIONS_FILE = "instructions.npz"
POINTCLOUD_FILE = "pointcloud.json"
# {"encoder": "<name>", "tasks": {task: instruction text}}: how the policy server (platform.serve) recognises a
# training instruction by its text and encodes a new one with the same encoder. Optional (older checkpoints).
INSTRUCTION_TEXTS_FILE = "instruction_texts.json"
# A Meta-World training set's RenderConfig, so that evaluation renders the same images. Optional (older
# checkpoints, datasets from elsewhere).
RENDER_FILE = "render.json"
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


# --- manifest.json

MANIFEST = "manifest.json"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint directory fails its manifest check (missing file, size or hash mismatch). Resume raises
    it as is; ``CheckpointBundle.read`` turns it into a ``policies.base.CheckpointError``."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int
    metric: float | None  # e.g. eval success, for keep-best


def write_manifest(directory: Path, step: int, names: Iterable[str], metric: float | None = None) -> None:
    """Write ``directory/manifest.json`` for the files ``names`` (already written and fsync'd), fsync'd."""
    files = {
        name: {"bytes": (directory / name).stat().st_size, "sha256": sha256_file(directory / name)}
        for name in names
    }
    manifest = {"step": step, "metric": metric, "created": time.time(), "files": files}
    atomic_write_json(directory / MANIFEST, manifest, indent=2)


def verify_checkpoint(path: Path) -> CheckpointInfo:
    """Check a checkpoint against its manifest; raise ``CorruptCheckpointError`` naming what is wrong."""
    path = Path(path)
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise CorruptCheckpointError(f"{path}: no {MANIFEST} (interrupted write or not a checkpoint)")
    try:
        manifest = json.loads(mpath.read_text())
        files = manifest["files"]
        step = int(manifest["step"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptCheckpointError(f"{mpath}: unreadable manifest ({exc})") from None
    for name, meta in files.items():
        f = path / name
        if not f.is_file():
            raise CorruptCheckpointError(f"{path}: file {name} listed in the manifest is missing")
        if f.stat().st_size != meta["bytes"] or sha256_file(f) != meta["sha256"]:
            raise CorruptCheckpointError(
                f"{path}: {name} does not match its manifest hash (corrupted): use another "
                "checkpoint of the run, or retrain"
            )
    return CheckpointInfo(path=path, step=step, metric=manifest.get("metric"))


# --- the checkpoint in memory, for evaluation

NO_READS_ENV = "MINIDIFFUSER_TEST_NO_CHECKPOINT_READS"  # tests only (see the module docstring)


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
    render: dict[str, Any] | None = None  # render.json (a RenderConfig), if stored

    @classmethod
    def read(
        cls, directory: str | Path, prefer_ema: bool = True, instructions: Instructions | None = None
    ) -> CheckpointBundle:
        """Read and check a checkpoint directory (``instructions``: use these instead of its own): every file
        against the checkpoint's manifest when it has one (``verify_checkpoint``), and the
        weights to be used loadable; ``CheckpointError`` names the file otherwise."""
        directory = Path(directory)
        check_reads_allowed(directory)
        if (directory / MANIFEST).is_file():  # written by platform.train.checkpoint: every file must match it
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
        render_path = directory / RENDER_FILE
        try:
            render = json.loads(render_path.read_text()) if render_path.is_file() else None
            if render is not None:
                RenderConfig.model_validate(render)
        except ValueError as exc:  # JSONDecodeError and pydantic's ValidationError
            raise CheckpointError(f"{render_path} is not a valid render config: {exc}") from None
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
            render=render,
        )

    def with_policy_settings(self, updates: dict[str, Any]) -> CheckpointBundle:
        """This bundle with ``updates`` (nested inference settings, ``policies.config.parse_policy_settings``)
        laid over its policy config, checked here so that a bad value fails before any actor starts."""
        if not updates:
            return self
        merged = deep_merge(self.policy_config, updates)
        try:
            parse_policy_config(merged)
        except ValueError as exc:
            raise CheckpointError(
                f"{self.source}: the policy settings {updates} are not valid: {exc}"
            ) from None
        return dataclasses.replace(self, policy_config=merged)

    def build_policy(self, map_location: str = "cpu") -> Policy:
        return load_policy(
            self.policy_config, self.weights, map_location, source=f"{self.source}/{self.weights_file}"
        )

    def render_config(self) -> RenderConfig:
        """How a Meta-World simulator renders for this policy: as its training set was collected (``render.json``;
        ``RenderConfig()`` without one), the robot's arm hidden when its clouds had none."""
        cfg = RenderConfig.model_validate(self.render) if self.render is not None else RenderConfig()
        return cfg.model_copy(update={"hide_arm": self.pointcloud_config().hide_arm})

    def pointcloud_config(self) -> PointCloudConfig:
        """The point-cloud settings the policy was trained with (``pointcloud.json``; the defaults without one)."""
        return (
            PointCloudConfig.model_validate(self.pointcloud)
            if self.pointcloud is not None
            else PointCloudConfig()
        )

    def condition_fn(self) -> PointCloudConditioner:
        """The point-cloud conditioner the policy was trained with (its ``max_points`` and stored settings)."""
        cfg = self.pointcloud_config()
        return PointCloudConditioner(
            max_points=self.max_points, config=cfg, history=int(self.policy_config.get("history", 0))
        )
