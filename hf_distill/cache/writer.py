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
from hf_distill.cache.shards import (
    ShardWriter,
    check_empty_folder,
    merge_rank_manifests,
    rank_manifest_name,
    read_manifest,
    to_arrow,
    write_manifest,
)
from hf_distill.cache.topk_source import topk_source_batch_fn
from hf_distill.model_kind import CAUSAL_LM, detect_head_kind
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
    state: Any = None,
    vocab_size: int | None = None,
) -> dict[str, Any]:
    """Runs ``teacher`` once over ``dataset``, writing its outputs to ``output_dir`` in Parquet shards as it
    runs, so memory stays flat in the rows; every check runs before the teacher does.

    Args:
        teacher (nn.Module): a classifier or causal LM; or a source of top-k rows (with ``topk_rows``, e.g.
            :class:`~hf_distill.teachers.served.ServedTeacher`), for a causal LM's same-tokenizer cache.
        dataset (Dataset): tokenized rows; it and ``task``, ``top_k``, ``temperature``, ``batch_size``,
            ``device``, ``teacher_tokenizer``, ``text_column``: as in ``hf_distill.cache_teacher_outputs``.
        output_dir (str | os.PathLike): a new or empty folder.
        codec (TopkCodec | str | None): ``"default"`` (``TopkCodec()`` for a causal LM, none for a
            classifier), a :class:`~hf_distill.cache.codec.TopkCodec`, or None for float32 top-k logits.
        rows_per_shard (int): rows per Parquet file. compression_level (int): the shards' zstd level.
        state (PartialState | None): a distributed run's processes: each runs the teacher over its own
            contiguous part of the rows and writes its shards; then the main process writes one manifest in
            rank order, so the cache reads like a one-process cache (a process that dies leaves none).
        vocab_size (int | None): a top-k source's vocabulary rows (required with one), for the compact ids.

    Returns:
        dict[str, Any]: the manifest (``rows``, ``bytes``, ``shards``, ``settings``), on every process.

    Raises:
        ValueError: a used folder, a bad setting, codec or cross-tokenizer request (TypeError: a codec that is
            not a ``TopkCodec``), or a top-k source without ``task="causal_lm"`` and ``vocab_size``.
    """
    source = hasattr(teacher, "topk_rows")
    task = task or (CAUSAL_LM if source else detect_head_kind(teacher))
    if source and (task != CAUSAL_LM or teacher_tokenizer is not None or not vocab_size):
        raise ValueError(
            "A top-k source (a served teacher) writes a causal LM's same-tokenizer cache: pass task='causal_lm', "
            f"no teacher_tokenizer, and vocab_size (got task={task!r}, vocab_size={vocab_size!r})."
        )
    if isinstance(codec, str):
        if codec != "default":
            raise ValueError(f"codec={codec!r}: pass 'default', a TopkCodec, or None (float32 top-k logits).")
        codec = DEFAULT_CODEC if task == CAUSAL_LM else None
    check_cache_inputs(dataset, task, top_k, temperature, batch_size, codec, teacher_tokenizer, text_column)
    world = 1 if state is None else int(state.num_processes)
    rank = 0 if state is None else int(state.process_index)
    check_empty_folder(Path(output_dir))
    if world > 1:
        state.wait_for_everyone()  # every process checked the folder before any writes into it
        start, stop = len(dataset) * rank // world, len(dataset) * (rank + 1) // world
        dataset = dataset.select(range(start, stop))
    run, inputs = batch_fn(
        teacher, dataset, task, top_k, temperature, device, codec, teacher_tokenizer, text_column, vocab_size
    )
    writer = ShardWriter(
        output_dir,
        rows_per_shard=rows_per_shard,
        compression_level=compression_level,
        prefix="shard-" if world == 1 else f"shard-r{rank:03d}-",
        check_empty=world == 1,
    )
    was_training = getattr(teacher, "training", False)
    if not source:
        teacher.eval()
    try:
        _write_batches(writer, dataset, inputs, run, batch_size)
    finally:
        if not source:
            teacher.train(was_training)
    return finish(writer, cache_settings(teacher, task, top_k, temperature, codec, teacher_tokenizer), state)


def batch_fn(
    teacher: Any,
    dataset: Dataset,
    task: str,
    top_k: int | None,
    temperature: float,
    device: Any,
    codec: TopkCodec | None,
    teacher_tokenizer: Any,
    text_column: str,
    vocab_size: int | None,
) -> tuple[Any, list[str]]:
    """The per-batch function that makes the cache columns, and the dataset columns it reads."""
    if hasattr(teacher, "topk_rows"):
        run = topk_source_batch_fn(teacher, top_k, temperature, vocab_size, codec)
        return run, [c for c in ("input_ids", "attention_mask") if c in dataset.column_names]
    settings = (task, top_k, temperature, _device(teacher, device), torch.float32, codec)
    if teacher_tokenizer is not None:
        return cross_tokenizer_batch_fn(teacher, teacher_tokenizer, text_column, *settings), [text_column]
    inputs = [c for c in ("input_ids", "attention_mask", "token_type_ids") if c in dataset.column_names]
    return teacher_batch_fn(teacher, *settings), inputs


def _device(teacher: nn.Module, device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else next(teacher.parameters()).device


def cache_settings(
    teacher: nn.Module, task: str, top_k: int | None, temperature: float, codec: Any, teacher_tokenizer: Any
) -> dict[str, Any]:
    """The settings a manifest records: what the cache holds and which teacher (and tokenizer) made it."""
    return {
        "task": task,
        "top_k": top_k,
        "temperature": float(temperature),
        "codec": None if codec is None else codec.name(top_k),
        "teacher": type(teacher).__name__,
        "teacher_name_or_path": str(getattr(teacher, "name_or_path", "") or getattr(teacher, "url", "")),
        "teacher_tokenizer": None
        if teacher_tokenizer is None
        else {
            "name_or_path": str(teacher_tokenizer.name_or_path),
            "fingerprint": tokenizer_fingerprint(teacher_tokenizer),
        },
    }


def finish(writer: ShardWriter, settings: dict[str, Any], state: Any) -> dict[str, Any]:
    """The manifest: written at once by a single process; in a distributed run, each process lists its shards,
    and the main process merges the lists after every process has written (a barrier)."""
    if state is None or int(state.num_processes) == 1:
        return writer.close(settings)
    write_manifest(
        writer.folder, writer.finish(), settings, name=rank_manifest_name(int(state.process_index))
    )
    state.wait_for_everyone()
    if state.is_main_process:
        merge_rank_manifests(writer.folder, int(state.num_processes), settings)
    state.wait_for_everyone()
    return read_manifest(writer.folder)


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
