"""Measuring forward latency: the batches a recipe times its models on and the side-by-side timing."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from .tasks import TaskData

LATENCY_BATCH_SIZES = (1, 32)


def latency_batch(task: TaskData, batch_size: int) -> dict[str, torch.Tensor]:
    """``batch_size`` test rows, collated, with the model inputs only: what every model is timed on."""
    rows = [task.test[i] for i in range(min(batch_size, len(task.test)))]
    while len(rows) < batch_size:  # a tiny test split still gives a full batch
        rows += rows[: batch_size - len(rows)]
    batch = task.collator(rows)
    return {k: v for k, v in batch.items() if k in task.model_inputs}


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
