"""Multi-teacher distillation: the student learns from a weighted mixture of several teachers.

The teachers share the student's label space (classification) or vocabulary (causal LM). With weights
``w_k(x) >= 0``, ``sum_k w_k(x) = 1``, the target at each position is the mixture of the teachers' softened
distributions

    p_mix(x) = sum_k w_k(x) * softmax(z_k(x) / T),

and the distillation term is the configured loss against ``p_mix``. The mixture is handed to the base
trainer as the logits ``T * log p_mix``, whose softmax at temperature ``T`` is ``p_mix`` exactly, so every
probability-space loss (KL, JSD, skew KL, TVD, soft cross-entropy) reduces to the single-teacher loss when
there is one teacher. ``distillation_loss="mse"`` matches logits, not probabilities: its target is the
weighted mean of the teachers' logits, which also reduces to the single-teacher target.

Weights are fixed (``teacher_weights``, normalised to sum to 1) or per position from each teacher's
confidence (``teacher_weighting``): ``"max_prob"`` gives ``w_k ∝ max_c p_k(c)`` and ``"entropy"`` gives
``w_k = softmax_k(-H(p_k))``, both at temperature 1 (the teacher's own confidence, not the softened one).

Teachers run one after another under ``no_grad`` and only a running mixture is kept, so memory holds one
teacher's activations at a time, whatever the number of teachers. Hidden-state and attention matching use
the first teacher.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.batch import DistillationBatch, TargetKind, TeacherTarget
from hf_distill.checks import check_compatibility, check_separate_models
from hf_distill.model_kind import logits_of, slice_vocab
from hf_distill.teachers.sources import CachedOrLiveTeacher, CachedTeacher
from hf_distill.terms.logits import PlainLogitTerms
from hf_distill.trainer import DistillationTrainer

logger = logging.getLogger(__name__)
TEACHER_WEIGHTINGS = ("fixed", "max_prob", "entropy")


@dataclass
class MultiTeacherTrainingArguments(DistillationTrainingArguments):
    """:class:`DistillationTrainingArguments` plus how the teachers are weighted."""

    teacher_weighting: str = field(
        default="fixed",
        metadata={
            "help": f"How teachers are weighted, one of {TEACHER_WEIGHTINGS}: 'fixed' uses teacher_weights; "
            "'max_prob' and 'entropy' weigh each teacher per example by its confidence."
        },
    )
    teacher_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "Fixed weights (> 0), one per teacher, normalised to sum to 1; unset gives equal weights. "
            "Only with teacher_weighting='fixed'."
        },
    )

    def check_fields(self) -> None:
        if self.teacher_weighting not in TEACHER_WEIGHTINGS:
            raise ValueError(
                f"teacher_weighting {self.teacher_weighting!r} is unknown; choose one of {TEACHER_WEIGHTINGS} "
                "('fixed' with teacher_weights, or a confidence weighting)."
            )
        if self.teacher_weights is not None:
            if self.teacher_weighting != "fixed":
                raise ValueError(
                    f"teacher_weights are given but teacher_weighting={self.teacher_weighting!r} computes its own "
                    "weights per example; drop teacher_weights or set teacher_weighting='fixed'."
                )
            if not self.teacher_weights or not all(w > 0 and math.isfinite(w) for w in self.teacher_weights):
                raise ValueError(
                    f"teacher_weights must be finite numbers > 0, got {self.teacher_weights}: each is a teacher's "
                    "share of the mixture. Leave a teacher out instead of giving it weight 0."
                )
        super().check_fields()


def confidence_log_weights(teacher_logits: torch.Tensor, weighting: str) -> torch.Tensor:
    """Unnormalised log-weight of one teacher per position, ``(..., C) -> (...)``.

    ``"max_prob"``: ``log max_c softmax(z)_c``; ``"entropy"``: ``-H(softmax(z)) = sum_c p_c log p_c``.
    Normalising over teachers (a softmax over ``k`` of these) gives ``w_k ∝ max p_k`` or
    ``w_k = softmax_k(-H_k)``.
    """
    log_p = torch.log_softmax(teacher_logits.float(), dim=-1)
    if weighting == "max_prob":
        return log_p.max(-1).values
    if weighting == "entropy":
        return (log_p.exp() * log_p).sum(-1)
    raise ValueError(f"Unknown confidence weighting {weighting!r}; use 'max_prob' or 'entropy'.")


class MixtureTeacher:
    """A live teacher source (:class:`~hf_distill.teachers.sources.TeacherSource`): the teachers' mixture as the logits ``T * log p_mix`` (see the module docstring),
    with the first teacher's outputs (hidden states, attentions) for the feature terms."""

    def __init__(
        self, teachers: list[nn.Module], args: MultiTeacherTrainingArguments, vocab_size: int | None
    ):
        self.teachers, self.args, self.vocab_size = teachers, args, vocab_size
        weights = args.teacher_weights or [1.0] * len(teachers)
        self.fixed_weights = [w / sum(weights) for w in weights]

    def log_weight(self, index: int, logits: torch.Tensor) -> torch.Tensor:
        """``log w_k`` per position for teacher ``index`` with logits ``(..., C)``."""
        if self.args.teacher_weighting == "fixed":
            return torch.full(logits.shape[:-1], math.log(self.fixed_weights[index]), device=logits.device)
        return confidence_log_weights(logits, self.args.teacher_weighting)

    @torch.no_grad()
    def __call__(self, batch: DistillationBatch, output_kwargs: dict[str, bool]) -> TeacherTarget:
        model_inputs, temperature = batch.model_inputs, self.args.temperature
        match_logits = self.args.distillation_loss == "mse"
        first_outputs = None
        mixture = None  # running log-sum-exp of log(w_k) + log p_k, or weighted sum of logits for "mse"
        log_weight_total = None
        # One teacher at a time: its activations are freed before the next one runs.
        for index, teacher in enumerate(self.teachers):
            outputs = teacher(**model_inputs, **(output_kwargs if index == 0 else {}))
            first_outputs = outputs if index == 0 else first_outputs
            logits = slice_vocab(logits_of(outputs).float(), self.vocab_size)
            log_weight = self.log_weight(index, logits)
            if match_logits:
                term = log_weight.exp().unsqueeze(-1) * logits
                mixture = term if mixture is None else mixture + term
                weight = log_weight.exp()
                log_weight_total = weight if log_weight_total is None else log_weight_total + weight
            else:
                term = log_weight.unsqueeze(-1) + torch.log_softmax(logits / temperature, dim=-1)
                mixture = term if mixture is None else torch.logaddexp(mixture, term)
                log_weight_total = (
                    log_weight if log_weight_total is None else torch.logaddexp(log_weight_total, log_weight)
                )
            del outputs, logits
        if match_logits:
            mixed_logits = mixture / log_weight_total.unsqueeze(-1)
        else:
            # Normalising the weights per position: log p_mix = logsumexp_k(log w_k + log p_k) - log sum_k w_k.
            mixed_logits = temperature * (mixture - log_weight_total.unsqueeze(-1))
        return TeacherTarget(TargetKind.MIXTURE, logits=mixed_logits, outputs=first_outputs)


class MultiTeacherDistillationTrainer(DistillationTrainer):
    """Distills several teachers into one student.

    Args:
        model: the student.
        teacher_models: the teachers (models), in the order of ``args.teacher_weights``.
        args: :class:`MultiTeacherTrainingArguments`.
        **kwargs: as for :class:`~hf_distill.DistillationTrainer`.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        teacher_models: list[nn.Module] | None = None,
        args: MultiTeacherTrainingArguments | None = None,
        **kwargs: Any,
    ):
        if args is None:
            args = MultiTeacherTrainingArguments(output_dir="tmp_trainer", report_to="none")
        check_multi_teacher_inputs(args, teacher_models)
        teacher_models = list(teacher_models)
        if model is not None:
            for index, teacher in enumerate(teacher_models):
                check_separate_models(model, teacher, role=f"teacher_models[{index}]")
        # Checked and placed by the hooks below, with the first teacher, during DistillationTrainer's set-up.
        self.extra_teacher_models = teacher_models[1:]
        super().__init__(model=model, teacher_model=teacher_models[0], args=args, **kwargs)
        self.mixture: MixtureTeacher = self.teacher_source.live
        self.teachers: list[nn.Module] = self.mixture.teachers

    def shared_vocab_size(self, model, teacher_model, tokenizer, teacher_tokenizer) -> int | None:
        vocab = super().shared_vocab_size(model, teacher_model, tokenizer, teacher_tokenizer)
        for teacher in self.extra_teacher_models:
            # Same checks as for the first teacher: label space / vocabulary shared with the student.
            other = check_compatibility(self.head_kind, model, teacher, tokenizer, None)
            if other is not None:
                vocab = min(other, vocab or other)
        return vocab

    def build_logit_terms(self, model: nn.Module) -> PlainLogitTerms:
        terms = super().build_logit_terms(model)
        if terms.implementation == "plain":
            return terms
        logger.warning(
            "kd_loss_implementation='auto' chose %r for this vocabulary, but the teachers' mixture needs the "
            "full logits: using 'plain'.",
            terms.implementation,
        )
        return PlainLogitTerms(self.head_kind, self.args, self.vocab_size)

    def build_teacher_source(self, model, teacher_model, tokenizer, teacher_tokenizer) -> CachedOrLiveTeacher:
        teachers = [self.teacher] + [self.prepare_teacher_model(t) for t in self.extra_teacher_models]
        mixture = MixtureTeacher(teachers, self.args, self.vocab_size)
        return CachedOrLiveTeacher(mixture, CachedTeacher(self.args.temperature, self.vocab_size))

    @property
    def fixed_weights(self) -> list[float]:
        return self.mixture.fixed_weights

    def teacher_weights_for(self, model_inputs: dict[str, Any]) -> torch.Tensor:
        """The normalised weights ``(K, ...)`` each teacher gets per position on a batch (for inspection)."""
        with torch.no_grad():
            log_weights = [
                self.mixture.log_weight(index, logits_of(teacher(**model_inputs)).float())
                for index, teacher in enumerate(self.teachers)
            ]
            return torch.softmax(torch.stack(log_weights), dim=0)


def check_multi_teacher_inputs(args: Any, teacher_models: Any) -> None:
    if not isinstance(args, MultiTeacherTrainingArguments):
        raise TypeError(
            f"MultiTeacherDistillationTrainer needs MultiTeacherTrainingArguments, got {type(args).__name__}; "
            "they add teacher_weights and teacher_weighting."
        )
    if not teacher_models or isinstance(teacher_models, nn.Module):
        raise ValueError(
            "MultiTeacherDistillationTrainer needs `teacher_models`, a non-empty list of teacher models; "
            "for one teacher a list of one works (or use DistillationTrainer)."
        )
    if args.teacher_weights is not None and len(args.teacher_weights) != len(teacher_models):
        raise ValueError(
            f"{len(args.teacher_weights)} teacher_weights for {len(teacher_models)} teachers; give one weight "
            "per teacher, in the order of teacher_models."
        )
    if args.kd_loss_implementation in ("chunked", "fused"):
        raise ValueError(
            f"kd_loss_implementation={args.kd_loss_implementation!r} runs one teacher inside the chunked loss, "
            "but several teachers are mixed from their full logits; use 'plain' (or 'auto') here."
        )
