"""Scoring a recipe's models on the task's held-out test split."""

from __future__ import annotations

from torch import nn

from ..arguments import DistillationTrainingArguments
from .tasks import TaskData


def evaluate_models(
    models: dict[str, nn.Module], task: TaskData, training_args: DistillationTrainingArguments
) -> dict[str, dict[str, float]]:
    """Every model's metrics on the held-out test split."""
    return {name: task.evaluate(model, task.test, training_args) for name, model in models.items()}
