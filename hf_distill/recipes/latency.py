"""Measuring forward latency for a recipe's report: the batches every model is timed on, the side-by-side
timing (:func:`hf_distill.reports.timing.time_models`) and the report's latency and speed-up entries with their spread
and reliability (:func:`hf_distill.reports.timing.speedup_stats`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hf_distill.recipes.tasks import TaskData
from hf_distill.reports.timing import Timings, latency_stats, speedup_stats, time_models

LATENCY_BATCH_SIZES = (1, 32)


def latency_batch(task: TaskData, batch_size: int) -> dict[str, torch.Tensor]:
    """``batch_size`` test rows, collated, with the model inputs only: what every model is timed on."""
    rows = [task.test[i] for i in range(min(batch_size, len(task.test)))]
    while len(rows) < batch_size:  # a tiny test split still gives a full batch
        rows += rows[: batch_size - len(rows)]
    # Labels stay for the collator (it pads them); bookkeeping columns (NER windows) are not model inputs.
    rows = [{k: v for k, v in row.items() if k in (*task.model_inputs, "labels")} for row in rows]
    batch = task.collator(rows)
    return {k: v for k, v in batch.items() if k in task.model_inputs}


def measure_latency(
    models: dict[str, nn.Module], batches: dict[int, dict[str, torch.Tensor]], rounds: int = 5, **kwargs: Any
) -> dict[str, dict[int, float]]:
    """Median forward latency in milliseconds, ``{model name: {batch size: ms}}``, timed side by side
    (:func:`hf_distill.reports.timing.time_models`; ``kwargs`` go to it). :func:`latency_entries` gives the spread."""
    timings = time_models(models, batches, rounds, **kwargs)
    return {
        name: {size: latency_stats(samples, timings.threads)["median_ms"] for size, samples in sizes.items()}
        for name, sizes in timings.samples_ms.items()
    }


def latency_entries(timings: Timings, reference: str = "teacher") -> dict[str, dict[str, Any]]:
    """Each model's report fields from ``timings``: ``latency_ms_b<size>`` (the median), ``latency``
    (``{"b<size>": median, quartiles, IQR, rounds, threads, samples}``) and, for every model but
    ``reference``, ``speedup`` (``{"b<size>": median, quartiles of the round-level ratios, reliable, why}``)."""
    entries: dict[str, dict[str, Any]] = {}
    for name, sizes in timings.samples_ms.items():
        stats = {f"b{size}": latency_stats(samples, timings.threads) for size, samples in sizes.items()}
        entry: dict[str, Any] = {f"latency_ms_{key}": s["median_ms"] for key, s in stats.items()}
        entry["latency"] = stats
        if name != reference and reference in timings.samples_ms:
            entry["speedup"] = {
                f"b{size}": speedup_stats(timings.samples_ms[reference][size], samples, busy=timings.busy)
                for size, samples in sizes.items()
            }
        entries[name] = entry
    return entries
