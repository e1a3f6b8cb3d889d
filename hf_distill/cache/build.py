"""Offline teacher signal: run the teacher once, store its outputs as ``datasets`` columns, train from them.

:func:`cache_teacher_outputs` adds to a tokenized dataset

- classification / NER: ``teacher_logits``, the full logits of each row (``(C,)`` or ``(T, C)``): training
  from them is the same as training with the live teacher;
- causal LM: ``teacher_topk_logits`` and ``teacher_topk_indices`` ``(T, k)``, ``teacher_tail_logit`` ``(T,)``
  and ``teacher_temperature``: the ``k`` largest raw logits per position and one pseudo-logit for all the
  other tokens (see :func:`hf_distill.losses.topk.per_position_topk`);
- always ``teacher_input_hash``: a hash of the row's attended ``input_ids``, so the trainer can tell a cache
  made for other data (another tokenizer, ``max_length`` or split) and refuse it;
- cross-tokenizer (``teacher_tokenizer=`` given, causal LM): the teacher tokenizes the row's text column
  (``distill_text``) itself, and per *teacher* position the cache keeps ``xtok_teacher_topk_logits`` /
  ``xtok_teacher_topk_indices`` ``(T_t, k)``, ``xtok_teacher_tail_logit`` ``(T_t,)``, the tokens' UTF-8 byte
  ends ``xtok_teacher_ends`` (:func:`hf_distill.token_alignment.byte_ends`) and special flags ``xtok_teacher_special`` ``(T_t,)``, plus ``xtok_teacher_temperature``,
  the teacher tokenizer's name and fingerprint and a hash of the text. No student tokenization is involved,
  so one cache serves students of any tokenizer: :class:`hf_distill.teachers.cross_tokenizer.CrossTokenizerTeacher`
  aligns it to the student's positions when each batch is loaded, and refuses it for another text or
  another teacher tokenizer.

With ``codec=`` (:class:`hf_distill.cache.codec.TopkCodec`) a causal LM's top-k is stored compactly instead
(``<prefix>topk_ids_lo`` / ``topk_ids_hi`` / ``topk_codes`` / ``tail_rel`` / ``topk_codec``, see
:mod:`hf_distill.cache.compact`), a fraction of the float32 columns' bytes (sizes and loss errors measured in
``benchmarks/README.md``, "The compact teacher cache").
:class:`TeacherColumnsCollator` decodes such rows back to the float32 columns, so training reads both formats.
:func:`hf_distill.cache.writer.write_teacher_cache` writes either format in Parquet shards as the teacher runs.

The result is an ordinary ``Dataset``: ``save_to_disk`` / ``load_from_disk`` and ``push_to_hub`` work on it.

The top-k loss these columns feed is in :mod:`hf_distill.losses.topk`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch import nn

from hf_distill.cache.codec import TopkCodec
from hf_distill.cache.compact import CROSS_TOKENIZER, SAME_TOKENIZER, encode_rows
from hf_distill.losses.topk import topk_teacher
from hf_distill.model_kind import CAUSAL_LM, SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, detect_head_kind
from hf_distill.token_alignment import (
    OFFSETS_COLUMN,
    TEXT_COLUMN,
    encode_for_alignment,
    require_offsets,
    tokenizer_fingerprint,
)
from hf_distill.training.padding import pad_rows

TEACHER_LOGITS = "teacher_logits"
TOPK_LOGITS, TOPK_INDICES, TAIL_LOGIT = "teacher_topk_logits", "teacher_topk_indices", "teacher_tail_logit"
TEMPERATURE, INPUT_HASH = "teacher_temperature", "teacher_input_hash"
XTOK_TOPK_LOGITS, XTOK_TOPK_INDICES = "xtok_teacher_topk_logits", "xtok_teacher_topk_indices"
XTOK_TAIL_LOGIT, XTOK_ENDS, XTOK_SPECIAL = (
    "xtok_teacher_tail_logit",
    "xtok_teacher_ends",
    "xtok_teacher_special",
)
XTOK_TEMPERATURE, XTOK_TEXT_HASH = "xtok_teacher_temperature", "xtok_text_hash"
XTOK_TOKENIZER, XTOK_FINGERPRINT = "xtok_teacher_tokenizer", "xtok_teacher_fingerprint"
# Per teacher position: padded to the batch's longest teacher row, not to the student's input_ids.
XTOK_POSITION_COLUMNS = (XTOK_TOPK_LOGITS, XTOK_TOPK_INDICES, XTOK_TAIL_LOGIT, XTOK_ENDS, XTOK_SPECIAL)
XTOK_COLUMNS = (*XTOK_POSITION_COLUMNS, XTOK_TEMPERATURE, XTOK_TEXT_HASH, XTOK_TOKENIZER, XTOK_FINGERPRINT)
# Every column a cross-tokenizer cache may hold, float32 or compact (:mod:`hf_distill.cache.compact`).
XTOK_ALL_COLUMNS = (*XTOK_COLUMNS, *CROSS_TOKENIZER.stored)
# Columns a batch carries for the teacher source rather than for the model's forward (the trainer keeps them).
CACHE_COLUMNS = (
    TEACHER_LOGITS,
    TOPK_LOGITS,
    TOPK_INDICES,
    TAIL_LOGIT,
    TEMPERATURE,
    INPUT_HASH,
    TEXT_COLUMN,
    OFFSETS_COLUMN,
    *SAME_TOKENIZER.stored,
    *XTOK_ALL_COLUMNS,
)
STRING_COLUMNS = (TEXT_COLUMN, XTOK_TOKENIZER, XTOK_FINGERPRINT)
TASKS = (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, CAUSAL_LM)


# ---- fingerprints -------------------------------------------------------------------------------------------


def input_hash(input_ids: Sequence[int], attention_mask: Sequence[int] | None = None) -> int:
    """A signed 64-bit hash of the attended token ids of one row (padding is left out, so a padded batch
    row hashes like the unpadded dataset row)."""
    ids = np.asarray(input_ids, dtype=np.int64)
    if attention_mask is not None:
        ids = ids[np.asarray(attention_mask, dtype=bool)]
    return hash64(ids.tobytes())


def hash64(data: bytes) -> int:
    """A signed 64-bit BLAKE2b hash (fits an int64 dataset column)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def text_hash(text: str) -> int:
    """A signed 64-bit hash of a text's UTF-8 bytes (the cross-tokenizer cache's ``xtok_text_hash``)."""
    return hash64(text.encode("utf-8"))


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


def topk_rows(
    logits: torch.Tensor, lengths: Sequence[int], top_k: int, temperature: float, dtype: torch.dtype
) -> tuple[list, list, list]:
    """The top-k cache of a right-padded batch of logits ``(B, T, V)``, cut back to each row's length: top-k
    logits (``dtype``), their ids (int32) and the tail logit (float32), one array per row."""
    values, indices, tail = topk_teacher(logits, top_k, temperature=temperature)
    values, indices = values.to(dtype).cpu().numpy(), indices.to(torch.int32).cpu().numpy()
    tail = tail.float().cpu().numpy()
    return (
        [v[:n] for v, n in zip(values, lengths)],
        [i[:n] for i, n in zip(indices, lengths)],
        [t[:n] for t, n in zip(tail, lengths)],
    )


def check_cached_temperature(cached: Any, temperature: float, kind: str) -> None:
    """A top-k cache's tail mass depends on the temperature it was computed at: training must use it."""
    cached_temperature = float(torch.as_tensor(cached).reshape(-1)[0])
    if abs(cached_temperature - temperature) > 1e-6:
        raise ValueError(
            f"The {kind} was computed at temperature {cached_temperature}, but training uses "
            f"temperature={temperature}: the cached tail mass depends on it. Re-cache at "
            f"temperature {temperature} or train at {cached_temperature}."
        )


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
    if task != CAUSAL_LM and top_k is not None:
        raise ValueError(
            f"top_k={top_k} was given for a {task} teacher, whose full logits are small and stored whole; "
            "leave top_k unset."
        )
    check_cache_settings(dataset, task, top_k, temperature, batch_size, CACHE_COLUMNS, "teacher cache")


def check_cache_settings(
    dataset: Dataset,
    task: str,
    top_k: int | None,
    temperature: float,
    batch_size: int,
    columns: Sequence[str],
    kind: str,
) -> None:
    """What both caches (same tokenizer and cross-tokenizer) require: rows, a top-k for a causal LM, a
    positive temperature and batch size, and no cache columns of ``kind`` already there."""
    if len(dataset) == 0:
        raise ValueError("The dataset is empty, so there is nothing to cache; check the split and filters.")
    if task == CAUSAL_LM and (top_k is None or top_k < 1):
        raise ValueError(
            f"top_k={top_k}: a causal LM's full logits (vocabulary x positions per row) are too large to store, "
            "so the cache keeps the top-k per position; pass top_k >= 1 (e.g. 64)."
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    clashing = [c for c in columns if c in dataset.column_names]
    if clashing:
        raise ValueError(
            f"The dataset already has {kind} columns {clashing}; remove them first "
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
    teacher_tokenizer: Any = None,
    text_column: str = TEXT_COLUMN,
    codec: TopkCodec | None = None,
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
        teacher_tokenizer, text_column: a cross-tokenizer cache (causal LM): the teacher tokenizes the raw
            texts of ``text_column`` itself, and students of any tokenizer train from the result.
        codec: causal LM only: store the top-k compactly (:class:`hf_distill.cache.codec.TopkCodec`; sizes in
            ``benchmarks/README.md``) instead of float32 logits and int32 ids. For a cache larger than
            memory, write it in shards with :func:`hf_distill.cache.writer.write_teacher_cache`.

    Returns:
        ``dataset`` plus the columns described in the module docstring.
    """
    task = task or detect_head_kind(teacher)
    check_cache_inputs(dataset, task, top_k, temperature, batch_size, codec, teacher_tokenizer, text_column)
    device = torch.device(device) if device is not None else next(teacher.parameters()).device
    settings = (task, top_k, temperature, device, dtype, codec)
    if teacher_tokenizer is not None:
        run = cross_tokenizer_batch_fn(teacher, teacher_tokenizer, text_column, *settings)
        key = f"xtok-{tokenizer_fingerprint(teacher_tokenizer)}"
    else:
        run, key = teacher_batch_fn(teacher, *settings), task
    was_training = teacher.training
    teacher.eval()
    try:
        # new_fingerprint: otherwise `datasets` would hash the teacher's weights to name the cache file.
        fingerprint = hashlib.blake2b(
            f"{dataset._fingerprint}-{type(teacher).__name__}-{id(teacher)}-{key}-{top_k}-{temperature}-"
            f"{codec}".encode(),
            digest_size=8,
        ).hexdigest()
        return dataset.map(run, batched=True, batch_size=batch_size, new_fingerprint=fingerprint)
    finally:
        teacher.train(was_training)


def check_cache_inputs(
    dataset: Any,
    task: str,
    top_k: int | None,
    temperature: float,
    batch_size: int,
    codec: Any,
    teacher_tokenizer: Any = None,
    text_column: str = TEXT_COLUMN,
) -> None:
    """Every refusal of a cache request, in memory or in shards, before the teacher runs: the dataset and
    settings (same-tokenizer or, with ``teacher_tokenizer``, cross-tokenizer) and the codec."""
    if teacher_tokenizer is not None:
        check_cross_tokenizer_request(
            dataset, teacher_tokenizer, text_column, task, top_k, temperature, batch_size
        )
    else:
        check_cache_request(dataset, task, top_k, temperature, batch_size)
    check_codec(codec, task)


def check_codec(codec: Any, task: str) -> None:
    """A codec is a :class:`TopkCodec`, and only for a causal LM's top-k cache."""
    if codec is None:
        return
    if not isinstance(codec, TopkCodec):
        raise TypeError(
            f"codec must be a hf_distill.cache.codec.TopkCodec (or None for float32), got {type(codec).__name__}; "
            "e.g. TopkCodec(value_bits=6)."
        )
    if task != CAUSAL_LM:
        raise ValueError(
            f"codec={codec} compresses a causal LM's top-k logits, but the teacher is a {task} model whose full "
            "logits are stored as they are; leave codec=None."
        )


def topk_columns(
    logits: torch.Tensor,
    lengths: Sequence[int],
    top_k: int,
    temperature: float,
    dtype: torch.dtype,
    codec: TopkCodec | None,
    cross: bool,
) -> dict[str, list]:
    """The top-k columns of a batch of logits ``(B, T, V)``: float32 (``codec`` None) or compact."""
    rows = topk_rows(logits, lengths, top_k, temperature, dtype if codec is None else torch.float32)
    if codec is not None:
        columns = CROSS_TOKENIZER if cross else SAME_TOKENIZER
        return encode_rows(codec, columns, rows, temperature, logits.shape[-1])
    names = (
        (XTOK_TOPK_LOGITS, XTOK_TOPK_INDICES, XTOK_TAIL_LOGIT)
        if cross
        else (TOPK_LOGITS, TOPK_INDICES, TAIL_LOGIT)
    )
    return dict(zip(names, rows))


def teacher_batch_fn(
    teacher: nn.Module,
    task: str,
    top_k: int | None,
    temperature: float,
    device: torch.device,
    dtype: torch.dtype,
    codec: TopkCodec | None = None,
):
    """``batch (dict of lists) -> the cache columns of its rows``: one teacher forward per call."""

    def run(batch: dict[str, list]) -> dict[str, list]:
        lengths = [len(ids) for ids in batch["input_ids"]]
        masks = batch.get("attention_mask") or [[1] * n for n in lengths]
        inputs = {"input_ids": pad_rows(batch["input_ids"], 0), "attention_mask": pad_rows(masks, 0)}
        if "token_type_ids" in batch:
            inputs["token_type_ids"] = pad_rows(batch["token_type_ids"], 0)
        with torch.inference_mode():
            logits = teacher(**{k: v.to(device) for k, v in inputs.items()}).logits
        out: dict[str, list] = {INPUT_HASH: [input_hash(ids, m) for ids, m in zip(batch["input_ids"], masks)]}
        if task == "sequence_classification":
            out[TEACHER_LOGITS] = list(logits.to(dtype).cpu().numpy())
        elif task == "token_classification":
            out[TEACHER_LOGITS] = [row[:n] for row, n in zip(logits.to(dtype).cpu().numpy(), lengths)]
        else:
            out.update(topk_columns(logits, lengths, top_k, temperature, dtype, codec, cross=False))
            out[TEMPERATURE] = [float(temperature)] * len(lengths)
        return out

    return run


def check_cross_tokenizer_request(
    dataset: Dataset,
    teacher_tokenizer: Any,
    text_column: str,
    task: str,
    top_k: int | None,
    temperature: float,
    batch_size: int,
) -> None:
    """Refuses, before the teacher runs, a cross-tokenizer cache request that cannot be served."""
    if task != CAUSAL_LM:
        raise ValueError(
            f"A cross-tokenizer cache (teacher_tokenizer given) is for causal LM teachers, got a {task} teacher; "
            "classifiers' outputs do not depend on the tokenizer: cache them without teacher_tokenizer."
        )
    require_offsets(teacher_tokenizer, "teacher")
    if text_column not in dataset.column_names:
        raise ValueError(
            f"The dataset has no {text_column!r} column (it has {dataset.column_names}); a cross-tokenizer cache "
            "is made from the raw text, which the teacher tokenizes itself. Pass text_column=<the text column>."
        )
    check_cache_settings(
        dataset, task, top_k, temperature, batch_size, XTOK_ALL_COLUMNS, "cross-tokenizer cache"
    )


def cross_tokenizer_batch_fn(
    teacher: nn.Module,
    teacher_tokenizer: Any,
    text_column: str,
    task: str,
    top_k: int | None,
    temperature: float,
    device: torch.device,
    dtype: torch.dtype,
    codec: TopkCodec | None = None,
):
    """The cross-tokenizer cache of a batch: per teacher position of the teacher's own tokenization of each
    text (``batch (dict of lists) -> columns``)."""
    name, fingerprint = str(teacher_tokenizer.name_or_path), tokenizer_fingerprint(teacher_tokenizer)

    def run(batch: dict[str, list]) -> dict[str, list]:
        texts = batch[text_column]
        encoded = encode_for_alignment(teacher_tokenizer, texts)
        lengths = [len(ids) for ids in encoded["input_ids"]]
        inputs = {
            "input_ids": pad_rows(encoded["input_ids"], 0),
            "attention_mask": pad_rows(encoded["attention_mask"], 0),
        }
        with torch.inference_mode():
            logits = teacher(**{k: v.to(device) for k, v in inputs.items()}).logits
        return {
            **topk_columns(logits, lengths, top_k, temperature, dtype, codec, cross=True),
            XTOK_ENDS: encoded["ends"],
            XTOK_SPECIAL: encoded["special"],
            XTOK_TEMPERATURE: [float(temperature)] * len(texts),
            XTOK_TEXT_HASH: [text_hash(t) for t in texts],
            XTOK_TOKENIZER: [name] * len(texts),
            XTOK_FINGERPRINT: [fingerprint] * len(texts),
        }

    return run


def cached_teacher_kind(column_names: Sequence[str]) -> str | None:
    """``"logits"``, ``"topk"``, ``"cross_tokenizer"`` or None: which teacher cache a dataset (or batch)
    carries (float32 or compact)."""
    if XTOK_TOPK_LOGITS in column_names or CROSS_TOKENIZER.codes in column_names:
        return "cross_tokenizer"
    if TEACHER_LOGITS in column_names:
        return "logits"
    if TOPK_LOGITS in column_names or SAME_TOKENIZER.codes in column_names:
        return "topk"
    return None
