"""The recipe's teachers: the tokenizer they share with the students, whether a checkpoint still needs
fine-tuning on the task, loading it, fine-tuning it, and the extra teachers of a multi-teacher run.

Every teacher is loaded through :func:`hf_distill.loading.load_pretrained`: a local path that does not exist is
refused before any Hub call, and a Hub id the Hub cannot provide is reported as neither a folder nor reachable.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, Trainer, set_seed

from hf_distill.loading import check_model_source, load_pretrained
from hf_distill.recipes.arguments import RecipeConfig, TeacherArguments
from hf_distill.recipes.mode_select import ModeArguments
from hf_distill.recipes.offline import resolve_model_path
from hf_distill.recipes.tasks import NEW_TEACHER, TaskData
from hf_distill.recipes.training import plain_trainer_args, resume_point
from hf_distill.teachers.served import is_served_teacher

TEACHER_FLAG = "teacher_model_name_or_path"


def teacher_tokenizer(args: TeacherArguments, **kwargs: Any):
    """The teacher's tokenizer (students share it); a served teacher's is ``--served_tokenizer``'s."""
    if is_served_teacher(args.teacher_model_name_or_path):
        if args.served_tokenizer is None:
            raise ValueError(
                f"--served_tokenizer is required with a served teacher ({args.teacher_model_name_or_path}): the "
                "rows are tokenized here with the served model's tokenizer (a folder, Hub id or alias)."
            )
        return load_pretrained(
            AutoTokenizer.from_pretrained,
            resolve_model_path(args.served_tokenizer),
            role="served_tokenizer",
            **kwargs,
        )
    return load_pretrained(
        AutoTokenizer.from_pretrained,
        resolve_model_path(args.teacher_model_name_or_path),
        role=TEACHER_FLAG,
        revision=args.teacher_revision,
        **kwargs,
    )


def teacher_needs_fine_tune(
    path: str, task: TaskData, choice: str, revision: str | None = None, role: str = TEACHER_FLAG
) -> bool:
    """Whether the checkpoint lacks a trained head for the task (``choice="auto"``).

    It has one when its architecture ends with the task's head (``ForSequenceClassification``), its label
    count is the task's, and its label names are the task's or the uninformative ``LABEL_<i>``. Named labels
    that differ mean a head trained for another label set, which is fine-tuned like a missing one.
    """
    if choice == "always":
        return True
    if task.task == "causal_lm":
        return False
    config = load_pretrained(AutoConfig.from_pretrained, path, role=role, revision=revision)
    head = task.auto_class.__name__.replace("AutoModel", "")  # "ForSequenceClassification"
    if not any(a.endswith(head) for a in (config.architectures or [])):
        if choice == "never":
            raise ValueError(
                f"fine_tune_teacher='never', but {path} has no {head[3:]} head (architectures "
                f"{config.architectures}): it would teach from a randomly initialised head. Use "
                "fine_tune_teacher='auto' to fine-tune it first, or a checkpoint fine-tuned on the task."
            )
        return True
    if choice == "never":
        return False
    wanted = task.label_kwargs.get("id2label")
    if wanted is None:
        return False
    if config.num_labels != len(wanted):
        return True
    names = {int(i): str(n) for i, n in config.id2label.items()}
    default = all(n == f"LABEL_{i}" for i, n in names.items())
    return not default and names != {int(i): str(n) for i, n in wanted.items()}


def load_teacher(
    args: TeacherArguments, task: TaskData, role: str = TEACHER_FLAG
) -> tuple[PreTrainedModel, bool]:
    """The teacher model (float32) and whether it still has to be fine-tuned; ``role`` names the flag that gave
    the teacher in errors."""
    path = resolve_model_path(args.teacher_model_name_or_path)
    needs = teacher_needs_fine_tune(path, task, args.fine_tune_teacher, args.teacher_revision, role)
    # A new head gets the task's labels; an already fine-tuned one keeps its own (checked by the trainer). A
    # head trained for another label count is replaced, not an error: it is about to be fine-tuned anyway.
    kwargs = {**task.label_kwargs, "ignore_mismatched_sizes": True} if needs else {}
    teacher = load_pretrained(
        task.auto_class.from_pretrained,
        path,
        role=role,
        revision=args.teacher_revision,
        dtype=torch.float32,
        **kwargs,
    )
    return teacher, needs


def fine_tune_teacher(
    teacher: PreTrainedModel,
    task: TaskData,
    args: TeacherArguments,
    training_args,
    output_dir: Path,
    seed: int | None = None,
) -> tuple[PreTrainedModel, list[dict]]:
    """Trains the teacher on the task's labels (plain ``Trainer``) and saves it in ``output_dir``.

    ``seed`` (default: the run's) sets the data order and dropout, so teachers of a multi-teacher run
    fine-tuned from one checkpoint with different seeds become different teachers. (A new head is initialised
    earlier, when :func:`load_teacher` builds it, from the random state of that moment.)
    """
    seed = training_args.seed if seed is None else seed
    teacher_args = plain_trainer_args(
        training_args,
        output_dir,
        learning_rate=args.teacher_learning_rate,
        num_train_epochs=args.teacher_num_train_epochs,
        max_steps=args.teacher_max_steps,
        seed=seed,
    )
    set_seed(seed)
    trainer = Trainer(
        model=teacher,
        args=teacher_args,
        train_dataset=task.train,
        data_collator=task.collator,
        processing_class=task.tokenizer,
    )
    trainer.train(resume_from_checkpoint=resume_point(teacher_args))
    trainer.save_model(str(output_dir))
    return teacher, trainer.state.log_history


def ready_teacher(
    args: TeacherArguments,
    task: TaskData,
    training_args,
    folder: Path,
    seed: int | None = None,
    role: str = TEACHER_FLAG,
) -> tuple[PreTrainedModel, Path | None, list[dict]]:
    """The teacher for ``task`` in eval mode: loaded (:func:`load_teacher`) and, when it lacks the task's head,
    fine-tuned into ``folder`` (:func:`fine_tune_teacher` with ``seed``). Returns the model, the folder it was
    fine-tuned into (None when used as it is) and the fine-tune's log history."""
    if task.new_teacher is not None and args.teacher_model_name_or_path == NEW_TEACHER:
        teacher, needs_fine_tune = task.new_teacher(), True  # trained from scratch on the task
    else:
        teacher, needs_fine_tune = load_teacher(args, task, role)
    if not needs_fine_tune:
        return teacher.eval(), None, []
    teacher, history = fine_tune_teacher(teacher, task, args, training_args, folder, seed=seed)
    return teacher.eval(), folder, history


def load_extra_teachers(
    config: RecipeConfig, task: TaskData, run_dir: Path
) -> list[tuple[str, PreTrainedModel, Path | None]]:
    """The ``extra_teachers`` of a multi-teacher run (``config.mode``) as ``(name, model, fine-tuned folder or
    None)``; teacher ``k`` (from 1) that lacks the task's head is fine-tuned like the first (``config.teacher``)
    with seed ``seed + k``."""
    mode_args, teacher_args, training_args = config.mode, config.teacher, config.training
    teachers = []
    for k, name in enumerate(mode_args.extra_teachers or [], start=1):
        # fine_tune_teacher='never' is about the first teacher (often one fine-tuned by an earlier run); an
        # extra teacher without the task's head is still fine-tuned.
        choice = "auto" if teacher_args.fine_tune_teacher == "never" else teacher_args.fine_tune_teacher
        args = dataclasses.replace(teacher_args, teacher_model_name_or_path=name, fine_tune_teacher=choice)
        model, folder, _ = ready_teacher(
            args,
            task,
            training_args,
            run_dir / f"teacher_{k}",
            training_args.seed + k,
            f"extra_teachers[{k - 1}]",
        )
        teachers.append((name, model, folder))
    return teachers


def check_teacher_sources(teacher_args: TeacherArguments, mode_args: ModeArguments) -> None:
    """Every teacher the run names (``teacher_model_name_or_path`` and ``extra_teachers``) is an existing local
    folder, a Hub repo id or an offline alias: checked before the first teacher is loaded or fine-tuned, so a
    mistyped extra teacher does not fail after that work."""
    names = [(TEACHER_FLAG, teacher_args.teacher_model_name_or_path)]
    names += [(f"extra_teachers[{i}]", name) for i, name in enumerate(mode_args.extra_teachers or [])]
    for role, name in names:
        if is_served_teacher(name):
            continue  # a server is checked when it is asked (it answers, tokenizes as the student's rows)
        # An offline alias is a valid repo id, so it passes without resolving (which may convert a model).
        check_model_source(name, role)
