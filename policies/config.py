"""Frozen pydantic configs of the policies: a discriminated union on ``type``.

``PolicyConfig`` is what the experiment config (``platform.config``) embeds under ``policy:``, and what a
checkpoint stores in ``policy.json``. A ``preset`` key (tiny / laptop / paper) fills every field the user
did not set (see ``policies.presets``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_HISTORY = 8  # the most previous keyposes a policy may read (``history``)


class FrozenModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DiffusionConfig(FrozenModel):
    """DDPM on the (normalised) xyz position; Mini-Diffuser uses 100 scaled-linear steps, epsilon target."""

    train_steps: int = Field(100, ge=2, le=1000)
    beta_start: float = Field(1e-4, gt=0, lt=1)
    beta_end: float = Field(0.02, gt=0, lt=1)
    schedule: Literal["scaled_linear", "linear"] = "scaled_linear"
    sampler: Literal["ddpm", "ddim"] = "ddim"
    inference_steps: int = Field(10, ge=1, le=1000)
    loss_weight: float = Field(20.0, gt=0)
    # Where sampling starts. "forward": the forward process at the first visited timestep t0 with x_0 = 0
    # (the workspace centre), x_t0 = sqrt(1 - abar_t0) * N(0, I): the input scale the network was trained on
    # (abar_99 = 0.485 with 100 scaled-linear steps; 3DDA's and Mini-Diffuser's code do this). "standard":
    # x_t0 = N(0, I), a larger scale than any training input.
    init_sample: Literal["forward", "standard"] = "forward"
    # Candidates per observation at inference (inference only; training is unchanged). K > 1 denoises K
    # positions from K initial noises under the one encoded condition (K rows of the masked neck, the encoder
    # runs once) and keeps the medoid: the candidate with the smallest summed distance to the other K - 1.
    # A medoid, not a mean, so that two modes (two equally good grasp points) never average to a point
    # between them. docs/quality.md measures K on MT50.
    inference_samples: int = Field(1, ge=1, le=64)

    @model_validator(mode="after")
    def _check(self) -> DiffusionConfig:
        if self.beta_end <= self.beta_start:
            raise ValueError(
                f"beta_end ({self.beta_end}) must be greater than beta_start ({self.beta_start})"
            )
        if self.inference_steps > self.train_steps:
            raise ValueError(
                f"inference_steps ({self.inference_steps}) must be <= train_steps ({self.train_steps})"
            )
        return self


class AugmentConfig(FrozenModel):
    """Training-time augmentation (Mini-Diffuser: z-rotation +-45 deg, 2 mm jitter, point subsampling)."""

    enabled: bool = True
    z_rotation_deg: float = Field(45.0, ge=0, le=180)
    # Random horizontal shift of a whole condition (cloud, gripper, past and target poses) by up to this much in x
    # and y, uniform per condition; 0 (the default) draws nothing, so runs without it are unchanged
    translate_m: float = Field(0.0, ge=0, le=0.2)
    jitter_m: float = Field(0.002, ge=0, le=0.05)
    keep_fraction_min: float = Field(0.8, gt=0, le=1)


class _PolicyBase(FrozenModel):
    preset: Literal["tiny", "laptop", "paper", "custom"] = "custom"
    d_model: int = Field(128, ge=8, le=2048)
    heads: int = Field(4, ge=1, le=64)
    text_dim: int = Field(384, ge=1)
    max_points: int = Field(2048, ge=16, le=65536)
    rotation_bins: int = Field(72, ge=4, le=720)
    workspace_low: tuple[float, float, float] = (-0.6, 0.2, -0.05)
    workspace_high: tuple[float, float, float] = (0.6, 1.1, 0.6)
    diffusion: DiffusionConfig = DiffusionConfig()
    augment: AugmentConfig = AugmentConfig()
    # Encoder: voxel-pooled point tokens at several resolutions (fine -> coarse), full self-attention with
    # 3D rotary positions per condition at each level (see docs/policies.md).
    voxel_sizes: tuple[float, ...] = (0.02, 0.05, 0.12)  # metres, strictly increasing
    encoder_depths: tuple[int, ...] = (1, 1, 1)  # encoder blocks per level
    neck_depth: int = Field(1, ge=1, le=8)  # denoiser layers per level (coarse -> fine)
    ffn_mult: int = Field(2, ge=1, le=8)
    # Masked action -> condition attention: "grouped" pads rows per condition (cost B*M*V, any device);
    # "dense_masked" is the (B*M) x (B*V) block-masked reference; "auto" picks "grouped".
    attention: Literal["auto", "grouped", "dense_masked"] = "auto"
    # Gripper poses of the previous keyposes of the episode the condition also reads (most recent first;
    # the first keypose repeats its own pose). Keypose demonstrations revisit a scene in different phases
    # (handle-pull-side re-grasps the handle 3 times: "closed, handle in the gripper" is followed by a lift
    # once and by a release once); 3DDA reads 3 past poses. 0 = the current pose only.
    history: int = Field(0, ge=0, le=MAX_HISTORY)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset", "custom") != "custom":
            from policies.presets import preset_values

            return deep_merge(preset_values(data["preset"], data.get("type", "mini_diffuser")), data)
        return data

    @model_validator(mode="after")
    def _check_common(self) -> _PolicyBase:
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if any(lo >= hi for lo, hi in zip(self.workspace_low, self.workspace_high, strict=True)):
            raise ValueError(
                f"workspace_low {self.workspace_low} must be below workspace_high {self.workspace_high}"
            )
        if not self.voxel_sizes or any(v <= 0 for v in self.voxel_sizes):
            raise ValueError(
                f"voxel_sizes {self.voxel_sizes} must be a non-empty tuple of positive sizes (metres)"
            )
        if any(b <= a for a, b in zip(self.voxel_sizes, self.voxel_sizes[1:], strict=False)):
            raise ValueError(f"voxel_sizes {self.voxel_sizes} must be strictly increasing (fine -> coarse)")
        if len(self.encoder_depths) != len(self.voxel_sizes) or any(d < 0 for d in self.encoder_depths):
            raise ValueError(
                f"encoder_depths {self.encoder_depths} needs one non-negative depth per voxel size {self.voxel_sizes}"
            )
        return self


class _EulerHeadConfig(_PolicyBase):
    """Policies with the Euler-bin rotation and gripper head (Mini-Diffuser and its one-to-one baseline).

    ``head_input`` is what that head reads in training:
    * ``"position"`` (the paper's): one extra row per condition at timestep 0 whose input is the ground-truth
      position plus N(0, ``head_position_noise_m``) noise, so rotation and gripper are learnt for the position
      the sampler will end at; inference reads the head at the denoised position, t = 0.
    * ``"noisy_rows"``: the head reads every noisy row (uniform timesteps), i.e. rotation and gripper are
      supervised on positions that are mostly far from the target (kept as an ablation).
    """

    head_input: Literal["position", "noisy_rows"] = "position"
    head_position_noise_m: float = Field(0.01, ge=0, le=0.2)


class MiniDiffuserConfig(_EulerHeadConfig):
    """Two-level mini-batches: each of B conditions encoded once, its keypose noised ``m`` times."""

    type: Literal["mini_diffuser"] = "mini_diffuser"
    m: int = Field(64, ge=1, le=4096)


class OneToOneConfig(_EulerHeadConfig):
    """Baseline: one noised sample per encoded condition (what 3DDA does), same encoder and heads."""

    type: Literal["one_to_one"] = "one_to_one"
    m: Literal[1] = 1


class DDAStyleConfig(_PolicyBase):
    """3DDA-style baseline: one-to-one, and a 6D rotation is diffused too (own schedule)."""

    type: Literal["dda_style"] = "dda_style"
    m: Literal[1] = 1
    rotation_diffusion: DiffusionConfig = DiffusionConfig(schedule="linear", loss_weight=10.0)

    @model_validator(mode="after")
    def _check_rotation_schedule(self) -> DDAStyleConfig:
        if self.rotation_diffusion.train_steps != self.diffusion.train_steps:
            raise ValueError(
                f"rotation_diffusion.train_steps ({self.rotation_diffusion.train_steps}) must equal "
                f"diffusion.train_steps ({self.diffusion.train_steps}): position and rotation share the timestep"
            )
        return self


PolicyConfig = Annotated[MiniDiffuserConfig | OneToOneConfig | DDAStyleConfig, Field(discriminator="type")]
# The policy types: ``type`` -> config class (policies.registry adds the policy classes).
CONFIG_CLASSES: dict[str, type[FrozenModel]] = {
    "mini_diffuser": MiniDiffuserConfig,
    "one_to_one": OneToOneConfig,
    "dda_style": DDAStyleConfig,
}


def parse_policy_settings(items: Sequence[str]) -> dict[str, Any]:
    """``["diffusion.sampler=ddpm", "diffusion.inference_samples=8"]`` -> the nested dict of those settings,
    to lay over a saved policy config (``load_policy``'s ``config_updates``). A value is read as JSON where it
    parses (8, 0.5, true, null, [1, 2]) and kept as text otherwise (ddpm). ``ValueError`` on a malformed item."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or any(not part for part in parts):
            raise ValueError(
                f"bad policy setting {item!r}: expected dotted.key=value, e.g. diffusion.inference_samples=8"
            )
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text.strip()
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"bad policy setting {item!r}: {part} was already given a value")
            node = child
        node[parts[-1]] = value
    return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
