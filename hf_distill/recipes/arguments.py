"""The recipes' arguments: which teacher and how to fine-tune it, how the comparison is measured (which data:
:mod:`hf_distill.recipes.data_arguments`; which students: :mod:`hf_distill.recipes.student_arguments`), and
:class:`RecipeConfig`, the one object a recipe function takes: every argument group of a run by name, read
from flags and a ``--config`` file by :func:`parse_recipe_config` (the distillation mode's own training
arguments and a command's own groups included).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.recipes.config import parse_args_with_config
from hf_distill.recipes.console import default_pin_memory
from hf_distill.recipes.data_arguments import DataArguments
from hf_distill.recipes.mode_select import ModeArguments, arguments_class, mode_from_argv
from hf_distill.recipes.student_arguments import StudentArguments
from hf_distill.recipes.tensorboard_log import default_report_to

FINE_TUNE_CHOICES = ("auto", "always", "never")
Group = TypeVar("Group")


@dataclass
class TeacherArguments:
    """Which teacher, and how to fine-tune it on the task when it is not fine-tuned yet."""

    _argument_group_name = "recipe: teacher"  # the --help group (HfArgumentParser)

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
    served_tokenizer: str | None = field(
        default=None,
        metadata={
            "help": "With a served teacher (--teacher_model_name_or_path http://HOST:PORT/v1): the served "
            "model's tokenizer and config (a folder, Hub id or offline alias); the rows are tokenized with it and "
            "the server is checked to tokenize the same way."
        },
    )
    teacher_cache: str | None = field(
        default=None,
        metadata={
            "help": "A folder written by `hf-distill cache-teacher` from this teacher on this task's training "
            "rows: the distilled student trains from its outputs instead of running the teacher (plain kd; the "
            "rows are checked to be the recipe's). The teacher is still loaded to be scored and to build students."
        },
    )

    def __post_init__(self):
        if self.fine_tune_teacher not in FINE_TUNE_CHOICES:
            raise ValueError(
                f"fine_tune_teacher={self.fine_tune_teacher!r} is not one of {FINE_TUNE_CHOICES}: it says when "
                "the teacher is trained on the task first; use 'auto' unless you need to force it."
            )


@dataclass
class ReportArguments:
    """How the comparison is measured."""

    _argument_group_name = "recipe: report"

    latency_rounds: int = field(
        default=5,
        metadata={
            "help": "Timed rounds per model and batch size (models interleaved); the median and quartiles are "
            "reported, and a speed-up from fewer than 2 rounds is marked unreliable."
        },
    )
    latency_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch threads while timing latency (default: torch's current count); recorded in "
            "report.json. On a shared machine, fewer threads than cores keeps others' load off the timing."
        },
    )
    write_model_cards: bool = field(
        default=True, metadata={"help": "Write README.md into each student folder."}
    )
    export: str | None = field(
        default=None,
        metadata={
            "help": "'onnx': export every distilled student and the teacher (runs/<recipe>/onnx/<name>/), score "
            "them with ONNX Runtime on the test split and time them beside PyTorch (report.json 'deployment')."
        },
    )
    quantize: str | None = field(
        default=None,
        metadata={
            "help": "With --export onnx: 'int8-dynamic', 'int8-static' (calibrated on training rows) or "
            "'int8-weights' (weights int8 per block, activations per block: closest to fp32, not faster)."
        },
    )
    verbose: bool = field(
        default=False,
        metadata={
            "help": "Print datasets' map bars and transformers' loading bars and load report too (by default: "
            "a line per stage with its time, Trainer's bar, the table and the verdict)."
        },
    )

    generation_prompts: int = field(
        default=0,
        metadata={
            "help": "Code: held-out documented functions whose bodies the teacher and students complete "
            "(parse rate, degenerate share, doctests run in a sandboxed child process); 0: off."
        },
    )
    generation_max_new_tokens: int = field(
        default=128, metadata={"help": "Code: the longest completion, in tokens (greedy decoding)."}
    )
    teacher_prompt_style: str = field(
        default="auto",
        metadata={
            "help": "Code: how the teacher is prompted: 'chat' (its chat template), 'raw' (the code itself), "
            "'auto' (chat where the tokenizer has a template) or 'both' (measured both ways)."
        },
    )

    def __post_init__(self):
        if self.generation_prompts < 0 or self.generation_max_new_tokens < 1:
            raise ValueError(
                f"generation_prompts={self.generation_prompts}, generation_max_new_tokens="
                f"{self.generation_max_new_tokens}: prompts must be >= 0 (0 turns the generation evaluation "
                "off) and new tokens >= 1."
            )
        if self.teacher_prompt_style not in ("auto", "chat", "raw", "both"):
            raise ValueError(
                f"teacher_prompt_style={self.teacher_prompt_style!r} is not one of 'auto', 'chat', 'raw', 'both'."
            )
        if self.latency_rounds < 1:
            raise ValueError(
                f"latency_rounds={self.latency_rounds} must be >= 1: the median needs one timing."
            )
        self._check_export()
        if self.latency_threads is not None and self.latency_threads < 1:
            raise ValueError(
                f"latency_threads={self.latency_threads} must be >= 1 (torch.set_num_threads needs a thread); "
                "leave it unset to time with torch's current thread count."
            )

    def _check_export(self) -> None:
        """``--export`` / ``--quantize`` refused before any training: an unknown format or scheme, a scheme
        without ``--export``, the ``[export]`` extra missing."""
        if self.export is None:
            if self.quantize is not None:
                raise ValueError(
                    f"--quantize {self.quantize} quantizes the exported graph, and no --export was given: add "
                    "--export onnx."
                )
            return
        if self.export != "onnx":
            raise ValueError(
                f"--export {self.export!r} is not a format the recipes export to; use --export onnx."
            )
        from hf_distill.export import require_export_packages
        from hf_distill.export.quantize import QUANTIZATIONS

        if self.quantize is not None and self.quantize not in QUANTIZATIONS:
            raise ValueError(f"--quantize {self.quantize!r} is not one of {list(QUANTIZATIONS)}.")
        require_export_packages()


RECIPE_ARGUMENTS = (
    TeacherArguments,
    StudentArguments,
    DataArguments,
    ReportArguments,
    DistillationTrainingArguments,
)


@dataclass(kw_only=True)
class RecipeConfig:
    """Every argument group of one recipe run, by name: what the recipe functions take instead of three to six
    argument objects in a fixed order. Groups left out get their defaults (``training`` has none: it names the
    run's ``output_dir``).

    Args:
        training (DistillationTrainingArguments): the Trainer's and the distillation's arguments (the class of
            the chosen ``distillation_mode``).
        teacher (TeacherArguments): which teacher, and its fine-tune.
        student (StudentArguments): which students, seeds, baselines.
        data (DataArguments): which data, and how much of it.
        report (ReportArguments): how the comparison is measured (latency, export, generation).
        mode (ModeArguments): the distillation mode and its extra teachers.
        extras (tuple): a command's own argument groups (the budget search's, the cache's, the multi-task
            recipe's), read by type with :meth:`extra`.
    """

    training: DistillationTrainingArguments
    teacher: TeacherArguments = field(default_factory=TeacherArguments)
    student: StudentArguments = field(default_factory=StudentArguments)
    data: DataArguments = field(default_factory=DataArguments)
    report: ReportArguments = field(default_factory=ReportArguments)
    mode: ModeArguments = field(default_factory=ModeArguments)
    extras: tuple[Any, ...] = ()

    def extra(self, kind: type[Group]) -> Group:
        """The command's own group of class ``kind``, e.g. ``config.extra(BudgetArguments)``.

        Args:
            kind (type): the argument class the command parsed beside the recipe's.

        Returns:
            Group: the one group of that class.
        """
        found = [group for group in self.extras if isinstance(group, kind)]
        if len(found) != 1:
            held = [type(group).__name__ for group in self.extras] or "none"
            raise ValueError(
                f"this recipe configuration holds {len(found)} {kind.__name__} groups (its extra groups: {held}); "
                f"a command that needs {kind.__name__} parses it with parse_recipe_config(..., "
                f"extra=({kind.__name__},)) or passes it in RecipeConfig(extras=...)."
            )
        return found[0]

    @classmethod
    def from_groups(cls, groups: Iterable[Any]) -> RecipeConfig:
        """The configuration of parsed argument groups in any order (what ``parse_args_with_config`` returns):
        each group goes to the field of its class; groups of other classes become :attr:`extras`.

        Args:
            groups (Iterable): parsed argument dataclasses, one of each recipe class at most.

        Returns:
            RecipeConfig: the groups by name.
        """
        named: dict[str, Any] = {}
        extras = []
        for group in groups:
            slot = next((name for name, kind in GROUP_FIELDS if isinstance(group, kind)), None)
            if slot is None:
                extras.append(group)
            elif slot in named:
                raise ValueError(
                    f"two {type(group).__name__} groups were given for the one '{slot}' of a recipe "
                    "configuration; pass each argument class once."
                )
            else:
                named[slot] = group
        if "training" not in named:
            raise ValueError(
                "a recipe configuration needs the training arguments (a DistillationTrainingArguments, which "
                "names output_dir); none of the groups given is one."
            )
        return cls(**named, extras=tuple(extras))

    def as_tuple(self) -> tuple[Any, ...]:
        """``(teacher, student, data, report, mode, *extras, training)``: :func:`parse_recipe_args`'s order."""
        return (self.teacher, self.student, self.data, self.report, self.mode, *self.extras, self.training)


# Each named field of RecipeConfig and the class of its group.
GROUP_FIELDS = (
    ("teacher", TeacherArguments),
    ("student", StudentArguments),
    ("data", DataArguments),
    ("report", ReportArguments),
    ("mode", ModeArguments),
    ("training", DistillationTrainingArguments),
)


def parse_recipe_config(
    argv: list[str] | None = None,
    task: str | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
    extra: tuple[type, ...] = (),
) -> RecipeConfig:
    """A recipe's flags (``--config`` file included) as a :class:`RecipeConfig`; its ``training`` is the class
    of the chosen ``distillation_mode``, so that mode's own flags are valid. With the recipe's ``task`` a mode
    that cannot run on it is refused here, before anything is loaded.

    ``report_to`` defaults to TensorBoard when it is installed (the ``tensorboard`` extra), else to none, and
    ``dataloader_pin_memory`` to whether there is an accelerator (:func:`default_pin_memory`); a flag or
    config value wins.

    Args:
        argv (list[str] | None): the flags; None reads ``sys.argv[1:]``.
        task (str | None): the recipe's task kind (``"causal_lm"``, ...), to refuse a mode that cannot run it.
        prog (str | None): the program name ``--help`` shows.
        description (str | None): the text ``--help`` shows.
        extra (tuple[type, ...]): a command's own argument classes (e.g. the budget search's), parsed beside
            the recipe's and read with :meth:`RecipeConfig.extra`.

    Returns:
        RecipeConfig: every group of the run by name.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    training_class = arguments_class(mode_from_argv(argv))
    parsed = parse_args_with_config(
        (*RECIPE_ARGUMENTS[:-1], ModeArguments, *extra, training_class),
        argv,
        prog=prog,
        description=description,
        defaults={"report_to": default_report_to(), "dataloader_pin_memory": default_pin_memory()},
    )
    config = RecipeConfig.from_groups(parsed)
    if task is not None:
        # A code block is max_length tokens: a prompt longer than that is refused before tokenizing.
        config.mode.check_task(task, config.data.max_length if task == "causal_lm" else None)
    return config


def parse_recipe_args(
    argv: list[str] | None = None,
    task: str | None = None,
    *,
    prog: str | None = None,
    description: str | None = None,
    extra: tuple[type, ...] = (),
) -> tuple[Any, ...]:
    """:func:`parse_recipe_config` as the tuple ``(teacher, student, data, report, mode, *extra, training)``
    that scripts written before :class:`RecipeConfig` unpack (:meth:`RecipeConfig.as_tuple`); new code takes
    the config, whose groups are named rather than placed."""
    return parse_recipe_config(argv, task, prog=prog, description=description, extra=extra).as_tuple()
