"""Writing a teacher cache to disk as the teacher runs: :func:`write_teacher_cache`.

The same columns as :func:`hf_distill.cache.build.cache_teacher_outputs` (the same per-batch functions), but
each batch goes straight to Parquet shards (:class:`hf_distill.cache.shards.ShardWriter`) instead of into a
``Dataset``: the memory of caching stays flat in the number of rows, and a causal LM's top-k is stored with the
compact codec by default (:mod:`hf_distill.cache.codec`). Read it back with
:func:`hf_distill.cache.shards.load_teacher_cache`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from datasets import Dataset, Features
from torch import nn

from hf_distill.cache.build import (
    check_cache_inputs,
    cross_tokenizer_batch_fn,
    teacher_batch_fn,
)
from hf_distill.cache.codec import TopkCodec
from hf_distill.cache.shards import ShardWriter, check_empty_folder, to_arrow
from hf_distill.model_kind import CAUSAL_LM, detect_task
from hf_distill.token_alignment import TEXT_COLUMN, tokenizer_fingerprint

DEFAULT_CODEC = TopkCodec()


def write_teacher_cache(
    teacher: nn.Module,
    dataset: Dataset,
    output_dir: str | os.PathLike,
    *,
    task: str | None = None,
    top_k: int | None = None,
    temperature: float = 1.0,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    codec: TopkCodec | None | str = "default",
    teacher_tokenizer: Any = None,
    text_column: str = TEXT_COLUMN,
    rows_per_shard: int = 4096,
    compression_level: int = 3,
) -> dict[str, Any]:
    """Runs ``teacher`` once over ``dataset`` and writes the rows with the teacher's outputs to ``output_dir``
    in Parquet shards; returns the manifest (rows, shards, bytes, settings).

    Arguments as :func:`hf_distill.cache.build.cache_teacher_outputs`, plus: ``output_dir`` (new or empty);
    ``codec``: ``"default"`` (``TopkCodec()`` for a causal LM, nothing for classifiers), a
    :class:`~hf_distill.cache.codec.TopkCodec`, or None for float32 top-k logits; ``rows_per_shard``;
    ``compression_level`` (zstd). Every check runs before the teacher does.
    """
    task = task or detect_task(teacher)
    if isinstance(codec, str):
        if codec != "default":
            raise ValueError(f"codec={codec!r}: pass 'default', a TopkCodec, or None (float32 top-k logits).")
        codec = DEFAULT_CODEC if task == CAUSAL_LM else None
    check_cache_inputs(dataset, task, top_k, temperature, batch_size, codec, teacher_tokenizer, text_column)
    check_empty_folder(Path(output_dir))
    device = torch.device(device) if device is not None else next(teacher.parameters()).device
    settings = (task, top_k, temperature, device, torch.float32, codec)
    if teacher_tokenizer is not None:
        run = cross_tokenizer_batch_fn(teacher, teacher_tokenizer, text_column, *settings)
        inputs = [text_column]
    else:
        run = teacher_batch_fn(teacher, *settings)
        inputs = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]
    writer = ShardWriter(output_dir, rows_per_shard=rows_per_shard, compression_level=compression_level)
    was_training = teacher.training
    teacher.eval()
    try:
        _write_batches(writer, dataset, inputs, run, batch_size)
    finally:
        teacher.train(was_training)
    return writer.close(
        {
            "task": task,
            "top_k": top_k,
            "temperature": float(temperature),
            "codec": None if codec is None else codec.name(top_k),
            "teacher": type(teacher).__name__,
            "teacher_name_or_path": str(getattr(teacher, "name_or_path", "")),
            "teacher_tokenizer": None
            if teacher_tokenizer is None
            else {
                "name_or_path": str(teacher_tokenizer.name_or_path),
                "fingerprint": tokenizer_fingerprint(teacher_tokenizer),
            },
        }
    )


def _write_batches(writer: ShardWriter, dataset: Dataset, inputs: list[str], run, batch_size: int) -> None:
    """One teacher forward per batch; its rows (the dataset's columns and the cache's) appended to the shards."""
    source = dataset.select_columns(inputs)
    rows = dataset.with_format("arrow")
    features = None
    for start in range(0, len(dataset), batch_size):
        stop = min(start + batch_size, len(dataset))
        out = run(source[start:stop])
        table = rows[start:stop]
        for name, values in out.items():
            table = table.append_column(name, to_arrow(values))
        if features is None:
            features = Features({**dataset.features, **Features.from_arrow_schema(_new_columns(table, out))})
        writer.write(table, features)


def _new_columns(table: pa.Table, out: dict[str, Any]) -> pa.Schema:
    return pa.schema([table.schema.field(name) for name in out])
