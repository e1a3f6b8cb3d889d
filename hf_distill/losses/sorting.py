"""Decreasing sorts of many long rows, the cost of the cross-vocabulary losses (ULD compares sorted vectors).

On CPU the rows go through NumPy's sort, whose vectorised quicksort (x86-simd-sort on AVX2 / AVX-512, Highway
on Arm) sorts a row of 50,000 float32 probabilities about 20 times faster than ``torch.sort`` (and
``torch.topk`` with ``k`` near the row length, which is a full sort too; numbers in ``benchmarks/README.md``);
the rows are split over ``torch.get_num_threads()`` threads, since NumPy releases the GIL while it sorts.
Elsewhere (CUDA, other dtypes) ``torch.sort``. Both give the same values: a sort is exact, only the order
of equal entries may differ, and equal entries are interchangeable in every use here.

The results carry no gradient: the losses gather the student's probabilities in the returned order
(:func:`descending_order`), and the gradient flows through that gather exactly as through ``torch.sort``.
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


def _by_row_blocks(rows: np.ndarray, work: Callable[[np.ndarray], np.ndarray], out: np.ndarray) -> None:
    """``out[i] = work(rows[i])`` for blocks of rows, on up to ``torch.get_num_threads()`` threads."""
    threads = min(torch.get_num_threads(), rows.shape[0])
    if threads <= 1 or rows.size < _PARALLEL_ENTRIES:
        out[...] = work(rows)
        return
    bounds = np.linspace(0, rows.shape[0], threads + 1).astype(int)
    blocks = [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

    def run(block: slice) -> None:
        out[block] = work(rows[block])

    with ThreadPoolExecutor(max_workers=len(blocks)) as pool:
        list(pool.map(run, blocks))


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
