"""Point-cloud condition encoder: voxel-pooled point tokens at several resolutions, per-condition
self-attention with 3D rotary positions, cross-attention to the instruction tokens, FiLM from the pooled
instruction + current gripper pose (and the previous keyposes' with ``history``).

Why not a full Point Transformer V3 (docs/policies.md): PTv3 needs serialisation (space-filling curves),
sparse convolutions and windowed attention, which are CUDA-centric; this encoder keeps PTv3's multi-scale
U-Net-like pyramid (grid pooling fine -> coarse) with plain ``scaled_dot_product_attention`` on padded
per-condition tokens, so it runs anywhere, masks padding exactly and is cheap at the point counts used here.

The encoder sees no diffusion timestep: its output depends on the condition alone, which is what lets one
encoding serve the condition's M noised copies (the timestep enters the denoiser's FiLM instead).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from policies.attention import ContextKV, CrossAttention, FeedForward, FiLMNorm, SelfAttention
from policies.batch import ConditionBatch
from policies.config import DDAStyleConfig, MiniDiffuserConfig, OneToOneConfig
from policies.heads import Workspace


@dataclass(frozen=True)
class PointLevel:
    """One resolution of a condition's tokens. feats: (B, V, d); pos: (B, V, 3) metres; mask: (B, V) bool."""

    feats: Tensor
    pos: Tensor
    mask: Tensor


@dataclass(frozen=True)
class EncodedCondition:
    """B encoded conditions: point levels fine -> coarse, projected text tokens, FiLM vector.

    text: (B, 1 + L, d) with a learned always-valid null token first; text_mask: (B, 1 + L); cond: (B, d).
    """

    levels: list[PointLevel]
    text: Tensor
    text_mask: Tensor
    cond: Tensor

    def detached(self) -> EncodedCondition:
        """A copy whose tensors are fresh leaves (benchmarks time the head alone with it)."""
        return EncodedCondition(
            levels=[PointLevel(lv.feats.detach().requires_grad_(), lv.pos, lv.mask) for lv in self.levels],
            text=self.text.detach().requires_grad_(),
            text_mask=self.text_mask,
            cond=self.cond.detach().requires_grad_(),
        )


def voxel_pool(
    feats: Tensor, pos: Tensor, mask: Tensor, voxel: float, low: Tensor, high: Tensor
) -> PointLevel:
    """Average the valid tokens of each condition falling in the same ``voxel``-sized cell.

    feats: (B, N, c); pos: (B, N, 3); mask: (B, N) -> PointLevel with (B, V_max, c) tokens, V_max the largest
    number of occupied cells of any condition. Cells are ordered by (condition, cell index), so a condition's
    tokens never depend on another condition's points. Positions outside [low, high] go to the border cells.
    """
    b = feats.shape[0]
    grid = torch.ceil((high - low) / voxel).long() + 1  # (3,) cells per axis
    n = feats.shape[1]
    flat = mask.reshape(-1).nonzero().squeeze(1)  # (P,) valid tokens in the flattened (B*N) layout
    b_idx = torch.div(flat, n, rounding_mode="floor")  # (P,)
    p = pos.reshape(-1, 3).index_select(0, flat)  # (P, 3)
    cell = torch.floor((p - low) / voxel).long()
    cell = torch.minimum(cell.clamp_min(0), grid - 1)  # (P, 3)
    key = ((b_idx * grid[0] + cell[:, 0]) * grid[1] + cell[:, 1]) * grid[2] + cell[:, 2]  # (P,)
    uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)  # (U,), (P,)
    voxel_batch = torch.div(uniq, grid.prod(), rounding_mode="floor")  # (U,) condition of each cell
    counts = torch.bincount(voxel_batch, minlength=b)  # (B,)
    slot = (
        torch.arange(uniq.numel(), device=feats.device) - (torch.cumsum(counts, 0) - counts)[voxel_batch]
    )  # (U,)
    members = torch.bincount(inverse, minlength=uniq.numel()).to(feats.dtype)[:, None]  # (U, 1)
    picked = feats.reshape(b * n, -1).index_select(0, flat)  # (P, c)
    f = feats.new_zeros(uniq.numel(), feats.shape[-1]).index_add(0, inverse, picked) / members  # (U, c)
    q = pos.new_zeros(uniq.numel(), 3).index_add(0, inverse, p) / members  # (U, 3) cell centroids
    v_max = max(int(counts.max()), 1)
    out_f = feats.new_zeros(b, v_max, feats.shape[-1]).index_put((voxel_batch, slot), f)  # (B, V_max, c)
    out_p = pos.new_zeros(b, v_max, 3).index_put((voxel_batch, slot), q)
    out_m = torch.zeros(b, v_max, dtype=torch.bool, device=feats.device).index_put(
        (voxel_batch, slot), torch.ones_like(slot, dtype=torch.bool)
    )
    return PointLevel(out_f, out_p, out_m)


class EncoderBlock(nn.Module):
    """Self-attention (rotary) -> cross-attention to text -> FFN; FiLM-LayerNorm from the condition vector."""

    def __init__(self, d: int, heads: int, ffn_mult: int) -> None:
        super().__init__()
        self.norm1, self.attn = FiLMNorm(d), SelfAttention(d, heads)
        self.norm2, self.text_attn = nn.LayerNorm(d), CrossAttention(d, heads, rotary=False)
        self.norm3, self.ffn = FiLMNorm(d), FeedForward(d, ffn_mult)

    def forward(self, level: PointLevel, text_kv: ContextKV, cond: Tensor) -> PointLevel:
        x, c = level.feats, cond[:, None, :]  # (B, V, d), (B, 1, d)
        x = x + self.attn(self.norm1(x, c), level.pos, level.mask)
        x = x + self.text_attn.forward_padded(self.norm2(x), text_kv)
        x = x + self.ffn(self.norm3(x, c))
        return PointLevel(x, level.pos, level.mask)


class ConditionEncoder(nn.Module):
    """ConditionBatch -> EncodedCondition (B conditions, each encoded once)."""

    def __init__(self, cfg: MiniDiffuserConfig | OneToOneConfig | DDAStyleConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.cfg = cfg
        self.workspace = Workspace(cfg.workspace_low, cfg.workspace_high)
        self.point_embed = nn.Sequential(nn.Linear(7, d), nn.GELU(), nn.Linear(d, d))
        self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, d), nn.LayerNorm(d))
        self.text_null = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.text_pool = nn.Linear(cfg.text_dim, d)
        # the current gripper pose and the ``history`` previous ones, read together: (B, 8 * (1 + H)) -> (B, d)
        self.gripper_embed = nn.Sequential(nn.Linear(8 * (1 + cfg.history), d), nn.GELU(), nn.Linear(d, d))
        self.pool_proj = nn.ModuleList(
            nn.Sequential(nn.Linear(d, d), nn.LayerNorm(d)) for _ in cfg.voxel_sizes
        )
        self.blocks = nn.ModuleList(
            nn.ModuleList(EncoderBlock(d, cfg.heads, cfg.ffn_mult) for _ in range(depth))
            for depth in cfg.encoder_depths
        )

    def _check(self, batch: ConditionBatch) -> None:
        if batch.text.shape[-1] != self.cfg.text_dim:
            raise ValueError(
                f"instruction features have dim {batch.text.shape[-1]} but the policy config has text_dim="
                f"{self.cfg.text_dim}: set policy.text_dim to the text encoder's width"
            )
        empty = (~batch.point_mask.any(dim=1)).nonzero().flatten()
        if empty.numel():
            raise ValueError(
                f"conditions {empty.tolist()} have no valid points (point_mask all False): drop them"
            )

    def _text(self, batch: ConditionBatch) -> tuple[Tensor, Tensor, Tensor]:
        """-> text tokens (B, 1+L, d), mask (B, 1+L), pooled (B, d)."""
        b = batch.batch_size
        tokens = torch.cat(
            [self.text_null.expand(b, 1, -1), self.text_proj(batch.text)], dim=1
        )  # (B, 1+L, d)
        mask = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=tokens.device), batch.text_mask], dim=1)
        weights = batch.text_mask.to(batch.text.dtype)[..., None]  # (B, L, 1)
        mean = (batch.text * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, D_text)
        return tokens, mask, self.text_pool(mean)

    def _gripper_features(self, batch: ConditionBatch) -> Tensor:
        """Current pose (B, 8) and, with ``history`` H > 0, the H previous ones (B, H, 8) -> (B, d)."""
        poses = batch.gripper[:, None, :]  # (B, 1, 8)
        h = self.cfg.history
        if h:
            if batch.history is None or batch.history.shape[1] < h:
                got = "none" if batch.history is None else batch.history.shape[1]
                raise ValueError(
                    f"the policy reads the gripper poses of the {h} previous keyposes (policy.history={h}) "
                    f"but the condition has {got}: pass ConditionBatch.history (B, {h}, 8)"
                )
            poses = torch.cat([poses, batch.history[:, :h]], dim=1)  # (B, 1 + H, 8)
        xyz = self.workspace.normalize(poses[..., :3])  # (B, 1 + H, 3) in [-1, 1]
        feats = torch.cat([xyz, poses[..., 3:]], dim=-1)  # (B, 1 + H, 8)
        return self.gripper_embed(feats.flatten(1))  # (B, 8 * (1 + H)) -> (B, d)

    def _point_features(self, batch: ConditionBatch) -> Tensor:
        """Per-point input features: xyz centred on the cloud mean, rgb, height -> (B, N, 7)."""
        m = batch.point_mask.to(batch.points.dtype)[..., None]  # (B, N, 1)
        xyz = batch.points[..., :3]
        centre = (xyz * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)  # (B, 1, 3)
        return torch.cat([(xyz - centre) * m, batch.points[..., 3:] * m], dim=-1)

    def forward(self, batch: ConditionBatch) -> EncodedCondition:
        self._check(batch)
        text, text_mask, pooled = self._text(batch)
        cond = pooled + self._gripper_features(batch)  # (B, d)
        # level 0: average the raw point features per voxel, then embed (cheaper than embedding every point)
        level = PointLevel(self._point_features(batch), batch.points[..., :3], batch.point_mask)
        levels = []
        for i, (voxel, proj, blocks) in enumerate(
            zip(self.cfg.voxel_sizes, self.pool_proj, self.blocks, strict=True)
        ):
            level = voxel_pool(
                level.feats, level.pos, level.mask, voxel, self.workspace.low, self.workspace.high
            )
            feats = self.point_embed(level.feats) if i == 0 else level.feats  # (B, V, d)
            level = PointLevel(proj(feats), level.pos, level.mask)
            for block in blocks:
                text_kv = block.text_attn.project_context(text, text_mask)
                level = block(level, text_kv, cond)
            levels.append(level)
        return EncodedCondition(levels=levels, text=text, text_mask=text_mask, cond=cond)
