"""Decreasing sorts of many long rows, the cost of the cross-vocabulary losses (ULD compares sorted vectors).

On CPU the rows go through NumPy's sort, whose vectorised quicksort (x86-simd-sort on AVX2 / AVX-512, Highway
on Arm) sorts a row of 50,000 float32 probabilities about 20 times faster than ``torch.sort`` (and
``torch.topk`` with ``k`` near the row length, which is a full sort too; numbers in ``benchmarks/README.md``);
the rows are split over ``torch.get_num_threads()`` threads, since NumPy releases the GIL while it sorts.
Elsewhere (CUDA, other dtypes) ``torch.sort``. Both give the same values: a sort is exact, only the order
of equal entries may differ, and equal entries are interchangeable in every use here.

The results carry no gradient: the losses take the student's sorted probabilities with their order
(:func:`descending_with_order`) and send the gradient back through that order, exactly as through
``torch.sort``.

Values and order together (:func:`descending_with_order`): NumPy's argsort of a float32 row is not vectorised
like its sort (about 4 times the sort's time on 50,257 entries), so each float32 value and its column are
packed into one int64 key, the value's bits (mapped to a signed integer of the same order, then inverted for a
decreasing sort) above the column, and the keys go through the vectorised int64 sort: the sorted values are
the keys' upper halves read back, bit for bit, the order their lower halves, equal values in increasing
column order. One sort of 8-byte keys costs about a third of the argsort, and no gather follows it.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

_NUMPY_DTYPES = (torch.float32, torch.float64)
# Below this many entries the thread hand-off costs more than it saves.
_PARALLEL_ENTRIES = 1 << 20


def _uses_numpy(values: torch.Tensor) -> bool:
    return values.device.type == "cpu" and values.dtype in _NUMPY_DTYPES and values.dim() >= 1


def _over_row_blocks(rows: int, entries: int, work: Callable[[slice], None]) -> None:
    """``work(block)`` for blocks of ``rows`` rows (``entries`` in all), on up to ``torch.get_num_threads()``
    threads."""
    threads = min(torch.get_num_threads(), rows)
    if threads <= 1 or entries < _PARALLEL_ENTRIES:
        work(slice(0, rows))
        return
    bounds = np.linspace(0, rows, threads + 1).astype(int)
    blocks = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]
    with ThreadPoolExecutor(max_workers=len(blocks)) as pool:
        list(pool.map(work, blocks))


def _by_row_blocks(rows: np.ndarray, work: Callable[[np.ndarray], np.ndarray], out: np.ndarray) -> None:
    """``out[i] = work(rows[i])`` for blocks of rows, on up to ``torch.get_num_threads()`` threads."""

    def run(block: slice) -> None:
        out[block] = work(rows[block])

    _over_row_blocks(rows.shape[0], rows.size, run)


def descending(values: torch.Tensor) -> torch.Tensor:
    """``values`` sorted decreasingly along the last dimension, without gradient.

    Args:
        values (Tensor): ``(..., L)``, any float dtype and device.

    Returns:
        Tensor: ``(..., L)``, the same dtype and device, each row decreasing.
    """
    values = values.detach()
    if not _uses_numpy(values) or values.shape[-1] <= 1:
        return values.sort(dim=-1, descending=True).values
    # NumPy sorts increasingly: sort the negated rows, then negate back (negation is exact).
    negated = np.negative(values.reshape(-1, values.shape[-1]).numpy())
    _by_row_blocks(negated, lambda rows: np.sort(rows, axis=-1), negated)
    np.negative(negated, out=negated)
    return torch.from_numpy(negated).reshape(values.shape)


def descending_order(values: torch.Tensor) -> torch.Tensor:
    """The indices that sort ``values`` decreasingly along the last dimension (``argsort``), int64.

    Args:
        values (Tensor): ``(..., L)``, any float dtype and device.

    Returns:
        Tensor: ``(..., L)`` int64 on ``values``' device: ``values.gather(-1, order)`` is decreasing.
    """
    values = values.detach()
    if not _uses_numpy(values) or values.shape[-1] <= 1:
        return values.sort(dim=-1, descending=True).indices
    negated = np.negative(values.reshape(-1, values.shape[-1]).numpy())
    order = np.empty(negated.shape, dtype=np.int64)
    _by_row_blocks(negated, lambda rows: np.argsort(rows, axis=-1), order)
    return torch.from_numpy(order).reshape(values.shape)


# Rows packed and sorted at a time inside a thread's block: the int32 / int64 temporaries stay a few MiB.
_PACKED_ROWS = 16
_MAGNITUDE = 0x7FFFFFFF
_LOW_HALF = 0xFFFFFFFF


def _order_preserving(bits: np.ndarray) -> np.ndarray:
    """Flips the magnitude bits of negative float32 bit patterns in place (an involution): as int32, the
    result orders like the floats (-0.0 just below +0.0)."""
    flip = bits >> 31
    flip &= _MAGNITUDE
    bits ^= flip
    return bits


def _packed_sort(values: np.ndarray, sorted_out: np.ndarray, order_out: np.ndarray) -> None:
    """``sorted_out`` = each row of float32 ``values`` decreasing, ``order_out`` (int64) its columns."""
    columns = np.arange(values.shape[-1], dtype=np.int64)
    for start in range(0, values.shape[0], _PACKED_ROWS):
        rows = slice(start, start + _PACKED_ROWS)
        key = order_out[rows]
        high = _order_preserving(values[rows].view(np.int32).copy())
        np.invert(high, out=high)  # the largest value gets the smallest key
        np.left_shift(high, 32, out=key, dtype=np.int64)
        key |= columns
        key.sort(axis=-1)
        high = (key >> 32).astype(np.int32)
        np.invert(high, out=high)
        sorted_out[rows] = _order_preserving(high).view(np.float32)
        key &= _LOW_HALF


def descending_with_order(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``values`` sorted decreasingly along the last dimension and the indices that sort it, without gradient:
    ``values.sort(dim=-1, descending=True)`` (the same values; equal values may come in another order).

    Args:
        values (Tensor): ``(..., L)``, any float dtype and device.

    Returns:
        tuple[Tensor, Tensor]: ``(sorted, order)``, ``sorted (..., L)`` in ``values``' dtype and device, each
        row decreasing and equal to ``values.gather(-1, order)``; ``order (..., L)`` int64.
    """
    values = values.detach()
    if (
        values.device.type != "cpu"
        or values.dtype != torch.float32
        or values.dim() == 0
        or values.numel() == 0
        or values.shape[-1] >= 1 << 32  # the packed key keeps a column in 32 bits
    ):
        return values.sort(dim=-1, descending=True, stable=False)
    rows = values.reshape(-1, values.shape[-1]).numpy()
    sorted_rows = np.empty(rows.shape, dtype=np.float32)
    order = np.empty(rows.shape, dtype=np.int64)

    def work(block: slice) -> None:
        _packed_sort(rows[block], sorted_rows[block], order[block])

    _over_row_blocks(rows.shape[0], rows.size, work)
    return torch.from_numpy(sorted_rows).reshape(values.shape), torch.from_numpy(order).reshape(values.shape)
