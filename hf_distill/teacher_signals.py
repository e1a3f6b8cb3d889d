"""Teacher signals: what the teacher says about one batch, wherever its numbers come from.

The trainer asks one :class:`TeacherSignal` per batch and gets a :class:`TeacherTarget`; it never branches on
the source. Sources:

- :class:`LiveTeacher`: the teacher model, run in eval mode under ``no_grad``. When the KD term is the
  chunked large-vocabulary loss and the teacher's head is a plain linear layer, it returns the teacher's last
  hidden state and head instead of its logits, so the ``(B, T, V)`` teacher logits never exist at once.
- :class:`CachedTeacher`: the teacher's outputs stored as dataset columns by
  :func:`hf_distill.teacher_cache.cache_teacher_outputs`: full logits (classification / NER) or top-k logits
  with the tail mass (causal LM). The batch's inputs are checked against the cache's fingerprint.
- Modes add their own live sources with the same call (e.g. the mixture of several teachers in
  :mod:`hf_distill.modes.multi_teacher`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from .lm_head import forward_with_last_hidden, lm_head_of
from .model_kind import head_rows, logits_of, slice_vocab
from .teacher_cache import (
    CACHE_COLUMNS,
    TAIL_LOGIT,
    TEACHER_LOGITS,
    TEMPERATURE,
    TOPK_INDICES,
    TOPK_LOGITS,
    check_cache_matches,
    check_cached_temperature,
)

LIVE, CACHED_LOGITS, CACHED_TOPK = "live teacher", "cached teacher logits", "cached top-k teacher logits"


@dataclass
class DistillationBatch:
    """One batch as the loss terms see it: the model's inputs, the labels, the cache columns, and the counts
    that normalise the terms (``num_items_in_batch`` for the task term, ``num_kd_items`` for the KD term when
    the batch may hold transfer rows, ``num_tokens`` for feature terms)."""

    model_inputs: dict[str, Any]
    labels: torch.Tensor | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    num_items_in_batch: Any = None
    num_kd_items: Any = None  # label positions + transfer rows' positions (hf_distill.normalization)
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


@dataclass
class TeacherTarget:
    """The teacher's prediction for the student's positions, in one of three forms the logit terms take.

    - ``logits``: ``(N, C)`` or ``(B, T, V)``, the same positions as the student's logits (not yet shifted);
    - ``topk``: ``(values (B, T, k), indices (B, T, k), tail (B, T))``, raw top-k logits and the tail logit at
      the training temperature (see :mod:`hf_distill.topk_losses`);
    - ``hidden`` ``(B, T, H_t)`` with ``head_weight`` ``(V, H_t)`` / ``head_bias``: logits made chunk by chunk.

    ``outputs`` holds the live model's outputs (hidden states, attentions) for the feature terms.
    """

    source: str
    logits: torch.Tensor | None = None
    topk: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    hidden: torch.Tensor | None = None
    head_weight: torch.Tensor | None = None
    head_bias: torch.Tensor | None = None
    outputs: Any = None


class LiveSource(Protocol):
    """A teacher that runs per batch: ``(model_inputs, output_kwargs) -> TeacherTarget``."""

    def __call__(self, model_inputs: dict[str, Any], output_kwargs: dict[str, bool]) -> TeacherTarget: ...


class LiveTeacher:
    """The teacher model, run under ``no_grad`` on each batch.

    Args:
        teacher: the placed teacher (possibly an inference engine or sharded wrapper); ``unwrapped``: the module.
        vocab_size: the output rows both models share, or None for all.
        as_hidden: return the last hidden state and the head (for the chunked KD loss) when the head allows it.
    """

    def __init__(self, teacher: nn.Module, unwrapped: nn.Module, vocab_size: int | None, as_hidden: bool):
        self.teacher, self.unwrapped, self.vocab_size = teacher, unwrapped, vocab_size
        # A teacher that scales or soft-caps its logits after the head cannot skip them: use its logits.
        self.as_hidden = as_hidden and not isinstance(lm_head_of(unwrapped), str)

    @torch.no_grad()
    def __call__(self, model_inputs: dict[str, Any], output_kwargs: dict[str, bool]) -> TeacherTarget:
        if not self.as_hidden:
            outputs = self.teacher(**model_inputs, **output_kwargs)
            return TeacherTarget(
                LIVE, logits=slice_vocab(logits_of(outputs), self.vocab_size), outputs=outputs
            )
        outputs, hidden = forward_with_last_hidden(
            self.teacher, self.unwrapped, model_inputs, **output_kwargs
        )
        head = self.unwrapped.get_output_embeddings()
        weight, bias = head_rows(head, self.vocab_size)
        return TeacherTarget(LIVE, hidden=hidden, head_weight=weight, head_bias=bias, outputs=outputs)


class CachedTeacher:
    """The teacher's outputs carried by the batch (:mod:`hf_distill.teacher_cache`)."""

    def __init__(self, temperature: float, vocab_size: int | None):
        self.temperature, self.vocab_size = temperature, vocab_size

    def __call__(self, batch: DistillationBatch) -> TeacherTarget:
        cache = batch.cache
        check_cache_matches({**batch.model_inputs, **cache})
        if TEACHER_LOGITS in cache:
            return TeacherTarget(CACHED_LOGITS, logits=slice_vocab(cache[TEACHER_LOGITS], self.vocab_size))
        check_cached_temperature(cache[TEMPERATURE], self.temperature, "top-k teacher cache")
        return TeacherTarget(
            CACHED_TOPK, topk=tuple(cache[c] for c in (TOPK_LOGITS, TOPK_INDICES, TAIL_LOGIT))
        )


class TeacherSignal:
    """Picks the source for each batch: the cache the batch carries, else the live teacher.

    ``live`` may be None when every dataset carries the teacher's outputs (the teacher is then never loaded).
    """

    def __init__(self, live: LiveSource | None, cached: CachedTeacher):
        self.live, self.cached = live, cached

    def __call__(self, batch: DistillationBatch, output_kwargs: dict[str, bool]) -> TeacherTarget:
        if batch.cache:
            return self.cached(batch)
        if self.live is None:
            raise ValueError(
                "This batch carries no cached teacher outputs and the trainer has no teacher_model: every "
                "dataset it trains or evaluates on must be cached (cache_teacher_outputs), or pass teacher_model."
            )
        return self.live(batch.model_inputs, output_kwargs)
