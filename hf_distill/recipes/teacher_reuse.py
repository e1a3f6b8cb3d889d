"""The teacher run once for every seed: its logits on the distilled student's training rows, carried by the rows.

A multi-seed recipe trains one distilled student per seed against the same teacher. The teacher is in eval mode
and frozen, so its outputs on a row are the same every seed: running it again in each seed's training costs a
teacher forward per step (a third of a MiniLM-L6 -> 3-layer sentiment step) and changes nothing. With
``teacher_outputs_once`` (the default) the recipe runs the teacher once over the labeled and transfer rows with
:func:`hf_distill.cache.build.cache_teacher_outputs` and trains every seed from those columns; the trainer
reads a batch's cached logits instead of the live teacher (:class:`hf_distill.teachers.sources.CachedOrLiveTeacher`)
and checks each row's input hash, so a row that does not match its logits is refused, not trained on.

It applies where the cached signal is the whole signal: classification and NER (full logits, exact: only the
batches' padding differs, which attention masks away), plain KD (``distillation_mode`` ``kd``) from logits only.
Hidden-state, attention, value-relation and feature-map terms read the teacher's internals, other modes have
other teachers or generate: those keep the live teacher. One seed gains nothing and keeps it too.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.cache.build import cache_teacher_outputs
from hf_distill.cache.shards import load_teacher_cache
from hf_distill.model_kind import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION
from hf_distill.recipes.data_common import notice
from hf_distill.recipes.data_transfer import with_transfer
from hf_distill.recipes.tasks import TaskData

INTERNAL_TERMS = ("hidden_state_weight", "attention_weight", "value_relation_weight", "feature_map_weight")


def reuse_blocker(
    task: TaskData, args: DistillationTrainingArguments, mode: str, seeds: list[int]
) -> str | None:
    """Why the teacher's outputs cannot be computed once for these runs, or None when they can."""
    if len(seeds) < 2:
        return "one seed"
    if task.task not in (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION):
        return f"a {task.task} task (only classification and NER logits are cached whole)"
    if mode != "kd":
        return f"distillation_mode {mode!r}"
    terms = [name for name in INTERNAL_TERMS if getattr(args, name, 0.0)]
    if terms:
        return f"{', '.join(terms)} (they read the teacher's internals)"
    return None


def with_teacher_cache(
    task: TaskData, folder: str | None, args: DistillationTrainingArguments, mode: str
) -> TaskData:
    """``task`` with ``kd_train`` read from a ``hf-distill cache-teacher`` folder (``--teacher_cache``), checked to
    hold this run's distilled rows in order, token for token; ``task`` unchanged when ``folder`` is None.

    Raises:
        ValueError: a mode other than plain kd or a term that reads the teacher's internals (a cache holds its
            outputs only), or a cache of other rows (other data flags, another tokenizer).
    """
    if folder is None:
        return task
    terms = [name for name in INTERNAL_TERMS if getattr(args, name, 0.0)]
    if mode != "kd" or terms:
        raise ValueError(
            f"--teacher_cache {folder}: a cache holds the teacher's outputs only, so it trains plain kd from "
            f"logits; this run has distillation_mode {mode!r}{' and ' + ', '.join(terms) if terms else ''}. "
            "Leave --teacher_cache out to run the teacher live."
        )
    cached = load_teacher_cache(folder)
    rows = with_transfer(task.train, task.transfer)
    mismatch = next(
        (i for i, (a, b) in enumerate(zip(cached["input_ids"], rows["input_ids"])) if a != b), None
    )
    if len(cached) != len(rows) or mismatch is not None:
        where = f"row {mismatch} differs" if mismatch is not None else "the row counts differ"
        raise ValueError(
            f"--teacher_cache {folder} holds {len(cached)} rows and this run trains its distilled student on "
            f"{len(rows)} ({where}): the cache was written for other rows. Write it with `hf-distill "
            "cache-teacher` and the same data flags (max_files, max_train_samples, max_length, split_seed) and "
            "tokenizer as this run."
        )
    # A sharded cache keeps the model inputs only; the rows were just checked equal, so their labels are the cache's.
    for column in [c for c in rows.column_names if c not in cached.column_names]:
        cached = cached.add_column(column, rows[column])
    notice(f"teacher_cache: the distilled student trains from the teacher's outputs in {folder}.")
    return dataclasses.replace(task, kd_train=cached)


def with_teacher_outputs(
    task: TaskData, teacher: nn.Module, args: DistillationTrainingArguments, mode: str, seeds: list[int]
) -> TaskData:
    """``task`` with ``kd_train``: the distilled student's training rows (labeled + transfer) carrying the
    teacher's logits, computed once; ``task`` unchanged when :func:`reuse_blocker` names a reason."""
    if task.kd_train is not None or reuse_blocker(task, args, mode, seeds) is not None:
        return task  # already carried (--teacher_cache), or not computable once
    rows = with_transfer(task.train, task.transfer)
    cached = cache_teacher_outputs(
        teacher,
        rows,
        task=task.task,
        batch_size=args.per_device_eval_batch_size,
    )
    notice(
        f"teacher_outputs_once: the teacher ran once over the distilled student's {len(rows)} training rows; "
        f"each of the {len(seeds)} seeds trains from its logits."
    )
    return dataclasses.replace(task, kd_train=cached)


def distilled_rows(task: TaskData) -> Any:
    """The distilled student's training set: the rows with the teacher's logits when computed once, else the
    labeled and transfer rows."""
    return task.kd_train if task.kd_train is not None else with_transfer(task.train, task.transfer)
