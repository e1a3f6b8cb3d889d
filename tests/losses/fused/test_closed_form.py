"""The fused loss's one-pass closed form (forward KL + cross-entropy per chunk) against references written here,
by hand, on broken teacher rows; and the fused loss's single backward."""

from __future__ import annotations

import math

import pytest
import torch

from hf_distill.losses.fused.chunked import fused_linear_distillation_loss
from hf_distill.losses.fused.closed_form import forward_kl_and_cross_entropy


def reference(student, teacher, labels, temperature, kd_weight, task_weight):
    """Per-position T^2 * KL(p_t || p_s) and cross-entropy from log-softmaxes, and the gradient of the weighted
    sum by autograd."""
    student = student.clone().requires_grad_()
    log_p_s = torch.log_softmax(student / temperature, dim=-1)
    log_p_t = torch.log_softmax(teacher / temperature, dim=-1)
    p_t = log_p_t.exp()
    kd = temperature**2 * (torch.xlogy(p_t, p_t) - p_t * log_p_s).sum(-1)
    ce = torch.zeros_like(kd)
    if labels is not None:
        ce = -torch.log_softmax(student, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    (grad,) = torch.autograd.grad(kd_weight * kd.sum() + task_weight * ce.sum(), student)
    return kd.detach(), ce.detach(), grad


@pytest.mark.parametrize("temperature", [1.0, 2.0, 3.0, 0.5])
@pytest.mark.parametrize("with_labels", [True, False])
def test_values_and_gradient_equal_the_reference(temperature, with_labels):
    g = torch.Generator().manual_seed(int(temperature * 10))
    student = 4 * torch.randn(6, 30, generator=g, dtype=torch.float64)
    teacher = 4 * torch.randn(6, 30, generator=g, dtype=torch.float64)
    teacher[2, :7] = float("-inf")  # a masked part of the vocabulary: probability 0, a valid target
    labels = torch.randint(0, 30, (6,), generator=g) if with_labels else None
    kd_weight, task_weight = 0.3, 0.7 if with_labels else 0.0
    want = reference(student, teacher, labels, temperature, kd_weight, task_weight)
    kd, ce, grad, teacher_lse = forward_kl_and_cross_entropy(
        student.clone(), teacher.clone(), labels, temperature, kd_weight, task_weight
    )
    for got, expected in zip((kd, ce, grad), want):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(teacher_lse, torch.logsumexp(teacher / temperature, dim=-1))


def test_float32_chunk_at_gpt2_scale_equals_the_float64_reference():
    """At the benchmark's shapes' vocabulary and T = 2, float32 stays within float32 rounding of float64."""
    g = torch.Generator().manual_seed(0)
    student = torch.randn(4, 50257, generator=g, dtype=torch.float64)
    teacher = torch.randn(4, 50257, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 50257, (4,), generator=g)
    want = reference(student, teacher, labels, 2.0, 0.5, 0.5)
    got = forward_kl_and_cross_entropy(student.float(), teacher.float(), labels, 2.0, 0.5, 0.5)
    for value, expected in zip(got[:3], want):
        torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-7)


def test_values_by_hand():
    """Two classes, T = 2: teacher logits (0, 2 ln 3) -> p_t = (1/4, 3/4); student logits (0, 0) -> p_s = (1/2, 1/2).
    4 * KL = 4 * (1/4 ln(1/2) + 3/4 ln(3/2)) = 0.523248...; d/dz_s of 0.5 * that = 0.5 * 2 * (p_s - p_t)
    = (1/4, -1/4). Cross-entropy with label 1 at T = 1: ln 2; its gradient (1/2, -1/2), weighted 0.5."""
    student = torch.zeros(1, 2, dtype=torch.float64)
    teacher = torch.tensor([[0.0, 2 * math.log(3.0)]], dtype=torch.float64)
    kd, ce, grad, teacher_lse = forward_kl_and_cross_entropy(
        student, teacher, torch.tensor([1]), 2.0, 0.5, 0.5
    )
    assert kd.item() == pytest.approx(4 * (0.25 * math.log(0.5) + 0.75 * math.log(1.5)), abs=1e-12)
    assert ce.item() == pytest.approx(math.log(2.0), abs=1e-12)
    assert grad[0].tolist() == pytest.approx([0.25 + 0.25, -0.25 - 0.25], abs=1e-12)
    assert teacher_lse.item() == pytest.approx(math.log(4.0), abs=1e-12)


@pytest.mark.parametrize("broken", ["nan", "inf", "all -inf"])
def test_broken_teacher_rows_give_a_non_finite_log_sum_exp_there_only(broken):
    """The finiteness check reads teacher_lse: it must be non-finite on a broken row and finite elsewhere."""
    teacher = torch.randn(3, 8)
    if broken == "all -inf":
        teacher[1] = float("-inf")
    else:
        teacher[1, 5] = float(broken)
    teacher[2, :4] = float("-inf")  # masked entries alone are fine
    *_, teacher_lse = forward_kl_and_cross_entropy(torch.randn(3, 8), teacher, None, 2.0, 1.0, 0.0)
    assert torch.isfinite(teacher_lse).tolist() == [True, False, True]


def test_a_second_backward_is_refused_with_a_clear_error():
    """The fused loss hands its forward-computed gradients over in the first backward; a second one (through
    retain_graph) would scale them twice, so it is refused."""
    hidden = torch.randn(5, 4, requires_grad=True)
    weight = torch.randn(9, 4, requires_grad=True)
    loss = fused_linear_distillation_loss(hidden, weight, teacher=torch.randn(5, 9), chunk_size=2).loss
    loss.backward(retain_graph=True)
    first = weight.grad.clone()
    with pytest.raises(RuntimeError, match="backpropagated a second time.*Compute the loss again"):
        loss.backward()
    torch.testing.assert_close(weight.grad, first)
