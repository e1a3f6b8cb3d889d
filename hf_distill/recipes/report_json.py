"""The content of a recipe's ``report.json`` (the schema of :mod:`hf_distill.report`): each model's entry,
retention and speedup against the teacher; writing it, its comparison table and the students' model cards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from ..arguments import DistillationTrainingArguments
from ..offline import HUB_IDS, resolve_model_path
from ..report import REPORT_FILENAME, comparison_table, markdown_table, validate_report
from ..student import count_parameters, model_size_on_disk
from .arguments import TeacherArguments
from .latency import LATENCY_BATCH_SIZES
from .tasks import TaskData


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
            "feature_map_weight": training_args.feature_map_weight,
            "feature_layers": training_args.feature_layers,
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
    """Writes ``report`` as ``run_dir/report.json``; returns its path."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / REPORT_FILENAME
    path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def format_table(report: dict[str, Any]) -> str:
    """The report's comparison table in Markdown."""
    header, rows = comparison_table(report)
    return markdown_table(header, rows)


def write_cards(report: dict[str, Any]) -> None:
    """A model card (``README.md``) in each student's folder, from the report."""
    from ..hub import write_model_card

    for student in report["students"]:
        write_model_card(student["output_dir"], report, student_name=student["name"])


def _local_folder(args: TeacherArguments) -> Path | None:
    """The teacher's folder when it is on disk: its weight files are measured instead of saving a copy."""
    path = Path(resolve_model_path(args.teacher_model_name_or_path))
    return path if path.is_dir() and args.teacher_revision is None else None


def model_entry(model: nn.Module, folder: Path | None, metrics: dict[str, float], task: TaskData) -> dict:
    """A model's test metric and metrics, parameter count and size on disk (of ``folder`` when given)."""
    return {
        "metric": float(metrics[task.metric_name]),
        "metrics": metrics,
        "parameters": count_parameters(model),
        "size_bytes": model_size_on_disk(folder if folder is not None else model),
    }


def with_latency(entry: dict[str, Any], latency: dict[int, float]) -> dict[str, Any]:
    """Adds a model's ``latency_ms_b<size>`` for every batch size of :data:`LATENCY_BATCH_SIZES`."""
    entry.update({f"latency_ms_b{size}": latency[size] for size in LATENCY_BATCH_SIZES})
    return entry


def teacher_entry(
    teacher: nn.Module,
    args: TeacherArguments,
    folder: Path | None,
    history: list[dict],
    metrics: dict[str, float],
    latency: dict[int, float],
    task: TaskData,
) -> dict[str, Any]:
    """The report's ``teacher``: where it came from, the folder it was fine-tuned into (``folder``, None when
    used as it is), its entry and latency, and the fine-tune's log ``history`` when there was one."""
    name = args.teacher_model_name_or_path
    entry = with_latency(
        {
            "name_or_path": HUB_IDS.get(name, name),
            "offline_alias": name if name in HUB_IDS else None,
            "revision": args.teacher_revision,
            "fine_tuned_dir": str(folder) if folder is not None else None,
            **model_entry(teacher, folder or _local_folder(args), metrics, task),
        },
        latency,
    )
    if history:
        entry["log_history"] = history
    return entry


def extra_teacher_entries(
    extra: list[tuple[str, nn.Module, Path | None]], metrics: dict[str, dict[str, float]], task: TaskData
) -> list[dict[str, Any]]:
    """The report's ``extra_teachers`` of a multi-teacher run: each one's name, fine-tuned folder, test metric."""
    return [
        {
            "name_or_path": HUB_IDS.get(name, name),
            "fine_tuned_dir": str(folder) if folder is not None else None,
            "metric": float(metrics[name][task.metric_name]),
        }
        for name, _, folder in extra
    ]
