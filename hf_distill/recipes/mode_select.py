"""Choosing a distillation mode by name: the ``distillation_mode`` of the recipes and of ``hf-distill train``.

Every mode is a trainer of :mod:`hf_distill.modes` with an arguments class of its own (a subclass of
:class:`~hf_distill.DistillationTrainingArguments`). A recipe reads ``distillation_mode`` first
(:func:`mode_from_argv`) and then parses all flags with that mode's class (:func:`arguments_class`), so a
mode's knobs are ordinary flags and config keys (``--ema_decay 0.99``), checked by the class that uses them,
and a knob of another mode (``--lmbda`` under ``distillation_mode: kd``) is an unknown argument rather than
silently ignored.

================== ======================================= ======================================= =========
mode               trainer                                 what the student learns from            tasks
================== ======================================= ======================================= =========
kd                 DistillationTrainer                     the teacher                             all
multi_teacher      MultiTeacherDistillationTrainer         the teacher and ``extra_teachers``      all
self_distillation  SelfDistillationTrainer                 an EMA / snapshot of itself             all
mutual             MutualLearningTrainer                   a second student trained beside it      all
on_policy          OnPolicyDistillationTrainer             the teacher, on its own samples too     causal LM
sequence_kd        DistillationTrainer                     the teacher, on the teacher's outputs   causal LM
================== ======================================= ======================================= =========

Attention-map and value-relation matching are terms of the base trainer (``attention_weight``,
``value_relation_weight``) and combine with every mode that has a teacher. Multi-task distillation trains
several tasks at once and has a recipe of its own (``recipes/multi_task.py``).

For the causal-LM modes a code block becomes a prompt and a completion: its first ``prompt_tokens`` tokens
are the prompt (labelled -100, never learned), the rest the dataset's completion (:func:`split_blocks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset
from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.modes.multi_teacher import MultiTeacherDistillationTrainer, MultiTeacherTrainingArguments
from hf_distill.modes.mutual import MutualLearningTrainer
from hf_distill.modes.on_policy import (
    PROMPT_INPUT_IDS,
    OnPolicyDistillationTrainer,
    OnPolicyDistillationTrainingArguments,
    PromptCompletionCollator,
    pad_and_eos_ids,
)
from hf_distill.modes.self_distillation import SelfDistillationTrainer, SelfDistillationTrainingArguments
from hf_distill.modes.sequence_kd import generate_teacher_completions
from hf_distill.recipes.config import load_config_file, split_config_flag
from hf_distill.trainer import DistillationTrainer

MODE_FLAG = "--distillation_mode"
ARGUMENT_CLASSES: dict[str, type[DistillationTrainingArguments]] = {
    "kd": DistillationTrainingArguments,
    "multi_teacher": MultiTeacherTrainingArguments,
    "self_distillation": SelfDistillationTrainingArguments,
    "mutual": DistillationTrainingArguments,
    "on_policy": OnPolicyDistillationTrainingArguments,
    "sequence_kd": DistillationTrainingArguments,
}
DISTILLATION_MODES = tuple(ARGUMENT_CLASSES)
CAUSAL_LM_MODES = ("on_policy", "sequence_kd")


def _check_mode(mode: str) -> str:
    if mode not in ARGUMENT_CLASSES:
        raise ValueError(
            f"distillation_mode {mode!r} is unknown; choose one of {DISTILLATION_MODES} ('kd' is plain "
            "distillation from one teacher; see README 'Distillation modes')."
        )
    return mode


@dataclass
class ModeArguments:
    """Which distillation mode a recipe runs, and the settings that belong to the recipe, not to a trainer."""

    _argument_group_name = "distillation"  # the --help group (HfArgumentParser)

    distillation_mode: str = field(
        default="kd",
        metadata={
            "help": f"One of {DISTILLATION_MODES}; each mode's own flags become valid once it is chosen."
        },
    )
    extra_teachers: list[str] | None = field(
        default=None,
        metadata={
            "help": "multi_teacher: teachers beside teacher_model_name_or_path (folders, Hub ids or offline "
            "aliases), each fine-tuned like the first (teacher k with seed + k) when it lacks the task's head, "
            "even with fine_tune_teacher='never'."
        },
    )
    prompt_tokens: int = field(
        default=32,
        metadata={
            "help": "on_policy / sequence_kd: the first N tokens of each code block are the prompt; the rest is "
            "the completion (the dataset's for on_policy, the teacher's for sequence_kd)."
        },
    )
    teacher_max_new_tokens: int | None = field(
        default=None,
        metadata={
            "help": "sequence_kd: tokens the teacher writes per prompt (greedy); unset: the rest of the block."
        },
    )

    def __post_init__(self):
        _check_mode(self.distillation_mode)
        if self.extra_teachers is not None and self.distillation_mode != "multi_teacher":
            raise ValueError(
                f"extra_teachers is set but distillation_mode is {self.distillation_mode!r}, which uses one "
                "teacher; set distillation_mode: multi_teacher, or drop extra_teachers."
            )
        if self.distillation_mode == "multi_teacher" and not self.extra_teachers:
            raise ValueError(
                "distillation_mode 'multi_teacher' needs extra_teachers (one or more teachers beside "
                "teacher_model_name_or_path); with a single teacher use distillation_mode 'kd'."
            )
        if self.prompt_tokens < 1:
            raise ValueError(
                f"prompt_tokens must be >= 1, got {self.prompt_tokens}: generation continues a prompt of at least "
                "one token."
            )
        if self.teacher_max_new_tokens is not None and self.teacher_max_new_tokens < 1:
            raise ValueError(
                f"teacher_max_new_tokens must be >= 1 (or unset for the rest of the block), got "
                f"{self.teacher_max_new_tokens}."
            )

    def check_task(self, task: str, block_length: int | None = None) -> None:
        """Raises before any model is loaded when the mode cannot run on ``task``."""
        mode = self.distillation_mode
        if mode in CAUSAL_LM_MODES and task != "causal_lm":
            raise ValueError(
                f"distillation_mode {mode!r} generates text, so it needs a causal-LM task (recipes/codegen.py), "
                f"but this task is {task}; use kd, multi_teacher, self_distillation or mutual."
            )
        if mode in CAUSAL_LM_MODES and block_length is not None and self.prompt_tokens >= block_length:
            raise ValueError(
                f"prompt_tokens={self.prompt_tokens} leaves no completion in blocks of {block_length} tokens; "
                "set prompt_tokens below max_length (e.g. a quarter of it)."
            )


def mode_from_argv(argv: Sequence[str]) -> str:
    """The ``distillation_mode`` of a recipe's flags: the flag if given, else the ``--config`` file's, else kd."""
    path, flags = split_config_flag(argv)
    mode = load_config_file(path).get("distillation_mode", "kd") if path is not None else "kd"
    for index, item in enumerate(flags):
        if item == MODE_FLAG and index + 1 < len(flags):
            mode = flags[index + 1]
        elif item.startswith(MODE_FLAG + "="):
            mode = item.split("=", 1)[1]
    return _check_mode(str(mode))


def arguments_class(mode: str) -> type[DistillationTrainingArguments]:
    """The training-arguments class whose fields are the flags of ``mode``."""
    return ARGUMENT_CLASSES[_check_mode(mode)]


# ---- data of the causal-LM modes --------------------------------------------------------------------------


def split_blocks(dataset: Dataset, prompt_tokens: int) -> Dataset:
    """Code blocks as prompt + completion: adds ``prompt_input_ids`` (the first ``prompt_tokens`` tokens) and
    sets ``labels`` to -100 on them, so only the completion is learned and scored."""

    def split(batch: dict[str, list]) -> dict[str, list]:
        return {
            PROMPT_INPUT_IDS: [ids[:prompt_tokens] for ids in batch["input_ids"]],
            "labels": [[-100] * prompt_tokens + list(ids[prompt_tokens:]) for ids in batch["input_ids"]],
        }

    return dataset.map(split, batched=True, desc="prompt + completion")


def mode_train_data(
    mode_args: ModeArguments,
    train: Dataset,
    teacher: nn.Module,
    tokenizer: Any,
    student: nn.Module,
    batch_size: int,
) -> tuple[Dataset, Any | None]:
    """The training set and collator of the mode: unchanged (``None``: the task's collator) except for the
    causal-LM modes, which train on prompt + completion rows."""
    mode = mode_args.distillation_mode
    if mode not in CAUSAL_LM_MODES:
        return train, None
    pad, _ = pad_and_eos_ids(tokenizer, student)
    blocks = split_blocks(train, mode_args.prompt_tokens)
    if mode == "on_policy":
        return blocks, PromptCompletionCollator(pad)
    block_length = len(train[0]["input_ids"])
    generated = generate_teacher_completions(
        teacher,
        tokenizer,
        blocks.select_columns([PROMPT_INPUT_IDS]),
        max_new_tokens=mode_args.teacher_max_new_tokens or block_length - mode_args.prompt_tokens,
        batch_size=batch_size,
    )
    # The prompts were only needed to generate: training reads input_ids / labels.
    return generated.remove_columns([PROMPT_INPUT_IDS]), PromptCompletionCollator(pad)


# ---- the trainer of each mode -----------------------------------------------------------------------------


def mode_trainer(
    mode_args: ModeArguments,
    student: nn.Module,
    teachers: Sequence[nn.Module],
    args: DistillationTrainingArguments,
    *,
    peer: nn.Module | None = None,
    **kwargs: Any,
) -> DistillationTrainer:
    """The trainer of ``mode_args.distillation_mode`` for ``student``.

    ``teachers``: the teacher first, then the extra teachers (multi_teacher); self-distillation and mutual
    learning do not use them. ``peer``: the second student of mutual learning. ``kwargs``: the Trainer's
    (datasets, collator, processing_class, ...).
    """
    mode = mode_args.distillation_mode
    expected = arguments_class(mode)
    if not isinstance(args, expected):
        raise TypeError(
            f"distillation_mode {mode!r} needs {expected.__name__}, got {type(args).__name__}; parse the flags "
            "with hf_distill.recipes.arguments.parse_recipe_args, which picks the class from the mode."
        )
    if mode == "multi_teacher":
        return MultiTeacherDistillationTrainer(
            model=student, teacher_models=list(teachers), args=args, **kwargs
        )
    if mode == "self_distillation":
        return SelfDistillationTrainer(model=student, args=args, **kwargs)
    if mode == "mutual":
        if peer is None:
            raise ValueError("distillation_mode 'mutual' needs `peer`, the second student trained alongside.")
        return MutualLearningTrainer(model=student, peer_model=peer, args=args, **kwargs)
    if mode == "on_policy":
        return OnPolicyDistillationTrainer(model=student, teacher_model=teachers[0], args=args, **kwargs)
    return DistillationTrainer(model=student, teacher_model=teachers[0], args=args, **kwargs)
