"""The decreasing sorts the cross-vocabulary losses run on: NumPy's on CPU, torch's elsewhere, the same values."""

from __future__ import annotations

import math

import pytest
import torch

from hf_distill.losses.sorting import descending, descending_order, descending_with_order


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


# ---- values and order together: the packed int64 sort on CPU float32, torch.sort elsewhere ----------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(3, 7), (2, 3, 5), (5, 1), (0, 4), (4, 0)])
def test_descending_with_order_equals_torch_sort(dtype, shape):
    values = (torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 50).to(dtype)
    expected = values.sort(dim=-1, descending=True).values
    got, order = descending_with_order(values)
    assert got.dtype == dtype and order.dtype == torch.int64 and got.shape == order.shape == values.shape
    assert torch.equal(got, expected)
    assert torch.equal(values.gather(-1, order), got)
    assert torch.equal(order.sort(dim=-1).values, torch.arange(shape[-1]).expand(shape))


def test_descending_with_order_by_hand_signs_zeros_infinities_subnormals_and_ties():
    values = torch.tensor([[0.5, -0.0, 0.0, -1.5, math.inf, -math.inf, 2.0, 0.5, -1e-40, 1e-40, -3.0]])
    got, order = descending_with_order(values)
    # Every value read back bit for bit (the subnormals and the zeros' signs too); equal values in increasing
    # column order (0.5 at columns 0 and 7); -0.0 just below +0.0.
    assert order[0].tolist() == [4, 6, 0, 7, 9, 2, 1, 8, 3, 10, 5]
    assert torch.equal(got.view(torch.int32), values[:, order[0]].view(torch.int32))


def test_descending_with_order_keeps_a_nan_visible():
    # A NaN is not dropped or turned into a number: it reaches the sorted values, so a loss built on them is NaN.
    got, order = descending_with_order(torch.tensor([[0.2, math.nan, 0.7]]))
    assert torch.isnan(got).sum() == 1 and sorted(order[0].tolist()) == [0, 1, 2]
    assert got[~torch.isnan(got)].tolist() == pytest.approx([0.7, 0.2])


def test_descending_with_order_on_several_threads_equals_one_thread_and_leaves_the_input_alone():
    # 64 x 20,000 entries: above the size at which the rows are split over threads, and several packed blocks.
    values = torch.rand(64, 20_000, generator=torch.Generator().manual_seed(3), requires_grad=True)
    before = values.detach().clone()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        split = descending_with_order(values)
        torch.set_num_threads(1)
        single = descending_with_order(values)
    finally:
        torch.set_num_threads(threads)
    expected = before.sort(dim=-1, descending=True).values
    for got, order in (split, single):
        assert not got.requires_grad and torch.equal(got, expected)
        assert torch.equal(before.gather(-1, order), expected)
    assert torch.equal(split[1], single[1])  # ties broken by column both times
    assert torch.equal(values.detach(), before)


def test_descending_with_order_of_a_strided_view():
    # A column slice of a wider tensor (how the losses pass a head or the unshared columns).
    wide = torch.randn(6, 40, generator=torch.Generator().manual_seed(4))
    view = wide[:, 5:30]
    got, order = descending_with_order(view)
    assert torch.equal(got, view.sort(dim=-1, descending=True).values)
    assert torch.equal(view.gather(-1, order), got)
