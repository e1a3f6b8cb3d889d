"""Distilling to a budget: which student to train, chosen among candidates cut from the teacher.

The search, :func:`search_budget`:

1. **candidates** (:func:`candidate_grid`): depth x width, each a set of teacher layers chosen by Block
   Influence (:func:`~hf_distill.students.importance.layer_importance`) and, for a narrower width, the heads
   and MLP channels of highest activation (:func:`~hf_distill.students.width.prune_width`);
2. **latency before training**: latency needs no trained weights, so every candidate is built and timed
   (by the caller's ``measure_latency``, on the runtime the student ships on: ms per forward, or for a causal
   LM ms per generated token, :mod:`hf_distill.reports.generation_timing`) before any step is taken, and
   those over ``max_latency_ms`` (or less than ``min_speedup`` times as fast as the teacher, timed beside
   them; or over ``max_params`` parameters) are dropped untrained. None left: the budget is refused
   with the fastest candidate's latency (:class:`BudgetImpossible`);
3. **short runs, pruned early**: the rest get a short distillation run each (the caller's ``train_short``),
   fastest first, reporting the validation metric at intervals to an Optuna study whose pruner stops the
   hopeless: with ``min_retention`` a :class:`optuna.pruners.ThresholdPruner` at that share of the teacher's
   validation metric (a run still below it past half its steps will not be chosen), otherwise a
   :class:`optuna.pruners.MedianPruner` (a run below the median of the earlier runs at the same step will
   not be the best). Optuna holds the trials, their curves and the pruning; the candidates are enqueued
   rather than sampled, because the feasible set is known before training and small enough to try whole;
4. **pick** (:func:`pick_winner`): with ``min_retention``, the fastest run that keeps it on validation (none:
   the best, said so); without, the best validation metric (ties: the faster). ``why`` says it in words.

Training is the caller's (the recipe layer trains with the recipe's arguments), so this module stays below it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from hf_distill.students.blocks import num_layers_of
from hf_distill.students.build import count_parameters, student_from_teacher
from hf_distill.students.importance import layers_by_importance
from hf_distill.students.layout import head_layout, intermediate_size_of, width_family
from hf_distill.students.width import prune_width

logger = logging.getLogger(__name__)

DEFAULT_DEPTHS = (0.25, 0.5, 0.75)
DEFAULT_WIDTHS = (1.0, 0.5)
# The name under which ``measure_latency`` returns the teacher's latency, which ``min_speedup`` is a share of.
TEACHER = "teacher"


class BudgetImpossible(ValueError):
    """No candidate meets the budget; the message names the fastest (or smallest) one."""


@dataclass
class Candidate:
    """One student the search may train: teacher layers kept, heads and MLP channels per block, and what
    the search learnt about it (``status``: built, over_budget, over_params, pruned, trained)."""

    name: str
    layers: list[int]
    heads: int | None = None
    intermediate_size: int | None = None
    parameters: int | None = None
    latency_ms: float | None = None
    speedup: float | None = None  # the teacher's latency / this one's, when the teacher was timed beside it
    status: str = "built"
    metric: float | None = None
    retention: float | None = None
    curve: list[list[float]] = field(default_factory=list)  # [step, validation metric]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BudgetResult:
    """The search's candidates (every one, with its latency and, when trained, its curve), the winner and
    why it won, and the budget it was held to."""

    candidates: list[Candidate]
    winner: Candidate
    why: str
    budget: dict[str, Any]
    trainings: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidates": [c.to_dict() for c in self.candidates],
            "winner": self.winner.name,
            "why": self.why,
            "budget": self.budget,
            "trainings": self.trainings,
        }


def _sizes(fractions: Iterable[float], total: int, what: str) -> list[int]:
    sizes = set()
    for fraction in fractions:
        if not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise ValueError(
                f"{what} fraction {fraction!r} must be in (0, 1]: a share of the teacher's {what}."
            )
        sizes.add(max(1, round(total * fraction)))
    return sorted(sizes)


def candidate_grid(
    teacher: nn.Module,
    layer_scores: Sequence[float],
    depths: Iterable[float] = DEFAULT_DEPTHS,
    widths: Iterable[float] = DEFAULT_WIDTHS,
) -> list[Candidate]:
    """Candidates over depth x width: for each share of the teacher's layers, the most important ones
    (``layer_scores``, one per layer); for each share of width, as many MLP channels and, for Llama-family
    teachers, query heads (whole key/value groups, at least one). A teacher that cannot be pruned in width
    gets depth candidates only (logged).

    Args:
        teacher (nn.Module): the teacher.
        layer_scores (Sequence[float]): one importance score per teacher layer.
        depths (Iterable[float]): shares of the teacher's layers, each in (0, 1].
        widths (Iterable[float]): shares of the teacher's MLP channels (and Llama heads), each in (0, 1].

    Returns:
        list[Candidate]: unique candidates, smallest first.
    """
    num_layers = num_layers_of(teacher.config)
    if len(layer_scores) != num_layers:
        raise ValueError(
            f"{len(layer_scores)} layer scores for a teacher of {num_layers} layers; pass one per layer."
        )
    widths = list(widths)
    try:
        family = width_family(teacher)
    except ValueError as refusal:
        if any(w < 1 for w in widths):
            logger.warning("Width candidates left out: %s", refusal)
        family, widths = None, [1.0]
    candidates: dict[tuple, Candidate] = {}
    for depth in _sizes(depths, num_layers, "depth"):
        layers = layers_by_importance(layer_scores, depth)
        for width in sorted(set(widths)):
            heads = channels = None
            if family is not None and width < 1:
                total_heads, kv_heads, _ = head_layout(teacher, family)
                channels = _sizes([width], intermediate_size_of(teacher, family), "width")[0]
                if family == "llama":
                    group = total_heads // kv_heads
                    heads = group * max(1, round(kv_heads * width))
            name = f"{depth}L" + (f"-w{width:g}" if width < 1 and family is not None else "")
            candidates.setdefault((depth, heads, channels), Candidate(name, layers, heads, channels))
    return list(candidates.values())


def build_candidate(
    teacher: nn.Module, candidate: Candidate, calibration: Iterable[Mapping[str, torch.Tensor]] | None = None
) -> nn.Module:
    """The untrained student of ``candidate``: the teacher's layers it keeps (:func:`student_from_teacher`),
    then its heads and channels (:func:`prune_width`, ranked on ``calibration``) when it is narrower."""
    student = student_from_teacher(teacher, layers=candidate.layers)
    if candidate.heads is None and candidate.intermediate_size is None:
        return student
    return prune_width(student, candidate.heads, candidate.intermediate_size, calibration=calibration)


def _retention(metric: float, reference: float | None, higher_is_better: bool) -> float | None:
    if reference is None or not math.isfinite(metric) or metric == 0 or reference == 0:
        return None
    return metric / reference if higher_is_better else reference / metric


def check_latency_budget(max_latency_ms: float | None, min_speedup: float | None) -> None:
    """Refuses a latency budget stated twice or out of range, before anything is built or timed.

    Args:
        max_latency_ms (float | None): milliseconds (per forward, or per generated token for a causal LM).
        min_speedup (float | None): the teacher's latency / the student's, at least; above 1.

    Raises:
        ValueError: both given (two latency budgets, one of which would be ignored), or a bad number.
    """
    if max_latency_ms is not None and min_speedup is not None:
        raise ValueError(
            f"max_latency_ms={max_latency_ms:g} and min_speedup={min_speedup:g} are two latency budgets for the "
            "same measurement, and one would silently override the other: give one, max_latency_ms in "
            "milliseconds or min_speedup as a multiple of the teacher's speed (e.g. 1.5)."
        )
    if max_latency_ms is not None and not (math.isfinite(max_latency_ms) and max_latency_ms > 0):
        raise ValueError(f"max_latency_ms={max_latency_ms} must be a positive number of milliseconds.")
    if min_speedup is not None and not (math.isfinite(min_speedup) and min_speedup > 1):
        raise ValueError(
            f"min_speedup={min_speedup} must be a number above 1: the teacher's latency over the student's "
            "(1.5: the student 1.5x as fast, e.g. 1.5x the teacher's tokens/s); 1 or less asks for nothing "
            "a student cut from the teacher does not already give."
        )


def _check_budget(
    max_latency_ms: float | None,
    max_params: int | None,
    min_retention: float | None,
    reference_metric: float | None,
    min_speedup: float | None = None,
) -> None:
    if max_latency_ms is None and max_params is None and min_speedup is None:
        raise ValueError(
            "A budget needs max_latency_ms, min_speedup or max_params (a latency and a size budget may go "
            "together): what the student must fit in."
        )
    check_latency_budget(max_latency_ms, min_speedup)
    if max_params is not None and max_params < 1:
        raise ValueError(f"max_params={max_params} must be a positive number of parameters.")
    if min_retention is not None:
        if not (math.isfinite(min_retention) and 0 < min_retention <= 1.5):
            raise ValueError(
                f"min_retention={min_retention} must be a share of the teacher's metric, e.g. 0.98."
            )
        if reference_metric is None or not math.isfinite(reference_metric):
            raise ValueError(
                f"min_retention needs the teacher's validation metric as reference_metric, got {reference_metric}."
            )


def _drop_over_budget(
    candidates: list[Candidate],
    max_latency_ms: float | None,
    max_params: int | None,
    latency_label: str,
    min_speedup: float | None = None,
) -> list[Candidate]:
    """Marks candidates over the budget; returns those within it, fastest first; refuses when none is."""
    for c in candidates:
        if max_params is not None and c.parameters > max_params:
            c.status = "over_params"
        elif max_latency_ms is not None and c.latency_ms > max_latency_ms:
            c.status = "over_budget"
        elif min_speedup is not None and c.speedup < min_speedup:
            c.status = "over_budget"
    feasible = sorted(
        (c for c in candidates if c.status == "built"), key=lambda c: (c.latency_ms, c.parameters)
    )
    if feasible:
        return feasible
    fastest = min(candidates, key=lambda c: c.latency_ms)
    smallest = min(candidates, key=lambda c: c.parameters)
    if max_params is not None and smallest.parameters > max_params:
        raise BudgetImpossible(
            f"No candidate has at most max_params={max_params:,} parameters: the smallest, {smallest.name}, has "
            f"{smallest.parameters:,}. Raise --max_params or add smaller candidates (lower --budget_depths / "
            "--budget_widths)."
        )
    if min_speedup is not None:
        raise BudgetImpossible(
            f"No candidate is {min_speedup:g}x as fast as the teacher: the fastest, {fastest.name}, takes "
            f"{fastest.latency_ms:.3g} ms {latency_label}, {fastest.speedup:.2f}x the teacher. Lower "
            f"--min_speedup to at most {fastest.speedup:.2f}, or add smaller candidates (lower --budget_depths / "
            "--budget_widths)."
        )
    raise BudgetImpossible(
        f"No candidate meets max_latency_ms={max_latency_ms:g}: the fastest, {fastest.name}, takes "
        f"{fastest.latency_ms:.3g} ms {latency_label}. Raise --max_latency_ms to at least that, or add smaller "
        "candidates (lower --budget_depths / --budget_widths)."
    )


def _built_and_timed(
    candidates: list[Candidate],
    build: Callable[[Candidate], nn.Module],
    measure_latency: Callable[[dict[str, nn.Module]], dict[str, float]],
    min_speedup: float | None = None,
) -> tuple[dict[str, nn.Module], float | None]:
    """Builds every candidate, counts its parameters and times them all (untrained); returns the models and
    the teacher's latency (None when the measurement holds none; refused when ``min_speedup`` needs it)."""
    models = {c.name: build(c) for c in candidates}
    latency = measure_latency(models)
    teacher_ms = latency.get(TEACHER)
    if teacher_ms is not None:
        teacher_ms = _positive_ms(TEACHER, teacher_ms)
    elif min_speedup is not None:
        raise ValueError(
            f"min_speedup={min_speedup:g} is a multiple of the teacher's speed, but measure_latency returned no "
            f"{TEACHER!r} entry: time the teacher beside the candidates and return it under {TEACHER!r}."
        )
    for c in candidates:
        c.parameters = count_parameters(models[c.name])
        c.latency_ms = _positive_ms(c.name, latency[c.name])
        c.speedup = None if teacher_ms is None else teacher_ms / c.latency_ms
    return models, teacher_ms


def _positive_ms(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"latency of {name} is {value}: the timer must return positive milliseconds.")
    return value


def _study(
    optuna: Any,
    min_retention: float | None,
    reference_metric: float | None,
    higher_is_better: bool,
    warmup_steps: int,
) -> Any:
    if min_retention is not None:
        threshold = min_retention * reference_metric if higher_is_better else reference_metric / min_retention
        bound = {"lower": threshold} if higher_is_better else {"upper": threshold}
        pruner = optuna.pruners.ThresholdPruner(**bound, n_warmup_steps=warmup_steps)
    else:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=warmup_steps)
    direction = "maximize" if higher_is_better else "minimize"
    return optuna.create_study(direction=direction, pruner=pruner)


def require_optuna() -> Any:
    """``optuna``, or an ImportError saying which extra installs it."""
    try:
        import optuna
    except ImportError as missing:
        raise ImportError(
            "The budget search runs its short trainings as an Optuna study (trials, early pruning): "
            "pip install 'hf-distill[budget]' (or pip install optuna)."
        ) from missing
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def search_budget(
    candidates: list[Candidate],
    build: Callable[[Candidate], nn.Module],
    measure_latency: Callable[[dict[str, nn.Module]], dict[str, float]],
    train_short: Callable[[Candidate, nn.Module, Callable[[int, float], bool]], float],
    *,
    max_latency_ms: float | None = None,
    max_params: int | None = None,
    min_retention: float | None = None,
    reference_metric: float | None = None,
    higher_is_better: bool = True,
    warmup_steps: int = 0,
    latency_label: str = "",
    min_speedup: float | None = None,
) -> BudgetResult:
    """Steps 2-4 of the module docstring over ``candidates``.

    Args:
        candidates (list[Candidate]): what may be trained (:func:`candidate_grid`).
        build (Callable[[Candidate], nn.Module]): the untrained student of a candidate
            (:func:`build_candidate` with the teacher and calibration batches).
        measure_latency (Callable[[dict[str, nn.Module]], dict[str, float]]): ms per model, timed side by side
            on the runtime the student ships on, before any training.
        train_short (Callable): ``train_short(candidate, model, report) -> validation metric``: a short
            distillation run that calls ``report(step, validation metric)`` at intervals and stops when it
            returns True (the pruner gave up on it).
        max_latency_ms, min_speedup, max_params (float | None, float | None, int | None): the budget: ms; or
            instead, the teacher's latency (under :data:`TEACHER` in the measurement) / the candidate's; parameters.
        min_retention (float | None): share of ``reference_metric`` (the teacher's, on validation) to keep.
        higher_is_better (bool): the metric's direction. warmup_steps (int): steps before pruning may stop a run.
        latency_label (str): what the milliseconds are for (e.g. "per generated token at batch 1 on torch"),
            for messages and the figure's axis.

    Returns:
        BudgetResult: every candidate with its latency, parameters and (when trained) curve; the winner; why.

    Raises:
        ValueError: no budget, bad numbers, both ``max_latency_ms`` and ``min_speedup``, ``min_retention``
            without ``reference_metric``, or ``min_speedup`` without the teacher's latency.
        BudgetImpossible: no candidate within the budget (the fastest, or smallest, is named).
        ImportError: optuna is not installed.
    """
    _check_budget(max_latency_ms, max_params, min_retention, reference_metric, min_speedup)
    if not candidates:
        raise ValueError("No candidates to search; candidate_grid builds them from the teacher.")
    optuna = require_optuna()
    models, teacher_ms = _built_and_timed(candidates, build, measure_latency, min_speedup)
    feasible = _drop_over_budget(candidates, max_latency_ms, max_params, latency_label, min_speedup)
    models = {c.name: models[c.name] for c in feasible}  # the others are over budget: never trained
    by_name = {c.name: c for c in feasible}
    study = _study(optuna, min_retention, reference_metric, higher_is_better, warmup_steps)

    def objective(trial: Any) -> float:
        candidate = by_name[trial.suggest_categorical("candidate", list(by_name))]
        stopped = False

        def report(step: int, value: float) -> bool:
            nonlocal stopped
            if not math.isfinite(value):
                raise ValueError(f"{candidate.name}: validation metric {value} at step {step} is not finite.")
            candidate.curve.append([int(step), float(value)])
            trial.report(float(value), int(step))
            stopped = stopped or trial.should_prune()
            return stopped

        metric = float(train_short(candidate, models.pop(candidate.name), report))
        candidate.metric = metric
        candidate.retention = _retention(metric, reference_metric, higher_is_better)
        candidate.status = "pruned" if stopped else "trained"
        if stopped:
            raise optuna.TrialPruned()
        return metric

    for c in feasible:
        study.enqueue_trial({"candidate": c.name})
    study.optimize(objective, n_trials=len(feasible), catch=())
    budget = _budget_entry(teacher_ms, max_latency_ms=max_latency_ms, max_params=max_params, min_speedup=min_speedup,
                           min_retention=min_retention, reference_metric=reference_metric, latency=latency_label)  # fmt: skip
    winner, why = pick_winner(candidates, budget, higher_is_better)
    return BudgetResult(candidates, winner, why, budget, trainings=len(study.trials))  # one training each


def _budget_entry(teacher_ms: float | None, **limits: Any) -> dict[str, Any]:
    """The budget as the result records it, with the teacher's latency and the latency limit in ms
    (``min_speedup``'s, when given)."""
    speedup, ms = limits["min_speedup"], limits["max_latency_ms"]
    limit = ms if speedup is None else teacher_ms / speedup
    return {**limits, "teacher_latency_ms": teacher_ms, "latency_limit_ms": limit}


def _describe(c: Candidate) -> str:
    retention = f", {c.retention:.1%} of the teacher" if c.retention is not None else ""
    speedup = f", {c.speedup:.2f}x the teacher's speed" if c.speedup is not None else ""
    return (
        f"{c.name} ({c.latency_ms:.3g} ms{speedup}, {c.parameters:,} parameters, validation {c.metric:.4g}"
        f"{retention})"
    )


def pick_winner(
    candidates: list[Candidate], budget: Mapping[str, Any], higher_is_better: bool
) -> tuple[Candidate, str]:
    """Step 4: the winner among the candidates that ran, and a sentence saying why it won.

    With ``budget["min_retention"]``: the fastest run that keeps it (trained to the end), else the best run,
    said plainly. Without: the best validation metric, ties to the faster.
    """
    ran = [c for c in candidates if c.status in ("trained", "pruned")]
    if not ran:
        raise ValueError("No candidate was trained: there is nothing to pick from.")
    sign = 1.0 if higher_is_better else -1.0
    best_first = sorted(ran, key=lambda c: (c.status != "trained", -sign * c.metric, c.latency_ms))
    dropped = [c for c in candidates if c.status in ("over_budget", "over_params")]
    limits = ", ".join(
        f"{k} {budget[k]:g}"
        for k in ("max_latency_ms", "min_speedup", "max_params", "min_retention")
        if budget.get(k) is not None
    )
    tail = f" {len(dropped)} candidate(s) were over budget and never trained." if dropped else ""
    retention = budget.get("min_retention")
    if retention is not None:
        keeping = [
            c for c in ran if c.status == "trained" and c.retention is not None and c.retention >= retention
        ]
        if keeping:
            winner = min(keeping, key=lambda c: (c.latency_ms, -sign * c.metric))
            faster = [c for c in ran if c.latency_ms < winner.latency_ms]
            lost = "; ".join(
                f"{c.name} {'was pruned' if c.status == 'pruned' else 'kept'} "
                + (f"{c.retention:.1%}" if c.retention is not None else "too little")
                for c in faster
            )
            why = (
                f"{_describe(winner)} won ({limits}): it is the fastest candidate that keeps at least "
                f"{retention:.0%} of the teacher's validation metric."
                + (f" Faster ones fell short: {lost}." if lost else " No candidate within budget is faster.")
            )
            return winner, why + tail
        winner = best_first[0]
        why = (
            f"No candidate kept {retention:.0%} of the teacher's validation metric in its short run; "
            f"{_describe(winner)} came closest and is the pick ({limits})."
        )
        return winner, why + tail
    winner = best_first[0]
    others = [c for c in best_first[1:]]
    runner = f" The runner-up, {_describe(others[0])}, scored lower." if others else ""
    why = f"{_describe(winner)} won ({limits}): the best validation metric of the {len(ran)} candidate(s) within budget."
    return winner, why + runner + tail
