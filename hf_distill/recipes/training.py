"""Training a recipe's student: with the teacher in the chosen distillation mode, or on the labels alone (the
no-KD baseline), the training arguments each run derives from the recipe's, and the rows the distilled student
trains on (:func:`distilled_rows`).

The teacher run once for every seed (:func:`with_teacher_outputs`): a multi-seed recipe trains one distilled
student per seed against the same teacher. The teacher is in eval mode and frozen, so its outputs on a row are
the same every seed: running it again in each seed's training costs a teacher forward per step (a third of a
MiniLM-L6 -> 3-layer sentiment step) and changes nothing. With ``teacher_outputs_once`` (the default) the recipe
runs the teacher once over the labeled and transfer rows with :func:`hf_distill.cache.build.cache_teacher_outputs`
and trains every seed from those columns; the trainer reads a batch's cached logits instead of the live teacher
(:class:`hf_distill.teachers.sources.CachedOrLiveTeacher`) and checks each row's input hash, so a row that does
not match its logits is refused, not trained on. It applies where the cached signal is the whole signal:
classification and NER (full logits, exact: only the batches' padding differs, which attention masks away),
plain KD (``distillation_mode`` ``kd``) from logits only. Hidden-state, attention, value-relation and feature-map
terms read the teacher's internals, other modes have other teachers or generate: those keep the live teacher
(:func:`reuse_blocker`). One seed gains nothing and keeps it too.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, Trainer, TrainingArguments, set_seed

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.cache.build import cache_teacher_outputs
from hf_distill.cache.shards import load_teacher_cache
from hf_distill.model_kind import SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION, logits_of
from hf_distill.modes.mutual import STUDENT_A
from hf_distill.recipes.data_common import notice
from hf_distill.recipes.data_transfer import with_transfer
from hf_distill.recipes.mode_select import ModeArguments, mode_train_data, mode_trainer
from hf_distill.recipes.served_teacher import trainer_teacher
from hf_distill.recipes.tasks import TaskData
from hf_distill.training.checkpoints import checkpoint_problems, checkpoints_in


def derived_args(
    args: DistillationTrainingArguments, output_dir: Path, **changes: Any
) -> DistillationTrainingArguments:
    """A copy of the recipe's training arguments for one run saved in ``output_dir``, with ``changes``."""
    # replace() re-runs __post_init__, so the copy is checked like the original.
    return dataclasses.replace(args, output_dir=str(output_dir), **changes)


def resume_point(args: TrainingArguments) -> bool | None:
    """What ``Trainer.train(resume_from_checkpoint=...)`` gets in a recipe: True (the last complete checkpoint
    of this run's ``output_dir``) when the recipe was started with ``--resume_from_checkpoint true`` and this run
    has completed one, else None (the run starts afresh: a killed recipe resumes each of its runs where it stopped).

    Raises:
        ValueError: when ``resume_from_checkpoint`` names one checkpoint: a recipe trains several models.
    """
    wanted = args.resume_from_checkpoint
    if not wanted:
        return None
    if str(wanted).lower() not in ("true", "1", "yes"):
        raise ValueError(
            f"--resume_from_checkpoint {wanted!r}: a recipe trains several models (the teacher's fine-tune, "
            "each student, each baseline), each with checkpoints in its own folder under output_dir, so one "
            "checkpoint cannot resume it. Pass --resume_from_checkpoint true to resume each from its own."
        )
    # Only a complete checkpoint counts: a run killed while writing its first one starts afresh.
    complete = [c for c in checkpoints_in(str(Path(args.output_dir))) if not checkpoint_problems(c)]
    return True if complete else None


def plain_trainer_args(
    args: DistillationTrainingArguments, output_dir: Path, **changes: Any
) -> DistillationTrainingArguments:
    """Arguments for a plain ``Trainer`` (teacher fine-tune, no-KD baseline) that trains like one process.

    With ``average_tokens_across_devices`` the Trainer multiplies the loss by the number of processes whenever
    the model's ``forward`` takes ``**kwargs``, expecting the model to divide by the global item count. BERT's
    classification heads take ``**kwargs`` but return a plain per-process mean, so under DDP their loss and
    gradients would be doubled with two processes. Turned off, each process's mean is averaged by DDP: the
    global mean whenever processes hold equal item counts (always for sequence classification and full code
    blocks). The DistillationTrainer normalises by the global count itself and keeps the setting.
    """
    return derived_args(args, output_dir, average_tokens_across_devices=False, **changes)


def plain_module_loss(student: nn.Module, args: TrainingArguments) -> dict[str, Any]:
    """For a plain ``nn.Module`` student (no loss of its own, e.g. the vision recipe's CNN): Trainer's
    ``compute_loss_func`` with the task cross-entropy, and ``labels`` kept as the label column."""
    if isinstance(student, PreTrainedModel):
        return {}
    args.label_names = args.label_names or ["labels"]

    def loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        logits = logits_of(outputs)
        total = F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else (labels != -100).sum().clamp_min(1)
        return total / count

    return {"compute_loss_func": loss}


def optimizer_steps(rows: int, args: TrainingArguments) -> int:
    """Optimizer steps of a run over ``rows`` training rows, counted as Trainer counts them: ``max_steps`` when
    set, else ``num_train_epochs`` times the steps of one epoch (batches of ``per_device_train_batch_size`` on
    every process, ``gradient_accumulation_steps`` batches a step, a last partial step included)."""
    if args.max_steps > 0:
        return args.max_steps
    batches = math.ceil(rows / (args.per_device_train_batch_size * max(args.world_size, 1)))
    per_epoch = max(math.ceil(batches / args.gradient_accumulation_steps), 1)
    return math.ceil(args.num_train_epochs * per_epoch)


def baseline_changes(task: TaskData, args: TrainingArguments, baseline_steps: str) -> dict[str, Any]:
    """What the no-KD baseline's arguments change: with a transfer set and ``baseline_steps="match"``, as many
    optimizer steps (``max_steps``) as the distilled student, which sees the transfer rows too; announced with
    both counts. Nothing otherwise (the same epochs over the same rows are the same steps)."""
    if task.transfer is None:
        return {}
    labeled = optimizer_steps(len(task.train), args)
    distilled = optimizer_steps(len(task.train) + len(task.transfer), args)
    if baseline_steps != "match":
        notice(
            f"steps: distilled student {distilled} ({len(task.train)} labeled + {len(task.transfer)} transfer "
            f"rows), no-KD baseline {labeled} (baseline_steps=epochs: the same epochs over the labeled rows)."
        )
        return {}
    notice(
        f"steps: distilled student {distilled} ({len(task.train)} labeled + {len(task.transfer)} transfer rows), "
        f"no-KD baseline {distilled} on the {len(task.train)} labeled rows (baseline_steps=match; one epoch of "
        f"them is {optimizer_steps(len(task.train), dataclasses.replace(args, num_train_epochs=1))} steps)."
    )
    return {"max_steps": distilled} if distilled != labeled else {}


def student_learning_rate(args: TrainingArguments, kd: bool, baseline_learning_rate: float | None) -> float:
    """The learning rate a student trains at: ``args.learning_rate``, or for the no-KD baseline
    ``baseline_learning_rate`` when given."""
    return float(args.learning_rate if kd or baseline_learning_rate is None else baseline_learning_rate)


def train_student(
    student: PreTrainedModel,
    teacher: PreTrainedModel | None,
    task: TaskData,
    training_args: DistillationTrainingArguments,
    output_dir: Path,
    *,
    kd: bool,
    mode_args: ModeArguments | None = None,
    extra_teachers: list[PreTrainedModel] | tuple = (),
    peer: PreTrainedModel | None = None,
    baseline_steps: str = "match",
    baseline_learning_rate: float | None = None,
) -> tuple[list[dict], Path]:
    """Trains ``student`` with the teacher (``kd=True``: the trainer of ``mode_args.distillation_mode``, plain
    KD by default) or on the labels only (``kd=False``: a plain ``Trainer`` with the same arguments and data
    order; ``baseline_steps="match"`` gives it as many steps as the distilled student when a transfer set makes
    that one longer, see :func:`baseline_changes`; ``baseline_learning_rate``, when given, replaces
    ``learning_rate`` for it). The distilled student learns from the labeled and the transfer rows
    (:func:`distilled_rows`, with the teacher's logits when they were computed
    once for every seed). Saves the student under ``output_dir``; returns the Trainer's ``log_history`` and the
    student's folder (``output_dir``, or its ``student_a/`` for mutual learning, whose peer is saved in
    ``student_b/``)."""
    mode_args = mode_args or ModeArguments()
    if kd:
        args = derived_args(training_args, output_dir)
    else:
        changes = baseline_changes(task, training_args, baseline_steps)
        changes["learning_rate"] = student_learning_rate(training_args, False, baseline_learning_rate)
        args = plain_trainer_args(training_args, output_dir, **changes)
    set_seed(training_args.seed)
    common = dict(eval_dataset=task.validation, processing_class=task.tokenizer)
    if kd:
        train, collator = mode_train_data(
            mode_args,
            distilled_rows(task),
            teacher,
            task.tokenizer,
            student,
            training_args.per_device_eval_batch_size,
        )
        set_seed(training_args.seed)  # generating the training set (sequence_kd) must not shift the seed
        trainer = mode_trainer(
            mode_args,
            student,
            [trainer_teacher(teacher), *extra_teachers],
            args,
            peer=peer,
            train_dataset=train,
            data_collator=collator or task.collator,
            **common,
        )
    else:
        trainer = Trainer(
            model=student,
            args=args,
            train_dataset=task.train,
            data_collator=task.collator,
            **common,
            **plain_module_loss(student, args),
        )
    trainer.train(resume_from_checkpoint=resume_point(args))
    trainer.save_model(str(output_dir))
    folder = output_dir / STUDENT_A if kd and mode_args.distillation_mode == "mutual" else output_dir
    return trainer.state.log_history, folder


# Training-argument terms that read the teacher's internals, which saved logits do not hold.
INTERNAL_TERMS = ("hidden_state_weight", "attention_weight", "value_relation_weight", "feature_map_weight")


def internal_terms(args: DistillationTrainingArguments) -> list[str]:
    """The terms this run weighs that read the teacher's internals, which a cache of its outputs lacks."""
    return [name for name in INTERNAL_TERMS if getattr(args, name, 0.0)]


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
    terms = internal_terms(args)
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
    terms = internal_terms(args)
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
