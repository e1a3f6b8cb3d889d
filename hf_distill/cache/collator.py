"""Batching rows that carry the teacher's columns: :class:`TeacherColumnsCollator` wraps the model's collator, decodes
compact top-k codes and pads every per-position column with the batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hf_distill.cache.build import (
    CACHE_COLUMNS,
    INPUT_HASH,
    STRING_COLUMNS,
    TEACHER_LOGITS,
    TEMPERATURE,
    XTOK_ENDS,
    XTOK_POSITION_COLUMNS,
)
from hf_distill.cache.compact import CROSS_TOKENIZER, SAME_TOKENIZER, decode_rows


class TeacherColumnsCollator:
    """Wraps a data collator so rows carrying the teacher's columns (:data:`CACHE_COLUMNS`) can be batched:
    a teacher cache (float32, or compact and decoded here), and the raw text and offsets of cross-tokenizer
    batches, cache or not.

    The cache columns are taken out of each row (compact codes decoded to float32 first), the wrapped
    collator batches the rest (padding ``input_ids`` as usual), and each cache column is padded along its
    first (position) dimension to the batch's ``input_ids`` length on the tokenizer's padding side, then
    stacked (a cross-tokenizer cache's teacher positions: to the longest teacher row).

    Args:
        collator (Callable[[list[dict]], dict]): batches the rest of each row, e.g.
            ``DataCollatorWithPadding(tokenizer)``; the batch gains each cache column as ``(B, T, ...)``.
        padding_side (str): ``"right"`` (default) or ``"left"``, the tokenizer's ``padding_side``, so cached
            positions stay aligned with their tokens; anything else is a ValueError.
    """

    def __init__(self, collator: Any, padding_side: str = "right"):
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
        self.collator = collator
        self.padding_side = padding_side

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        for columns in (SAME_TOKENIZER, CROSS_TOKENIZER):
            if columns.codes in features[0]:  # a compact cache: decoded to the float32 columns first
                decode_rows(features, columns)
        present = [name for name in CACHE_COLUMNS if name in features[0]]
        strings = {name: [f.pop(name) for f in features] for name in present if name in STRING_COLUMNS}
        cached = {
            name: [torch.as_tensor(np.asarray(f.pop(name))) for f in features]
            for name in present
            if name not in STRING_COLUMNS
        }
        batch = self.collator(features)
        length = batch["input_ids"].shape[1] if "input_ids" in batch else None
        for name, values in cached.items():
            if name in XTOK_POSITION_COLUMNS:
                # Teacher positions: right-padded to the longest teacher row; padded ends are -1.
                width = max(v.shape[0] for v in values)
                fill = -1 if name == XTOK_ENDS else 0
                values = [
                    torch.cat([v, v.new_full((width - v.shape[0], *v.shape[1:]), fill)]) for v in values
                ]
            elif values[0].dim() >= 1 and length is not None and name not in (TEMPERATURE, INPUT_HASH):
                values = [self._pad_positions(v, length, name) for v in values]
            batch[name] = torch.stack(values)
        batch.update(strings)
        return batch

    def _pad_positions(self, value: torch.Tensor, length: int, name: str) -> torch.Tensor:
        if name == TEACHER_LOGITS and value.dim() == 1:
            return value  # sequence classification: one row of class logits, no positions
        missing = length - value.shape[0]
        if missing <= 0:
            return value[:length]
        pad = value.new_zeros((missing, *value.shape[1:]))
        return torch.cat([value, pad] if self.padding_side == "right" else [pad, value])


# The collator's name when it batched cache columns only; the same class (public in ``hf_distill.__all__``).
TeacherCacheCollator = TeacherColumnsCollator
