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


def with_teacher_outputs(
    task: TaskData, teacher: nn.Module, args: DistillationTrainingArguments, mode: str, seeds: list[int]
) -> TaskData:
    """``task`` with ``kd_train``: the distilled student's training rows (labeled + transfer) carrying the
    teacher's logits, computed once; ``task`` unchanged when :func:`reuse_blocker` names a reason."""
    if reuse_blocker(task, args, mode, seeds) is not None:
        return task
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
