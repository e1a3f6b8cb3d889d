"""The teacher side of the fused loss (:mod:`hf_distill.losses.fused.teacher_chunks`): one finiteness rule on every
path (``-inf`` entries pass and match the plain loss, NaN / inf are refused), and the trainer's refusal of a
teacher producing NaN, raised in the first micro-batch before any optimizer step."""

from __future__ import annotations

import pytest
import torch

from hf_distill.losses.fused.chunked import fused_linear_distillation_loss
from hf_distill.losses.fused.teacher_forms import TeacherHead, TeacherLogits
from hf_distill.trainer import DistillationTrainer
from tests.helpers.fused import make_problem, plain_loss
from tests.helpers.refusals import args, bert, collate, rows, train_and_expect


def test_error_teacher_not_finite():
    hidden, weight, _, teacher_hidden, teacher_weight, labels = make_problem()
    teacher_weight = teacher_weight.clone()
    teacher_weight[3, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="teacher's logits hold NaN or inf"):
        fused_linear_distillation_loss(
            hidden,
            weight,
            teacher=TeacherHead(teacher_hidden, teacher_weight, check_finite=True),
            labels=labels,
        )


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_closed_form_forward_kl_takes_minus_inf_teacher_entries(alpha):
    """The closed-form path (forward KL + cross-entropy) with a teacher that masks part of its vocabulary
    with -inf (padding rows, a constrained head): same value and gradients as the plain loss, the finiteness
    check lets -inf through, and NaN is still refused."""
    hidden, weight, bias, teacher_hidden, teacher_weight, labels = make_problem(seed=4)
    teacher_logits = (teacher_hidden @ teacher_weight.T).clone()
    teacher_logits[..., -5:] = float("-inf")
    teacher_logits[0, 4, :7] = float("-inf")
    reference = plain_loss(hidden, weight, bias, teacher_logits, labels, "forward_kl", alpha, temperature=2.0)
    expected = torch.autograd.grad(reference, (hidden, weight, bias))
    out = fused_linear_distillation_loss(
        hidden, weight, bias, teacher=TeacherLogits(teacher_logits, check_finite=True), labels=labels,
        temperature=2.0, kd_weight=alpha, task_weight=1 - alpha, chunk_size=4,
    )  # fmt: skip
    assert torch.isfinite(out.loss)
    torch.testing.assert_close(out.loss, reference)
    for got, want in zip(torch.autograd.grad(out.loss, (hidden, weight, bias)), expected):
        torch.testing.assert_close(got, want)
    teacher_logits[1, 2, 3] = float("nan")
    with pytest.raises(FloatingPointError, match="teacher's logits hold NaN or inf"):
        fused_linear_distillation_loss(
            hidden, weight, bias, teacher=TeacherLogits(teacher_logits, check_finite=True), labels=labels,
            kd_weight=alpha, task_weight=1 - alpha,
        )  # fmt: skip


@pytest.mark.parametrize("name", ["jsd", "reverse_kl"])
def test_autograd_chunk_path_takes_minus_inf_teacher_entries_like_the_closed_form(name):
    """The finiteness rule is one for every path: -inf entries pass (and match the plain loss), NaN is refused."""
    hidden, weight, bias, teacher_hidden, teacher_weight, labels = make_problem(seed=5)
    teacher_logits = (teacher_hidden @ teacher_weight.T).clone()
    teacher_logits[..., -5:] = float("-inf")
    reference = plain_loss(hidden, weight, bias, teacher_logits, labels, name, 0.7, temperature=2.0)
    out = fused_linear_distillation_loss(
        hidden, weight, bias, teacher=TeacherLogits(teacher_logits, check_finite=True), labels=labels,
        loss=name, temperature=2.0, kd_weight=0.7, task_weight=0.3, chunk_size=4,
    )  # fmt: skip
    torch.testing.assert_close(out.loss, reference)
    teacher_logits[0, 5, 1] = float("nan")
    with pytest.raises(FloatingPointError, match="teacher's logits hold NaN or inf"):
        fused_linear_distillation_loss(
            hidden, weight, bias, teacher=TeacherLogits(teacher_logits, check_finite=True), labels=labels,
            loss=name, kd_weight=0.7, task_weight=0.3,
        )  # fmt: skip


def test_teacher_nan_is_reported_with_the_batch(tmp_path):
    teacher = bert(seed=1)
    with torch.no_grad():
        teacher.classifier.bias[1] = float("nan")
    trainer = DistillationTrainer(
        model=bert(), teacher_model=teacher, args=args(tmp_path), train_dataset=rows(), data_collator=collate
    )
    train_and_expect(
        trainer,
        FloatingPointError,
        r"teacher's logits hold NaN or inf at global step 0 \(batch shape \(2, 3\)\)",
    )
