"""Scoring a recipe's models on the task's held-out test split, keeping what the multi-seed scorecard
resamples (:class:`~hf_distill.training.metrics.ExampleScores`)."""

from __future__ import annotations

import numpy as np
from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.recipes.tasks import TaskData
from hf_distill.training.metrics import ExampleScores


def evaluate_models(
    models: dict[str, nn.Module], task: TaskData, training_args: DistillationTrainingArguments
) -> dict[str, dict[str, float]]:
    """Every model's metrics on the held-out test split."""
    return {name: task.evaluate(model, task.test, training_args) for name, model in models.items()}


def score_models(
    models: dict[str, nn.Module], task: TaskData, training_args: DistillationTrainingArguments
) -> dict[str, ExampleScores]:
    """Every model's metrics on the held-out test split with its per-example statistics."""
    return {name: task.score_examples(model, task.test, training_args) for name, model in models.items()}


def mean_metrics(scores: list[ExampleScores]) -> dict[str, float]:
    """Each metric's mean over the seeds' scores (the metrics every seed has)."""
    names = [name for name in scores[0].metrics if all(name in s.metrics for s in scores)]
    return {name: float(np.mean([s.metrics[name] for s in scores])) for name in names}
