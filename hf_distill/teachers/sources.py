"""Teacher sources: what the teacher says about one batch, wherever its numbers come from.

Every source has one call shape, :class:`TeacherSource`: ``source(batch, output_kwargs) -> TeacherTarget``.
The trainer asks its source once per batch and never branches on where the target came from. Sources:

- :class:`LiveTeacher`: the teacher model, run in eval mode under ``no_grad``. When the KD term is the
  chunked large-vocabulary loss and the teacher's head is a plain linear layer, it returns the teacher's last
  hidden state and head instead of its logits, so the ``(B, T, V)`` teacher logits never exist at once.
- :class:`CachedTeacher`: the teacher's outputs stored as dataset columns by
  :func:`hf_distill.cache.build.cache_teacher_outputs`: full logits (classification / NER) or top-k logits
  with the tail mass (causal LM). The batch's inputs are checked against the cache's fingerprint.
- :class:`CachedOrLiveTeacher`: the cache a batch carries, else the live teacher (the trainer's default:
  a cached train set may be evaluated on an uncached eval set).
- Beyond this module: the cross-tokenizer teacher (:class:`hf_distill.teachers.cross_tokenizer.CrossTokenizerTeacher`)
  and the modes' sources (the mixture of several teachers in :mod:`hf_distill.modes.multi_teacher`).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from hf_distill.batch import DistillationBatch, TargetKind, TeacherTarget
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


class TeacherSource(Protocol):
    """What the teacher says about one batch: ``source(batch, output_kwargs) -> TeacherTarget``.

    ``batch`` is the :class:`~hf_distill.batch.DistillationBatch` (model inputs, labels, cache columns,
    ``global_step`` for errors); ``output_kwargs`` are what the feature terms need from a live model
    (``output_hidden_states``, ``output_attentions``); a source with no model to run ignores them. The target's
    ``kind`` (:class:`~hf_distill.batch.TargetKind`) names the source; its form (``logits``, ``topk``,
    ``hidden``) is what the logit terms read.

    A new source is one more class with this call and nothing else to change: the served teacher
    (:class:`hf_distill.teachers.served.ServedTeacher`, an HTTP server answering the top-k log-probabilities of
    each position) sends ``batch.model_inputs["input_ids"]`` and returns ``TeacherTarget(TargetKind.SERVED_TOPK,
    topk=(values, ids, tail))``, the form a top-k cache gives, so every logit term (plain and chunked) takes it
    as it is; its kind serves messages only.
    """

    def __call__(self, batch: DistillationBatch, output_kwargs: dict[str, bool]) -> TeacherTarget: ...


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
    def __call__(self, batch: DistillationBatch, output_kwargs: dict[str, bool]) -> TeacherTarget:
        model_inputs = batch.model_inputs
        if not self.as_hidden:
            outputs = self.teacher(**model_inputs, **output_kwargs)
            return TeacherTarget(
                TargetKind.LIVE, logits=slice_vocab(logits_of(outputs), self.vocab_size), outputs=outputs
            )
        outputs, hidden = forward_with_last_hidden(
            self.teacher, self.unwrapped, model_inputs, **output_kwargs
        )
        head = self.unwrapped.get_output_embeddings()
        weight, bias = head_rows(head, self.vocab_size)
        return TeacherTarget(
            TargetKind.LIVE, hidden=hidden, head_weight=weight, head_bias=bias, outputs=outputs
        )


class CachedTeacher:
    """The teacher's outputs carried by the batch (:mod:`hf_distill.cache.build`)."""

    def __init__(self, temperature: float, vocab_size: int | None):
        self.temperature, self.vocab_size = temperature, vocab_size

    def __call__(self, batch: DistillationBatch, output_kwargs: dict[str, bool]) -> TeacherTarget:
        cache = batch.cache
        check_cache_matches({**batch.model_inputs, **cache})
        if TEACHER_LOGITS in cache:
            return TeacherTarget(
                TargetKind.CACHED_LOGITS, logits=slice_vocab(cache[TEACHER_LOGITS], self.vocab_size)
            )
        check_cached_temperature(cache[TEMPERATURE], self.temperature, "top-k teacher cache")
        return TeacherTarget(
            TargetKind.CACHED_TOPK, topk=tuple(cache[c] for c in (TOPK_LOGITS, TOPK_INDICES, TAIL_LOGIT))
        )


class CachedOrLiveTeacher:
    """The source of each batch: the cache the batch carries, else the live source.

    Args:
        live: any :class:`TeacherSource` that runs per batch (:class:`LiveTeacher`, a mode's mixture), or None
            when every dataset carries the teacher's outputs (the teacher is then never loaded).
        cached: reads the cache columns.
    """

    def __init__(self, live: TeacherSource | None, cached: CachedTeacher):
        self.live, self.cached = live, cached

    def __call__(self, batch: DistillationBatch, output_kwargs: dict[str, bool]) -> TeacherTarget:
        if batch.cache:
            return self.cached(batch, output_kwargs)
        if self.live is None:
            raise ValueError(
                "This batch carries no cached teacher outputs and the trainer has no teacher_model: every "
                "dataset it trains or evaluates on must be cached (cache_teacher_outputs), or pass teacher_model."
            )
        return self.live(batch, output_kwargs)


# The name this source had before every source took the batch; kept for code that imports it.
TeacherSignal = CachedOrLiveTeacher
