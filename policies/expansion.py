"""Level-2 expansion: B conditions -> R = B*M noised rows, with an explicit ``parent_index``.

Row ``r`` belongs to condition ``parent_index[r]``. Every per-condition quantity is taken to rows by
indexing with ``parent_index`` (``cond[parent_index]``), never by an implied reshape/einops order, so the
code stays correct for any row order (the tests shuffle it). ``RowGrouping`` gives each row a slot inside
its condition's group, which lets attention run per condition on a (B, M_max, ...) padded layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def expand_parent_index(num_conditions: int, m: int, device: torch.device | str = "cpu") -> Tensor:
    """(B*M,) int64: ``[0]*M + [1]*M + ...``; row r is a noised copy of condition parent_index[r]."""
    if num_conditions < 1 or m < 1:
        raise ValueError(f"expansion needs B >= 1 and M >= 1, got B={num_conditions}, M={m}")
    return torch.arange(num_conditions, device=device).repeat_interleave(m)


def check_parent_index(parent_index: Tensor, num_conditions: int) -> None:
    if parent_index.dim() != 1 or parent_index.dtype != torch.int64:
        raise ValueError(
            f"parent_index must be a 1-D int64 tensor, got {parent_index.dtype} {tuple(parent_index.shape)}"
        )
    if parent_index.numel() and (int(parent_index.min()) < 0 or int(parent_index.max()) >= num_conditions):
        raise ValueError(
            f"parent_index values must lie in [0, {num_conditions}), got min {int(parent_index.min())}, max {int(parent_index.max())}"
        )


@dataclass(frozen=True)
class RowGrouping:
    """Where each row sits in a (B, max_count) per-condition padded layout.

    group: (R,) = parent_index; slot: (R,) position of the row among its condition's rows (stable order);
    counts: (B,) rows per condition; max_count: largest group size (python int).
    """

    group: Tensor
    slot: Tensor
    counts: Tensor
    max_count: int

    @property
    def num_groups(self) -> int:
        return self.counts.shape[0]

    def pad(self, rows: Tensor) -> Tensor:
        """(R, *F) -> (B, max_count, *F), zeros in unused slots (differentiable)."""
        out = rows.new_zeros((self.num_groups, self.max_count, *rows.shape[1:]))
        return out.index_put((self.group, self.slot), rows)

    def unpad(self, padded: Tensor) -> Tensor:
        """(B, max_count, *F) -> (R, *F) in the original row order."""
        return padded[self.group, self.slot]


def group_rows(parent_index: Tensor, num_conditions: int) -> RowGrouping:
    """Stable grouping of rows by condition; works for any row order and unequal group sizes."""
    check_parent_index(parent_index, num_conditions)
    counts = torch.bincount(parent_index, minlength=num_conditions)  # (B,)
    order = torch.argsort(parent_index, stable=True)  # (R,) rows sorted by condition
    starts = torch.cumsum(counts, 0) - counts  # (B,) first sorted position of each group
    sorted_slot = torch.arange(parent_index.numel(), device=parent_index.device) - starts[parent_index[order]]
    slot = torch.empty_like(sorted_slot).index_put((order,), sorted_slot)  # (R,)
    max_count = int(counts.max()) if counts.numel() else 0
    return RowGrouping(group=parent_index, slot=slot, counts=counts, max_count=max_count)
