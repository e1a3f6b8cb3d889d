"""Axolotl's knowledge-distillation dataset format, read and written: :func:`to_axolotl`, :func:`from_axolotl`.

Axolotl's KD plugin (``axolotl.integrations.kd``) trains from tokenized rows that carry, beside ``input_ids``,
``attention_mask`` and ``labels``, three per-position columns of ``k`` entries each (its collator pads them to
the batch, its top-k losses read them):

- ``target_token_ids`` ``(T, k)``: the teacher's top-k token ids at position ``j``;
- ``target_logprobs`` ``(T, k)``: their log-probabilities, already at the KD temperature and, by its offline
  preprocessing, renormalized over the top-k (its online path leaves them as the server returned them);
- ``target_mask`` ``(T, k)``: 1 where the position is trained, 0 where ``labels[j + 1] == -100`` and on
  padding rows (the last position, and positions before the teacher's coverage starts).

Row ``j`` is the distribution over ``input_ids[j + 1]``, as in our cache (:mod:`hf_distill.cache.interchange`).

Temperature and tail. Our cache is at one temperature ``T_c`` with the tail's mass. :func:`to_axolotl` writes
log-probabilities at ``T_c`` (or, renormalized, at any ``temperature``: the top-k's relative values rescale
exactly, ``p_T2 ~ p_T1 ** (T1 / T2)``, as Axolotl itself rescales them); ``normalize=True`` (Axolotl's
offline convention) drops the tail, ``normalize=False`` keeps true log-probabilities whose ``1 - sum exp`` is
the tail's mass. :func:`from_axolotl` reads the tail back as that remainder (zero for renormalized rows), so
``to_axolotl(normalize=False)`` then ``from_axolotl`` gives the cache back within float rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from datasets import Dataset

from hf_distill.cache.codec import TopkCodec
from hf_distill.cache.interchange import (
    IGNORE_INDEX,
    RowTopk,
    cache_columns,
    check_logprobs,
    check_topk_cache,
    log_softmax,
    placeholder,
    read_cache_rows,
    tail_from_logprobs,
)

TARGET_IDS, TARGET_LOGPROBS, TARGET_MASK = "target_token_ids", "target_logprobs", "target_mask"
AXOLOTL_COLUMNS = (TARGET_IDS, TARGET_LOGPROBS, TARGET_MASK)
# What Axolotl's collator pads a missing top-k entry with: a large negative log-probability, masked.
PAD_LOGPROB = -1.0e9


def axolotl_row(row: RowTopk, temperature: float | None, normalize: bool) -> dict[str, Any]:
    """One row of ours in Axolotl's columns."""
    logprobs = row.logprobs
    if normalize:
        rescale = 1.0 if temperature is None else row.temperature / temperature
        logprobs = log_softmax(logprobs * rescale)
    n, k = logprobs.shape
    trained = np.zeros(n, dtype=bool)
    trained[:-1] = row.labels[1:] != IGNORE_INDEX
    logprobs = np.where(trained[:, None], logprobs, PAD_LOGPROB)
    ids = np.where(trained[:, None], row.ids, np.arange(k))
    return {
        "input_ids": row.input_ids.tolist(),
        "attention_mask": row.attention_mask.tolist(),
        "labels": row.labels.tolist(),
        TARGET_IDS: ids.tolist(),
        TARGET_LOGPROBS: logprobs.astype(np.float32).tolist(),
        TARGET_MASK: np.repeat(trained[:, None], k, axis=1).astype(np.int64).tolist(),
    }


def to_axolotl(cache: Dataset, *, normalize: bool = True, temperature: float | None = None) -> Dataset:
    """Our top-k cache (compact or float32) as an Axolotl KD dataset.

    Args:
        cache: a same-tokenizer causal LM cache (``load_teacher_cache``, ``cache_teacher_outputs``).
        normalize: renormalize each position's top-k (Axolotl's offline convention; the tail is dropped).
            False writes the true log-probabilities at the cache's temperature (the tail is ``1 - sum exp``).
        temperature: the KD temperature to write the renormalized log-probabilities at (default: the
            cache's). Needs ``normalize=True``: the tail's mass at another temperature is not in the cache.

    Returns:
        A ``Dataset`` with ``input_ids``, ``attention_mask``, ``labels`` and Axolotl's ``target_*`` columns.
    """
    check_topk_cache(cache.column_names)
    if temperature is not None and not normalize:
        raise ValueError(
            f"temperature={temperature} with normalize=False: the tail's mass at another temperature than the "
            "cache's is not in the cache. Pass normalize=True (the top-k rescale exactly), or leave temperature "
            "out to write the cache's own."
        )
    if temperature is not None and not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}.")

    def convert(batch: dict[str, list]) -> dict[str, list]:
        rows = [axolotl_row(r, temperature, normalize) for r in read_cache_rows(batch)]
        return {name: [r[name] for r in rows] for name in rows[0]} if rows else {}

    return cache.map(convert, batched=True, batch_size=64, remove_columns=cache.column_names)


def cache_row_from_axolotl(row: dict[str, Any], temperature: float, where: str) -> RowTopk:
    """One Axolotl row as our row of log-probabilities (the tail from what the top-k leave)."""
    input_ids = np.asarray(row["input_ids"], dtype=np.int64)
    n = len(input_ids)
    ids = np.asarray(row[TARGET_IDS], dtype=np.int64)
    logprobs = np.asarray(row[TARGET_LOGPROBS], dtype=np.float64)
    mask = np.asarray(row[TARGET_MASK], dtype=np.int64)
    if not (ids.shape == logprobs.shape == mask.shape and ids.ndim == 2 and len(ids) == n):
        raise ValueError(
            f"{where}: target_token_ids {ids.shape}, target_logprobs {logprobs.shape} and target_mask "
            f"{mask.shape} must all be (T, k) with T = {n} input_ids (one row per input position)."
        )
    trained = mask.any(-1)
    if (mask[trained] == 0).any():
        raise ValueError(
            f"{where}: a trained position masks some of its top-k entries; this cache keeps the same k entries "
            "at every position. Write the dataset with one top-k size."
        )
    attention = np.asarray(row.get("attention_mask") or np.ones(n), dtype=np.int64)
    labels = row.get("labels")
    labels = input_ids.copy() if labels is None else np.asarray(labels, dtype=np.int64).copy()
    labels[1:][~trained[:-1]] = IGNORE_INDEX  # an untrained position is read by no loss here either
    fill_ids, fill_logprobs = placeholder(ids.shape[1])
    ids = np.where(trained[:, None], ids, fill_ids)
    logprobs = np.where(trained[:, None], logprobs, fill_logprobs)
    check_logprobs(logprobs, ids, where)
    tail = np.where(trained, tail_from_logprobs(logprobs), -np.inf)
    return RowTopk(input_ids, attention, labels, ids, logprobs, tail, temperature)


def from_axolotl(
    dataset: Dataset,
    *,
    temperature: float = 1.0,
    codec: TopkCodec | None = None,
    vocab_size: int | None = None,
) -> Dataset:
    """An Axolotl KD dataset as our cache, ready for ``DistillationTrainer(train_dataset=...)``.

    Args:
        dataset: tokenized rows with ``input_ids``, ``target_token_ids``, ``target_logprobs`` and
            ``target_mask`` (``labels`` / ``attention_mask`` optional).
        temperature: the temperature ``target_logprobs`` are at (the KD temperature Axolotl rescaled them to,
            or the teacher's sampling temperature, usually 1); training here must use it.
        codec: store the top-k compactly (:class:`hf_distill.cache.codec.TopkCodec`); None keeps float32.
        vocab_size: the teacher's output rows (needed with ``codec``).

    Returns:
        A ``Dataset`` with ``input_ids``, ``attention_mask``, ``labels`` and our top-k cache columns.
    """
    missing = [c for c in ("input_ids", *AXOLOTL_COLUMNS) if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The dataset lacks Axolotl's KD columns {missing} (it has {dataset.column_names}); from_axolotl reads "
            "tokenized rows as Axolotl's KD preprocessing writes them."
        )
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature}.")

    def convert(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        ours = [cache_row_from_axolotl(r, temperature, f"Row {i}") for r, i in zip(rows, indices)]
        return cache_columns(ours, codec=codec, vocab_size=vocab_size)

    return dataset.map(
        convert, batched=True, batch_size=64, with_indices=True, remove_columns=dataset.column_names
    )
