"""The exact cross-tokenizer losses in float32 at whole-vocabulary widths, the form a CPU run takes (the student's
probabilities and their order from one packed sort, the teacher's log-probabilities sorted before ``exp``):
values and gradients against the independent references, with positions left out and with tied probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_distill.losses.cross_vocabulary import (
    largest_log_probs_as_probs,
    per_position_aligned,
    per_position_uld,
    teacher_log_probs,
)
from hf_distill.losses.sorting import descending
from tests.helpers.cross_vocabulary import (
    reference_uld,
    softmax,
    torch_reference_aligned,
    torch_reference_uld,
)

STUDENT_VOCAB, TEACHER_VOCAB = 50_257, 49_152  # GPT-2's and SmolLM2's sizes


def distinct_logits(rows: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Rows of ``width`` float32 logits whose probabilities are all distinct: evenly spaced values (1e-4 apart
    at least, far above float32's resolution) in a random order, at a random scale. Without ties the sorted
    comparison's gradient is unique, so it must equal the reference's entry for entry."""
    grid = torch.linspace(-6.0, 6.0, width, dtype=torch.float64)
    scale = 0.5 + torch.rand(rows, 1, generator=generator, dtype=torch.float64)
    order = torch.argsort(torch.rand(rows, width, generator=generator), dim=-1)
    return (grid[order] * scale).float()


def gradient(values: torch.Tensor, logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    (grad,) = torch.autograd.grad((values * weights).sum(), logits)
    return grad


def test_uld_at_whole_vocabularies_equals_the_references_value_and_gradient():
    # 24 positions x 50,257: above the size at which the sorts split rows over threads. Teacher rows shared by
    # several positions and out of order, as the alignment gives them.
    generator = torch.Generator().manual_seed(20)
    z_s = distinct_logits(24, STUDENT_VOCAB, generator)
    z_t = distinct_logits(9, TEACHER_VOCAB, generator)
    rows = torch.randint(0, 9, (24,), generator=generator)
    log_p, log_rest = teacher_log_probs(z_t, None, 1.0)
    student = z_s.clone().requires_grad_()
    values = per_position_uld(student, log_p, log_rest, temperature=1.0, teacher_rows=rows)
    for i in (0, 7, 23):
        expected = reference_uld(softmax(z_s[i].double().numpy()), softmax(z_t[rows[i]].double().numpy()))
        assert values[i].item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    reference_student = z_s.clone().requires_grad_()
    reference = torch_reference_uld(reference_student, log_p[rows], 1.0)
    weights = torch.rand(24, generator=generator)
    assert torch.allclose(values, reference, rtol=1e-5, atol=1e-6)
    grad, expected_grad = gradient(values, student, weights), gradient(reference, reference_student, weights)
    assert expected_grad.abs().max() > 1e-6  # a gradient worth comparing
    assert torch.allclose(grad, expected_grad, rtol=1e-4, atol=1e-10)


def test_uld_on_the_used_positions_alone_equals_those_rows_of_every_position():
    # The term drops masked positions (padding, prompt) before the loss: each kept row's value and gradient
    # are what it gets among every position, and the dropped rows get none.
    generator = torch.Generator().manual_seed(21)
    z_s = distinct_logits(12, 3_000, generator)
    z_t = distinct_logits(5, 2_800, generator)
    rows = torch.randint(0, 5, (12,), generator=generator)
    use = torch.tensor([1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 1], dtype=torch.bool)
    log_p, log_rest = teacher_log_probs(z_t, None, 2.0)
    every_logits = z_s.clone().requires_grad_()
    every = per_position_uld(every_logits, log_p, log_rest, temperature=2.0, teacher_rows=rows)
    used_logits = z_s.clone().requires_grad_()
    used = per_position_uld(used_logits[use], log_p, log_rest, temperature=2.0, teacher_rows=rows[use])
    assert torch.equal(used, every[use])
    weights = torch.rand(12, generator=generator)
    grad_used = gradient(used, used_logits, weights[use])
    grad_every = gradient(torch.where(use, every, 0.0), every_logits, weights)
    assert torch.equal(grad_used[~use], torch.zeros_like(grad_used[~use]))
    assert torch.allclose(grad_used, grad_every, rtol=0, atol=1e-12)


def tie_group_sums(grad: torch.Tensor, probs: torch.Tensor) -> list[torch.Tensor]:
    """Per row, the gradient summed over each group of equal probabilities (in increasing probability)."""
    sums = []
    for row in range(probs.shape[0]):
        groups, inverse = torch.unique(probs[row], return_inverse=True)
        sums.append(
            torch.zeros(groups.shape[0], dtype=torch.float64).index_add_(0, inverse, grad[row].double())
        )
    return sums


def test_uld_with_tied_student_probabilities_equals_the_reference_up_to_the_order_within_ties():
    # Tied probabilities are interchangeable in the sorted comparison: the loss is the same whichever of them
    # comes first, and which sorted place's sign each of them takes is a choice (any choice is a subgradient).
    # What does not depend on it, and must match: the value, the gradient of every untied logit, and the
    # gradient summed over each group of tied ones.
    generator = torch.Generator().manual_seed(22)
    z_s = torch.randint(0, 12, (6, 400), generator=generator).float() * 0.25  # many ties
    z_t = torch.randn(6, 380, generator=generator)
    log_p, log_rest = teacher_log_probs(z_t, None, 1.0)
    student = z_s.clone().requires_grad_()
    values = per_position_uld(student, log_p, log_rest, temperature=1.0)
    reference_student = z_s.clone().requires_grad_()
    reference = torch_reference_uld(reference_student, log_p, 1.0)
    assert torch.allclose(values, reference, rtol=1e-5, atol=1e-6)
    weights = torch.rand(6, generator=generator)
    grad, expected_grad = gradient(values, student, weights), gradient(reference, reference_student, weights)
    probs = torch.softmax(z_s, -1)
    for got, expected in zip(tie_group_sums(grad, probs), tie_group_sums(expected_grad, probs)):
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("sizes", [(3_000, 3_200, 2_000), (3_200, 3_000, 2_500)])
def test_aligned_by_columns_at_wide_vocabularies_equals_the_references_value_and_gradient(sizes):
    teacher_size, student_size, shared = sizes
    generator = torch.Generator().manual_seed(23)
    mapping = [-1] * teacher_size
    for t, s in zip(
        torch.randperm(teacher_size, generator=generator)[:shared].tolist(),
        torch.randperm(student_size, generator=generator)[:shared].tolist(),
    ):
        mapping[t] = s
    z_s = distinct_logits(8, student_size, generator)
    z_t = distinct_logits(4, teacher_size, generator)
    rows = torch.tensor([3, 3, 0, 1, 2, 0, 1, 2])
    matched = torch.tensor([True, True, False, True, True, False, True, True])
    log_p, log_rest = teacher_log_probs(z_t, None, 1.0)
    student = z_s.clone().requires_grad_()
    values = per_position_aligned(
        student, log_p, log_rest, torch.tensor(mapping), matched, temperature=1.0, teacher_rows=rows
    )
    reference_student = z_s.clone().requires_grad_()
    reference = torch.where(
        matched,
        torch_reference_aligned(reference_student, z_t[rows], mapping, 1.0),
        torch_reference_uld(reference_student, log_p[rows], 1.0),
    )
    assert torch.allclose(values, reference, rtol=1e-5, atol=1e-6)
    weights = torch.rand(8, generator=generator)
    grad, expected_grad = gradient(values, student, weights), gradient(reference, reference_student, weights)
    assert torch.allclose(grad, expected_grad, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("top_k", [None, 100, 3_000])
def test_teacher_probabilities_sorted_before_exp_are_the_sorted_probabilities(top_k):
    # exp is increasing, so sorting log-probabilities then exponentiating gives the sorted probabilities bit
    # for bit (whole sort, a head of the whole sort, and topk's selection).
    log_p = torch.log_softmax(torch.randn(5, 3_000, generator=torch.Generator().manual_seed(24)), dim=-1)
    expected = descending(log_p.exp())[..., :top_k]
    assert torch.equal(largest_log_probs_as_probs(log_p, top_k), expected)
    assert np.all(np.diff(expected.numpy(), axis=-1) <= 0)
