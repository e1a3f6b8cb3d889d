"""The recipes' arguments: which teacher and how to fine-tune it, which students, which data, how the
comparison is measured, and :func:`parse_recipe_args`, which reads them (and the distillation mode's own
training arguments) from flags and a ``--config`` file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..arguments import DistillationTrainingArguments
from .config import parse_args_with_config
from .mode_select import ModeArguments, arguments_class, mode_from_argv

STUDENT_INITS = ("teacher_layers", "config", "gpt2", "pretrained")
FINE_TUNE_CHOICES = ("auto", "always", "never")


@dataclass
class TeacherArguments:
    """Which teacher, and how to fine-tune it on the task when it is not fine-tuned yet."""

    teacher_model_name_or_path: str = field(
        default="minilm-l6",
        metadata={
            "help": "Hub id, local folder, or an offline alias ('minilm-l6', 'smollm2-135m'). A checkpoint "
            "that already has this task's head (and label count) is used as it is."
        },
    )
    teacher_revision: str | None = field(
        default=None, metadata={"help": "Hub revision (commit) of the teacher."}
    )
    fine_tune_teacher: str = field(
        default="auto",
        metadata={
            "help": "'auto': fine-tune only when the checkpoint has no head for the task (a causal LM teacher "
            "is never fine-tuned); 'always'; 'never' (an error when the checkpoint has no head for the task)."
        },
    )
    teacher_learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate of the fine-tune."})
    teacher_num_train_epochs: float = field(
        default=1.0, metadata={"help": "Epochs of the teacher fine-tune."}
    )
    teacher_max_steps: int = field(
        default=-1, metadata={"help": "Steps of the fine-tune; -1 uses the epochs."}
    )

    def __post_init__(self):
        if self.fine_tune_teacher not in FINE_TUNE_CHOICES:
            raise ValueError(
                f"fine_tune_teacher={self.fine_tune_teacher!r} is not one of {FINE_TUNE_CHOICES}: it says when "
                "the teacher is trained on the task first; use 'auto' unless you need to force it."
            )


@dataclass
class StudentArguments:
    """Which students to build; each is distilled and, unless turned off, also trained without the teacher."""

    student_init: list[str] = field(
        default_factory=lambda: ["teacher_layers"],
        metadata={
            "help": f"One or more of {STUDENT_INITS}: teacher layers (DistilBERT-style), a random model from "
            "the teacher's config with student_config_overrides, a GPT-2 over the teacher's vocabulary "
            "(causal LM), or student_model_name_or_path."
        },
    )
    student_num_layers: int = field(default=3, metadata={"help": "Layers of the student."})
    student_layer_strategy: str = field(
        default="uniform",
        metadata={"help": "Which teacher layers to keep: uniform, every_other, first, last."},
    )
    student_config_overrides: str | None = field(
        default=None,
        metadata={
            "help": "JSON object of config changes for 'config' and 'gpt2' students, e.g. "
            '\'{"hidden_size": 256, "intermediate_size": 1024}\' (gpt2: n_embd, n_head, n_positions).'
        },
    )
    student_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint of a 'pretrained' student (same vocabulary and labels)."}
    )
    run_baseline: bool = field(
        default=True, metadata={"help": "Also train each student without distillation, as a baseline."}
    )
    student_tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "codegen: also train a GPT-2 student with this tokenizer (an offline alias such as "
            "'gpt2-tokenizer', a Hub id or a folder), distilled across tokenizers from a cross-tokenizer cache "
            "of the teacher with student_tokenizer_loss, and without KD; every model gets bits per byte."
        },
    )
    student_tokenizer_loss: str = field(
        default="aligned",
        metadata={"help": "The cross-tokenizer loss of that student: 'aligned' or 'uld'."},
    )

    def __post_init__(self):
        if isinstance(self.student_init, str):
            self.student_init = [s.strip() for s in self.student_init.split(",") if s.strip()]
        unknown = [s for s in self.student_init if s not in STUDENT_INITS]
        if unknown or not self.student_init:
            raise ValueError(
                f"student_init {self.student_init} holds {unknown or 'nothing'}; each entry must be one of "
                f"{STUDENT_INITS} (how the student is built)."
            )
        if "pretrained" in self.student_init and not self.student_model_name_or_path:
            raise ValueError(
                "student_init 'pretrained' needs student_model_name_or_path: the checkpoint to start from."
            )
        if self.student_config_overrides is not None:
            self.config_overrides()
        if self.student_tokenizer_loss not in ("aligned", "uld"):
            raise ValueError(
                f"student_tokenizer_loss={self.student_tokenizer_loss!r}: choose 'aligned' (shared tokens where "
                "the prefixes match, ULD elsewhere) or 'uld'."
            )

    def config_overrides(self) -> dict[str, Any]:
        if self.student_config_overrides is None:
            return {}
        try:
            overrides = json.loads(self.student_config_overrides)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"student_config_overrides {self.student_config_overrides!r} is not valid JSON ({error}); write "
                "an object such as '{\"hidden_size\": 256}'."
            ) from error
        if not isinstance(overrides, dict):
            raise ValueError(
                f"student_config_overrides must be a JSON object of config fields, got {type(overrides).__name__}."
            )
        return overrides


@dataclass
class DataArguments:
    """Where the task data comes from and how much of it to use."""

    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A Hub dataset ('glue/sst2', 'conll2003'); None: the offline default."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "The Hub dataset's config name."})
    train_file: str | None = field(default=None, metadata={"help": "CoNLL training file (NER)."})
    validation_file: str | None = field(default=None, metadata={"help": "CoNLL validation file (NER)."})
    test_file: str | None = field(default=None, metadata={"help": "CoNLL test file (NER)."})
    max_length: int = field(default=64, metadata={"help": "Tokens per example (code: the block size)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Cap on validation examples."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Cap on test examples."})
    max_files: int | None = field(default=None, metadata={"help": "Code: sample this many stdlib files."})
    split_seed: int = field(default=42, metadata={"help": "Seed of the offline train/validation/test split."})

    def __post_init__(self):
        for name in ("max_train_samples", "max_eval_samples", "max_test_samples", "max_files"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value} must be >= 1 (or unset to keep every example).")
        if self.max_length < 2:
            raise ValueError(f"max_length={self.max_length} must be >= 2 tokens.")


@dataclass
class ReportArguments:
    """How the comparison is measured."""

    latency_rounds: int = field(
        default=5, metadata={"help": "Timed rounds per model and batch size; the median is reported."}
    )
    write_model_cards: bool = field(
        default=True, metadata={"help": "Write README.md into each student folder."}
    )

    def __post_init__(self):
        if self.latency_rounds < 1:
            raise ValueError(
                f"latency_rounds={self.latency_rounds} must be >= 1: the median needs one timing."
            )


RECIPE_ARGUMENTS = (
    TeacherArguments,
    StudentArguments,
    DataArguments,
    ReportArguments,
    DistillationTrainingArguments,
)


def parse_recipe_args(argv: list[str] | None = None, task: str | None = None) -> tuple[Any, ...]:
    """A recipe's flags (``--config`` file included) as ``(teacher, student, data, report, mode, training)``
    arguments; ``training`` is the class of the chosen ``distillation_mode``, so its own flags are valid.
    With the recipe's ``task`` a mode that cannot run on it is refused here, before anything is loaded."""
    import sys

    argv = sys.argv[1:] if argv is None else list(argv)
    training_class = arguments_class(mode_from_argv(argv))
    parsed = parse_args_with_config((*RECIPE_ARGUMENTS[:-1], ModeArguments, training_class), argv)
    if task is not None:
        # A code block is max_length tokens: a prompt longer than that is refused before tokenizing.
        parsed[-2].check_task(task, parsed[2].max_length if task == "causal_lm" else None)
    return parsed
