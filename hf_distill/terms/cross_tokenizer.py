"""The KD and task terms of cross-tokenizer distillation: the student's logits against the teacher moved to
the student's positions (:class:`hf_distill.teachers.cross_tokenizer.CrossTokenizerTarget`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.batch import DistillationBatch, TeacherTarget
from hf_distill.losses.cross_vocabulary import per_position_aligned, per_position_uld
from hf_distill.losses.divergences import IGNORE_INDEX, reduce_positions, task_cross_entropy
from hf_distill.model_kind import CAUSAL_LM, logits_of
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
        if labels is not None:
            mask = labels != IGNORE_INDEX
        elif batch.attention_mask is not None:
            mask = batch.attention_mask[:, 1:].bool()
        else:
            mask = torch.ones(logits.shape[:-1], dtype=torch.bool, device=logits.device)
        use = mask & aligned.valid[:, :-1]
        # Only the positions that count are computed (the ULD sorts would otherwise run on padding too), each
        # against its teacher row: the teacher is not copied to the student's positions.
        rows = aligned.rows[:, :-1][use]
        teacher = (aligned.teacher_log_p, aligned.teacher_log_rest)
        if args.cross_tokenizer_loss == "uld":
            values = per_position_uld(logits[use], *teacher, temperature=args.temperature, teacher_rows=rows)
        else:
            values = per_position_aligned(
                logits[use],
                *teacher,
                aligned.teacher_student_ids,
                aligned.matched[:, :-1][use],
                temperature=args.temperature,
                teacher_rows=rows,
            )
        per_position = torch.zeros(mask.shape, dtype=values.dtype, device=values.device).masked_scatter(
            use, values
        )
        loss_kd = reduce_positions(per_position, mask, num_items_in_batch=num_items)
        loss_task = None
        if args.alpha < 1.0:
            loss_task = task_cross_entropy(logits, labels, num_items_in_batch=num_items)
        return mix_terms(args.alpha, loss_kd, loss_task)
