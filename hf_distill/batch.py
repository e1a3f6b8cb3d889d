"""One batch as the loss terms see it (:class:`DistillationBatch`), and the teacher's target for it
(:class:`TeacherTarget`), whichever source produced it (:class:`TargetKind`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from hf_distill.cache.build import CACHE_COLUMNS
from hf_distill.losses.divergences import IGNORE_INDEX
from hf_distill.losses.fused.teacher_forms import TeacherHead, TeacherLogits, TeacherTopk

# The batch key of the per-row teacher names (``teacher_route_column``'s values), put there by the routed
# teacher's collator (:class:`hf_distill.teachers.routed.RouteColumnCollator`) whatever the dataset calls it.
ROUTES = "teacher_routes"


def require_labels(
    labels: Any, alpha: float, *, where: str = "The batch", teacher: str = "the teacher"
) -> None:
    """A task term with weight ``1 - alpha > 0`` needs labels: refuse a batch without them."""
    if labels is None and alpha < 1.0:
        raise ValueError(
            f"{where} has no `labels`, but alpha={alpha} gives the task loss weight {1 - alpha:.2f}. Add labels "
            f"to the dataset, or set alpha=1.0 to learn from {teacher} only."
        )


def transfer_positions(
    labels: torch.Tensor | None, attention_mask: torch.Tensor | None, *, shifted: bool
) -> torch.Tensor | None:
    """The positions of the rows without labels (a transfer set), where the KD term alone applies.

    A row is unlabeled when all its labels are -100: a sequence-classification row with label -100, a
    token-classification or causal-LM row whose labels are all -100. Its positions are the attended ones (all
    of them without an attention mask); a labeled row has none here (its KD positions are its label positions).

    Args:
        labels: ``(B,)`` or ``(B, T)``, -100 where ignored; None for a batch without labels.
        attention_mask: ``(B, T)`` or None.
        shifted: causal LMs: labels and mask are cut like the logits (position t predicts t+1).

    Returns:
        A bool tensor: ``(B,)`` for labels ``(B,)``, ``(B, T)`` for ``(B, T)`` (``(B, T - 1)`` shifted); None
        without labels.
    """
    if labels is None:
        return None
    if shifted:
        labels = labels[:, 1:]
        attention_mask = None if attention_mask is None else attention_mask[:, 1:]
    unlabeled = labels == IGNORE_INDEX
    if labels.dim() < 2:
        return unlabeled
    rows = unlabeled.all(dim=-1, keepdim=True)
    if attention_mask is None or attention_mask.shape != labels.shape:
        return rows.expand_as(labels)
    return rows & attention_mask.to(device=labels.device).bool()


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
    routes: list[str] | None = None  # each row's teacher name, for a routed teacher (ROUTES)
    measure_diagnostics: bool = False  # the logit terms measure the teacher diagnostics on this batch
    # The transfer positions, unshifted and shifted, each computed once and read by every term after.
    _transfer: dict[bool, torch.Tensor | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def from_inputs(cls, inputs: dict[str, Any], **counts: Any) -> DistillationBatch:
        cache = {k: v for k, v in inputs.items() if k in CACHE_COLUMNS}
        model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", ROUTES) and k not in cache}
        routes = inputs.get(ROUTES)
        return cls(
            model_inputs=model_inputs, labels=inputs.get("labels"), cache=cache, routes=routes, **counts
        )

    def subset(self, rows: list[int]) -> DistillationBatch:
        """The batch of ``rows`` only (in that order): every tensor, list or array with one entry per row is
        cut to them; the rest (a temperature scalar) is kept. Counts are left unset: a teacher does not read them.

        Args:
            rows: row indices into this batch.

        Returns:
            A new :class:`DistillationBatch` of ``len(rows)`` rows, same padded length.
        """
        size = len(self.routes) if self.routes is not None else self.model_inputs["input_ids"].shape[0]

        def cut(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == size:
                return value[torch.as_tensor(rows, device=value.device)]
            if isinstance(value, list) and len(value) == size:
                return [value[r] for r in rows]
            return value

        return DistillationBatch(
            model_inputs={k: cut(v) for k, v in self.model_inputs.items()},
            labels=cut(self.labels),
            cache={k: cut(v) for k, v in self.cache.items()},
            global_step=self.global_step,
            routes=cut(self.routes),
        )

    @property
    def attention_mask(self) -> torch.Tensor | None:
        return self.model_inputs.get("attention_mask")

    def transfer_positions(self, *, shifted: bool) -> torch.Tensor | None:
        """This batch's transfer positions (:func:`transfer_positions`), computed on the first call and kept:
        the trainer's KD count and the logit terms read the same tensor.

        Args:
            shifted: the labels are next-token labels (causal LM): cut like the logits.

        Returns:
            The bool positions, or None for a batch without labels.
        """
        if shifted not in self._transfer:
            self._transfer[shifted] = transfer_positions(self.labels, self.attention_mask, shifted=shifted)
        return self._transfer[shifted]


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
    ROUTED = "routed teachers"


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

    def fused_teacher(self, check_finite: bool = False) -> TeacherLogits | TeacherHead | TeacherTopk:
        """This target as the fused KD loss's ``teacher`` (:mod:`hf_distill.losses.fused.teacher_forms`), its
        positions shifted like a causal LM student's (position t predicts t+1, so the last one goes).

        Args:
            check_finite (bool): refuse NaN / +inf teacher logits where the loss reads or makes them (full
                logits, or the head's logits chunk by chunk); top-k values are taken as they come.

        Returns:
            :class:`TeacherTopk`, :class:`TeacherLogits` or :class:`TeacherHead`, by the form this target holds.
        """
        if self.topk is not None:
            return TeacherTopk(*(t[:, :-1] for t in self.topk))
        if self.logits is not None:
            return TeacherLogits(self.logits[:, :-1], check_finite=check_finite)
        if self.hidden is None or self.head_weight is None:
            raise ValueError(
                f"The teacher target ({self.source}) holds no logits, no top-k and no hidden states with a head: "
                "the fused loss has nothing to distil from. A teacher source must fill one of the three forms."
            )
        return TeacherHead(self.hidden[:, :-1], self.head_weight, self.head_bias, check_finite=check_finite)
