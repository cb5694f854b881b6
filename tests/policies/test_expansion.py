import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.expansion import expand_parent_index, group_rows

pytestmark = pytest.mark.unit


def test_expand_parent_index_is_explicit():
    assert expand_parent_index(3, 2).tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="B >= 1 and M >= 1"):
        expand_parent_index(0, 4)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 5), rows=st.integers(0, 20), seed=st.integers(0, 1000))
def test_grouping_round_trips_any_row_order(b, rows, seed):
    g = torch.Generator().manual_seed(seed)
    parent = torch.randint(0, b, (rows,), generator=g)
    grouping = group_rows(parent, b)
    values = torch.randn(rows, 2, generator=g)
    padded = grouping.pad(values)
    assert padded.shape == (b, grouping.max_count, 2)
    assert torch.equal(grouping.unpad(padded), values)
    for r in range(rows):  # every row lands in its own condition's group
        assert torch.equal(padded[parent[r], grouping.slot[r]], values[r])
    assert grouping.counts.tolist() == torch.bincount(parent, minlength=b).tolist()


def test_grouping_rejects_out_of_range_parents():
    with pytest.raises(ValueError, match="parent_index values"):
        group_rows(torch.tensor([0, 3]), 2)
