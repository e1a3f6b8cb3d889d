"""Ragged rows of token ids (or labels, masks) padded into one ``(rows, width)`` tensor."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn.utils.rnn import pad_sequence


def pad_rows(rows: Sequence[Sequence[int]], value: int, *, left: bool = False) -> torch.Tensor:
    """``rows`` as a ``(len(rows), longest)`` long tensor filled with ``value``; ``left`` pads before each row
    (prompts a causal LM continues), else after it."""
    tensors = [torch.as_tensor(list(row), dtype=torch.long) for row in rows]
    if left:
        return pad_sequence([t.flip(0) for t in tensors], batch_first=True, padding_value=value).flip(1)
    return pad_sequence(tensors, batch_first=True, padding_value=value)
