import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.attention import ContextKV, CrossAttention, attend_rows, rotary_frequencies

pytestmark = pytest.mark.unit


def _kv(b: int, s: int, h: int, hd: int, g: torch.Generator) -> ContextKV:
    mask = torch.rand(b, s, generator=g) < 0.7
    mask[:, 0] = True  # every condition has at least one real token
    return ContextKV(
        k=torch.randn(b, s, h, hd, generator=g), v=torch.randn(b, s, h, hd, generator=g), mask=mask
    )


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 4), rows=st.integers(1, 12), s=st.integers(1, 9), seed=st.integers(0, 10_000))
def test_grouped_and_dense_masked_paths_agree(b, rows, s, seed):
    g = torch.Generator().manual_seed(seed)
    kv = _kv(b, s, 2, 4, g)
    parent = torch.randint(0, b, (rows,), generator=g)  # any order, unequal group sizes
    q = torch.randn(rows, 2, 4, generator=g, requires_grad=True)
    grouped = attend_rows(q, kv, parent, "grouped")
    (gq_grouped,) = torch.autograd.grad(grouped.square().sum(), q)
    dense = attend_rows(q, kv, parent, "dense_masked")
    (gq_dense,) = torch.autograd.grad(dense.square().sum(), q)
    assert torch.allclose(grouped, dense, atol=1e-5)
    assert torch.allclose(gq_grouped, gq_dense, atol=1e-4)


def test_rows_attend_only_to_their_condition_and_real_tokens():
    g = torch.Generator().manual_seed(0)
    kv = _kv(3, 6, 2, 4, g)
    parent = torch.tensor([2, 0, 2, 1])
    q = torch.randn(4, 2, 4, generator=g)
    ref = attend_rows(q, kv, parent, "grouped")
    # change condition 0's keys/values and every padded token: rows of conditions 1 and 2 must not move
    k, v = kv.k.clone(), kv.v.clone()
    k[0], v[0] = torch.randn(6, 2, 4), torch.randn(6, 2, 4)
    k[~kv.mask], v[~kv.mask] = 100.0, -100.0
    for impl in ("grouped", "dense_masked"):
        out = attend_rows(q, ContextKV(k, v, kv.mask), parent, impl)
        assert torch.allclose(out[[0, 2, 3]], ref[[0, 2, 3]], atol=1e-6)
        assert not torch.allclose(out[1], ref[1], atol=1e-3)


def test_rotary_scores_depend_on_relative_positions_only():
    torch.manual_seed(0)
    attn = CrossAttention(24, 2, rotary=True)
    assert rotary_frequencies(12).numel() == 2
    ctx, ctx_pos = torch.randn(1, 7, 24), torch.rand(1, 7, 3)
    x, x_pos = torch.randn(5, 24), torch.rand(5, 3)
    parent = torch.zeros(5, dtype=torch.long)
    mask = torch.ones(1, 7, dtype=torch.bool)
    out = attn.forward_rows(x, attn.project_context(ctx, mask, pos=ctx_pos), parent, "grouped", pos=x_pos)
    shift = torch.tensor([0.3, -0.7, 0.25])
    moved = attn.forward_rows(
        x, attn.project_context(ctx, mask, pos=ctx_pos + shift), parent, "grouped", pos=x_pos + shift
    )
    assert torch.allclose(out, moved, atol=1e-4)
    other = attn.forward_rows(
        x, attn.project_context(ctx, mask, pos=ctx_pos), parent, "grouped", pos=x_pos + shift
    )
    assert not torch.allclose(out, other, atol=1e-3)
