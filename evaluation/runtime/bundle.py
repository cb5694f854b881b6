"""A checkpoint as evaluation needs it, read once where the checkpoint lives and shipped by value (the files
themselves are described in ``evaluation.checkpoint_format``).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from evaluation.checkpoint_format import (
    INSTRUCTION_TEXTS_FILE,
    INSTRUCTIONS_FILE,
    POINTCLOUD_FILE,
    Instructions,
    load_instructions,
)
from evaluation.checkpoint_manifest import MANIFEST, CorruptCheckpointError, verify_checkpoint
from evaluation.pointcloud import ConditionFn, PointCloudConditioner
from policies.base import CheckpointError, Policy
from policies.registry import load_policy, read_policy_files

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
