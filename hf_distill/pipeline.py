"""The shared pipeline of the recipes: teacher, students, distillation, a no-KD baseline, evaluation, report.

A recipe (``recipes/<task>.py``) parses the dataclasses below, prepares its task's data with
:mod:`hf_distill.tasks` and hands both to :func:`run_recipe`, which

1. loads the teacher and fine-tunes it on the task unless it already has a head for it
   (:func:`load_teacher`, :func:`fine_tune_teacher`);
2. builds each student (:func:`build_student`): from teacher layers, from a smaller config, a GPT-2 over the
   teacher's vocabulary, or a given checkpoint;
3. distils it (:func:`train_student` with ``kd=True``) in the chosen ``distillation_mode``
   (:mod:`hf_distill.modes.select`: plain KD, several teachers, self-distillation, mutual learning, or for
   causal LMs on-policy and sequence-level KD);
4. trains a copy of the same initial student on the labels alone, the no-KD baseline (``kd=False``);
5. evaluates teacher and students on the held-out test split (:func:`evaluate_models`) and measures
   latency at batch 1 and 32 side by side (:func:`measure_latency`);
6. writes ``report.json`` (the schema of :mod:`hf_distill.report`) and prints the comparison table.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, Trainer, set_seed

from .arguments import DistillationTrainingArguments
from .config import parse_args_with_config
from .modes.mutual import STUDENT_A
from .modes.select import ModeArguments, arguments_class, mode_from_argv, mode_train_data, mode_trainer
from .offline import HUB_IDS, resolve_model_path
from .report import REPORT_FILENAME, comparison_table, markdown_table, validate_report
from .student import (
    count_parameters,
    gpt2_student_for,
    model_size_on_disk,
    student_from_config,
    student_from_teacher,
)

logger = logging.getLogger(__name__)

STUDENT_INITS = ("teacher_layers", "config", "gpt2", "pretrained")
FINE_TUNE_CHOICES = ("auto", "always", "never")
LATENCY_BATCH_SIZES = (1, 32)


# ---- arguments ------------------------------------------------------------------------------------------


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


# ---- the task ---------------------------------------------------------------------------------------------


@dataclass
class TaskData:
    """A task's tokenized splits and how to score them, built by :mod:`hf_distill.tasks`.

    ``evaluate(model, dataset, args)`` returns a dict of metrics that holds ``metric_name``.
    """

    task: str
    auto_class: type
    metric_name: str
    higher_is_better: bool
    dataset_label: str
    tokenizer: Any
    train: Any
    validation: Any
    test: Any
    collator: Callable
    evaluate: Callable[[nn.Module, Any, DistillationTrainingArguments], dict[str, float]]
    label_kwargs: dict[str, Any] = field(default_factory=dict)  # num_labels, id2label, label2id


# ---- 1. teacher -------------------------------------------------------------------------------------------


def teacher_needs_fine_tune(path: str, task: TaskData, choice: str, revision: str | None = None) -> bool:
    """Whether the checkpoint lacks a trained head for the task (``choice="auto"``).

    It has one when its architecture ends with the task's head (``ForSequenceClassification``), its label
    count is the task's, and its label names are the task's or the uninformative ``LABEL_<i>``. Named labels
    that differ mean a head trained for another label set, which is fine-tuned like a missing one.
    """
    if choice == "always":
        return True
    if task.task == "causal_lm":
        return False
    config = AutoConfig.from_pretrained(path, revision=revision)
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


def load_teacher(args: TeacherArguments, task: TaskData) -> tuple[PreTrainedModel, bool]:
    """The teacher model (float32) and whether it still has to be fine-tuned."""
    path = resolve_model_path(args.teacher_model_name_or_path)
    needs = teacher_needs_fine_tune(path, task, args.fine_tune_teacher, args.teacher_revision)
    # A new head gets the task's labels; an already fine-tuned one keeps its own (checked by the trainer). A
    # head trained for another label count is replaced, not an error: it is about to be fine-tuned anyway.
    kwargs = {**task.label_kwargs, "ignore_mismatched_sizes": True} if needs else {}
    teacher = task.auto_class.from_pretrained(
        path, revision=args.teacher_revision, dtype=torch.float32, **kwargs
    )
    return teacher, needs


def _derived_args(args: DistillationTrainingArguments, output_dir: Path, **changes: Any):
    # replace() re-runs __post_init__, so the copy is checked like the original.
    return dataclasses.replace(args, output_dir=str(output_dir), **changes)


def _plain_trainer_args(args: DistillationTrainingArguments, output_dir: Path, **changes: Any):
    """Arguments for a plain ``Trainer`` (teacher fine-tune, no-KD baseline) that trains like one process.

    With ``average_tokens_across_devices`` the Trainer multiplies the loss by the number of processes whenever
    the model's ``forward`` takes ``**kwargs``, expecting the model to divide by the global item count. BERT's
    classification heads take ``**kwargs`` but return a plain per-process mean, so under DDP their loss and
    gradients would be doubled with two processes. Turned off, each process's mean is averaged by DDP: the
    global mean whenever processes hold equal item counts (always for sequence classification and full code
    blocks). The DistillationTrainer normalises by the global count itself and keeps the setting.
    """
    return _derived_args(args, output_dir, average_tokens_across_devices=False, **changes)


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
    teacher_args = _plain_trainer_args(
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
    trainer.train()
    trainer.save_model(str(output_dir))
    return teacher, trainer.state.log_history


def ready_teacher(
    args: TeacherArguments,
    task: TaskData,
    training_args,
    folder: Path,
    seed: int | None = None,
) -> tuple[PreTrainedModel, Path | None, list[dict]]:
    """The teacher for ``task`` in eval mode: loaded (:func:`load_teacher`) and, when it lacks the task's head,
    fine-tuned into ``folder`` (:func:`fine_tune_teacher` with ``seed``). Returns the model, the folder it was
    fine-tuned into (None when used as it is) and the fine-tune's log history."""
    teacher, needs_fine_tune = load_teacher(args, task)
    if not needs_fine_tune:
        return teacher.eval(), None, []
    teacher, history = fine_tune_teacher(teacher, task, args, training_args, folder, seed=seed)
    return teacher.eval(), folder, history


# ---- 2. students ------------------------------------------------------------------------------------------


def build_student(
    init: str, teacher: PreTrainedModel, args: StudentArguments, task: TaskData
) -> PreTrainedModel:
    """A student of the chosen kind; random parts are seeded by the caller (``set_seed``)."""
    if init == "teacher_layers":
        # Copied layers keep the teacher's sizes, so the config overrides (sizes) are for the other kinds.
        return student_from_teacher(
            teacher, num_layers=args.student_num_layers, strategy=args.student_layer_strategy
        )
    overrides = args.config_overrides()
    if init == "config":
        return student_from_config(teacher, num_hidden_layers=args.student_num_layers, **overrides)
    if init == "gpt2":
        if task.task != "causal_lm":
            raise ValueError(
                f"student_init 'gpt2' builds a causal LM, but this task is {task.task}; use 'teacher_layers' "
                "or 'config' for classification tasks."
            )
        return gpt2_student_for(teacher, n_layer=args.student_num_layers, **overrides)
    path = resolve_model_path(args.student_model_name_or_path)
    return task.auto_class.from_pretrained(path, dtype=torch.float32, **task.label_kwargs)


def _with_eager_attention(model: PreTrainedModel, args: DistillationTrainingArguments) -> PreTrainedModel:
    """Attention matching reads the attention probabilities, which only the eager implementation returns; the
    recipes load models with the default (SDPA), so they switch when the matching is on."""
    if args.matches_attention:
        model.set_attn_implementation("eager")
    return model


def student_name(init: str, args: StudentArguments, kd: bool, mode: str = "kd") -> str:
    """``<init>-<layers>L-distilled`` (plain KD), ``...-<mode>`` (another distillation mode), ``...-no_kd``."""
    layers = "" if init == "pretrained" else f"-{args.student_num_layers}L"
    if not kd:
        return f"{init}{layers}-no_kd"
    return f"{init}{layers}-{'distilled' if mode == 'kd' else mode}"


# ---- 3./4. training ---------------------------------------------------------------------------------------


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
) -> tuple[list[dict], Path]:
    """Trains ``student`` with the teacher (``kd=True``: the trainer of ``mode_args.distillation_mode``, plain
    KD by default) or on the labels only (``kd=False``: a plain ``Trainer`` with the same arguments, data order
    and steps). Saves it under ``output_dir``; returns the Trainer's ``log_history`` and the student's folder
    (``output_dir``, or its ``student_a/`` for mutual learning, whose peer is saved in ``student_b/``)."""
    mode_args = mode_args or ModeArguments()
    args = _derived_args(training_args, output_dir) if kd else _plain_trainer_args(training_args, output_dir)
    set_seed(training_args.seed)
    common = dict(eval_dataset=task.validation, processing_class=task.tokenizer)
    if kd:
        train, collator = mode_train_data(
            mode_args, task.train, teacher, task.tokenizer, student, training_args.per_device_eval_batch_size
        )
        set_seed(training_args.seed)  # generating the training set (sequence_kd) must not shift the seed
        trainer = mode_trainer(
            mode_args,
            student,
            [teacher, *extra_teachers],
            args,
            peer=peer,
            train_dataset=train,
            data_collator=collator or task.collator,
            **common,
        )
    else:
        trainer = Trainer(
            model=student, args=args, train_dataset=task.train, data_collator=task.collator, **common
        )
    trainer.train()
    trainer.save_model(str(output_dir))
    folder = output_dir / STUDENT_A if kd and mode_args.distillation_mode == "mutual" else output_dir
    return trainer.state.log_history, folder


# ---- 5. evaluation ----------------------------------------------------------------------------------------


def evaluate_models(
    models: dict[str, nn.Module], task: TaskData, training_args: DistillationTrainingArguments
) -> dict[str, dict[str, float]]:
    """Every model's metrics on the held-out test split."""
    return {name: task.evaluate(model, task.test, training_args) for name, model in models.items()}


def _latency_batch(task: TaskData, batch_size: int) -> dict[str, torch.Tensor]:
    rows = [task.test[i] for i in range(min(batch_size, len(task.test)))]
    while len(rows) < batch_size:  # a tiny test split still gives a full batch
        rows += rows[: batch_size - len(rows)]
    batch = task.collator(rows)
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


@torch.inference_mode()
def measure_latency(
    models: dict[str, nn.Module],
    batches: dict[int, dict[str, torch.Tensor]],
    rounds: int = 5,
) -> dict[str, dict[int, float]]:
    """Median forward latency in milliseconds, ``{model name: {batch size: ms}}``.

    Models are timed side by side: each round runs every model once per batch size, in turn, so a slow
    patch of a shared machine slows all models alike instead of one; the median of ``rounds`` drops the
    outliers. One untimed warm-up pass per model and batch size comes first (allocation, kernel choice).
    """
    times: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in models}
    for model in models.values():
        model.eval()
    for round_index in range(rounds + 1):
        for size, batch in batches.items():
            for name, model in models.items():
                device = next(model.parameters()).device
                inputs = {k: v.to(device) for k, v in batch.items()}
                start = time.perf_counter()
                model(**inputs)
                elapsed = (time.perf_counter() - start) * 1000.0
                if round_index > 0:
                    times[name][size].append(elapsed)
    return {
        name: {size: statistics.median(values) for size, values in sizes.items()}
        for name, sizes in times.items()
    }


# ---- 6. report --------------------------------------------------------------------------------------------


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")


def build_report(
    task: TaskData,
    teacher_entry: dict[str, Any],
    students: list[dict[str, Any]],
    training_args: DistillationTrainingArguments,
    log_history: dict[str, list[dict]],
    distillation_mode: str = "kd",
    extra_teachers: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``report.json`` content; fills each student's ``retention`` and ``speedup_b1``/``speedup_b32``.

    ``extra_teachers``: a multi-teacher run's other teachers (name, fine-tuned folder, test metric).

    ``retention = student / teacher`` when higher is better, ``teacher / student`` otherwise (perplexity),
    so 100 % always means "as good as the teacher"; ``speedup = teacher latency / student latency``.
    """
    for student in students:
        if task.higher_is_better:
            student["retention"] = _ratio(student["metric"], teacher_entry["metric"])
        else:
            student["retention"] = _ratio(teacher_entry["metric"], student["metric"])
        for size in LATENCY_BATCH_SIZES:
            key = f"latency_ms_b{size}"
            student[f"speedup_b{size}"] = _ratio(teacher_entry[key], student[key])
    report = {
        "task": task.task,
        "metric_name": task.metric_name,
        "higher_is_better": task.higher_is_better,
        "teacher": teacher_entry,
        "students": students,
        "distillation": {
            "distillation_mode": distillation_mode,
            **({"extra_teachers": extra_teachers} if extra_teachers else {}),
            "distillation_loss": training_args.distillation_loss,
            "temperature": training_args.temperature,
            "alpha": training_args.alpha,
            "hidden_state_weight": training_args.hidden_state_weight,
            "hidden_state_loss": training_args.hidden_state_loss,
            "hidden_layer_map": training_args.hidden_layer_map,
        },
        "data": {
            "dataset": task.dataset_label,
            "train_size": len(task.train),
            "validation_size": len(task.validation) if task.validation is not None else 0,
            "test_size": len(task.test),
        },
        "log_history": log_history,
    }
    return validate_report(report)


def write_report(report: dict[str, Any], run_dir: Path) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / REPORT_FILENAME
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def format_table(report: dict[str, Any]) -> str:
    header, rows = comparison_table(report)
    return markdown_table(header, rows)


def _write_cards(report: dict[str, Any]) -> None:
    from .hub import write_model_card

    for student in report["students"]:
        write_model_card(student["output_dir"], report, student_name=student["name"])


# ---- the whole recipe -------------------------------------------------------------------------------------


def _local_folder(args: TeacherArguments) -> Path | None:
    """The teacher's folder when it is on disk: its weight files are measured instead of saving a copy."""
    path = Path(resolve_model_path(args.teacher_model_name_or_path))
    return path if path.is_dir() and args.teacher_revision is None else None


def _model_entry(model: nn.Module, folder: Path | None, metrics: dict[str, float], task: TaskData) -> dict:
    return {
        "metric": float(metrics[task.metric_name]),
        "metrics": metrics,
        "parameters": count_parameters(model),
        "size_bytes": model_size_on_disk(folder if folder is not None else model),
    }


def load_extra_teachers(
    mode_args: ModeArguments,
    teacher_args: TeacherArguments,
    task: TaskData,
    training_args: DistillationTrainingArguments,
    run_dir: Path,
) -> list[tuple[str, PreTrainedModel, Path | None]]:
    """The ``extra_teachers`` of a multi-teacher run as ``(name, model, fine-tuned folder or None)``; teacher
    ``k`` (from 1) that lacks the task's head is fine-tuned like the first with seed ``seed + k``."""
    teachers = []
    for k, name in enumerate(mode_args.extra_teachers or [], start=1):
        # fine_tune_teacher='never' is about the first teacher (often one fine-tuned by an earlier run); an
        # extra teacher without the task's head is still fine-tuned.
        choice = "auto" if teacher_args.fine_tune_teacher == "never" else teacher_args.fine_tune_teacher
        args = dataclasses.replace(teacher_args, teacher_model_name_or_path=name, fine_tune_teacher=choice)
        model, folder, _ = ready_teacher(
            args, task, training_args, run_dir / f"teacher_{k}", seed=training_args.seed + k
        )
        teachers.append((name, model, folder))
    return teachers


def run_recipe(
    task: TaskData,
    teacher_args: TeacherArguments,
    student_args: StudentArguments,
    report_args: ReportArguments,
    training_args: DistillationTrainingArguments,
    mode_args: ModeArguments | None = None,
) -> dict[str, Any] | None:
    """Steps 1-6 of the module docstring. Returns the report on the main process, None on the others."""
    mode_args = mode_args or ModeArguments()
    mode = mode_args.distillation_mode
    mode_args.check_task(task.task, len(task.train[0]["input_ids"]) if task.task == "causal_lm" else None)
    state = PartialState()
    run_dir = Path(training_args.output_dir)
    set_seed(training_args.seed)
    teacher, teacher_folder, teacher_history = ready_teacher(
        teacher_args, task, training_args, run_dir / "teacher"
    )
    teacher = _with_eager_attention(teacher, training_args)
    extra = load_extra_teachers(mode_args, teacher_args, task, training_args, run_dir)

    students: list[dict[str, Any]] = []
    models: dict[str, nn.Module] = {}
    histories: dict[str, list[dict]] = {}
    for init in student_args.student_init:
        set_seed(training_args.seed)
        initial = _with_eager_attention(build_student(init, teacher, student_args, task), training_args)
        peer = None
        if mode == "mutual":
            # The second student is built the same way with the next seed: its random parts (a new head, a
            # config student's weights) differ; students copied from teacher layers start equal and part
            # through dropout.
            set_seed(training_args.seed + 1)
            peer = build_student(init, teacher, student_args, task)
        runs = [True, False] if student_args.run_baseline else [True]
        for kd in runs:
            name = student_name(init, student_args, kd, mode)
            student = copy.deepcopy(initial) if kd and student_args.run_baseline else initial
            histories[name], folder = train_student(
                student,
                teacher,
                task,
                training_args,
                run_dir / "students" / name,
                kd=kd,
                mode_args=mode_args,
                extra_teachers=[model for _, model, _ in extra],
                peer=peer,
            )
            models[name] = student.eval()
            students.append(
                {
                    "name": name,
                    "kind": "distilled" if kd else "no_kd_baseline",
                    "init": init,
                    "output_dir": str(folder),
                }
            )

    metrics = evaluate_models({"teacher": teacher, **models}, task, training_args)
    extra_metrics = evaluate_models({name: model for name, model, _ in extra}, task, training_args)
    if not state.is_main_process:
        state.wait_for_everyone()
        return None
    batches = {size: _latency_batch(task, size) for size in LATENCY_BATCH_SIZES}
    latency = measure_latency({"teacher": teacher, **models}, batches, rounds=report_args.latency_rounds)

    def with_latency(name: str, entry: dict) -> dict:
        entry.update({f"latency_ms_b{size}": latency[name][size] for size in LATENCY_BATCH_SIZES})
        return entry

    name = teacher_args.teacher_model_name_or_path
    teacher_entry = with_latency(
        "teacher",
        {
            "name_or_path": HUB_IDS.get(name, name),
            "offline_alias": name if name in HUB_IDS else None,
            "revision": teacher_args.teacher_revision,
            "fine_tuned_dir": str(teacher_folder) if teacher_folder is not None else None,
            **_model_entry(teacher, teacher_folder or _local_folder(teacher_args), metrics["teacher"], task),
        },
    )
    if teacher_history:
        teacher_entry["log_history"] = teacher_history
    for entry in students:
        name = entry["name"]
        entry.update(_model_entry(models[name], Path(entry["output_dir"]), metrics[name], task))
        with_latency(name, entry)
    extra_entries = [
        {
            "name_or_path": HUB_IDS.get(name, name),
            "fine_tuned_dir": str(folder) if folder is not None else None,
            "metric": float(extra_metrics[name][task.metric_name]),
        }
        for name, _, folder in extra
    ]
    report = build_report(task, teacher_entry, students, training_args, histories, mode, extra_entries)
    write_report(report, run_dir)
    if report_args.write_model_cards:
        _write_cards(report)
    print(f"\n{format_table(report)}\n\nreport: {run_dir / REPORT_FILENAME}", flush=True)
    state.wait_for_everyone()
    return report


def teacher_tokenizer(args: TeacherArguments, **kwargs: Any):
    """The teacher's tokenizer (students share it)."""
    return AutoTokenizer.from_pretrained(
        resolve_model_path(args.teacher_model_name_or_path), revision=args.teacher_revision, **kwargs
    )
