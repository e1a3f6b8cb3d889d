"""Teacher signals: what the teacher says about one batch, wherever its numbers come from.

The trainer asks one :class:`TeacherSignal` per batch and gets a :class:`TeacherTarget`; it never branches on
the source. Sources:

- :class:`LiveTeacher`: the teacher model, run in eval mode under ``no_grad``. When the KD term is the
  chunked large-vocabulary loss and the teacher's head is a plain linear layer, it returns the teacher's last
  hidden state and head instead of its logits, so the ``(B, T, V)`` teacher logits never exist at once.
- :class:`CachedTeacher`: the teacher's outputs stored as dataset columns by
  :func:`hf_distill.cache.build.cache_teacher_outputs`: full logits (classification / NER) or top-k logits
  with the tail mass (causal LM). The batch's inputs are checked against the cache's fingerprint.
- Modes add their own live sources with the same call (e.g. the mixture of several teachers in
  :mod:`hf_distill.modes.multi_teacher`).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from hf_distill.batch import DistillationBatch, TeacherTarget
from hf_distill.cache.build import (
    TAIL_LOGIT,
    TEACHER_LOGITS,
    TEMPERATURE,
    TOPK_INDICES,
    TOPK_LOGITS,
    check_cache_matches,
    check_cached_temperature,
)
from hf_distill.losses.fused.lm_head import forward_with_last_hidden, lm_head_of
from hf_distill.model_kind import head_rows, logits_of, slice_vocab

LIVE, CACHED_LOGITS, CACHED_TOPK = "live teacher", "cached teacher logits", "cached top-k teacher logits"


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
    """The teacher's outputs carried by the batch (:mod:`hf_distill.cache.build`)."""

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
