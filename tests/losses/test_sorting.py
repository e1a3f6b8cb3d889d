"""The decreasing sorts the cross-vocabulary losses run on: NumPy's on CPU, torch's elsewhere, the same values."""

from __future__ import annotations

import pytest
import torch

from hf_distill.losses.sorting import descending, descending_order


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 7), (2, 3, 5), (5, 1), (0, 4)])
def test_descending_equals_torch_sort(dtype, shape):
    values = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    expected = values.sort(dim=-1, descending=True).values
    assert torch.equal(descending(values), expected)
    order = descending_order(values)
    assert order.dtype == torch.int64 and order.shape == values.shape
    assert torch.equal(values.gather(-1, order), expected)
    # A permutation of each row: every index once.
    assert torch.equal(order.sort(dim=-1).values, torch.arange(shape[-1]).expand(shape))


def test_descending_by_hand_with_ties_and_zeros():
    values = torch.tensor([[0.1, 0.0, 0.6, 0.1, 0.2]])
    assert descending(values)[0].tolist() == pytest.approx([0.6, 0.2, 0.1, 0.1, 0.0])
    order = descending_order(values)[0].tolist()
    assert order[:2] == [2, 4] and sorted(order[2:4]) == [0, 3] and order[4] == 1


def test_many_rows_on_several_threads_equal_one_thread():
    # Above the size at which rows are split over threads: the blocks must land in their own rows.
    values = torch.rand(300, 4096, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        split, split_order = descending(values), descending_order(values)
        torch.set_num_threads(1)
        single = descending(values)
    finally:
        torch.set_num_threads(threads)
    expected = values.sort(dim=-1, descending=True).values
    assert torch.equal(split, expected) and torch.equal(single, expected)
    assert torch.equal(values.gather(-1, split_order), expected)


def test_no_gradient_and_input_left_alone():
    values = torch.randn(4, 9, requires_grad=True)
    before = values.detach().clone()
    out = descending(values)
    assert not out.requires_grad
    assert torch.equal(values.detach(), before)
