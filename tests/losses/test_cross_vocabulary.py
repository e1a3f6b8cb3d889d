"""The cross-tokenizer losses against hand computations and independent references written here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hf_distill.losses.cross_vocabulary import (
    per_position_aligned,
    per_position_uld,
    sorted_l1,
    sorted_l1_to_probs,
    teacher_log_probs,
)
from hf_distill.losses.divergences import per_position_forward_kl
from hf_distill.losses.topk import topk_teacher
from tests.helpers.cross_vocabulary import (
    reference_uld,
    softmax,
    torch_reference_aligned,
    torch_reference_uld,
)


def test_uld_by_hand():
    # Student [0.5, 0.3, 0.2], teacher [0.1, 0.6, 0.2, 0.1]: sorted [0.6, 0.2, 0.1, 0.1] against
    # [0.5, 0.3, 0.2, 0] -> 0.1 + 0.1 + 0.1 + 0.1 = 0.4.
    student = torch.log(torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64))
    log_p, log_rest = teacher_log_probs(
        torch.log(torch.tensor([[0.1, 0.6, 0.2, 0.1]], dtype=torch.float64)), None, 1.0
    )
    value = per_position_uld(student, log_p, log_rest, temperature=1.0)
    assert value.item() == pytest.approx(0.4, abs=1e-12)


def test_uld_temperature_softens_both_and_has_no_t_squared():
    # At T = 2 the probabilities are softmax(z / 2); ULD, like TVD, is not multiplied by T^2.
    z_s, z_t = np.array([2.0, 0.0, -1.0]), np.array([1.0, 3.0, 0.0, -2.0, 0.5])
    expected = reference_uld(softmax(z_s, 2.0), softmax(z_t, 2.0))
    log_p, log_rest = teacher_log_probs(torch.from_numpy(z_t[None]), None, 2.0)
    value = per_position_uld(torch.from_numpy(z_s[None]), log_p, log_rest, temperature=2.0)
    assert value.item() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("sizes", [(7, 11), (11, 7), (5, 5)])
def test_uld_matches_reference_on_random_vectors(sizes):
    generator = torch.Generator().manual_seed(sum(sizes))
    z_s = torch.randn(6, sizes[0], generator=generator, dtype=torch.float64) * 2
    z_t = torch.randn(6, sizes[1], generator=generator, dtype=torch.float64) * 2
    log_p, log_rest = teacher_log_probs(z_t, None, 1.5)
    values = per_position_uld(z_s, log_p, log_rest, temperature=1.5)
    for row in range(6):
        expected = reference_uld(softmax(z_s[row].numpy(), 1.5), softmax(z_t[row].numpy(), 1.5))
        assert values[row].item() == pytest.approx(expected, abs=1e-12)


def test_uld_from_top_k_is_exact_with_all_tokens_and_a_lower_bound_otherwise():
    generator = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(4, 9, generator=generator), torch.randn(4, 12, generator=generator)
    full = per_position_uld(z_s, *teacher_log_probs(z_t, None, 1.0), temperature=1.0)
    values, _, tail = topk_teacher(z_t, 12, temperature=1.0)
    assert torch.allclose(
        per_position_uld(z_s, *teacher_log_probs(values, tail, 1.0), temperature=1.0), full, atol=1e-6
    )
    values, _, tail = topk_teacher(z_t, 3, temperature=1.0)
    truncated = per_position_uld(z_s, *teacher_log_probs(values, tail, 1.0), temperature=1.0)
    assert (truncated <= full + 1e-6).all() and (truncated < full - 1e-4).any()


def test_sorted_l1_counts_mass_beyond_the_listed_entries():
    a, b = torch.tensor([0.5, 0.2]), torch.tensor([0.4])
    # a listed whole (total 0.7), b's total 1.0 with 0.4 listed: |0.5 - 0.4| + |(0.7 - 0.5) - (1.0 - 0.4)|.
    assert sorted_l1(a, torch.tensor(0.7), b, torch.tensor(1.0)).item() == pytest.approx(0.1 + 0.4)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_aligned_with_identical_vocabularies_is_the_forward_kl(temperature):
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(5, 13, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(5, 13, generator=generator, dtype=torch.float64)
    log_p, log_rest = teacher_log_probs(teacher, None, temperature)
    aligned = per_position_aligned(
        student, log_p, log_rest, torch.arange(13), torch.ones(5, dtype=torch.bool), temperature=temperature
    )
    kl = per_position_forward_kl(student, teacher, temperature=temperature)
    assert torch.allclose(aligned, kl, atol=1e-12, rtol=0)
    (grad_aligned,) = torch.autograd.grad(aligned.sum(), student)
    (grad_kl,) = torch.autograd.grad(kl.sum(), student)
    assert torch.allclose(grad_aligned, grad_kl, atol=1e-12, rtol=0)


def reference_aligned(p_s: np.ndarray, p_t: np.ndarray, mapping: list[int], temperature: float) -> float:
    """Matched position, written out: buckets = the teacher tokens with a student twin + one bucket for the
    rest; T^2 KL over the buckets, plus ULD of the rest (teacher's unshared probabilities against the
    student's probabilities outside the twins)."""
    shared_t = [i for i, j in enumerate(mapping) if j >= 0]
    twins = {mapping[i] for i in shared_t}
    q_t = [p_t[i] for i in shared_t] + [1 - sum(p_t[i] for i in shared_t)]
    q_s = [p_s[mapping[i]] for i in shared_t] + [1 - sum(p_s[j] for j in twins)]
    kl = sum(a * (math.log(a) - math.log(b)) for a, b in zip(q_t, q_s) if a > 0)
    rest_t = np.array([p_t[i] for i, j in enumerate(mapping) if j < 0])
    rest_s = np.array([p_s[j] for j in range(len(p_s)) if j not in twins])
    return temperature**2 * kl + reference_uld(rest_s, rest_t)


def test_aligned_on_a_partial_vocabulary_map_matches_the_written_out_reference():
    generator = torch.Generator().manual_seed(2)
    z_s = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    z_t = torch.randn(3, 8, generator=generator, dtype=torch.float64)
    mapping = [3, -1, 0, -1, 5, 1, -1, -1]  # teacher id -> student id; students 2 and 4 have no twin
    log_p, log_rest = teacher_log_probs(z_t, None, 2.0)
    values = per_position_aligned(
        z_s, log_p, log_rest, torch.tensor(mapping), torch.ones(3, dtype=torch.bool), temperature=2.0
    )
    for row in range(3):
        expected = reference_aligned(
            softmax(z_s[row].numpy(), 2.0), softmax(z_t[row].numpy(), 2.0), mapping, 2.0
        )
        assert values[row].item() == pytest.approx(expected, abs=1e-10)


def test_aligned_uses_uld_on_unmatched_positions():
    generator = torch.Generator().manual_seed(3)
    z_s, z_t = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    log_p, log_rest = teacher_log_probs(z_t, None, 1.0)
    matched = torch.tensor([True, False, True, False])
    values = per_position_aligned(z_s, log_p, log_rest, torch.arange(6), matched, temperature=1.0)
    uld = per_position_uld(z_s, log_p, log_rest, temperature=1.0)
    kl = per_position_forward_kl(z_s, z_t)
    assert torch.allclose(values[~matched], uld[~matched]) and torch.allclose(
        values[matched], kl[matched], atol=1e-6
    )


def test_aligned_from_a_full_top_k_cache_equals_the_live_form():
    # The cached form lists the same tokens in another order with their ids: the loss is the same.
    generator = torch.Generator().manual_seed(4)
    z_s, z_t = torch.randn(3, 7, generator=generator), torch.randn(3, 9, generator=generator)
    mapping = torch.tensor([0, -1, 2, 3, -1, 6, 5, -1, 1])
    matched = torch.tensor([True, True, False])
    live = per_position_aligned(z_s, *teacher_log_probs(z_t, None, 2.0), mapping, matched, temperature=2.0)
    values, indices, tail = topk_teacher(z_t, 9, temperature=2.0)
    log_p, log_rest = teacher_log_probs(values, tail, 2.0)
    cached = per_position_aligned(z_s, log_p, log_rest, mapping[indices], matched, temperature=2.0)
    assert torch.allclose(live, cached, atol=1e-5)


# ---- the teacher once per teacher position, the live map by columns, the gradient through the sort ----------


def test_uld_with_teacher_rows_by_hand():
    # Teacher rows [0.6, 0.4] and [0.1, 0.1, 0.8]; three student positions use rows 1, 0, 1.
    # Position 0: student [0.5, 0.3, 0.2] against sorted [0.8, 0.1, 0.1]: 0.3 + 0.2 + 0.1 = 0.6.
    # Position 1: student [0.7, 0.2, 0.1] against [0.6, 0.4, 0]: 0.1 + 0.2 + 0.1 = 0.4.
    # Position 2: student [0.8, 0.1, 0.1] against [0.8, 0.1, 0.1]: 0.
    student = torch.log(
        torch.tensor([[0.5, 0.3, 0.2], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1]], dtype=torch.float64)
    )
    teacher = torch.log(torch.tensor([[0.6, 0.4, 0.0], [0.1, 0.1, 0.8]], dtype=torch.float64))
    log_p, log_rest = teacher_log_probs(teacher, None, 1.0)
    values = per_position_uld(student, log_p, log_rest, temperature=1.0, teacher_rows=torch.tensor([1, 0, 1]))
    assert values.tolist() == pytest.approx([0.6, 0.4, 0.0], abs=1e-12)


@pytest.mark.parametrize("sizes", [(40, 33), (33, 40)])
def test_uld_with_shared_teacher_rows_equals_the_reference_value_and_gradient(sizes):
    generator = torch.Generator().manual_seed(11)
    z_s = torch.randn(9, sizes[0], generator=generator, dtype=torch.float64) * 2
    z_t = torch.randn(4, sizes[1], generator=generator, dtype=torch.float64) * 2
    rows = torch.tensor([3, 0, 0, 2, 3, 1, 1, 1, 0])  # teacher rows shared by several positions, out of order
    log_p, log_rest = teacher_log_probs(z_t, None, 1.5)
    student = z_s.clone().requires_grad_()
    values = per_position_uld(student, log_p, log_rest, temperature=1.5, teacher_rows=rows)
    for i, row in enumerate(rows.tolist()):
        expected = reference_uld(softmax(z_s[i].numpy(), 1.5), softmax(z_t[row].numpy(), 1.5))
        assert values[i].item() == pytest.approx(expected, abs=1e-12)
    reference_student = z_s.clone().requires_grad_()
    reference = torch_reference_uld(reference_student, log_p[rows], 1.5)
    weights = torch.rand(9, generator=generator, dtype=torch.float64)
    (grad,) = torch.autograd.grad((values * weights).sum(), student)
    (expected_grad,) = torch.autograd.grad((reference * weights).sum(), reference_student)
    assert torch.allclose(values, reference, atol=1e-12, rtol=0)
    assert torch.allclose(grad, expected_grad, atol=1e-12, rtol=0)


def test_sorted_l1_to_probs_by_hand():
    # a = [0.5, 0.3] of total 1.0, probs [0.1, 0.6, 0.3] of total 1.0, compared head 2:
    # |0.5 - 0.6| + |0.3 - 0.3| + |(1 - 0.8) - (1 - 0.9)| = 0.1 + 0 + 0.1.
    a, one = torch.tensor([[0.5, 0.3]], dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    probs = torch.tensor([[0.1, 0.6, 0.3]], dtype=torch.float64)
    assert sorted_l1_to_probs(a, one, probs, one).item() == pytest.approx(0.2, abs=1e-12)


def run_sorted_l1(function, a, a_total, logits, scale, weights):
    logits, scale = logits.clone().requires_grad_(), scale.clone().requires_grad_()
    probs = torch.softmax(logits, -1) * scale.unsqueeze(-1)
    value = function(a, a_total, probs, scale * 1.3)
    return value, torch.autograd.grad((value * weights).sum(), (logits, scale))


# A full sort, a shorter student side, a short head (topk's path).
@pytest.mark.parametrize("widths", [(50, 70), (70, 50), (3, 64)])
def test_sorted_l1_to_probs_equals_autograd_through_the_sort(widths):
    width_a, width_b = widths
    generator = torch.Generator().manual_seed(12)
    a = torch.rand(6, width_a, generator=generator, dtype=torch.float64).sort(-1, descending=True).values
    a_total = a.sum(-1) + torch.rand(6, generator=generator, dtype=torch.float64)
    logits = torch.randn(6, width_b, generator=generator, dtype=torch.float64)
    scale = torch.rand(6, generator=generator, dtype=torch.float64)
    weights = torch.randn(6, generator=generator, dtype=torch.float64)
    inputs = (a, a_total, logits, scale, weights)
    fast, fast_grads = run_sorted_l1(sorted_l1_to_probs, *inputs)

    def through_topk(a, a_total, probs, total):
        return sorted_l1(a, a_total, probs.topk(min(width_a, width_b), -1).values, total)

    slow, slow_grads = run_sorted_l1(through_topk, *inputs)
    assert torch.allclose(fast, slow, atol=1e-12, rtol=0)
    for got, expected in zip(fast_grads, slow_grads):
        assert torch.allclose(got, expected, atol=1e-12, rtol=0)


def partial_map(generator: torch.Generator, teacher_size: int, student_size: int, shared: int) -> list[int]:
    mapping = [-1] * teacher_size
    twins = torch.randperm(student_size, generator=generator)[:shared].tolist()
    for teacher_id, student_id in zip(
        torch.randperm(teacher_size, generator=generator)[:shared].tolist(), twins
    ):
        mapping[teacher_id] = student_id
    return mapping


@pytest.mark.parametrize("sizes", [(30, 24, 15), (24, 30, 15), (20, 20, 20), (20, 20, 0)])
def test_aligned_by_columns_equals_the_written_out_reference_value_and_gradient(sizes):
    teacher_size, student_size, shared = sizes
    generator = torch.Generator().manual_seed(sum(sizes))
    mapping = partial_map(generator, teacher_size, student_size, shared)
    z_s = torch.randn(7, student_size, generator=generator, dtype=torch.float64) * 2
    z_t = torch.randn(3, teacher_size, generator=generator, dtype=torch.float64) * 2
    rows = torch.tensor([2, 2, 0, 1, 0, 2, 1])
    matched = torch.tensor([True, True, False, True, True, False, True])
    log_p, log_rest = teacher_log_probs(z_t, None, 2.0)
    student = z_s.clone().requires_grad_()
    values = per_position_aligned(
        student, log_p, log_rest, torch.tensor(mapping), matched, temperature=2.0, teacher_rows=rows
    )
    reference_student = z_s.clone().requires_grad_()
    matched_reference = torch_reference_aligned(reference_student, z_t[rows], mapping, 2.0)
    whole_reference = torch_reference_uld(reference_student, log_p[rows], 2.0)
    reference = torch.where(matched, matched_reference, whole_reference)
    for i, row in enumerate(rows.tolist()):
        p_s, p_t = softmax(z_s[i].numpy(), 2.0), softmax(z_t[row].numpy(), 2.0)
        expected = reference_aligned(p_s, p_t, mapping, 2.0) if matched[i] else reference_uld(p_s, p_t)
        assert values[i].item() == pytest.approx(expected, abs=1e-10)
    weights = torch.rand(7, generator=generator, dtype=torch.float64)
    (grad,) = torch.autograd.grad((values * weights).sum(), student)
    (expected_grad,) = torch.autograd.grad((reference * weights).sum(), reference_student)
    assert torch.allclose(values, reference, atol=1e-10, rtol=0)
    assert torch.allclose(grad, expected_grad, atol=1e-10, rtol=0)


def test_aligned_by_columns_equals_the_per_entry_form_of_the_same_map():
    # One map for every position (by columns) against the same map listed per position (a cache's form).
    generator = torch.Generator().manual_seed(13)
    mapping = torch.tensor(partial_map(generator, 26, 31, 12))
    z_s = torch.randn(5, 31, generator=generator)
    z_t = torch.randn(5, 26, generator=generator)
    matched = torch.tensor([True, False, True, True, True])
    log_p, log_rest = teacher_log_probs(z_t, None, 1.0)
    by_columns = per_position_aligned(z_s, log_p, log_rest, mapping, matched, temperature=1.0)
    by_entries = per_position_aligned(z_s, log_p, log_rest, mapping.expand(5, 26), matched, temperature=1.0)
    assert torch.allclose(by_columns, by_entries, atol=1e-6, rtol=0)
