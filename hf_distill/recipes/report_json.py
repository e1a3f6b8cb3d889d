"""The content of a recipe's ``report.json`` (the schema of :mod:`hf_distill.reports.report`): each model's entry,
retention and speedup against the teacher; writing it, its comparison table and the students' model cards.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedModel

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.hub.teacher_origin import teacher_license
from hf_distill.recipes.arguments import TeacherArguments
from hf_distill.recipes.latency import LATENCY_BATCH_SIZES
from hf_distill.recipes.offline import HUB_IDS, resolve_model_path
from hf_distill.recipes.tasks import NEW_TEACHER, TaskData
from hf_distill.reports.format import deployment_table, scorecard_table, verdict_lines
from hf_distill.reports.report import REPORT_FILENAME, comparison_table, markdown_table, validate_report
from hf_distill.reports.scorecard import (
    BOOTSTRAP_SEED,
    CONFIDENCE_LEVEL,
    N_RESAMPLES,
    model_interval,
    paired_difference,
    stack_statistics,
    verdict,
)
from hf_distill.students.build import count_parameters, model_size_on_disk
from hf_distill.training.metrics import ExampleScores


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
    """The report's comparison table in Markdown, then the scorecard's table and verdicts when it has one."""
    header, rows = comparison_table(report)
    parts = [markdown_table(header, rows)]
    if report.get("scorecard"):
        parts += [markdown_table(*scorecard_table(report)), "\n".join(verdict_lines(report))]
    deployment = deployment_table(report)
    if deployment is not None:
        parts.append(markdown_table(*deployment))
    return "\n\n".join(parts)


def write_cards(report: dict[str, Any]) -> None:
    """A model card (``README.md``) in each student's folder, from the report: with several seeds, every
    seed's folder gets the card of its own weights (that seed's metrics, the mean over seeds beside them)."""
    from hf_distill.hub.card import write_model_card

    for student in report["students"]:
        runs = student.get("seeds") or []
        if len(runs) < 2:
            write_model_card(student["output_dir"], report, student_name=student["name"], seed=None)
            continue
        for run in runs:
            write_model_card(run["output_dir"], report, student_name=student["name"], seed=run["seed"])


def build_scorecard(
    task: TaskData,
    seeds: list[int],
    teacher_scores: ExampleScores,
    students: list[dict[str, Any]],
    scores: dict[str, list[ExampleScores]],
) -> dict[str, Any]:
    """The report's ``scorecard`` (:mod:`hf_distill.reports.scorecard`): every model's mean over seeds and 95% interval,
    and for each distilled student the paired difference with the no-KD baseline of the same ``init``, its
    interval and verdict. Each student entry gets the same numbers as its own ``scorecard`` (what its model
    card shows)."""
    metric = task.metric_name
    stacked = {
        entry["name"]: stack_statistics([s.statistics for s in scores[entry["name"]]], metric)
        for entry in students
    }
    teacher = stack_statistics([teacher_scores.statistics], metric)
    n_examples = teacher.shape[-1]
    models = {"teacher": model_interval(teacher, metric)}
    comparisons = []
    for entry in students:
        models[entry["name"]] = model_interval(stacked[entry["name"]], metric)
        entry["scorecard"] = {"metric_name": metric, "seeds": seeds, "test_examples": n_examples}
        entry["scorecard"].update(models[entry["name"]])
    for entry in students:
        baseline = next(
            (b for b in students if b["kind"] == "no_kd_baseline" and b["init"] == entry["init"]), None
        )
        if entry["kind"] != "distilled" or baseline is None:
            continue
        difference = paired_difference(stacked[entry["name"]], stacked[baseline["name"]], metric)
        line = verdict(difference, metric, task.higher_is_better, len(seeds), n_examples)
        comparison = {"distilled": entry["name"], "baseline": baseline["name"], **difference, "verdict": line}
        comparisons.append(comparison)
        entry["scorecard"]["versus_no_kd"] = comparison
    return {
        "metric_name": metric,
        "higher_is_better": task.higher_is_better,
        "seeds": seeds,
        "test_examples": n_examples,
        "confidence_level": CONFIDENCE_LEVEL,
        "n_resamples": N_RESAMPLES,
        "bootstrap_seed": BOOTSTRAP_SEED,
        "method": "paired percentile bootstrap over test examples (scipy.stats.bootstrap), every seed kept",
        "models": models,
        "comparisons": comparisons,
    }


def _local_folder(args: TeacherArguments) -> Path | None:
    """The teacher's folder when it is on disk: its weight files are measured instead of saving a copy."""
    path = Path(resolve_model_path(args.teacher_model_name_or_path))
    return path if path.is_dir() and args.teacher_revision is None else None


def model_entry(model: nn.Module, folder: Path | None, metrics: dict[str, float], task: TaskData) -> dict:
    """A model's test metric and metrics, parameter count and size on disk (of ``folder`` when given)."""
    entry = {
        "metric": float(metrics[task.metric_name]),
        "metrics": metrics,
        "parameters": count_parameters(model),
        "size_bytes": model_size_on_disk(folder if folder is not None else model),
    }
    if not isinstance(model, PreTrainedModel):
        # A plain torch module: its card says how to rebuild the class and load the state dict.
        entry["model_class"] = f"{type(model).__module__}.{type(model).__qualname__}"
    return entry


def with_latency(entry: dict[str, Any], latency: dict[str, Any]) -> dict[str, Any]:
    """Adds a model's latency fields from :func:`~hf_distill.recipes.latency.latency_entries`:
    ``latency_ms_b<size>`` for every batch size of :data:`LATENCY_BATCH_SIZES`, with the spread
    (``latency``) and, for a student, the speed-up's spread and reliability (``speedup``)."""
    missing = [size for size in LATENCY_BATCH_SIZES if f"latency_ms_b{size}" not in latency]
    if missing:
        raise ValueError(f"latency was not measured at batch size(s) {missing}; time every model at each.")
    entry.update(latency)
    return entry


def teacher_entry(
    teacher: nn.Module,
    args: TeacherArguments,
    folder: Path | None,
    history: list[dict],
    metrics: dict[str, float],
    latency: dict[str, Any],
    task: TaskData,
) -> dict[str, Any]:
    """The report's ``teacher``: where it came from, the folder it was fine-tuned into (``folder``, None when
    used as it is), its entry and latency, and the fine-tune's log ``history`` when there was one."""
    name = args.teacher_model_name_or_path
    # A teacher trained from scratch in this run has no name a Hub or a card could point to.
    from_scratch = name == NEW_TEACHER
    entry = with_latency(
        {
            "name_or_path": f"{type(teacher).__name__} trained from scratch"
            if from_scratch
            else HUB_IDS.get(name, name),
            "offline_alias": name if name in HUB_IDS else None,
            "revision": args.teacher_revision,
            # The model card's license (an offline teacher's folder carries its card).
            "license": None
            if from_scratch
            else teacher_license(resolve_model_path(name), args.teacher_revision),
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
