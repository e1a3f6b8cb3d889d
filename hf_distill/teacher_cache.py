"""Offline teacher signal: run the teacher once, store its outputs as ``datasets`` columns, train from them.

:func:`cache_teacher_outputs` adds to a tokenized dataset

- classification / NER: ``teacher_logits``, the full logits of each row (``(C,)`` or ``(T, C)``): training
  from them is the same as training with the live teacher;
- causal LM: ``teacher_topk_logits`` and ``teacher_topk_indices`` ``(T, k)``, ``teacher_tail_logit`` ``(T,)``
  and ``teacher_temperature``: the ``k`` largest raw logits per position and one pseudo-logit for all the
  other tokens (see :func:`hf_distill.topk_losses.per_position_topk`);
- always ``teacher_input_hash``: a hash of the row's attended ``input_ids``, so the trainer can tell a cache
  made for other data (another tokenizer, ``max_length`` or split) and refuse it.

The result is an ordinary ``Dataset``: ``save_to_disk`` / ``load_from_disk`` and ``push_to_hub`` work on it.

The top-k loss these columns feed is in :mod:`hf_distill.topk_losses`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from .model_kind import CAUSAL_LM, SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, detect_task
from .topk_losses import topk_teacher

TEACHER_LOGITS = "teacher_logits"
TOPK_LOGITS, TOPK_INDICES, TAIL_LOGIT = "teacher_topk_logits", "teacher_topk_indices", "teacher_tail_logit"
TEMPERATURE, INPUT_HASH = "teacher_temperature", "teacher_input_hash"
CACHE_COLUMNS = (TEACHER_LOGITS, TOPK_LOGITS, TOPK_INDICES, TAIL_LOGIT, TEMPERATURE, INPUT_HASH)
TASKS = (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, CAUSAL_LM)


# ---- fingerprints -------------------------------------------------------------------------------------------


def input_hash(input_ids: Sequence[int], attention_mask: Sequence[int] | None = None) -> int:
    """A signed 64-bit hash of the attended token ids of one row (padding is left out, so a padded batch
    row hashes like the unpadded dataset row)."""
    ids = np.asarray(input_ids, dtype=np.int64)
    if attention_mask is not None:
        ids = ids[np.asarray(attention_mask, dtype=bool)]
    digest = hashlib.blake2b(ids.tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def batch_input_hashes(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> list[int]:
    """:func:`input_hash` of each row of a batch ``(B, T)``."""
    ids = input_ids.detach().cpu().numpy()
    mask = None if attention_mask is None else attention_mask.detach().cpu().numpy()
    return [input_hash(row, None if mask is None else mask[i]) for i, row in enumerate(ids)]


def check_cache_matches(batch: dict[str, Any]) -> None:
    """Raises when the cached teacher outputs in ``batch`` were computed for other inputs."""
    if INPUT_HASH not in batch or "input_ids" not in batch:
        return
    expected = [int(h) for h in torch.as_tensor(batch[INPUT_HASH]).reshape(-1).tolist()]
    found = batch_input_hashes(batch["input_ids"], batch.get("attention_mask"))
    if expected != found:
        bad = sum(e != f for e, f in zip(expected, found))
        raise ValueError(
            f"{bad} of {len(found)} rows of this batch have input_ids that differ from those the teacher cache "
            "was computed on (teacher_input_hash); the cached teacher outputs belong to other data (another "
            "tokenizer, max_length or split). Re-run cache_teacher_outputs on exactly this dataset."
        )


# ---- computing the cache ------------------------------------------------------------------------------------


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def check_cache_request(
    dataset: Dataset, task: str, top_k: int | None, temperature: float, batch_size: int
) -> None:
    """Refuses, before the teacher runs, a request :func:`cache_teacher_outputs` cannot serve."""
    if task not in TASKS:
        raise ValueError(
            f"task={task!r}: the teacher cache supports {TASKS}; pass task= for a teacher whose class name "
            "does not say its task."
        )
    if "input_ids" not in dataset.column_names:
        raise ValueError(
            f"The dataset has no `input_ids` column (it has {dataset.column_names}); tokenize it first, the "
            "same way as for training."
        )
    if len(dataset) == 0:
        raise ValueError("The dataset is empty, so there is nothing to cache; check the split and filters.")
    if task == "causal_lm" and (top_k is None or top_k < 1):
        raise ValueError(
            f"top_k={top_k}: a causal LM's full logits (vocabulary x positions per row) are too large to store, "
            "so the cache keeps the top-k per position; pass top_k >= 1 (e.g. 64)."
        )
    if task != "causal_lm" and top_k is not None:
        raise ValueError(
            f"top_k={top_k} was given for a {task} teacher, whose full logits are small and stored whole; "
            "leave top_k unset."
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    clashing = [c for c in CACHE_COLUMNS if c in dataset.column_names]
    if clashing:
        raise ValueError(
            f"The dataset already has teacher cache columns {clashing}; remove them first "
            "(dataset.remove_columns(...)) so old and new outputs are not mixed."
        )


def cache_teacher_outputs(
    teacher: nn.Module,
    dataset: Dataset,
    *,
    task: str | None = None,
    top_k: int | None = None,
    temperature: float = 1.0,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    """Runs ``teacher`` once over ``dataset`` and returns it with the teacher's outputs as columns.

    Args:
        teacher: a sequence / token classification or causal LM model.
        dataset: tokenized rows (``input_ids``, optional ``attention_mask`` / ``token_type_ids``), variable
            length allowed: rows are right-padded per batch and the outputs cut back to each row's length.
        task: ``"sequence_classification"``, ``"token_classification"`` or ``"causal_lm"``; default from the
            teacher's class.
        top_k: causal LM only (required there): how many logits per position to keep (``>= V`` keeps all
            and makes the cache exact).
        temperature: the distillation temperature the top-k tail is computed at; training must use the same.
        batch_size: rows per teacher forward pass.
        device: where the teacher runs; default the teacher's device.
        dtype: storage dtype of the cached logits.

    Returns:
        ``dataset`` plus the columns described in the module docstring.
    """
    task = task or detect_task(teacher)
    check_cache_request(dataset, task, top_k, temperature, batch_size)
    device = torch.device(device) if device is not None else next(teacher.parameters()).device
    was_training = teacher.training
    teacher.eval()

    def run(batch: dict[str, list]) -> dict[str, list]:
        lengths = [len(ids) for ids in batch["input_ids"]]
        masks = batch.get("attention_mask") or [[1] * n for n in lengths]
        inputs = {"input_ids": _pad(batch["input_ids"], 0), "attention_mask": _pad(masks, 0)}
        if "token_type_ids" in batch:
            inputs["token_type_ids"] = _pad(batch["token_type_ids"], 0)
        with torch.inference_mode():
            logits = teacher(**{k: v.to(device) for k, v in inputs.items()}).logits
        out: dict[str, list] = {INPUT_HASH: [input_hash(ids, m) for ids, m in zip(batch["input_ids"], masks)]}
        if task == "sequence_classification":
            out[TEACHER_LOGITS] = list(logits.to(dtype).cpu().numpy())
        elif task == "token_classification":
            out[TEACHER_LOGITS] = [row[:n] for row, n in zip(logits.to(dtype).cpu().numpy(), lengths)]
        else:
            values, indices, tail = topk_teacher(logits, top_k, temperature=temperature)
            values, indices = values.to(dtype).cpu().numpy(), indices.to(torch.int32).cpu().numpy()
            tail = tail.float().cpu().numpy()
            out[TOPK_LOGITS] = [v[:n] for v, n in zip(values, lengths)]
            out[TOPK_INDICES] = [i[:n] for i, n in zip(indices, lengths)]
            out[TAIL_LOGIT] = [t[:n] for t, n in zip(tail, lengths)]
            out[TEMPERATURE] = [float(temperature)] * len(lengths)
        return out

    try:
        # new_fingerprint: otherwise `datasets` would hash the teacher's weights to name the cache file.
        fingerprint = hashlib.blake2b(
            f"{dataset._fingerprint}-{type(teacher).__name__}-{id(teacher)}-{task}-{top_k}-{temperature}".encode(),
            digest_size=8,
        ).hexdigest()
        return dataset.map(run, batched=True, batch_size=batch_size, new_fingerprint=fingerprint)
    finally:
        teacher.train(was_training)


def cached_teacher_kind(column_names: Sequence[str]) -> str | None:
    """``"logits"``, ``"topk"`` or None: which teacher cache a dataset (or batch) carries."""
    if TEACHER_LOGITS in column_names:
        return "logits"
    if TOPK_LOGITS in column_names:
        return "topk"
    return None


class TeacherCacheCollator:
    """Wraps a data collator so rows carrying teacher cache columns can be batched.

    The cache columns are taken out of each row, the wrapped collator batches the rest (padding
    ``input_ids`` as usual), and each cache column is padded along its first (position) dimension to the
    batch's ``input_ids`` length on the tokenizer's padding side, then stacked.
    """

    def __init__(self, collator: Any, padding_side: str = "right"):
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
        self.collator = collator
        self.padding_side = padding_side

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        cached = {
            name: [torch.as_tensor(np.asarray(f.pop(name))) for f in features]
            for name in CACHE_COLUMNS
            if name in features[0]
        }
        batch = self.collator(features)
        length = batch["input_ids"].shape[1] if "input_ids" in batch else None
        for name, values in cached.items():
            if values[0].dim() >= 1 and length is not None and name not in (TEMPERATURE, INPUT_HASH):
                values = [self._pad_positions(v, length, name) for v in values]
            batch[name] = torch.stack(values)
        return batch

    def _pad_positions(self, value: torch.Tensor, length: int, name: str) -> torch.Tensor:
        if name == TEACHER_LOGITS and value.dim() == 1:
            return value  # sequence classification: one row of class logits, no positions
        missing = length - value.shape[0]
        if missing <= 0:
            return value[:length]
        pad = value.new_zeros((missing, *value.shape[1:]))
        return torch.cat([value, pad] if self.padding_side == "right" else [pad, value])
