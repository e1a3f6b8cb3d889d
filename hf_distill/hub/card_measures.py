"""What a ``DistillationTrainer`` measures for the card when it was given an evaluation set: the teacher's
metric on that set (the student's is the latest evaluation), retention, and forward latency of both.

Measured once per card write on one process (a sharded evaluation set would score only this process's part).
The teacher is scored like the student: its logits over the evaluation dataloader go to the trainer's own
``compute_metrics`` (after ``preprocess_logits_for_metrics``), and without one its task cross-entropy is
compared with the student's logged ``eval_loss_task``. Latency is the median of timed forward passes
(``torch.utils.benchmark.Timer``, which handles warm-up and CUDA synchronisation) at batch size 1 and 32,
on evaluation rows repeated to fill the batch, teacher and student taking turns, as the recipes time theirs.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from typing import Any

import torch
from torch import nn
from transformers import EvalPrediction
from transformers.trainer_pt_utils import nested_concat

from hf_distill.cache.build import CACHE_COLUMNS
from hf_distill.model_kind import logits_of

logger = logging.getLogger(__name__)

LATENCY_BATCH_SIZES = (1, 32)
# Timed time per model and batch size, after the untimed passes that size the timing blocks.
MIN_RUN_SECONDS = 0.05
# Rounds in which teacher and student take turns (:func:`side_by_side_latency_ms`).
SIDE_BY_SIDE_ROUNDS = 3
TASK_LOSS = "loss_task"


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """A collated batch without its labels and teacher-cache columns: what a model's forward takes."""
    return {k: v for k, v in batch.items() if k != "labels" and k not in CACHE_COLUMNS}


def _to(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


def _task_loss(logits: torch.Tensor, labels: torch.Tensor, causal: bool) -> tuple[float, int]:
    """Summed cross-entropy over labelled positions (``-100`` ignored) and their count."""
    if causal:
        logits, labels = logits[..., :-1, :], labels[..., 1:]
    labels = labels.reshape(-1)
    loss = nn.functional.cross_entropy(
        logits.reshape(labels.numel(), -1).float(), labels, ignore_index=-100, reduction="sum"
    )
    return loss.item(), int((labels != -100).sum())


@torch.inference_mode()
def teacher_metrics(trainer: Any, teacher: nn.Module, causal: bool) -> dict[str, float]:
    """The teacher's ``compute_metrics`` results and task cross-entropy (``loss_task``) on the evaluation set."""
    loader = trainer.get_eval_dataloader()
    device = next(teacher.parameters()).device
    keep_logits = trainer.compute_metrics is not None
    logits_all = labels_all = None
    loss_sum, count = 0.0, 0
    teacher.eval()
    for batch in loader:
        labels = batch.get("labels")
        logits = logits_of(teacher(**_to(model_inputs(batch), device)))
        if labels is None:
            continue
        labels = labels.to(logits.device)
        batch_loss, batch_count = _task_loss(logits, labels, causal)
        loss_sum, count = loss_sum + batch_loss, count + batch_count
        if keep_logits:
            if trainer.preprocess_logits_for_metrics is not None:
                logits = trainer.preprocess_logits_for_metrics(logits, labels)
            logits, labels = logits.cpu(), labels.cpu()
            first = logits_all is None
            logits_all = logits if first else nested_concat(logits_all, logits, padding_index=-100)
            labels_all = labels if first else nested_concat(labels_all, labels, padding_index=-100)
    metrics: dict[str, float] = {TASK_LOSS: loss_sum / count} if count else {}
    if keep_logits and labels_all is not None:
        found = trainer.compute_metrics(EvalPrediction(logits_all.float().numpy(), labels_all.numpy()))
        metrics.update({k.removeprefix("eval_"): float(v) for k, v in found.items()})
    return metrics


def latency_batches(trainer: Any) -> dict[int, dict[str, Any]]:
    """Evaluation rows collated into batches of 1 and 32 (rows repeated when the set is smaller)."""
    loader = trainer.get_eval_dataloader()
    dataset, collate = loader.dataset, loader.collate_fn
    rows = [dataset[i] for i in range(min(max(LATENCY_BATCH_SIZES), len(dataset)))]
    batches = {}
    for size in LATENCY_BATCH_SIZES:
        picked = [rows[i % len(rows)] for i in range(size)]
        batches[size] = model_inputs(collate(picked))
    return batches


def _seconds_once(model: nn.Module, inputs: dict[str, Any], device: torch.device) -> float:
    """One forward's seconds, on one thread as ``torch.utils.benchmark.Timer`` times by default."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model(**inputs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


@torch.inference_mode()
def latency_ms(model: nn.Module, batches: dict[int, dict[str, Any]]) -> dict[int, float | None]:
    """Median forward milliseconds of ``model`` on each batch, in eval mode (restored after); None for a
    batch size that does not fit in memory. A forward of at least ``MIN_RUN_SECONDS`` is timed once (the
    rounds of :func:`side_by_side_latency_ms` give the median), a faster one by ``blocked_autorange``."""
    from torch.utils.benchmark import Timer

    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    try:
        times: dict[int, float | None] = {}
        for size, batch in batches.items():
            timer = Timer(stmt="model(**inputs)", globals={"model": model, "inputs": _to(batch, device)})
            try:
                # A forward that lasts the minimum run already is its own sample: blocked_autorange would
                # spend as long again estimating a block size of one (half of a SmolLM2 card's timing).
                once = _seconds_once(model, _to(batch, device), device)
                if once < MIN_RUN_SECONDS:
                    once = timer.blocked_autorange(min_run_time=MIN_RUN_SECONDS).median
                times[size] = once * 1000.0
            except torch.OutOfMemoryError:
                # A card is no reason to stop a run: this batch size stays "not measured".
                logger.warning(
                    "Out of memory timing %s at batch size %d; latency not measured.",
                    type(model).__name__,
                    size,
                )
                torch.cuda.empty_cache()
                times[size] = None
        return times
    finally:
        model.train(was_training)


def ratio(numerator: Any, denominator: Any) -> float | None:
    """``numerator / denominator`` when both are positive finite numbers, else None (not measured): a NaN
    metric gives no retention rather than a NaN one."""
    values = (numerator, denominator)
    if not all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values):
        return None
    return float(numerator / denominator)


def side_by_side_latency_ms(
    models: dict[str, nn.Module], batches: dict[int, dict[str, Any]], rounds: int = SIDE_BY_SIDE_ROUNDS
) -> dict[str, dict[int, float | None]]:
    """Median over ``rounds`` of :func:`latency_ms`, the models taking turns in each round, so a slow patch of
    a shared machine slows all of them alike instead of one (as the recipes time theirs)."""
    times: dict[str, dict[int, list[float]]] = {name: {size: [] for size in batches} for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            for size, value in latency_ms(model, batches).items():
                if value is not None:
                    times[name][size].append(value)
    return {
        name: {size: statistics.median(values) if values else None for size, values in sizes.items()}
        for name, sizes in times.items()
    }
