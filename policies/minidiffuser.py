"""Mini-Diffuser: two-level mini-batches with a masked denoiser (arXiv 2505.09430; own implementation).

Training step on B conditions (``compute_loss``):
  1. prepare: keep <= max_points points per condition; augment (training mode only).
  2. encode the B conditions once -> ``EncodedCondition`` (point levels, text tokens, FiLM vector).
  3. expand: ``parent_index = [0]*M + [1]*M + ...`` (R = B*M rows); draw one timestep and one noise per row.
  4. denoise the R rows with the masked neck (row r sees only condition parent_index[r]).
  5. losses: 20 * L1(eps) per noisy row; CE(3 Euler angles) + BCE(open) from the rotation/gripper head;
     the loss is the mean over rows of each part, summed over the parts.

The rotation/gripper head (``head_input="position"``, the paper's design) reads one extra row per condition:
the ground-truth position plus N(0, 1 cm) noise at timestep 0, run through the same masked neck beside the
noisy rows (so it too sees only its own condition). ``head_input="noisy_rows"`` reads the head on every noisy
row instead (an ablation: most of those positions are far from the target).

Inference (``predict_action``): encode once, project the neck's keys/values once, run only the rows through
the diffusion steps (DDPM or DDIM) starting from the forward process at the first timestep
(``diffusion.init_sample``), then the rotation/gripper head on the denoised position (t = 0). With
``diffusion.inference_samples`` K > 1 each observation gets K rows from K initial noises and keeps its medoid
position before the head runs (``medoid_rows``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from policies.attention import AttentionImpl
from policies.augment import augment, limit_points
from policies.base import LossOutput, Policy
from policies.batch import ConditionBatch
from policies.config import DDAStyleConfig, MiniDiffuserConfig, OneToOneConfig
from policies.denoiser import Denoiser, NeckContext
from policies.diffusion import Generators, NoiseSchedule, randn
from policies.encoder import ConditionEncoder, EncodedCondition
from policies.expansion import check_parent_index, expand_parent_index
from policies.heads import (
    ActionEmbedding,
    EpsilonHead,
    RotationGripperHead,
    Workspace,
    epsilon_l1_rows,
    gripper_bce_rows,
    rotation_ce_rows,
)
from policies.rotation import euler_bins_to_quat, quat_to_euler_bins

AnyPolicyConfig = MiniDiffuserConfig | OneToOneConfig | DDAStyleConfig


@dataclass(frozen=True)
class NoiseDraw:
    """Diffusion draws. t: (R,) int64 timesteps; noise: (R, action_dim); pose_noise: (B, 3) metres, the
    perturbation of each condition's ground-truth position read by the rotation/gripper head (None when the
    head reads the noisy rows)."""

    t: Tensor
    noise: Tensor
    pose_noise: Tensor | None = None


@dataclass(frozen=True)
class RowOutputs:
    """Network outputs per row. eps: (R, action_dim); rotation: (R, 3, bins) or None; gripper: (R,) logits."""

    eps: Tensor
    rotation: Tensor | None
    gripper: Tensor


class MiniDiffuserPolicy(Policy):
    """Two-level Mini-Diffuser; with ``m = 1`` it is exactly the one-to-one baseline (``OneToOnePolicy``)."""

    action_dim = 3
    # predict_action takes one generator per row: a batched evaluation (policy server) draws for each row
    # exactly the noise that row would get alone
    accepts_row_generators = True

    def __init__(self, config: AnyPolicyConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.workspace = Workspace(config.workspace_low, config.workspace_high)
        self.encoder = ConditionEncoder(config)
        self.action_embed = ActionEmbedding(self.action_dim, d)
        self.denoiser = Denoiser(d, config.heads, config.ffn_mult, len(config.voxel_sizes), config.neck_depth)
        self.eps_head = EpsilonHead(d, self.action_dim)
        self.rotgrip_head = RotationGripperHead(d, self._rotation_bins())
        self.schedule = NoiseSchedule(config.diffusion)

    def _rotation_bins(self) -> int:
        return self.config.rotation_bins

    @property
    def m(self) -> int:
        return self.config.m

    @property
    def attention_impl(self) -> AttentionImpl:
        return "grouped" if self.config.attention == "auto" else self.config.attention

    # ---------------------------------------------------------------- data and action parametrisation
    def prepare_batch(self, batch: ConditionBatch, generator: torch.Generator | None) -> ConditionBatch:
        batch = limit_points(batch, self.config.max_points, generator)
        if self.training:
            batch = augment(batch, self.config.augment, self.workspace.low, self.workspace.high, generator)
        return batch

    def clean_action(self, target: Tensor) -> Tensor:
        """(B, 8) target poses -> (B, action_dim) diffused quantity (normalised xyz)."""
        return self.workspace.normalize(target[:, :3])

    @property
    def head_on_position(self) -> bool:
        """Whether the rotation/gripper head is trained on one noised ground-truth position per condition."""
        return getattr(self.config, "head_input", "noisy_rows") == "position"

    def draw_noise(
        self,
        rows: int,
        generator: torch.Generator | None,
        device: torch.device,
        conditions: int | None = None,
    ) -> NoiseDraw:
        """Draws for ``rows`` noisy rows (and ``conditions`` head rows when the head reads positions)."""
        t = self.schedule.sample_timesteps(rows, generator, device)
        noise = randn((rows, self.action_dim), generator, device)
        pose_noise = None
        if self.head_on_position:
            if conditions is None:
                raise ValueError("draw_noise needs the number of conditions when head_input='position'")
            pose_noise = self.config.head_position_noise_m * randn((conditions, 3), generator, device)
        return NoiseDraw(t=t, noise=noise, pose_noise=pose_noise)

    def noisy_action(self, x0: Tensor, draw: NoiseDraw) -> Tensor:
        return self.schedule.add_noise(x0, draw.noise, draw.t)

    def initial_sample(self, noise: Tensor, t0: int) -> Tensor:
        """x at the first visited timestep ``t0`` from standard noise (B, action_dim) (``diffusion.init_sample``)."""
        return self.schedule.initial_sample(noise, t0, self.config.diffusion.init_sample)

    def reverse_step(
        self, x: Tensor, eps: Tensor, t: Tensor, t_prev: Tensor, generator: Generators
    ) -> Tensor:
        return self.schedule.step(self.config.diffusion.sampler, x, eps, t, t_prev, generator)

    # ---------------------------------------------------------------- network
    def encode(self, batch: ConditionBatch) -> EncodedCondition:
        return self.encoder(batch)

    def forward_rows(self, ctx: NeckContext, parent_index: Tensor, x_t: Tensor, t: Tensor) -> RowOutputs:
        """x_t: (R, action_dim) noisy actions (normalised); t: (R,) -> per-row outputs."""
        check_parent_index(parent_index, ctx.num_conditions)
        pos = self.workspace.denormalize(x_t[:, :3])  # (R, 3) metres, for the rotary positions
        feats = self.denoiser(
            ctx, parent_index, self.action_embed(x_t), pos, [t], self.attention_impl
        )  # (R, d)
        rotation, gripper = self.rotgrip_head(feats)
        return RowOutputs(eps=self.eps_head(feats), rotation=rotation, gripper=gripper)

    # ---------------------------------------------------------------- losses
    def row_losses(
        self, enc: EncodedCondition, target: Tensor, parent_index: Tensor, draw: NoiseDraw
    ) -> dict[str, Tensor]:
        """Per-row loss parts (each (R,)) of rows ``parent_index`` of the B encoded conditions.

        target: (B, 8) ground-truth keyposes of the B conditions; draw: timesteps and noises of the R rows.
        With ``head_input="position"`` the "rotation" and "gripper" parts are per condition, (B,): they come
        from one head row per condition at its ground-truth position plus ``draw.pose_noise``.
        """
        ctx = self.denoiser.prepare(enc)
        x0 = self.clean_action(target)[parent_index]  # (R, action_dim): explicit parent gather
        x_t = self.noisy_action(x0, draw)  # (R, action_dim)
        if not self.head_on_position:
            out = self.forward_rows(ctx, parent_index, x_t, draw.t)
            return self.loss_terms(out, draw, target[parent_index])
        if draw.pose_noise is None or draw.pose_noise.shape[0] != target.shape[0]:
            raise ValueError(f"head_input='position' needs draw.pose_noise of shape ({target.shape[0]}, 3)")
        r, b = parent_index.numel(), target.shape[0]
        head_x = self.workspace.normalize(
            target[:, :3] + draw.pose_noise
        )  # (B, 3) one head row per condition
        rows = torch.cat([parent_index, torch.arange(b, device=parent_index.device)])  # (R + B,)
        t = torch.cat(
            [draw.t, torch.zeros(b, dtype=draw.t.dtype, device=draw.t.device)]
        )  # head rows at t = 0
        out = self.forward_rows(ctx, rows, torch.cat([x_t, head_x], dim=0), t)  # noisy and head rows together
        parts = self.loss_terms(
            RowOutputs(eps=out.eps[:r], rotation=None, gripper=out.gripper[:r]),
            draw,
            target[parent_index],
            head=False,
        )
        parts.update(self.head_terms(out.rotation[r:], out.gripper[r:], target))
        return parts

    def loss_terms(
        self, out: RowOutputs, draw: NoiseDraw, target_rows: Tensor, head: bool = True
    ) -> dict[str, Tensor]:
        """target_rows: (R, 8) -> {"position", "rotation", "gripper"}: (R,) each ("position" only without
        ``head``)."""
        parts = {"position": self.config.diffusion.loss_weight * epsilon_l1_rows(out.eps, draw.noise)}
        if head:
            parts.update(self.head_terms(out.rotation, out.gripper, target_rows))
        return parts

    def head_terms(self, rotation: Tensor, gripper: Tensor, target: Tensor) -> dict[str, Tensor]:
        """rotation (N, 3, bins), gripper (N,) logits, target (N, 8) -> {"rotation", "gripper"}: (N,) each."""
        bins = quat_to_euler_bins(target[:, 3:7], self.config.rotation_bins)  # (N, 3)
        return {
            "rotation": rotation_ce_rows(rotation, bins),
            "gripper": gripper_bce_rows(gripper, target[:, 7] > 0.5),
        }

    def compute_loss(self, batch: ConditionBatch, generator: torch.Generator | None = None) -> LossOutput:
        if batch.target is None:
            raise ValueError("compute_loss needs batch.target (the ground-truth next keyposes); got None")
        batch = self.prepare_batch(batch, generator)
        enc = self.encode(batch)  # B conditions, each encoded once
        parent_index = expand_parent_index(batch.batch_size, self.m, batch.points.device)  # (B*M,)
        draw = self.draw_noise(
            parent_index.numel(), generator, batch.points.device, conditions=batch.batch_size
        )
        return reduce_row_losses(self.row_losses(enc, batch.target, parent_index, draw))

    # ---------------------------------------------------------------- inference
    def decode(self, x0: Tensor, out: RowOutputs) -> Tensor:
        """Denoised actions (B, action_dim) + head outputs at t = 0 -> (B, 8) keyposes inside the workspace."""
        xyz = self.workspace.clip(self.workspace.denormalize(x0[:, :3].clamp(-1, 1)))
        quat = euler_bins_to_quat(out.rotation.argmax(dim=-1), self.config.rotation_bins)  # (B, 4)
        is_open = (out.gripper > 0).to(xyz.dtype)[:, None]
        return torch.cat([xyz, quat, is_open], dim=-1)

    @torch.no_grad()
    def predict_action(self, obs: ConditionBatch, generator: Generators = None) -> Tensor:
        """(B, 8) keyposes; ``generator`` may be a list with one generator per row (``accepts_row_generators``)."""
        return self.sample(obs, generator)

    @torch.no_grad()
    def sample(
        self, obs: ConditionBatch, generator: Generators = None, initial_noise: Tensor | None = None
    ) -> Tensor:
        """(B, 8) keyposes; ``initial_noise`` (B * K, action_dim) fixes x_T (drawn from ``generator`` otherwise;
        K = ``diffusion.inference_samples``, observation-major)."""
        obs = limit_points(obs, self.config.max_points, generator)
        device = obs.points.device
        ctx = self.denoiser.prepare(self.encode(obs))  # encoder and neck keys/values: once per observation
        b, k = obs.batch_size, self.config.diffusion.inference_samples
        r = b * k  # rows: observation-major, the k candidates of observation i are rows i*k .. i*k + k - 1
        parent_index = torch.arange(b, device=device).repeat_interleave(k)  # (R,)
        if initial_noise is None:
            x = randn((r, self.action_dim), generator, device)
        elif initial_noise.shape[0] != r:
            raise ValueError(
                f"initial_noise has {initial_noise.shape[0]} rows; {b} observations x {k} inference samples "
                f"need {r}"
            )
        else:
            x = initial_noise.to(device)
        steps = self.schedule.inference_timesteps(self.config.diffusion.inference_steps)
        x = self.initial_sample(x, steps[0])
        for i, t in enumerate(steps):
            t_now = torch.full((r,), t, dtype=torch.long, device=device)
            t_prev = torch.full(
                (r,), steps[i + 1] if i + 1 < len(steps) else -1, dtype=torch.long, device=device
            )
            eps = self.forward_rows(ctx, parent_index, x, t_now).eps
            x = self.reverse_step(x, eps, t_now, t_prev, generator)
        x = medoid_rows(x, k)  # (R, action_dim) -> (B, action_dim)
        parent_index = torch.arange(b, device=device)
        final = self.forward_rows(ctx, parent_index, x, torch.zeros(b, dtype=torch.long, device=device))
        return self.decode(x, final)


class OneToOnePolicy(MiniDiffuserPolicy):
    """One-to-one baseline (what 3DDA does): M = 1, every noised sample has its own encoded condition.

    Same encoder, neck and heads as Mini-Diffuser; a step over B' conditions trains on B' noised samples.
    """


def medoid_rows(x: Tensor, k: int) -> Tensor:
    """(B * k, D) candidates, observation-major -> (B, D): per observation the candidate whose position (the
    first 3 columns) has the smallest summed distance to its other k - 1 candidates (the first on ties)."""
    if k == 1:
        return x
    cand = x.reshape(-1, k, x.shape[-1])  # (B, k, D)
    pos = cand[..., :3]
    score = torch.cdist(pos, pos).sum(dim=-1)  # (B, k)
    best = score.argmin(dim=-1)  # (B,)
    return cand[torch.arange(cand.shape[0], device=x.device), best]


def reduce_row_losses(rows: dict[str, Tensor]) -> LossOutput:
    """Sum over the parts of each part's mean over its rows; metrics hold each part's mean ("loss/<part>").

    Parts may have different lengths (per noisy row, or per condition for the position-read head)."""
    total = torch.stack([value.mean() for value in rows.values()]).sum()
    metrics = {"loss": float(total.detach())}
    metrics.update({f"loss/{name}": float(value.detach().mean()) for name, value in rows.items()})
    return LossOutput(loss=total, metrics=metrics)
