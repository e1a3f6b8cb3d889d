"""A same-tokenizer top-k cache as per-position log-probabilities, and back: the common ground of the formats
other tools use for a teacher's logits (:mod:`hf_distill.cache.axolotl`, :mod:`hf_distill.cache.distillkit`).

Our cache keeps, per position ``t`` of a row (the teacher's prediction of token ``t + 1``), the top-k raw
logits ``z_K`` (shifted by the row's maximum when compact), their ids and the tail logit at the cache's
temperature ``T``, so that ``softmax([z_K / T, tail])`` is the teacher's distribution coarsened to the
``k`` ids and "any other token". As log-probabilities that is

    logprob_i = z_i / T - lse,   tail_logprob = tail - lse,   lse = logsumexp([z_K / T, tail])

and back, from the log-probabilities ``l_i`` of the top-k at ``T`` and the log of the tail's mass:
``z_i = T * l_i`` and ``tail = tail_logprob`` (their log-sum-exp is 0). A format that keeps no tail gives it as
``1 - sum_i exp(l_i)`` (true log-probabilities, as vLLM returns them) or as zero (log-probabilities
renormalized over the top-k): both are read with :func:`tail_from_logprobs`.

Positions follow the causal LM convention every tool here shares: the target of position ``t`` is the
distribution over ``input_ids[t + 1]``; the last position has none. A position without a target gets a
placeholder (uniform over ids ``0..k-1``, no tail) and its next label becomes ``-100``, so no loss reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hf_distill.cache.build import INPUT_HASH, TAIL_LOGIT, TEMPERATURE, TOPK_INDICES, TOPK_LOGITS, input_hash
from hf_distill.cache.codec import TopkCodec
from hf_distill.cache.compact import SAME_TOKENIZER, decode_rows, encode_rows

IGNORE_INDEX = -100
# log 0 as a finite number: exp() of it is exactly 0 in float32 and float64, and T * it stays finite.
LOGPROB_FLOOR = -1.0e4


@dataclass
class RowTopk:
    """One row's teacher target as log-probabilities at ``temperature``: ``ids`` / ``logprobs`` ``(T, k)``,
    ``tail_logprob`` ``(T,)`` (log of the mass outside the top-k), aligned to ``input_ids`` ``(T,)``."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    logprobs: np.ndarray
    tail_logprob: np.ndarray
    temperature: float


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    return x - (top + np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True)))


def check_topk_cache(column_names: Sequence[str]) -> None:
    """Refuses a dataset that is not a same-tokenizer top-k cache (the only kind these formats describe)."""
    if SAME_TOKENIZER.codes not in column_names and TOPK_LOGITS not in column_names:
        raise ValueError(
            f"The dataset has no top-k teacher columns ({SAME_TOKENIZER.codes} or {TOPK_LOGITS}; it has "
            f"{list(column_names)}): other tools' logit datasets hold a causal LM's top-k in the student's own "
            "tokenization. Write the cache with top_k (hf-distill cache-teacher codegen --top_k K), without "
            "--teacher_tokenizer."
        )


def read_cache_rows(batch: dict[str, list]) -> list[RowTopk]:
    """The rows of a batch of our cache (compact or float32 columns) as log-probabilities."""
    rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
    if rows and SAME_TOKENIZER.codes in rows[0]:
        decode_rows(rows, SAME_TOKENIZER)
    out = []
    for row in rows:
        temperature = float(row[TEMPERATURE])
        scaled = np.asarray(row[TOPK_LOGITS], dtype=np.float64) / temperature
        tail = np.asarray(row[TAIL_LOGIT], dtype=np.float64)
        lse = np.logaddexp(np.logaddexp.reduce(scaled, axis=-1), tail)
        ids = np.asarray(row["input_ids"], dtype=np.int64)
        mask = np.asarray(row.get("attention_mask", np.ones_like(ids)), dtype=np.int64)
        labels = row.get("labels")
        labels = np.where(mask == 1, ids, IGNORE_INDEX) if labels is None else np.asarray(labels, np.int64)
        out.append(
            RowTopk(
                ids,
                mask,
                labels,
                np.asarray(row[TOPK_INDICES], dtype=np.int64),
                scaled - lse[:, None],
                tail - lse,
                temperature,
            )
        )
    return out


def tail_from_logprobs(logprobs: np.ndarray) -> np.ndarray:
    """The log of the mass outside the top-k, ``log(1 - sum exp(l))`` per position (:data:`LOGPROB_FLOOR`
    where the top-k already holds all of it: renormalized log-probabilities)."""
    mass = 1.0 - np.exp(np.logaddexp.reduce(np.asarray(logprobs, np.float64), axis=-1))
    with np.errstate(divide="ignore"):
        return np.where(mass > 0, np.log(np.maximum(mass, 1e-300)), LOGPROB_FLOOR)


def placeholder(k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ids and log-probabilities of a position without a target (no loss reads it)."""
    return np.arange(k, dtype=np.int64), np.full(k, -np.log(k))


def check_logprobs(logprobs: np.ndarray, ids: np.ndarray, where: str) -> None:
    """Refuses NaN or positive log-probabilities, a target with no finite entry, and repeated ids."""
    if np.isnan(logprobs).any() or (logprobs > 1e-4).any():
        raise FloatingPointError(
            f"{where} holds NaN or positive log-probabilities: the teacher's target is broken. Check how the "
            "dataset was written (log-probabilities are <= 0)."
        )
    if (~np.isfinite(logprobs)).all(-1).any():
        raise ValueError(f"{where}: a position's top-k log-probabilities are all -inf; mask that position.")
    ordered = np.sort(ids, axis=-1)
    if ids.shape[-1] > 1 and (np.diff(ordered, axis=-1) == 0).any():
        raise ValueError(f"{where}: a position repeats a token id in its top-k; top-k ids are distinct.")


def cache_columns(
    rows: list[RowTopk], *, codec: TopkCodec | None, vocab_size: int | None
) -> dict[str, list[Any]]:
    """Our cache's columns for rows of log-probabilities (float32, or compact with ``codec``)."""
    if codec is not None and vocab_size is None:
        raise ValueError("codec= needs vocab_size= (the teacher's output rows) to store the ids compactly.")
    out: dict[str, list[Any]] = {
        "input_ids": [r.input_ids.tolist() for r in rows],
        "attention_mask": [r.attention_mask.tolist() for r in rows],
        "labels": [r.labels.tolist() for r in rows],
        INPUT_HASH: [input_hash(r.input_ids, r.attention_mask) for r in rows],
        TEMPERATURE: [float(r.temperature) for r in rows],
    }
    values = [(r.temperature * np.maximum(r.logprobs, LOGPROB_FLOOR)).astype(np.float32) for r in rows]
    tails = [np.maximum(r.tail_logprob, LOGPROB_FLOOR).astype(np.float32) for r in rows]
    indices = [r.ids.astype(np.int32) for r in rows]
    if codec is None:
        out.update({TOPK_LOGITS: values, TOPK_INDICES: indices, TAIL_LOGIT: tails})
        return out
    temperatures = {r.temperature for r in rows}
    for temperature in temperatures:  # one encode per temperature (a dataset has one)
        chosen = [i for i, r in enumerate(rows) if r.temperature == temperature]
        encoded = encode_rows(
            codec,
            SAME_TOKENIZER,
            ([values[i] for i in chosen], [indices[i] for i in chosen], [tails[i] for i in chosen]),
            temperature,
            vocab_size,
        )
        for name, column in encoded.items():
            out.setdefault(name, [None] * len(rows))
            for i, value in zip(chosen, column):
                out[name][i] = value
    return out
