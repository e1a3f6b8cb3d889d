"""The logit terms: the distillation (KD) term and the task cross-entropy, mixed by ``alpha``.

``loss = alpha * loss_kd + (1 - alpha) * loss_task``, both normalised by ``num_items_in_batch`` (so gradient
accumulation is exact).

Transfer sets (rows without labels, :meth:`hf_distill.batch.DistillationBatch.transfer_positions`) mix with labeled rows
in the same batch, per row: a labeled row learns ``alpha * kd + (1 - alpha) * task``, an unlabeled row its KD
term at full weight (there is no label to give the rest of the weight to; weighing it by ``alpha`` would only
shrink the learning rate on exactly the rows a transfer set adds). Over a batch::

    loss = (alpha * sum_{labeled positions} kd + sum_{transfer positions} kd) / N_kd
           + (1 - alpha) * sum_{labeled positions} ce / N_task

``N_task`` is ``num_items_in_batch`` (label positions: the task term averages over labeled rows only) and
``N_kd`` counts every position the KD term covers, label positions plus the transfer rows' attended positions,
over all accumulation micro-batches and processes (:meth:`hf_distill.terms.normalization.Normalization.num_kd_items`):
a transfer row weighs in per position (a token of a transfer sentence counts as much as a labeled token), and
accumulation stays exact. With no transfer row both are the old terms; a batch of transfer rows only has a task
term 0 (``clamp_min(1)``, no 0/0). The logged ``loss_kd`` is the KD term over all its positions at weight 1, so
with transfer rows the logged ``loss`` exceeds ``alpha * loss_kd + (1 - alpha) * loss_task`` by ``1 - alpha``
times the transfer rows' KD sum over ``N_kd``.

Two implementations behind one call, chosen once when the trainer is built and used in
training and evaluation alike:

- :class:`PlainLogitTerms`: the student's full logits against any :class:`~hf_distill.batch.TeacherTarget`
  (full logits or top-k), with :func:`hf_distill.losses.divergences.distillation_loss` /
  :func:`hf_distill.losses.topk.topk_distillation_loss`;
- :class:`ChunkedLogitTerms`: causal LMs with a large vocabulary; the student's logits are never built whole
  (:func:`hf_distill.losses.fused.chunked.fused_linear_distillation_loss`), the teacher given as logits, top-k, or its last
  hidden state and head (:meth:`hf_distill.batch.TeacherTarget.fused_teacher`).

Each term object also runs the student's forward pass, since the chunked loss needs the last hidden state
instead of the logits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.batch import DistillationBatch, TargetKind, TeacherTarget
from hf_distill.losses.divergences import (
    IGNORE_INDEX,
    distillation_loss,
    reduce_positions,
    task_cross_entropy,
)
from hf_distill.losses.fused.chunked import fused_linear_distillation_loss
from hf_distill.losses.fused.lm_head import forward_with_last_hidden, resolve_implementation
from hf_distill.losses.fused.teacher_chunks import check_teacher_finite
from hf_distill.losses.topk import topk_distillation_loss
from hf_distill.model_kind import (
    CAUSAL_LM,
    align_for_distillation,
    head_rows,
    logits_of,
    output_vocab_size,
    slice_vocab,
)
from hf_distill.terms.diagnostics import teacher_diagnostics


def mix_terms(
    alpha: float, loss_kd: torch.Tensor, loss_task: torch.Tensor | None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``alpha * kd + (1 - alpha) * task`` and the named parts (``loss_task`` only when it has weight)."""
    loss, parts = alpha * loss_kd, {"loss_kd": loss_kd}
    if alpha < 1.0:
        loss = loss + (1.0 - alpha) * loss_task
        parts["loss_task"] = loss_task
    return loss, parts


def has_transfer(transfer: torch.Tensor | None) -> bool:
    """Whether a batch holds any transfer position (a row without labels)."""
    return transfer is not None and bool(transfer.any())


def kd_denominator(num_items: Any, num_kd_items: Any, transfer: torch.Tensor | None) -> Any:
    """``N_kd`` of the module docstring: the trainer's count over the accumulated batch when it made one, else
    ``num_items_in_batch`` plus this batch's transfer positions; None (each reduction counts its own mask)
    when there is neither."""
    if num_kd_items is not None:
        return num_kd_items
    if num_items is None or not has_transfer(transfer):
        return num_items
    return torch.as_tensor(num_items, device=transfer.device) + transfer.sum()


def check_kd_finite(loss_kd: torch.Tensor, teacher_logits: torch.Tensor, batch: DistillationBatch) -> None:
    """Refuses a non-finite KD term, naming the side at fault and the batch's step.

    The loss is checked, not every logit: one scalar instead of a pass over ``(B, T, V)``; only a non-finite
    loss is diagnosed.
    """
    if bool(torch.isfinite(loss_kd)):
        return
    check_teacher_finite(teacher_logits, batch.global_step)
    raise FloatingPointError(
        f"The distillation loss is not finite at global step {batch.global_step} although the teacher's logits are: "
        "the student's logits hold NaN or inf (a diverged student). Lower the learning rate, keep "
        "max_grad_norm on, or check the student's weights and the batch's inputs."
    )


@dataclass
class StudentView:
    """The student's forward pass: its outputs, and either its full logits (sliced to the shared vocabulary)
    or its last hidden state ``(B, T, H)`` with the LM head's rows (chunked loss)."""

    outputs: Any
    logits: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    head_weight: torch.Tensor | None = None
    head_bias: torch.Tensor | None = None

    def prediction_outputs(self) -> dict[str, torch.Tensor]:
        """What ``compute_loss(return_outputs=True)`` hands to evaluation: the logits, built from the hidden
        state on the chunked path (evaluation runs without gradients, so no backward memory is kept)."""
        if self.logits is not None:
            return {"logits": self.logits}
        with torch.no_grad():
            return {"logits": F.linear(self.hidden, self.head_weight, self.head_bias)}


class PlainLogitTerms:
    """KD and task terms on the student's full logits."""

    implementation = "plain"

    def __init__(self, head_kind: str, args: DistillationTrainingArguments, vocab_size: int | None):
        self.head_kind, self.args, self.vocab_size = head_kind, args, vocab_size

    def run_student(
        self, model: nn.Module, model_inputs: dict[str, Any], output_kwargs: dict[str, bool]
    ) -> StudentView:
        outputs = model(**model_inputs, **output_kwargs)
        return StudentView(outputs, logits=slice_vocab(logits_of(outputs), self.vocab_size))

    def __call__(
        self, student: StudentView, target: TeacherTarget, batch: DistillationBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        args, num_items = self.args, batch.num_items_in_batch
        if target.logits is not None:
            self._check_classes(student.logits, target)
        kd_student, kd_teacher, kd_labels, mask = align_for_distillation(
            self.head_kind, student.logits, target.logits, batch.labels, batch.attention_mask
        )
        if kd_labels is not None and kd_labels.shape != kd_student.shape[:-1]:
            raise ValueError(
                f"labels have shape {tuple(kd_labels.shape)} but the logits {tuple(kd_student.shape)}; "
                "for token classification pad labels with -100 to the input length (DataCollatorForTokenClassification)."
            )
        transfer = batch.transfer_positions(shifted=self.head_kind == CAUSAL_LM)
        if kd_labels is not None:
            mask = kd_labels != IGNORE_INDEX if transfer is None else (kd_labels != IGNORE_INDEX) | transfer
        num_kd = kd_denominator(num_items, batch.num_kd_items, transfer)
        if num_kd is None and has_transfer(transfer):
            num_kd = mask.sum()  # no count from Trainer: this batch's KD positions, labeled and transfer
        if target.topk is not None:
            topk = [t[:, :-1] for t in target.topk] if self.head_kind == CAUSAL_LM else target.topk
            per_position = topk_distillation_loss(
                kd_student, *topk, mask=mask, reduction="none", **args.kd_loss_kwargs
            )
        else:
            per_position = distillation_loss(
                kd_student, kd_teacher, mask=mask, reduction="none", **args.kd_loss_kwargs
            )
        loss_kd = reduce_positions(per_position, mask, num_items_in_batch=num_kd)
        if target.topk is None and args.check_teacher_finite:
            check_kd_finite(loss_kd, kd_teacher, batch)
        loss_task = None
        if args.alpha < 1.0:
            loss_task = task_cross_entropy(kd_student, kd_labels, num_items_in_batch=num_items)
        loss, parts = mix_terms(args.alpha, loss_kd, loss_task)
        if args.alpha < 1.0 and has_transfer(transfer):
            # Transfer rows take the weight the task term has on labeled rows: their KD term counts in full.
            loss = loss + (1.0 - args.alpha) * reduce_positions(
                per_position, transfer, num_items_in_batch=num_kd
            )
        if batch.measure_diagnostics:
            parts.update(teacher_diagnostics(self.head_kind, student.logits, target, batch, args, mask=mask))
        return loss, parts

    def _check_classes(self, student_logits: torch.Tensor, target: TeacherTarget) -> None:
        if target.kind is TargetKind.CACHED_LOGITS and target.logits.shape[-1] != student_logits.shape[-1]:
            raise ValueError(
                f"The cached teacher logits have {target.logits.shape[-1]} classes but the student has "
                f"{student_logits.shape[-1]}; the cache was made by a teacher with another label set. Re-cache "
                "with the teacher of this student's labels."
            )


class ChunkedLogitTerms:
    """KD and task terms of a causal LM computed chunk by chunk from the last hidden state (``fused`` or
    ``chunked``, see :mod:`hf_distill.losses.fused.chunked`)."""

    def __init__(
        self,
        args: DistillationTrainingArguments,
        vocab_size: int | None,
        implementation: str,
        unwrap: Callable[[nn.Module], nn.Module],
    ):
        self.args, self.vocab_size, self.implementation, self.unwrap = (
            args,
            vocab_size,
            implementation,
            unwrap,
        )
        self.head_kind = CAUSAL_LM

    def run_student(
        self, model: nn.Module, model_inputs: dict[str, Any], output_kwargs: dict[str, bool]
    ) -> StudentView:
        unwrapped = self.unwrap(model)
        outputs, hidden = forward_with_last_hidden(model, unwrapped, model_inputs, **output_kwargs)
        weight, bias = head_rows(unwrapped.get_output_embeddings(), self.vocab_size)
        return StudentView(outputs, hidden=hidden, head_weight=weight, head_bias=bias)

    def __call__(
        self, student: StudentView, target: TeacherTarget, batch: DistillationBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        args, labels, attention_mask = self.args, batch.labels, batch.attention_mask
        transfer = batch.transfer_positions(shifted=True)
        if has_transfer(transfer) or batch.num_kd_items is not None:
            return self._with_transfer(student, target, batch, transfer)
        kd_labels = labels[:, 1:] if labels is not None else None
        mask = attention_mask[:, 1:].bool() if labels is None and attention_mask is not None else None
        result = self._chunked(
            student, target, labels=kd_labels, mask=mask, kd_weight=args.alpha, task_weight=1.0 - args.alpha,
            num_items_in_batch=batch.num_items_in_batch,
        )  # fmt: skip
        parts = {"loss_kd": result.loss_kd}
        if args.alpha < 1.0:
            parts["loss_task"] = result.loss_task
        return result.loss, {**parts, **self._diagnostics(target, batch)}

    def _diagnostics(self, target: TeacherTarget, batch: DistillationBatch) -> dict[str, torch.Tensor]:
        # The student's logits never exist whole here: the teacher's side only (terms.diagnostics).
        if not batch.measure_diagnostics:
            return {}
        return teacher_diagnostics(self.head_kind, None, target, batch, self.args)

    def _chunked(self, student: StudentView, target: TeacherTarget, **kwargs: Any) -> Any:
        return fused_linear_distillation_loss(
            student.hidden[:, :-1],
            student.head_weight,
            student.head_bias,
            teacher=target.fused_teacher(check_finite=self.args.check_teacher_finite),
            chunk_size=self.args.kd_chunk_size,
            implementation=self.implementation,
            **kwargs,
            **self.args.kd_loss_kwargs,
        )

    def _with_transfer(
        self, student: StudentView, target: TeacherTarget, batch: DistillationBatch, transfer: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The module docstring's mix on the chunked path: sums over the labeled positions (KD weighted
        ``alpha / N_kd``, task ``(1 - alpha) / N_task``) and over the transfer positions (KD at ``1 / N_kd``),
        each pass over the positions it weighs only."""
        alpha, kd_labels = self.args.alpha, batch.labels[:, 1:]
        labeled = kd_labels != IGNORE_INDEX
        n_task = labeled.sum() if batch.num_items_in_batch is None else batch.num_items_in_batch
        n_kd = kd_denominator(n_task, batch.num_kd_items, transfer)
        n_task, n_kd = max(float(n_task), 1.0), max(float(n_kd), 1.0)
        loss = student.hidden.sum() * 0.0  # keeps the graph when a pass has no position
        kd_sum = ce_sum = loss.detach()
        if bool(labeled.any()):
            kd_weight, task_weight = alpha / n_kd, (1.0 - alpha) / n_task
            on_labels = self._chunked(
                student, target, labels=kd_labels, kd_weight=kd_weight, task_weight=task_weight, reduction="sum"
            )  # fmt: skip
            loss, kd_sum, ce_sum = loss + on_labels.loss, kd_sum + on_labels.loss_kd, on_labels.loss_task
        if has_transfer(transfer):
            on_transfer = self._chunked(
                student, target, mask=transfer, kd_weight=1.0 / n_kd, task_weight=0.0, reduction="sum"
            )
            loss, kd_sum = loss + on_transfer.loss, kd_sum + on_transfer.loss_kd
        parts = {"loss_kd": kd_sum / n_kd}
        if alpha < 1.0:
            parts["loss_task"] = ce_sum / n_task
        return loss, {**parts, **self._diagnostics(target, batch)}


LogitTerms = PlainLogitTerms | ChunkedLogitTerms


def build_logit_terms(
    head_kind: str,
    args: DistillationTrainingArguments,
    student: nn.Module,
    vocab_size: int | None,
    unwrap: Callable[[nn.Module], nn.Module],
) -> LogitTerms:
    """The logit terms for this student, with the KD implementation resolved once (``auto`` picks the chunked
    loss for large causal-LM vocabularies; see :func:`hf_distill.losses.fused.lm_head.resolve_implementation`)."""
    if head_kind != CAUSAL_LM:
        return PlainLogitTerms(head_kind, args, vocab_size)
    implementation = resolve_implementation(
        args.kd_loss_implementation, student, vocab_size or output_vocab_size(student)
    )
    if implementation == "plain":
        return PlainLogitTerms(head_kind, args, vocab_size)
    return ChunkedLogitTerms(args, vocab_size, implementation, unwrap)
