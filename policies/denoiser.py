"""The masked denoiser ("neck"): R = B*M noisy-action rows, each attending only to its own condition.

Per layer (levels visited coarse -> fine, ``neck_depth`` layers each):
  row = row + PointAttn(FiLM-LN(row), points of condition parent_index[row] at this level, 3D rotary)
  row = row + TextAttn(LN(row), instruction tokens of condition parent_index[row])
  row = row + FFN(FiLM-LN(row))
FiLM vector per row: ``cond[parent_index] + time_embedding(t)``. There is no attention between rows, and
condition tokens never read rows: the B*M rows are independent given their conditions.

``prepare`` projects every layer's keys/values from the B encoded conditions once (cost O(B), not O(B*M));
during sampling it runs once per observation and is reused at every diffusion step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from policies.attention import AttentionImpl, ContextKV, CrossAttention, FeedForward, FiLMNorm
from policies.encoder import EncodedCondition
from policies.expansion import RowGrouping, group_rows


@dataclass(frozen=True)
class NeckContext:
    """Cached per-layer projections of B conditions: point keys/values and text keys/values."""

    points: list[ContextKV]
    text: list[ContextKV]
    cond: Tensor  # (B, d)

    @property
    def num_conditions(self) -> int:
        return self.cond.shape[0]


class NeckLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn_mult: int) -> None:
        super().__init__()
        self.norm1, self.point_attn = FiLMNorm(d), CrossAttention(d, heads, rotary=True)
        self.norm2, self.text_attn = nn.LayerNorm(d), CrossAttention(d, heads, rotary=False)
        self.norm3, self.ffn = FiLMNorm(d), FeedForward(d, ffn_mult)

    def forward(
        self,
        x: Tensor,
        pos: Tensor,
        film: Tensor,
        point_kv: ContextKV,
        text_kv: ContextKV,
        parent_index: Tensor,
        impl: AttentionImpl,
        grouping: RowGrouping | None,
    ) -> Tensor:
        """x, film: (R, d); pos: (R, 3) metres -> (R, d)."""
        x = x + self.point_attn.forward_rows(self.norm1(x, film), point_kv, parent_index, impl, pos, grouping)
        x = x + self.text_attn.forward_rows(self.norm2(x), text_kv, parent_index, impl, None, grouping)
        return x + self.ffn(self.norm3(x, film))


def timestep_embedding(t: Tensor, dim: int, max_period: float = 1000.0) -> Tensor:
    """(R,) int timesteps -> (R, dim) sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.to(torch.float32)[:, None] * freqs[None]  # (R, half)
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    return torch.nn.functional.pad(emb, (0, dim - 2 * half))


class Denoiser(nn.Module):
    """Rows (noisy actions) -> features (R, d), attending to their parent's encoded condition."""

    def __init__(
        self, d: int, heads: int, ffn_mult: int, num_levels: int, depth: int, num_time_inputs: int = 1
    ) -> None:
        super().__init__()
        self.d = d
        # layer i reads level level_of_layer[i]: coarse -> fine
        self.level_of_layer = [lvl for lvl in reversed(range(num_levels)) for _ in range(depth)]
        self.layers = nn.ModuleList(NeckLayer(d, heads, ffn_mult) for _ in self.level_of_layer)
        self.time_mlp = nn.Sequential(nn.Linear(d * num_time_inputs, d), nn.GELU(), nn.Linear(d, d))

    def prepare(self, enc: EncodedCondition) -> NeckContext:
        """Project keys/values of the B conditions for every layer (once per condition)."""
        points, text = [], []
        for layer, lvl in zip(self.layers, self.level_of_layer, strict=True):
            level = enc.levels[lvl]
            points.append(layer.point_attn.project_context(level.feats, level.mask, pos=level.pos))
            text.append(layer.text_attn.project_context(enc.text, enc.text_mask))
        return NeckContext(points=points, text=text, cond=enc.cond)

    def forward(
        self,
        ctx: NeckContext,
        parent_index: Tensor,
        x: Tensor,
        pos: Tensor,
        timesteps: list[Tensor],
        impl: AttentionImpl,
    ) -> Tensor:
        """x: (R, d) embedded noisy actions; pos: (R, 3) their positions (metres); timesteps: list of (R,)."""
        temb = torch.cat([timestep_embedding(t, self.d) for t in timesteps], dim=-1)  # (R, d * n)
        film = ctx.cond[parent_index] + self.time_mlp(temb)  # (R, d): explicit parent gather
        grouping = (
            group_rows(parent_index, ctx.num_conditions) if impl == "grouped" else None
        )  # shared by all layers
        for layer, point_kv, text_kv in zip(self.layers, ctx.points, ctx.text, strict=True):
            x = layer(x, pos, film, point_kv, text_kv, parent_index, impl, grouping)
        return x
