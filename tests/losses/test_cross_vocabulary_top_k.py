"""The top-k form of the cross-tokenizer losses' sorted comparisons: against references written here, within
the stated bound of the exact loss, exact where K covers a vocabulary, and the refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hf_distill.losses.cross_vocabulary import (
    check_top_k,
    per_position_aligned,
    per_position_uld,
    teacher_log_probs,
)
from tests.helpers.cross_vocabulary import padded_sorted, reference_uld, softmax


def reference_top_k_uld(p_s: np.ndarray, p_t: np.ndarray, k: int) -> tuple[float, float, float]:
    """The top-k form written out: the K largest of each side one by one, then the two tails as one bucket.
    Returns (value, teacher tail alpha, student tail beta)."""
    a, b = padded_sorted(p_t, p_s)
    alpha, beta = float(a[k:].sum()), float(b[k:].sum())
    return float(np.abs(a[:k] - b[:k]).sum()) + abs(alpha - beta), alpha, beta


def test_top_k_uld_by_hand():
    # Student [0.5, 0.3, 0.2], teacher [0.1, 0.6, 0.2, 0.1], K = 1: |0.6 - 0.5| + |0.4 - 0.5| = 0.2, where the
    # exact loss is 0.4 (0.1 at each of the four sorted places); the gap 0.2 <= 2 * min(0.4, 0.5) = 0.8.
    student = torch.log(torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64))
    log_p, log_rest = teacher_log_probs(
        torch.log(torch.tensor([[0.1, 0.6, 0.2, 0.1]], dtype=torch.float64)), None, 1
    )
    assert per_position_uld(student, log_p, log_rest, temperature=1.0, top_k=1).item() == pytest.approx(0.2)
    # K = 2: |0.6 - 0.5| + |0.2 - 0.3| + |0.2 - 0.2| = 0.2; K = 3 covers the student: exact, 0.4.
    assert per_position_uld(student, log_p, log_rest, temperature=1.0, top_k=2).item() == pytest.approx(0.2)
    assert per_position_uld(student, log_p, log_rest, temperature=1.0, top_k=3).item() == pytest.approx(0.4)


@pytest.mark.parametrize("scale", [1.0, 8.0], ids=["random", "peaked"])
@pytest.mark.parametrize("sizes", [(40, 33), (33, 40)])
@pytest.mark.parametrize("k", [1, 4, 16, 32])
def test_top_k_uld_matches_the_reference_and_stays_within_the_bound(scale, sizes, k):
    generator = torch.Generator().manual_seed(k + sizes[0])
    z_s = torch.randn(9, sizes[0], generator=generator, dtype=torch.float64) * scale
    z_t = torch.randn(4, sizes[1], generator=generator, dtype=torch.float64) * scale
    rows = torch.tensor([3, 0, 0, 2, 3, 1, 1, 1, 0])
    log_p, log_rest = teacher_log_probs(z_t, None, 1.5)
    exact = per_position_uld(z_s, log_p, log_rest, temperature=1.5, teacher_rows=rows)
    top = per_position_uld(z_s, log_p, log_rest, temperature=1.5, teacher_rows=rows, top_k=k)
    for i, row in enumerate(rows.tolist()):
        p_s, p_t = softmax(z_s[i].numpy(), 1.5), softmax(z_t[row].numpy(), 1.5)
        expected, alpha, beta = reference_top_k_uld(p_s, p_t, k)
        assert top[i].item() == pytest.approx(expected, abs=1e-12)
        assert exact[i].item() == pytest.approx(reference_uld(p_s, p_t), abs=1e-12)
        # 0 <= exact - top-k <= 2 min(alpha, beta) (the module docstring's proof).
        gap = exact[i].item() - top[i].item()
        assert -1e-12 <= gap <= 2 * min(alpha, beta) + 1e-12
    if k < 16:  # the bound is not vacuous: the top-k form does drop something here
        assert (exact - top).max() > 1e-3


@pytest.mark.parametrize("sizes", [(40, 33), (33, 40), (33, 33)])
def test_top_k_uld_is_exact_once_k_covers_either_vocabulary(sizes):
    generator = torch.Generator().manual_seed(5)
    z_s = torch.randn(6, sizes[0], generator=generator, dtype=torch.float64) * 3
    z_t = torch.randn(6, sizes[1], generator=generator, dtype=torch.float64) * 3
    log_p, log_rest = teacher_log_probs(z_t, None, 1.0)
    exact = per_position_uld(z_s, log_p, log_rest, temperature=1.0)
    for k in (min(sizes), max(sizes), 1000):
        top = per_position_uld(z_s, log_p, log_rest, temperature=1.0, top_k=k)
        assert torch.allclose(top, exact, atol=1e-12, rtol=0)
    assert not torch.allclose(per_position_uld(z_s, log_p, log_rest, temperature=1.0, top_k=3), exact)


def torch_top_k_uld(z_s: torch.Tensor, log_p_t: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """The top-k form in plain torch, autograd through topk on both sides."""
    p_s, p_t = torch.softmax(z_s / temperature, dim=-1), log_p_t.exp()
    a, b = p_t.topk(k, dim=-1).values, p_s.topk(k, dim=-1).values
    return (a - b).abs().sum(-1) + ((1 - a.sum(-1)) - (1 - b.sum(-1))).abs()


@pytest.mark.parametrize("k", [2, 9])
def test_top_k_uld_gradient_is_autograd_through_topk_and_finite(k):
    generator = torch.Generator().manual_seed(21 + k)
    z_s = torch.randn(7, 30, generator=generator, dtype=torch.float64) * 3
    z_t = torch.randn(7, 25, generator=generator, dtype=torch.float64) * 3
    log_p, log_rest = teacher_log_probs(z_t, None, 2.0)
    weights = torch.rand(7, generator=generator, dtype=torch.float64)
    student, reference_student = z_s.clone().requires_grad_(), z_s.clone().requires_grad_()
    values = per_position_uld(student, log_p, log_rest, temperature=2.0, top_k=k)
    reference = torch_top_k_uld(reference_student, log_p, k, 2.0)
    (grad,) = torch.autograd.grad((values * weights).sum(), student)
    (expected,) = torch.autograd.grad((reference * weights).sum(), reference_student)
    assert torch.allclose(values, reference, atol=1e-12, rtol=0)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert torch.allclose(grad, expected, atol=1e-12, rtol=0)


def partial_map(generator: torch.Generator, teacher_size: int, student_size: int, shared: int) -> list[int]:
    mapping = [-1] * teacher_size
    twins = torch.randperm(student_size, generator=generator)[:shared].tolist()
    for teacher_id, student_id in zip(
        torch.randperm(teacher_size, generator=generator)[:shared].tolist(), twins
    ):
        mapping[teacher_id] = student_id
    return mapping


def reference_top_k_aligned(p_s, p_t, mapping, temperature, k) -> tuple[float, float, float, float]:
    """A matched position with the rest's ULD in top-k form: (value, exact value, rest tails alpha, beta)."""
    shared_t = [i for i, j in enumerate(mapping) if j >= 0]
    twins = {mapping[i] for i in shared_t}
    q_t = [p_t[i] for i in shared_t] + [1 - sum(p_t[i] for i in shared_t)]
    q_s = [p_s[mapping[i]] for i in shared_t] + [1 - sum(p_s[j] for j in twins)]
    kl = temperature**2 * sum(a * (math.log(a) - math.log(b)) for a, b in zip(q_t, q_s) if a > 0)
    rest_t = np.array([p_t[i] for i, j in enumerate(mapping) if j < 0])
    rest_s = np.array([p_s[j] for j in range(len(p_s)) if j not in twins])
    top, alpha, beta = reference_top_k_uld(rest_s, rest_t, k)
    return kl + top, kl + reference_uld(rest_s, rest_t), alpha, beta


@pytest.mark.parametrize("scale", [1.0, 6.0], ids=["random", "peaked"])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_top_k_aligned_matches_the_reference_within_the_bound_by_columns_and_by_entries(scale, k):
    generator = torch.Generator().manual_seed(31 + k)
    mapping = partial_map(generator, 30, 24, 10)
    z_s = torch.randn(7, 24, generator=generator, dtype=torch.float64) * scale
    z_t = torch.randn(3, 30, generator=generator, dtype=torch.float64) * scale
    rows = torch.tensor([2, 2, 0, 1, 0, 2, 1])
    matched = torch.tensor([True, True, False, True, True, False, True])
    log_p, log_rest = teacher_log_probs(z_t, None, 2.0)
    ids = torch.tensor(mapping)
    by_columns = per_position_aligned(
        z_s, log_p, log_rest, ids, matched, temperature=2.0, teacher_rows=rows, top_k=k
    )
    by_entries = per_position_aligned(
        z_s, log_p, log_rest, ids.expand(3, 30), matched, temperature=2.0, teacher_rows=rows, top_k=k
    )
    exact = per_position_aligned(z_s, log_p, log_rest, ids, matched, temperature=2.0, teacher_rows=rows)
    for i, row in enumerate(rows.tolist()):
        p_s, p_t = softmax(z_s[i].numpy(), 2.0), softmax(z_t[row].numpy(), 2.0)
        if matched[i]:
            expected, expected_exact, alpha, beta = reference_top_k_aligned(p_s, p_t, mapping, 2.0, k)
        else:
            (expected, alpha, beta), expected_exact = (
                reference_top_k_uld(p_s, p_t, k),
                reference_uld(p_s, p_t),
            )
        assert by_columns[i].item() == pytest.approx(expected, abs=1e-10)
        assert by_entries[i].item() == pytest.approx(expected, abs=1e-10)
        assert exact[i].item() == pytest.approx(expected_exact, abs=1e-10)
        gap = exact[i].item() - by_columns[i].item()
        assert -1e-10 <= gap <= 2 * min(alpha, beta) + 1e-10


def test_top_k_aligned_gradient_is_finite_and_exact_when_k_covers_the_rest():
    generator = torch.Generator().manual_seed(41)
    mapping = torch.tensor(partial_map(generator, 30, 24, 10))  # 20 unshared teacher, 14 unshared student
    z_s = torch.randn(5, 24, generator=generator, dtype=torch.float64) * 4
    z_t = torch.randn(5, 30, generator=generator, dtype=torch.float64) * 4
    matched = torch.tensor([True, False, True, True, False])
    log_p, log_rest = teacher_log_probs(z_t, None, 1.0)
    student = z_s.clone().requires_grad_()
    top = per_position_aligned(student, log_p, log_rest, mapping, matched, temperature=1.0, top_k=3)
    (grad,) = torch.autograd.grad(top.sum(), student)
    assert torch.isfinite(top).all() and torch.isfinite(grad).all() and grad.abs().sum() > 0
    exact = per_position_aligned(z_s, log_p, log_rest, mapping, matched, temperature=1.0)
    # K = 24 covers the student's whole vocabulary (unmatched positions) and its 14 unshared tokens (matched).
    covering = per_position_aligned(z_s, log_p, log_rest, mapping, matched, temperature=1.0, top_k=24)
    assert torch.allclose(covering, exact, atol=1e-12, rtol=0)


@pytest.mark.parametrize("top_k", [0, -3, 2.5, True, "64"])
def test_a_bad_top_k_is_refused_with_what_it_means(top_k):
    with pytest.raises(
        ValueError, match=r"top_k must be None \(the exact sorted comparison\) or an integer >= 1"
    ):
        check_top_k(top_k)
    z = torch.zeros(2, 5)
    log_p, log_rest = teacher_log_probs(z, None, 1.0)
    with pytest.raises(ValueError, match="top_k must be None"):
        per_position_uld(z, log_p, log_rest, temperature=1.0, top_k=top_k)
    with pytest.raises(ValueError, match="top_k must be None"):
        per_position_aligned(
            z, log_p, log_rest, torch.arange(5), torch.ones(2, dtype=torch.bool), temperature=1.0, top_k=top_k
        )


@pytest.mark.parametrize("k", [2, 4, 16, 64])  # K * 64 <= 300 selects with topk, larger K sorts and slices
def test_top_k_uld_on_a_wider_vocabulary_matches_the_reference_on_both_selections(k):
    generator = torch.Generator().manual_seed(50 + k)
    z_s = torch.randn(5, 280, generator=generator, dtype=torch.float64) * 3
    z_t = torch.randn(5, 300, generator=generator, dtype=torch.float64) * 3
    log_p, log_rest = teacher_log_probs(z_t, None, 1.0)
    top = per_position_uld(z_s, log_p, log_rest, temperature=1.0, top_k=k)
    for i in range(5):
        expected, _, _ = reference_top_k_uld(softmax(z_s[i].numpy()), softmax(z_t[i].numpy()), k)
        assert top[i].item() == pytest.approx(expected, abs=1e-12)
