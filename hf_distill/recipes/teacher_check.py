"""Is the teacher worth distilling? The teacher against the student trained alone, on the validation split.

Distilling pulls the student towards the teacher's outputs; from a teacher no better than what the student
reaches on its own labels, that pull can only cost. When a recipe trains a no-KD baseline, it scores the
teacher and the baseline on the **validation** split (the test split is never used to judge anything) and,
when the teacher is not better, says so loudly: a warning on the console, ``teacher_check`` in
``report.json``, a line in ``report.md`` and a sentence in the model card.

A margin is judged with its interval: where the task keeps per-example scores
(:class:`~hf_distill.training.metrics.ExampleScores`), the margin teacher - baseline gets the scorecard's paired
bootstrap interval over the validation examples (:func:`hf_distill.reports.scorecard.paired_difference`), and a
teacher ahead by less than that noise is "not clearly better", with a warning: on 50 validation sentences an F1
margin of 0.8 points says nothing about which model is better.

``teacher_check`` holds ``verdict`` (``"teacher_better"``, ``"teacher_not_clearly_better"``,
``"teacher_not_better"`` or ``"not_checked"``), ``split``, ``metric_name``, ``higher_is_better``, the
teacher's validation ``teacher_metric``, each baseline's in ``baselines``, each baseline's ``margins``
(``difference`` teacher - baseline, its 95% ``interval``, ``validation_examples``) where per-example scores
exist, and ``message``: the sentence the report and the card print.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.recipes.tasks import TaskData
from hf_distill.reports.scorecard import format_difference, paired_difference, stack_statistics
from hf_distill.training.metrics import CORPUS_METRICS, ExampleScores

logger = logging.getLogger(__name__)

TEACHER_BETTER, TEACHER_NOT_BETTER, NOT_CHECKED = "teacher_better", "teacher_not_better", "not_checked"
# Ahead on the validation split, by less than the margin's interval allows telling from noise.
TEACHER_NOT_CLEARLY_BETTER = "teacher_not_clearly_better"
# The verdicts the console shows as warnings.
WARNED = (TEACHER_NOT_BETTER, TEACHER_NOT_CLEARLY_BETTER)
SPLIT = "validation"


def not_checked(why: str) -> dict[str, Any]:
    """The ``teacher_check`` of a run that could not compare the teacher with a baseline, and why."""
    return {
        "verdict": NOT_CHECKED,
        "split": SPLIT,
        "message": f"Teacher not checked against the baseline: {why}.",
    }


def teacher_margins(
    teacher: ExampleScores, baselines: dict[str, ExampleScores], metric_name: str
) -> dict[str, dict[str, Any]]:
    """Each baseline's margin ``teacher - baseline`` on the validation examples, paired example by example:
    ``{"difference", "interval": [low, high], "validation_examples"}`` (the scorecard's percentile bootstrap).

    Raises:
        ValueError: when the scores lack the metric's per-example statistics or they are not finite
            (:func:`~hf_distill.reports.scorecard.stack_statistics`).
    """
    stacked_teacher = stack_statistics([teacher.statistics], metric_name)
    margins = {}
    for name, scores in baselines.items():
        margin = paired_difference(
            stacked_teacher, stack_statistics([scores.statistics], metric_name), metric_name
        )
        margins[name] = {
            "difference": margin["difference"],
            "interval": margin["interval"],
            "validation_examples": int(stacked_teacher.shape[-1]),
        }
    return margins


def teacher_verdict(
    teacher_metric: float,
    baselines: dict[str, float],
    *,
    metric_name: str,
    higher_is_better: bool,
    margins: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``teacher_check`` from validation metrics: the teacher is better only when it beats every
    no-KD baseline (strictly: a tie is not better) and, given each baseline's ``margins``
    (:func:`teacher_margins`), by more than noise: every margin's interval on the teacher's side of 0, else
    it is "not clearly better". A non-finite metric makes the check ``not_checked``.

    Args:
        teacher_metric: the teacher's validation metric.
        baselines: each no-KD baseline's validation metric, by name.
        metric_name: the task's metric.
        higher_is_better: the metric's direction.
        margins: each baseline's paired margin with its interval; None where the task keeps no per-example
            scores (the message then says no interval was computed).

    Returns:
        The ``teacher_check`` dict (see the module docstring).
    """
    if not baselines:
        return not_checked(
            "no no-KD baseline was trained (run_baseline is off), so there is nothing to compare"
        )
    values = {"teacher": teacher_metric, **baselines}
    broken = [name for name, value in values.items() if not math.isfinite(value)]
    if broken:
        return not_checked(
            f"the validation {metric_name} of {', '.join(broken)} is not finite ({values}); the model's outputs "
            "overflowed or the split is empty"
        )
    beaten = {
        name: value
        for name, value in baselines.items()
        if not (teacher_metric > value if higher_is_better else teacher_metric < value)
    }
    check = {
        "split": SPLIT,
        "metric_name": metric_name,
        "higher_is_better": higher_is_better,
        "teacher_metric": teacher_metric,
        "baselines": dict(baselines),
    }
    if margins is not None:
        check["margins"] = margins
    check["verdict"], check["message"] = _judgement(check, beaten, margins)
    return check


def _judgement(
    check: dict[str, Any], beaten: dict[str, float], margins: dict[str, dict[str, Any]] | None
) -> tuple[str, str]:
    """The verdict and message of a check whose metrics are all finite; ``beaten``: the baselines the
    teacher does not beat."""
    metric_name, teacher_metric, baselines = check["metric_name"], check["teacher_metric"], check["baselines"]
    higher_is_better = check["higher_is_better"]
    if beaten:
        shown = ", ".join(f"{name} {value:.4g}" for name, value in beaten.items())
        margin = f"; margin {_margin_text(margins, beaten, metric_name)}" if margins else ""
        return TEACHER_NOT_BETTER, (
            f"WARNING: the teacher is not better than the student trained alone on the validation split "
            f"({metric_name}: teacher {teacher_metric:.4g}, no-KD {shown}{margin}): "
            "distillation will likely hurt. Train the teacher longer (more epochs, all the labels) or pick "
            "another teacher."
        )
    # The closest baseline is the one a margin is quoted against.
    closest = max(baselines, key=baselines.get) if higher_is_better else min(baselines, key=baselines.get)
    if margins is None:
        return TEACHER_BETTER, (
            f"The teacher scores above the student trained alone on the validation split ({metric_name}: "
            f"teacher {teacher_metric:.4g}, best no-KD {baselines[closest]:.4g}); no interval: the task keeps "
            "no per-example scores, so whether the margin is beyond noise is not known."
        )
    unclear = [name for name in baselines if not _clear(margins[name]["interval"], higher_is_better)]
    if unclear:
        return TEACHER_NOT_CLEARLY_BETTER, (
            "WARNING: the teacher is not clearly better than the student alone; distillation is unlikely to "
            f"help. On the validation split the teacher is ahead of the no-KD student by "
            f"{_margin_text(margins, unclear, metric_name)}, an interval that holds 0 ({metric_name}: "
            f"teacher {teacher_metric:.4g}, no-KD "
            + ", ".join(f"{name} {baselines[name]:.4g}" for name in unclear)
            + "). Train the teacher longer or pick another; a larger validation split narrows the interval."
        )
    return TEACHER_BETTER, (
        f"The teacher beats the student trained alone on the validation split by "
        f"{_margin_text(margins, [closest], metric_name)} ({metric_name}: teacher "
        f"{teacher_metric:.4g}, best no-KD {baselines[closest]:.4g})."
    )


def _clear(interval: list[float], higher_is_better: bool) -> bool:
    """Whether a margin's interval lies wholly on the teacher's side of 0."""
    low, high = interval
    return low > 0 if higher_is_better else high < 0


def _margin_text(margins: dict[str, dict[str, Any]], names, metric_name: str) -> str:
    """``"+0.8 points [-2.1, 3.6] (teacher - name, 50 validation examples)"`` for each of ``names``."""
    return ", ".join(
        f"{format_difference(margins[name], metric_name)} (teacher - {name}, "
        f"{margins[name]['validation_examples']} validation examples)"
        for name in names
    )


def check_teacher_worth(
    teacher: nn.Module,
    baselines: dict[str, nn.Module],
    task: TaskData,
    training_args: DistillationTrainingArguments,
) -> dict[str, Any]:
    """Scores ``teacher`` and the no-KD ``baselines`` on ``task.validation`` (never the test split) and
    returns :func:`teacher_verdict`'s ``teacher_check``, with each margin's interval where the task scores
    examples (``score_examples``) for a metric the scorecard resamples. Every process calls it (evaluation
    gathers)."""
    if not baselines:
        return teacher_verdict(float("nan"), {}, metric_name=task.metric_name, higher_is_better=True)
    if task.validation is None or len(task.validation) == 0:
        return not_checked("the task has no validation split, and the test split is never used to judge")
    models = {"teacher": teacher, **baselines}
    score_examples = getattr(task, "score_examples", None)
    if score_examples is None or task.metric_name not in CORPUS_METRICS:
        scores = {
            name: float(task.evaluate(model, task.validation, training_args)[task.metric_name])
            for name, model in models.items()
        }
        teacher_metric = scores.pop("teacher")
        return teacher_verdict(
            teacher_metric, scores, metric_name=task.metric_name, higher_is_better=task.higher_is_better
        )
    examples = {name: score_examples(model, task.validation, training_args) for name, model in models.items()}
    metrics = {name: float(scored.metrics[task.metric_name]) for name, scored in examples.items()}
    teacher_metric = metrics.pop("teacher")
    teacher_scores = examples.pop("teacher")
    finite = all(math.isfinite(value) for value in [teacher_metric, *metrics.values()])
    margins = teacher_margins(teacher_scores, examples, task.metric_name) if finite else None
    return teacher_verdict(
        teacher_metric,
        metrics,
        metric_name=task.metric_name,
        higher_is_better=task.higher_is_better,
        margins=margins,
    )


def warn_teacher_check(check: dict[str, Any]) -> None:
    """Logs the check's message: as a warning when the teacher is not (clearly) better, else as information."""
    if check["verdict"] in WARNED:
        logger.warning(check["message"])
    else:
        logger.info(check["message"])
