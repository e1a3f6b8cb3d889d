"""Is the teacher worth distilling? The teacher against the student trained alone, on the validation split.

Distilling pulls the student towards the teacher's outputs; from a teacher no better than what the student
reaches on its own labels, that pull can only cost. When a recipe trains a no-KD baseline, it scores the
teacher and the baseline on the **validation** split (the test split is never used to judge anything) and,
when the teacher is not better, says so loudly: a warning on the console, ``teacher_check`` in
``report.json``, a line in ``report.md`` and a sentence in the model card.

``teacher_check`` holds ``verdict`` (``"teacher_better"``, ``"teacher_not_better"`` or ``"not_checked"``),
``split``, ``metric_name``, ``higher_is_better``, the teacher's validation ``teacher_metric``, each baseline's
in ``baselines``, and ``message``: the sentence the report and the card print.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.recipes.tasks import TaskData

logger = logging.getLogger(__name__)

TEACHER_BETTER, TEACHER_NOT_BETTER, NOT_CHECKED = "teacher_better", "teacher_not_better", "not_checked"
SPLIT = "validation"


def not_checked(why: str) -> dict[str, Any]:
    """The ``teacher_check`` of a run that could not compare the teacher with a baseline, and why."""
    return {
        "verdict": NOT_CHECKED,
        "split": SPLIT,
        "message": f"Teacher not checked against the baseline: {why}.",
    }


def teacher_verdict(
    teacher_metric: float, baselines: dict[str, float], *, metric_name: str, higher_is_better: bool
) -> dict[str, Any]:
    """The ``teacher_check`` from validation metrics: the teacher is better only when it beats every
    no-KD baseline (strictly: a tie is not better); a non-finite metric makes the check ``not_checked``."""
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
        "verdict": TEACHER_NOT_BETTER if beaten else TEACHER_BETTER,
        "split": SPLIT,
        "metric_name": metric_name,
        "higher_is_better": higher_is_better,
        "teacher_metric": teacher_metric,
        "baselines": dict(baselines),
    }
    if beaten:
        shown = ", ".join(f"{name} {value:.4g}" for name, value in beaten.items())
        check["message"] = (
            f"WARNING: the teacher is not better than the student trained alone on the validation split "
            f"({metric_name}: teacher {teacher_metric:.4g}, no-KD {shown}): distillation will likely hurt. "
            "Train the teacher longer (more epochs, all the labels) or pick another teacher."
        )
    else:
        best = max(baselines.values()) if higher_is_better else min(baselines.values())
        check["message"] = (
            f"The teacher beats the student trained alone on the validation split ({metric_name}: teacher "
            f"{teacher_metric:.4g}, best no-KD {best:.4g})."
        )
    return check


def check_teacher_worth(
    teacher: nn.Module,
    baselines: dict[str, nn.Module],
    task: TaskData,
    training_args: DistillationTrainingArguments,
) -> dict[str, Any]:
    """Scores ``teacher`` and the no-KD ``baselines`` on ``task.validation`` (never the test split) and
    returns :func:`teacher_verdict`'s ``teacher_check``. Every process calls it (evaluation gathers)."""
    if not baselines:
        return teacher_verdict(float("nan"), {}, metric_name=task.metric_name, higher_is_better=True)
    if task.validation is None or len(task.validation) == 0:
        return not_checked("the task has no validation split, and the test split is never used to judge")
    scores = {
        name: float(task.evaluate(model, task.validation, training_args)[task.metric_name])
        for name, model in {"teacher": teacher, **baselines}.items()
    }
    teacher_metric = scores.pop("teacher")
    return teacher_verdict(
        teacher_metric, scores, metric_name=task.metric_name, higher_is_better=task.higher_is_better
    )


def warn_teacher_check(check: dict[str, Any]) -> None:
    """Logs the check's message: as a warning when the teacher is not better, else as information."""
    if check["verdict"] == TEACHER_NOT_BETTER:
        logger.warning(check["message"])
    else:
        logger.info(check["message"])
