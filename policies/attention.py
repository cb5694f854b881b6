"""Attention with 3D rotary positions, and the masked action -> condition attention paths.

Masking rule (docs/policies.md): a noisy-action row attends only to the tokens of its own condition
``parent_index[r]``; rows never attend to each other; condition tokens never attend to rows. Two exact
implementations of that rule:

* ``dense_masked`` (reference): one attention of all R rows over all B*S condition tokens with a block mask
  ``parent_index[r] == condition(token)``. Cost (B*M) x (B*S): for tests and small CPU batches.
* ``grouped``: rows are placed in a (B, M_max) per-condition layout (``RowGrouping``) and attend to their own
  condition's (S,) tokens with ``scaled_dot_product_attention``; cost B * M_max * S, on any device. On CUDA,
  SDPA dispatches to the fused memory-efficient kernel (attention weights never materialised).

Rotary positions (RoPE in 3D): the head dimension is split into pairs; each pair rotates by
``omega_k * p_axis`` for one axis and one frequency (wavelengths geometric in [4 cm, 4 m]). Both queries and
keys are rotated, so scores depend on relative positions only (unlike the official code's queries-only
rotation). Dimensions beyond ``6 * (head_dim // 6)`` pass through unrotated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from policies.expansion import RowGrouping, group_rows

AttentionImpl = Literal["grouped", "dense_masked"]
MIN_WAVELENGTH_M = 0.04
MAX_WAVELENGTH_M = 4.0


def rotary_frequencies(head_dim: int) -> Tensor:
    """(head_dim // 6,) angular frequencies (rad / m) per axis."""
    n = head_dim // 6
    if n == 0:
        return torch.zeros(0)
    if n == 1:
        return torch.tensor([2 * math.pi / math.sqrt(MIN_WAVELENGTH_M * MAX_WAVELENGTH_M)])
    wavelengths = torch.logspace(math.log10(MIN_WAVELENGTH_M), math.log10(MAX_WAVELENGTH_M), n)
    return 2 * math.pi / wavelengths


def apply_rotary(x: Tensor, pos: Tensor, freqs: Tensor) -> Tensor:
    """x: (..., H, hd); pos: (..., 3) metres; freqs: (n,) -> x with its first 6n dims rotated."""
    n = freqs.numel()
    if n == 0:
        return x
    angles = (pos[..., :, None] * freqs.to(pos.dtype)).flatten(-2)  # (..., 3n)
    cos, sin = angles.cos()[..., None, :], angles.sin()[..., None, :]  # (..., 1, 3n)
    rot, rest = x[..., : 6 * n], x[..., 6 * n :]
    x1, x2 = rot[..., 0::2], rot[..., 1::2]  # (..., H, 3n) each
    rotated = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)  # (..., H, 6n)
    return torch.cat([rotated, rest], dim=-1)


@dataclass(frozen=True)
class ContextKV:
    """Projected keys/values of B conditions' tokens. k, v: (B, S, H, hd); mask: (B, S) bool (True = real)."""

    k: Tensor
    v: Tensor
    mask: Tensor


def attend_rows(
    q: Tensor, kv: ContextKV, parent_index: Tensor, impl: AttentionImpl, grouping: RowGrouping | None = None
) -> Tensor:
    """q: (R, H, hd) rows; each attends only to ``kv`` of condition parent_index[r] -> (R, H, hd).

    ``grouping`` (from ``group_rows(parent_index, B)``) may be passed to reuse it across layers.
    """
    b, s, h, hd = kv.k.shape
    if impl == "grouped":
        grouping = grouping if grouping is not None else group_rows(parent_index, b)
        q_pad = grouping.pad(q).transpose(1, 2)  # (B, H, M_max, hd)
        out = F.scaled_dot_product_attention(
            q_pad, kv.k.transpose(1, 2), kv.v.transpose(1, 2), attn_mask=kv.mask[:, None, None, :]
        )  # (B, H, M_max, hd)
        return grouping.unpad(out.transpose(1, 2))  # (R, H, hd)
    if impl == "dense_masked":
        key_condition = torch.arange(b, device=q.device).repeat_interleave(s)  # (B*S,)
        mask = (parent_index[:, None] == key_condition[None, :]) & kv.mask.reshape(1, b * s)  # (R, B*S)
        k = kv.k.reshape(b * s, h, hd).transpose(0, 1)  # (H, B*S, hd)
        v = kv.v.reshape(b * s, h, hd).transpose(0, 1)
        out = F.scaled_dot_product_attention(
            q.transpose(0, 1)[None], k[None], v[None], attn_mask=mask[None, None]
        )
        return out[0].transpose(0, 1)  # (R, H, hd)
    raise ValueError(f"unknown attention implementation {impl!r}; use 'grouped' or 'dense_masked'")


class CrossAttention(nn.Module):
    """Queries attend to one condition's context tokens; context projections are computed once per condition."""

    def __init__(self, d: int, heads: int, rotary: bool) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.register_buffer(
            "freqs", rotary_frequencies(self.head_dim) if rotary else torch.zeros(0), persistent=False
        )

    def project_context(self, ctx: Tensor, mask: Tensor, pos: Tensor | None = None) -> ContextKV:
        """ctx: (B, S, d); mask: (B, S); pos: (B, S, 3) when rotary -> ContextKV (cached across diffusion steps)."""
        b, s, _ = ctx.shape
        k, v = self.kv(ctx).reshape(b, s, 2, self.heads, self.head_dim).unbind(2)  # (B, S, H, hd) each
        if self.freqs.numel():
            k = apply_rotary(k, pos, self.freqs)
        return ContextKV(k=k, v=v, mask=mask)

    def _queries(self, x: Tensor, pos: Tensor | None) -> Tensor:
        q = self.q(x).reshape(*x.shape[:-1], self.heads, self.head_dim)  # (..., H, hd)
        return apply_rotary(q, pos, self.freqs) if self.freqs.numel() else q

    def forward_rows(
        self,
        x: Tensor,
        kv: ContextKV,
        parent_index: Tensor,
        impl: AttentionImpl,
        pos: Tensor | None = None,
        grouping: RowGrouping | None = None,
    ) -> Tensor:
        """x: (R, d) rows (noisy actions) attending to their parent's context -> (R, d)."""
        out = attend_rows(self._queries(x, pos), kv, parent_index, impl, grouping)  # (R, H, hd)
        return self.out(out.reshape(x.shape[0], -1))

    def forward_padded(self, x: Tensor, kv: ContextKV, pos: Tensor | None = None) -> Tensor:
        """x: (B, V, d) tokens of condition b attending to kv of the same condition b -> (B, V, d)."""
        q = self._queries(x, pos).transpose(1, 2)  # (B, H, V, hd)
        out = F.scaled_dot_product_attention(
            q, kv.k.transpose(1, 2), kv.v.transpose(1, 2), attn_mask=kv.mask[:, None, None, :]
        )  # (B, H, V, hd)
        return self.out(out.transpose(1, 2).reshape(x.shape))


class SelfAttention(nn.Module):
    """Self-attention among one condition's (padded) point tokens, 3D rotary positions, key padding mask."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.register_buffer("freqs", rotary_frequencies(self.head_dim), persistent=False)

    def forward(self, x: Tensor, pos: Tensor, mask: Tensor) -> Tensor:
        """x: (B, V, d); pos: (B, V, 3); mask: (B, V) -> (B, V, d). Padded tokens never act as keys."""
        b, v, d = x.shape
        q, k, val = self.qkv(x).reshape(b, v, 3, self.heads, self.head_dim).unbind(2)  # (B, V, H, hd)
        q, k = apply_rotary(q, pos, self.freqs), apply_rotary(k, pos, self.freqs)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), val.transpose(1, 2), attn_mask=mask[:, None, None, :]
        )  # (B, H, V, hd)
        return self.out(out.transpose(1, 2).reshape(b, v, d))


class FiLMNorm(nn.Module):
    """LayerNorm without affine, then ``x * (1 + scale) + shift`` with (scale, shift) = Linear(cond)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d, elementwise_affine=False)
        self.film = nn.Linear(d, 2 * d)
        nn.init.normal_(self.film.weight, std=0.02)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """x: (..., d); cond broadcastable to x: (B, 1, d) for (B, V, d) tokens, (R, d) for rows."""
        scale, shift = self.film(cond).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


class FeedForward(nn.Module):
    def __init__(self, d: int, mult: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d, mult * d), nn.GELU(), nn.Linear(mult * d, d))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
