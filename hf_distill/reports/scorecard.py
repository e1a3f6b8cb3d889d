"""Multi-seed scorecard: each model's mean over seeds with a 95% interval, the paired difference distilled -
no-KD with its interval, and the verdict line that says what they mean.

Each model is scored on the same test examples under every seed; its per-example statistics
(:class:`~hf_distill.training.metrics.ExampleScores`) are stacked into an array ``(seeds, statistics, examples)``. The
interval comes from ``scipy.stats.bootstrap`` over test examples: a resample draws examples with replacement,
the same draw for every seed and (``paired=True``) for both models of a difference, and the corpus metric
(:data:`~hf_distill.training.metrics.CORPUS_METRICS`) is recomputed on it per seed: entity F1 and bits per byte from
the resampled sums, not from averages of per-example scores. The statistic is the mean over seeds, so the
interval says how far the seeds' mean could move with another test set of the same size; the seeds
themselves are held (each one's value is reported beside it, ``per_seed``). Percentile intervals: unlike
BCa they stay defined when every resample gives the same value (two identical models: exactly [0, 0]).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import bootstrap

from hf_distill.training.metrics import CORPUS_METRICS

CONFIDENCE_LEVEL = 0.95
N_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
# Metrics on a 0-1 scale are shown in points (x 100), as papers quote accuracy and F1.
POINT_METRICS = ("accuracy", "f1")


def stack_statistics(per_seed: Sequence[dict[str, np.ndarray]], metric_name: str) -> np.ndarray:
    """The ``(seeds, statistics, examples)`` array of ``metric_name``'s statistics, one dict per seed.

    Raises:
        ValueError: when the metric has no per-example form, a statistic is missing, the seeds scored
            different numbers of examples, or a value is not finite.
    """
    if metric_name not in CORPUS_METRICS:
        raise ValueError(
            f"metric {metric_name!r} has no per-example statistics to resample; the scorecard knows "
            f"{sorted(CORPUS_METRICS)}: score the task with one of them."
        )
    names = CORPUS_METRICS[metric_name][0]
    missing = [name for name in names if any(name not in seed for seed in per_seed)]
    if not per_seed or missing:
        raise ValueError(
            f"the scorecard of {metric_name!r} needs the per-example statistics {list(names)} of every seed; "
            f"missing: {missing or 'every seed'}. Score the models with the task's score_examples."
        )
    lengths = {len(seed[name]) for seed in per_seed for name in names}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(
            f"the seeds' statistics hold {sorted(lengths)} examples: every seed must score the same, non-empty "
            "test split, in the same order, so that examples pair across seeds and models."
        )
    stacked = np.stack(
        [np.stack([np.asarray(seed[name], dtype=float) for name in names]) for seed in per_seed]
    )
    if not np.isfinite(stacked).all():
        raise ValueError(
            f"the per-example statistics of {metric_name!r} hold NaN or infinite values (a diverged model?): "
            "an interval over them would mean nothing; check the run's losses."
        )
    return stacked


def seed_values(stacked: np.ndarray, metric_name: str, axis: int = -1) -> np.ndarray:
    """The corpus metric of each seed, ``(seeds, ...)``, from ``stacked`` ``(seeds, statistics, ..., examples)``."""
    function = CORPUS_METRICS[metric_name][1]
    return function(*(stacked[:, index] for index in range(stacked.shape[1])), axis=axis)


def _interval(data: tuple[np.ndarray, ...], statistic, n_resamples: int, seed: int) -> tuple[float, float]:
    result = bootstrap(
        data,
        statistic,
        n_resamples=n_resamples,
        batch=max(1, 2_000_000 // data[0].size),  # bounds the memory of one vectorized batch
        vectorized=True,
        paired=len(data) > 1,
        axis=-1,
        confidence_level=CONFIDENCE_LEVEL,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def model_interval(
    stacked: np.ndarray, metric_name: str, *, n_resamples: int = N_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> dict[str, Any]:
    """``{"mean", "interval": [low, high], "per_seed"}`` of one model; ``stacked`` from :func:`stack_statistics`."""

    def statistic(sample: np.ndarray, axis: int = -1) -> np.ndarray:
        return seed_values(sample, metric_name, axis).mean(axis=0)

    low, high = _interval((stacked,), statistic, n_resamples, seed)
    values = seed_values(stacked, metric_name)
    return {"mean": float(values.mean()), "interval": [low, high], "per_seed": values.tolist()}


def paired_difference(
    distilled: np.ndarray,
    baseline: np.ndarray,
    metric_name: str,
    *,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """``{"difference", "interval": [low, high], "per_seed"}`` of distilled - baseline, paired by seed and
    test example (both arrays ``(seeds, statistics, examples)``, the seeds in the same order)."""
    if distilled.shape != baseline.shape:
        raise ValueError(
            f"distilled statistics {distilled.shape} and baseline statistics {baseline.shape} differ in shape "
            "(seeds, statistics, examples): a paired difference needs both models scored under the same seeds "
            "on the same test examples."
        )

    def statistic(kd: np.ndarray, no_kd: np.ndarray, axis: int = -1) -> np.ndarray:
        return (seed_values(kd, metric_name, axis) - seed_values(no_kd, metric_name, axis)).mean(axis=0)

    low, high = _interval((distilled, baseline), statistic, n_resamples, seed)
    per_seed = seed_values(distilled, metric_name) - seed_values(baseline, metric_name)
    return {"difference": float(per_seed.mean()), "interval": [low, high], "per_seed": per_seed.tolist()}


def format_value(value: float, metric_name: str, signed: bool = False) -> str:
    """A metric value or difference as the verdicts print it: in points (x 100) for :data:`POINT_METRICS`,
    else to 4 significant digits; ``signed`` adds the sign (for a difference)."""
    if metric_name in POINT_METRICS:
        return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def format_difference(difference: dict[str, Any], metric_name: str) -> str:
    """A difference with its interval, as in the verdicts: ``"+2.1 points [0.9, 3.3]"``."""
    low, high = difference["interval"]
    unit = " points" if metric_name in POINT_METRICS else ""
    shown = f"{format_value(difference['difference'], metric_name, True)}{unit}"
    return f"{shown} [{format_value(low, metric_name)}, {format_value(high, metric_name)}]"


def verdict(
    difference: dict[str, Any], metric_name: str, higher_is_better: bool, n_seeds: int, n_examples: int
) -> str:
    """The plain line of a :func:`paired_difference`, e.g. "distillation beats training alone by +2.1 points
    [0.9, 3.3] (accuracy, 3 seeds, 800 test examples)". A win needs the whole interval on one side of 0."""
    low, high = difference["interval"]
    shown = format_difference(difference, metric_name)
    seeds = f"{n_seeds} seed{'s' if n_seeds != 1 else ''}"
    context = f"({metric_name} KD - no-KD, {seeds}, {n_examples} test examples)"
    kd_better = low > 0 if higher_is_better else high < 0
    kd_worse = high < 0 if higher_is_better else low > 0
    if kd_better:
        return f"distillation beats training alone by {shown} {context}"
    if kd_worse:
        return f"training alone beats distillation: {shown} {context}"
    return f"no significant difference: {shown} {context}"
