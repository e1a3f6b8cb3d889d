"""Which teacher layers a student keeps: by position (:func:`select_layers`: uniform, every other, first,
last), given explicitly, or by importance measured on calibration batches (:func:`choose_layers`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from hf_distill.students.blocks import num_layers_of
from hf_distill.students.importance import layer_importance, layers_by_importance

LAYER_STRATEGIES = ("uniform", "every_other", "first", "last")
# Chosen from calibration batches rather than from indices alone (student_from_teacher, not select_layers).
IMPORTANCE = "importance"


def select_layers(num_teacher_layers: int, num_student_layers: int, strategy: str = "uniform") -> list[int]:
    """Choose which teacher layers a student of ``num_student_layers`` layers keeps.

    Args:
        num_teacher_layers (int): ``L``, the teacher's number of layers (at least 1).
        num_student_layers (int): ``n``, how many to keep, in ``1..L``.
        strategy (str): how to pick them. Default ``"uniform"``.

            - ``"uniform"``: ``round(linspace(0, L - 1, n))``. Keeps the first and the last layer (the last
              one is closest to the head the student inherits) and spreads the rest evenly. ``n = 1`` keeps
              layer 0.
            - ``"every_other"``: ``0, 2, 4, ...`` as DistilBERT did; needs ``n <= ceil(L / 2)``.
            - ``"first"``: ``0 .. n-1``. ``"last"``: ``L-n .. L-1``.

    Returns:
        list[int]: ``n`` strictly increasing teacher layer indices.

    Raises:
        ValueError: a count out of range, too many layers for ``"every_other"``, ``"importance"`` (which
            needs calibration batches: :func:`hf_distill.students.build.student_from_teacher`), or an unknown
            strategy.
    """
    if num_teacher_layers < 1:
        raise ValueError(f"num_teacher_layers must be at least 1, got {num_teacher_layers}.")
    if num_student_layers < 1:
        raise ValueError(f"num_student_layers must be at least 1, got {num_student_layers}.")
    if num_student_layers > num_teacher_layers:
        raise ValueError(
            f"num_student_layers ({num_student_layers}) is larger than the teacher's number of layers "
            f"({num_teacher_layers}); a student built from teacher layers can only drop layers."
        )
    if strategy == "uniform":
        if num_student_layers == 1:
            return [0]
        # n distinct points on [0, L-1] with spacing >= 1 stay distinct after rounding, so no duplicates.
        positions = np.linspace(0, num_teacher_layers - 1, num_student_layers)
        return [int(i) for i in np.round(positions)]
    if strategy == "every_other":
        layers = list(range(0, num_teacher_layers, 2))
        if num_student_layers > len(layers):
            raise ValueError(
                f"strategy 'every_other' gives at most {len(layers)} layers from a teacher of "
                f"{num_teacher_layers} layers, but {num_student_layers} were asked for; use 'uniform'."
            )
        return layers[:num_student_layers]
    if strategy == "first":
        return list(range(num_student_layers))
    if strategy == "last":
        return list(range(num_teacher_layers - num_student_layers, num_teacher_layers))
    if strategy == IMPORTANCE:
        raise ValueError(
            "select_layers chooses from indices alone; 'importance' needs calibration batches: call "
            "student_from_teacher(teacher, num_layers=n, layers='importance', calibration=batches)."
        )
    raise ValueError(
        f"Unknown layer selection strategy {strategy!r}; choose one of {list(LAYER_STRATEGIES)}."
    )


def check_layers(layers: Sequence[int], num_teacher_layers: int) -> list[int]:
    layers = [int(i) for i in layers]
    if not layers:
        raise ValueError("layers is empty; a student needs at least one layer.")
    for i in layers:
        if not 0 <= i < num_teacher_layers:
            raise ValueError(
                f"Layer index {i} is out of range: the teacher has {num_teacher_layers} layers "
                f"(indices 0..{num_teacher_layers - 1})."
            )
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers {layers} contains duplicates; each teacher layer can be kept once.")
    if layers != sorted(layers):
        # Reordering blocks is almost always a mistake, and the renumbered student would hide it.
        raise ValueError(f"layers {layers} is not increasing; keep teacher layers in their original order.")
    return layers


def choose_layers(
    teacher: PreTrainedModel,
    layers: Sequence[int] | str | None,
    num_layers: int | None,
    strategy: str,
    calibration: Iterable[Mapping[str, torch.Tensor]] | None,
    importance_method: str = "block_influence",
) -> tuple[list[int], str, dict[str, Any]]:
    """The checked teacher layers a student keeps, how they were chosen (``strategy`` or "explicit"), and the
    provenance details of an importance choice (the method and the scores); ``importance_method`` is
    :func:`~hf_distill.students.importance.layer_importance`'s ``method``."""
    num_teacher_layers = num_layers_of(teacher.config)
    if isinstance(layers, str):  # `layers="importance"`: a strategy spelt where the layers go
        strategy, layers = layers, None
    if strategy == IMPORTANCE:
        if num_layers is None:
            raise ValueError("Choosing layers by importance needs num_layers (how many to keep).")
        if calibration is None:
            raise ValueError(
                "Choosing layers by importance needs calibration=batches (model inputs, e.g. a few training "
                "batches) to measure each layer's Block Influence on."
            )
        scores = layer_importance(teacher, calibration, importance_method)
        chosen = layers_by_importance(scores, num_layers)
        details = {"importance": importance_method, "layer_scores": [float(s) for s in scores]}
        return check_layers(chosen, num_teacher_layers), strategy, details
    if calibration is not None:
        raise ValueError(f"calibration batches are only used with layers='importance', not {strategy!r}.")
    if layers is not None and num_layers is not None:
        raise ValueError("Pass either layers or num_layers, not both.")
    if layers is not None:
        return check_layers(layers, num_teacher_layers), "explicit", {}
    if num_layers is None:
        raise ValueError("Pass layers (teacher layer indices) or num_layers (with a strategy).")
    chosen = select_layers(num_teacher_layers, num_layers, strategy)
    return check_layers(chosen, num_teacher_layers), strategy, {}
