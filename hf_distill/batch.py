"""One batch as the loss terms see it (:class:`DistillationBatch`), and the teacher's target for it
(:class:`TeacherTarget`), whichever source produced it (:class:`TargetKind`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from hf_distill.cache.build import CACHE_COLUMNS


@dataclass
class DistillationBatch:
    """One batch as the loss terms see it: the model's inputs, the labels, the cache columns, and the counts
    that normalise the terms (``num_items_in_batch`` for the task term, ``num_kd_items`` for the KD term when
    the batch may hold transfer rows, ``num_tokens`` for feature terms). ``global_step`` names the step in
    errors (a non-finite teacher)."""

    model_inputs: dict[str, Any]
    labels: torch.Tensor | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    num_items_in_batch: Any = None
    num_kd_items: Any = None  # label positions + transfer rows' positions (hf_distill.terms.normalization)
    num_tokens: torch.Tensor | None = None
    global_step: int = 0

    @classmethod
    def from_inputs(cls, inputs: dict[str, Any], **counts: Any) -> DistillationBatch:
        cache = {k: v for k, v in inputs.items() if k in CACHE_COLUMNS}
        model_inputs = {k: v for k, v in inputs.items() if k != "labels" and k not in cache}
        return cls(model_inputs=model_inputs, labels=inputs.get("labels"), cache=cache, **counts)

    @property
    def attention_mask(self) -> torch.Tensor | None:
        return self.model_inputs.get("attention_mask")


class TargetKind(Enum):
    """Where a :class:`TeacherTarget` comes from; the value is its name in messages.

    The terms read a target's form (``logits``, ``topk``, ``hidden``, or the cross-tokenizer target's
    ``aligned``), not its kind; the kind names the source in errors and marks checks that hold for one source
    only (cached logits made for another label set).
    """

    LIVE = "live teacher"
    CACHED_LOGITS = "cached teacher logits"
    CACHED_TOPK = "cached top-k teacher logits"
    CROSS_TOKENIZER = "cross-tokenizer teacher"
    MIXTURE = "mixture of teachers"
    PEER = "peer student"
    SERVED_TOPK = "served teacher top-k log-probabilities"


@dataclass
class TeacherTarget:
    """The teacher's prediction for the student's positions, in one of three forms the logit terms take.

    - ``logits``: ``(N, C)`` or ``(B, T, V)``, the same positions as the student's logits (not yet shifted);
    - ``topk``: ``(values (B, T, k), indices (B, T, k), tail (B, T))``, raw top-k logits and the tail logit at
      the training temperature (see :mod:`hf_distill.losses.topk`);
    - ``hidden`` ``(B, T, H_t)`` with ``head_weight`` ``(V, H_t)`` / ``head_bias``: logits made chunk by chunk.

    ``kind`` (a :class:`TargetKind`) says which source made it; ``outputs`` holds the live model's outputs
    (hidden states, attentions) for the feature terms.
    """

    kind: TargetKind
    logits: torch.Tensor | None = None
    topk: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    hidden: torch.Tensor | None = None
    head_weight: torch.Tensor | None = None
    head_bias: torch.Tensor | None = None
    outputs: Any = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, TargetKind):
            raise TypeError(
                f"TeacherTarget's kind must be a TargetKind, got {self.kind!r}: the kind names the source in "
                f"messages and selects source-specific checks. Pass one of "
                f"{', '.join('TargetKind.' + k.name for k in TargetKind)} (from hf_distill.batch)."
            )

    @property
    def source(self) -> str:
        """The source's name for messages (``kind.value``)."""
        return self.kind.value
