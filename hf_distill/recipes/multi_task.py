"""The multi-task recipe: one student encoder with a head per task, each task taught by its own teacher, against
one distilled student per task.

:func:`run_multi_task_recipe` takes the tasks' data (:mod:`hf_distill.recipes.tasks`) and

1. gets a teacher per task: the checkpoint fine-tuned on that task unless it already has the task's head
   (saved in ``teacher_<task>/``), as in the single-task recipes;
2. cuts a student encoder from the checkpoint's layers (``student_num_layers``, ``student_layer_strategy``),
   the same encoder for every student below, with a linear head per task
   (:class:`~hf_distill.modes.multi_task.MultiTaskStudent`);
3. trains, with :class:`~hf_distill.modes.multi_task.MultiTaskDistillationTrainer` and the same arguments:
   the multi-task student (one encoder, every task's batches), one single-task student per task (its own
   encoder, the same batches of that task), and, unless ``run_baseline`` is false, the multi-task student on
   the labels alone (``alpha=0``);
4. scores every head on its task's test split and writes ``multi_task_report.json``.

The single-task students see each task's examples exactly as often as the multi-task student does, so the
comparison isolates what sharing one encoder costs or gains, at a fraction of the parameters.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from torch import nn
from transformers import AutoModel, set_seed
from transformers.modeling_outputs import SequenceClassifierOutput

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.losses.divergences import task_cross_entropy
from hf_distill.modes.multi_task import MultiTaskDataset, MultiTaskDistillationTrainer, MultiTaskStudent
from hf_distill.recipes.arguments import RecipeConfig, TeacherArguments
from hf_distill.recipes.data_arguments import DataArguments
from hf_distill.recipes.latency import measure_latency
from hf_distill.recipes.offline import HUB_IDS, resolve_model_path
from hf_distill.recipes.student_arguments import StudentArguments
from hf_distill.recipes.tasks import TaskData, prepare_ner, prepare_sentiment
from hf_distill.recipes.teacher import ready_teacher
from hf_distill.students.build import count_parameters, student_from_teacher

REPORT_NAME = "multi_task_report.json"
RECIPE_TASKS = ("sentiment", "ner")


@dataclass
class MultiTaskArguments:
    """Which tasks share the student."""

    tasks: list[str] = field(
        default_factory=lambda: list(RECIPE_TASKS),
        metadata={"help": f"Two or more of {RECIPE_TASKS}; the data caps of DataArguments apply to each."},
    )

    def __post_init__(self):
        if isinstance(self.tasks, str):
            self.tasks = [t.strip() for t in self.tasks.split(",") if t.strip()]
        unknown = [t for t in self.tasks if t not in RECIPE_TASKS]
        if unknown or len(set(self.tasks)) < 2:
            raise ValueError(
                f"tasks {self.tasks} must name two or more different tasks of {RECIPE_TASKS}"
                + (f" ({unknown} are unknown)" if unknown else "")
                + "; one student learns them all."
            )


def prepare_tasks(names: list[str], data_args: DataArguments, tokenizer: Any) -> dict[str, TaskData]:
    """The tokenized data of each named task, from the offline defaults unless ``data_args`` says otherwise."""
    preparers = {"sentiment": prepare_sentiment, "ner": prepare_ner}
    # One set of data flags serves several tasks: the data files are NER's (CoNLL), the others keep their
    # default data.
    no_files = dataclasses.replace(data_args, train_file=None, validation_file=None, test_file=None)
    return {name: preparers[name](data_args if name == "ner" else no_files, tokenizer) for name in names}


class TaskView(nn.Module):
    """One task of a :class:`MultiTaskStudent` as an ordinary classifier (``logits``, and ``loss`` given
    ``labels``), so the single-task evaluators and latency measurement take it as they take any model."""

    def __init__(self, student: MultiTaskStudent, task: str):
        super().__init__()
        self.student, self.task = student, task

    def forward(
        self, input_ids=None, attention_mask=None, labels=None, **kwargs: Any
    ) -> SequenceClassifierOutput:
        logits = self.student(input_ids=input_ids, attention_mask=attention_mask, task=self.task, **kwargs)[
            "logits"
        ]
        loss = task_cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def load_task_teachers(
    tasks: dict[str, TaskData], teacher_args: TeacherArguments, training_args, run_dir: Path
) -> dict[str, nn.Module]:
    teachers = {}
    for name, task in tasks.items():
        set_seed(training_args.seed)
        teachers[name], _, _ = ready_teacher(teacher_args, task, training_args, run_dir / f"teacher_{name}")
    return teachers


def build_multi_task_student(
    teacher_args: TeacherArguments, student_args: StudentArguments, tasks: dict[str, TaskData], seed: int
) -> MultiTaskStudent:
    """The encoder cut from the checkpoint's layers (not from a task's fine-tuned teacher, so that no task is
    favoured) and a freshly initialised head per task."""
    path = resolve_model_path(teacher_args.teacher_model_name_or_path)
    base = AutoModel.from_pretrained(path, revision=teacher_args.teacher_revision, dtype=torch.float32)
    encoder = student_from_teacher(
        base, num_layers=student_args.student_num_layers, strategy=student_args.student_layer_strategy
    )
    set_seed(seed)
    heads = {name: (task.task, task.label_kwargs["num_labels"]) for name, task in tasks.items()}
    return MultiTaskStudent(encoder, heads)


def train_multi_task(
    student: MultiTaskStudent,
    teachers: dict[str, nn.Module],
    tasks: dict[str, TaskData],
    training_args: DistillationTrainingArguments,
    output_dir: Path,
    **changes: Any,
) -> list[dict]:
    """Trains ``student`` on the tasks of its heads and saves it in ``output_dir``; returns the log history."""
    args = dataclasses.replace(training_args, output_dir=str(output_dir), **changes)
    set_seed(training_args.seed)
    names = list(student.head_specs)
    trainer = MultiTaskDistillationTrainer(
        model=student,
        teacher_models={name: teachers[name] for name in names},
        args=args,
        train_dataset=MultiTaskDataset({name: tasks[name].train for name in names}),
        collators={name: tasks[name].collator for name in names},
    )
    trainer.train()
    trainer.save_model(str(output_dir))
    return trainer.state.log_history


def run_multi_task_recipe(tasks: dict[str, TaskData], config: RecipeConfig) -> dict[str, Any] | None:
    """Steps 1-4 of the module docstring.

    Args:
        tasks (dict[str, TaskData]): each task's prepared data, by task name.
        config (RecipeConfig): the run's argument groups (teacher, student, report, training).

    Returns:
        dict | None: the report on the main process, None on the others.
    """
    check_multi_task(tasks)
    teacher_args, student_args, training_args = config.teacher, config.student, config.training
    state = PartialState()
    run_dir = Path(training_args.output_dir)
    teachers = load_task_teachers(tasks, teacher_args, training_args, run_dir)
    initial = build_multi_task_student(teacher_args, student_args, tasks, training_args.seed)
    students, histories = train_multi_task_students(
        initial, teachers, tasks, training_args, run_dir, run_baseline=student_args.run_baseline
    )
    scores = score_heads(tasks, teachers, students, training_args)
    if not state.is_main_process:
        state.wait_for_everyone()
        return None
    report = build_multi_task_report(
        tasks, teacher_args, teachers, students, scores, training_args, histories
    )
    report["latency_ms_b8"] = multi_task_latency(tasks, teachers, students, config.report.latency_rounds)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / REPORT_NAME).write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\n{format_multi_task_table(report)}\n\nreport: {run_dir / REPORT_NAME}", flush=True)
    state.wait_for_everyone()
    return report


def check_multi_task(tasks: dict[str, TaskData]) -> None:
    """Raises before any model is loaded unless there are two or more classification tasks to share an encoder."""
    if len(tasks) < 2:
        raise ValueError(
            f"the multi-task recipe needs two or more tasks, got {sorted(tasks)}; for one task run its own recipe."
        )
    kinds = {task.task for task in tasks.values()}
    if not kinds <= {"sequence_classification", "token_classification"}:
        raise ValueError(
            f"multi-task distillation shares a classification encoder, but the tasks are {sorted(kinds)}; use "
            "sentiment and NER (sequence and token classification)."
        )


def train_multi_task_students(
    initial: MultiTaskStudent,
    teachers: dict[str, nn.Module],
    tasks: dict[str, TaskData],
    training_args: DistillationTrainingArguments,
    run_dir: Path,
    run_baseline: bool = True,
) -> tuple[dict[str, MultiTaskStudent], dict[str, list[dict]]]:
    """Step 3, each student a copy of ``initial``: the multi-task student, one single-task student per task and
    (``run_baseline``) the multi-task student without teachers. Returns the students and their log histories."""
    students: dict[str, MultiTaskStudent] = {"multi_task_kd": copy.deepcopy(initial)}
    histories = {"multi_task_kd": train_multi_task(students["multi_task_kd"], teachers, tasks, training_args,
                                                   run_dir / "students" / "multi_task_kd")}  # fmt: skip
    for name in tasks:
        # The same encoder and this task's head, trained on this task alone.
        single = copy.deepcopy(initial)
        single.heads = nn.ModuleDict({name: single.heads[name]})
        single.head_specs = {name: single.head_specs[name]}
        key = f"single_task_kd_{name}"
        students[key] = single
        histories[key] = train_multi_task(single, teachers, tasks, training_args, run_dir / "students" / key)
    if run_baseline:
        students["multi_task_no_kd"] = copy.deepcopy(initial)
        histories["multi_task_no_kd"] = train_multi_task(
            students["multi_task_no_kd"], teachers, tasks, training_args, run_dir / "students" / "multi_task_no_kd",
            alpha=0.0,
        )  # fmt: skip
    return students, histories


def score_heads(
    tasks: dict[str, TaskData],
    teachers: dict[str, nn.Module],
    students: dict[str, MultiTaskStudent],
    training_args: DistillationTrainingArguments,
) -> dict[str, dict[str, dict[str, float]]]:
    """Every teacher and every student head on its own task's test split, ``{model: {task: metrics}}``."""
    scores: dict[str, dict[str, dict[str, float]]] = {"teacher": {}}
    for name, task in tasks.items():
        scores["teacher"][name] = task.evaluate(teachers[name], task.test, training_args)
    for key, student in students.items():
        student.eval()
        scores[key] = {
            name: tasks[name].evaluate(TaskView(student, name), tasks[name].test, training_args)
            for name in student.head_specs
        }
    return scores


def build_multi_task_report(
    tasks: dict[str, TaskData],
    teacher_args: TeacherArguments,
    teachers: dict[str, nn.Module],
    students: dict[str, MultiTaskStudent],
    scores: dict[str, dict[str, dict[str, float]]],
    training_args: DistillationTrainingArguments,
    histories: dict[str, list[dict]],
) -> dict[str, Any]:
    """The ``multi_task_report.json`` content, without the latency (:func:`multi_task_latency`)."""
    return {
        "tasks": {
            name: {
                "task": task.task,
                "metric_name": task.metric_name,
                "dataset": task.dataset_label,
                "train_size": len(task.train),
                "test_size": len(task.test),
            }
            for name, task in tasks.items()
        },  # fmt: skip
        "teacher": {
            "name_or_path": HUB_IDS.get(
                teacher_args.teacher_model_name_or_path, teacher_args.teacher_model_name_or_path
            ),
            "parameters_per_task": {name: count_parameters(t) for name, t in teachers.items()},
        },  # fmt: skip
        "students": {
            key: {"parameters": count_parameters(student), "heads": sorted(student.head_specs)}
            for key, student in students.items()
        },
        "metrics": {
            key: {name: float(m[tasks[name].metric_name]) for name, m in per_task.items()}
            for key, per_task in scores.items()
        },
        "all_metrics": scores,
        "distillation": {
            "temperature": training_args.temperature,
            "alpha": training_args.alpha,
            "distillation_loss": training_args.distillation_loss,
        },  # fmt: skip
        "log_history": histories,
    }


def multi_task_latency(
    tasks: dict[str, TaskData],
    teachers: dict[str, nn.Module],
    students: dict[str, MultiTaskStudent],
    rounds: int,
) -> dict[str, float]:
    """Median latency in ms at batch 8 of the first task's teacher and the multi-task student's head for it."""
    first = next(iter(tasks.values()))
    rows = [first.test[i] for i in range(min(8, len(first.test)))]
    batch = {k: v for k, v in first.collator(rows).items() if k in ("input_ids", "attention_mask")}
    latency = measure_latency(
        {
            "teacher": teachers[next(iter(tasks))],
            "student": TaskView(students["multi_task_kd"], next(iter(tasks))),
        },
        {8: batch},
        rounds=rounds,
    )
    return {name: latency[name][8] for name in latency}


def format_multi_task_table(report: dict[str, Any]) -> str:
    names = list(report["tasks"])
    header = ["model", "parameters", *[f"{n} {report['tasks'][n]['metric_name']}" for n in names]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    teacher_params = sum(report["teacher"]["parameters_per_task"].values())
    rows = [("teachers (one per task)", teacher_params, report["metrics"]["teacher"])]
    single = {n: report["metrics"][f"single_task_kd_{n}"][n] for n in names}
    single_params = sum(report["students"][f"single_task_kd_{n}"]["parameters"] for n in names)
    rows.append(("single-task KD students (one per task)", single_params, single))
    for key in ("multi_task_kd", "multi_task_no_kd"):
        if key in report["metrics"]:
            rows.append(
                (key.replace("_", " "), report["students"][key]["parameters"], report["metrics"][key])
            )
    for label, params, metrics in rows:
        cells = [label, f"{params / 1e6:.1f}M", *[f"{metrics[n]:.4f}" for n in names]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
