"""The KD and task terms of cross-tokenizer distillation: the student's logits against the teacher moved to
the student's positions (:class:`hf_distill.teachers.cross_tokenizer.CrossTokenizerTarget`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.batch import DistillationBatch, TeacherTarget
from hf_distill.losses.cross_vocabulary import per_position_aligned, per_position_uld
from hf_distill.losses.divergences import reduce_positions, task_cross_entropy
from hf_distill.model_kind import CAUSAL_LM, logits_of
from hf_distill.terms.diagnostics import shifted_kd_positions, teacher_diagnostics
from hf_distill.terms.logits import StudentView, mix_terms


class CrossTokenizerLogitTerms:
    """KD (``aligned`` or ``uld``) and task terms on the student's full logits against a
    :class:`CrossTokenizerTarget`."""

    implementation = "plain"

    def __init__(self, args: DistillationTrainingArguments):
        self.args = args
        self.head_kind = CAUSAL_LM

    def run_student(
        self, model: nn.Module, model_inputs: dict[str, Any], output_kwargs: dict[str, bool]
    ) -> StudentView:
        outputs = model(**model_inputs, **output_kwargs)
        return StudentView(outputs, logits=logits_of(outputs))

    def __call__(
        self, student: StudentView, target: TeacherTarget, batch: DistillationBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        aligned = getattr(target, "aligned", None)
        if aligned is None:
            raise TypeError(
                f"cross_tokenizer_loss needs a cross-tokenizer teacher target, got one from the "
                f"{target.kind.value}: the teacher source must be the cross-tokenizer teacher "
                "(hf_distill.teachers.cross_tokenizer.CrossTokenizerTeacher)."
            )
        args, num_items = self.args, batch.num_items_in_batch
        logits = student.logits[:, :-1]
        labels = batch.labels[:, 1:] if batch.labels is not None else None
        mask = shifted_kd_positions(batch, student.logits)
        use = mask & aligned.valid[:, :-1]
        per_position = self._kd_per_position(student.logits, aligned, use)
        loss_kd = reduce_positions(per_position, mask, num_items_in_batch=num_items)
        loss_task = None
        if args.alpha < 1.0:
            loss_task = task_cross_entropy(logits, labels, num_items_in_batch=num_items)
        loss, parts = mix_terms(args.alpha, loss_kd, loss_task)
        if batch.measure_diagnostics:
            parts.update(teacher_diagnostics(self.head_kind, student.logits, target, batch, args, mask=mask))
        return loss, parts

    def _kd_per_position(self, logits: torch.Tensor, aligned: Any, use: torch.Tensor) -> torch.Tensor:
        """The KD loss at each position ``(B, T_s - 1)`` that ``use`` picks, 0 elsewhere, each position against its
        teacher row (the teacher is not copied to the student's positions).

        The ULD sorts are the cost, so positions that do not count are left out, unless they are few (the last
        position, a little padding): then every position of the unsliced ``logits`` is computed and the unused
        ones zeroed, which is cheaper than copying the used positions' logits out and scattering their gradient
        back into a zero tensor.
        """
        args = self.args
        every = int(use.sum()) * 8 >= logits.shape[0] * logits.shape[1] * 7  # at most 1 in 8 positions unused
        if every:
            flat = logits.reshape(-1, logits.shape[-1])
            rows, matched = aligned.rows.reshape(-1), aligned.matched.reshape(-1)
        else:
            flat = logits[:, :-1][use]
            rows, matched = aligned.rows[:, :-1][use], aligned.matched[:, :-1][use]
        teacher = (aligned.teacher_log_p, aligned.teacher_log_rest)
        if args.cross_tokenizer_loss == "uld":
            values = per_position_uld(
                flat,
                *teacher,
                temperature=args.temperature,
                teacher_rows=rows,
                top_k=args.cross_tokenizer_top_k,
            )
        else:
            values = per_position_aligned(
                flat,
                *teacher,
                aligned.teacher_student_ids,
                matched,
                temperature=args.temperature,
                teacher_rows=rows,
                top_k=args.cross_tokenizer_top_k,
            )
        if every:
            # torch.where, not a product: an unused position passes neither its value nor a gradient on.
            return torch.where(use, values.view(logits.shape[:-1])[:, :-1], 0.0)
        return torch.zeros(use.shape, dtype=values.dtype, device=values.device).masked_scatter(use, values)
