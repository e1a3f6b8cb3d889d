"""The top-k loss of cached teacher outputs: against the full loss, its lower bound, hand-computed values, the
teacher's tail in blocks, and masked non-finite rows."""

from __future__ import annotations

import pytest
import torch

from hf_distill.losses.divergences import PER_POSITION_LOSSES
from hf_distill.losses.fused.chunked import fused_linear_distillation_loss
from hf_distill.losses.fused.teacher_forms import TeacherTopk
from hf_distill.losses.topk import per_position_topk, topk_chunks, topk_distillation_loss, topk_teacher

TOPK_LOSSES = sorted(set(PER_POSITION_LOSSES) - {"mse"})


def logits_pair(seed=0, shape=(3, 5, 30)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * 2, torch.randn(
        shape, generator=g, dtype=torch.float64
    ) * 2


@pytest.mark.parametrize("name", TOPK_LOSSES)
def test_topk_with_the_whole_vocabulary_is_the_full_loss(name):
    student, teacher = logits_pair()
    values, indices, tail = topk_teacher(teacher, teacher.shape[-1], temperature=2.0)
    got = per_position_topk(student, values, indices, tail, loss=name, temperature=2.0)
    want = PER_POSITION_LOSSES[name](student, teacher, temperature=2.0)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", TOPK_LOSSES)
def test_topk_loss_never_exceeds_the_full_loss(name):
    # Data-processing inequality: merging the tail into one outcome cannot increase an f-divergence.
    student, teacher = logits_pair(seed=1)
    full = PER_POSITION_LOSSES[name](student, teacher, temperature=1.5)
    for k in (1, 4, 12):
        values, indices, tail = topk_teacher(teacher, k, temperature=1.5)
        coarse = per_position_topk(student, values, indices, tail, loss=name, temperature=1.5)
        assert torch.all(coarse <= full + 1e-12)
        assert torch.all(coarse >= -1e-12)


def test_forward_kl_gap_is_tail_mass_times_the_tail_kl():
    student, teacher = logits_pair(seed=2, shape=(4, 25))
    temperature, k = 2.0, 6
    values, indices, tail = topk_teacher(teacher, k, temperature=temperature)
    coarse = per_position_topk(student, values, indices, tail, temperature=temperature)
    full = PER_POSITION_LOSSES["forward_kl"](student, teacher, temperature=temperature)
    # Independent computation of T^2 * p_tail * KL(p_t(.|tail) || p_s(.|tail)), row by row.
    for row in range(4):
        rest = [j for j in range(25) if j not in set(indices[row].tolist())]
        p_t = torch.softmax(teacher[row] / temperature, -1)[rest]
        p_s = torch.softmax(student[row] / temperature, -1)[rest]
        tail_mass = p_t.sum()
        cond_t, cond_s = p_t / tail_mass, p_s / p_s.sum()
        gap = temperature**2 * tail_mass * (cond_t * (cond_t / cond_s).log()).sum()
        assert (full[row] - coarse[row]).item() == pytest.approx(gap.item(), rel=1e-9)


def test_topk_loss_hand_computed():
    # Two classes kept of three; student uniform. Teacher probabilities (0.5, 0.3, 0.2) at T=1.
    teacher = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64).log()
    student = torch.zeros(1, 3, dtype=torch.float64)
    values, indices, tail = topk_teacher(teacher, 2, temperature=1.0)
    got = per_position_topk(student, values, indices, tail)
    # Buckets: teacher (0.5, 0.3, 0.2), student (1/3, 1/3, 1/3): every class is its own bucket here.
    want = sum(p * torch.log(torch.tensor(p / (1 / 3), dtype=torch.float64)) for p in (0.5, 0.3, 0.2))
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


def test_topk_gradients_match_between_plain_and_fused():
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(30, 5, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(2, 6, 30, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 30, (2, 6), generator=g)
    labels[0, 0] = -100
    values, indices, tail = topk_teacher(teacher, 5, temperature=2.0)
    plain = topk_distillation_loss(
        hidden @ weight.T, values, indices, tail, loss="jsd", temperature=2.0, labels=labels
    )
    fused = fused_linear_distillation_loss(
        hidden, weight, teacher=TeacherTopk(values, indices, tail), labels=labels, loss="jsd", temperature=2.0,
        chunk_size=4,
    )  # fmt: skip
    # The top-k loss as a per-chunk function (its own settings) is the same teacher in another form.
    as_chunk_fn = fused_linear_distillation_loss(
        hidden, weight, teacher=topk_chunks(values, indices, tail, loss="jsd", temperature=2.0), labels=labels,
        loss="jsd", temperature=2.0, chunk_size=4,
    )  # fmt: skip
    torch.testing.assert_close(as_chunk_fn.loss, plain)
    torch.testing.assert_close(fused.loss, plain)
    for a, b in zip(
        torch.autograd.grad(fused.loss, (hidden, weight)), torch.autograd.grad(plain, (hidden, weight))
    ):
        torch.testing.assert_close(a, b)


def test_error_mse_has_no_topk_form():
    student, teacher = logits_pair()
    values, indices, tail = topk_teacher(teacher, 3, temperature=1.0)
    with pytest.raises(ValueError, match="'mse' compares raw logits over the whole vocabulary"):
        per_position_topk(student, values, indices, tail, loss="mse")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_topk_teacher_tail_in_blocks_equals_the_masked_logsumexp(dtype):
    """The cache's tail logit (computed without autograd a block of positions at a time, in one buffer) is the
    log-sum-exp of logits / T over the tokens outside the top k, computed here with a boolean mask; positions
    that do not fill the last block, and -inf logits, included."""
    from hf_distill.losses.topk import topk_teacher

    torch.manual_seed(0)
    logits = (torch.randn(3, 50, 300) * 4).to(dtype)  # 150 positions: two full blocks of 64 and one of 22
    logits[0, 0, :7] = float("-inf")
    values, indices, tail = topk_teacher(logits, 16, temperature=2.0)
    keep = torch.ones(logits.shape, dtype=torch.bool).scatter(-1, indices, False)
    reference = torch.logsumexp((logits.float() / 2.0).masked_fill(~keep, float("-inf")), dim=-1)
    assert tail.dtype == torch.float32 and torch.equal(values, logits.float().topk(16, dim=-1).values)
    torch.testing.assert_close(tail, reference, rtol=1e-6, atol=1e-6)
    # By hand on one position: logits [3, 1, 0], k = 1, T = 1 -> tail = log(e^1 + e^0) = 1.3132617.
    _, _, one = topk_teacher(torch.tensor([[3.0, 1.0, 0.0]]), 1, temperature=1.0)
    assert one.item() == pytest.approx(1.3132617, abs=1e-6)


def test_topk_teacher_tail_far_below_the_kth_logit_and_a_tail_of_minus_inf():
    """The tail is shifted by the k-th logit, so a tail hundreds of nats below it underflows: such rows are
    recomputed with their own maximum, and a tail of -inf only keeps the masked form's finite stand-in."""
    from hf_distill.losses.topk import tail_logsumexp, topk_teacher

    logits = torch.tensor([[200.0, 0.0, -1.0], [5.0, 4.0, 3.0], [1.0, float("-inf"), float("-inf")]])
    _, indices, tail = topk_teacher(logits, 1, temperature=1.0)
    # Row 0 by hand: log(e^0 + e^-1) = 0.3132617; row 1: log(e^4 + e^3) = 4.3132617.
    assert tail[:2].tolist() == pytest.approx([0.3132617, 4.3132617], abs=1e-6)
    assert tail[2].item() == tail_logsumexp(logits[2:], indices[2:]).item() < -1e37
    _, _, cooled = topk_teacher(logits[:2], 1, temperature=0.5)  # log(e^0 + e^-2), log(e^8 + e^6)
    assert cooled.tolist() == pytest.approx([0.1269280, 8.1269280], abs=1e-6)


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")])
def test_topk_loss_masked_position_does_not_reach_the_gradient(bad):
    """The cached top-k loss: a non-finite teacher row (values and tail) at a masked position gives the same
    finite loss and gradient as zeros there."""
    from hf_distill.losses.topk import topk_distillation_loss, topk_teacher

    g = torch.Generator().manual_seed(3)
    student = torch.randn(2, 4, 12, generator=g, dtype=torch.float64)
    values, indices, tail = topk_teacher(
        torch.randn(2, 4, 12, generator=g, dtype=torch.float64), 5, temperature=2.0
    )
    labels = torch.tensor([[1, 2, -100, 3], [4, -100, 5, 6]])
    results = []
    for fill in (bad, 0.0):
        v, t = values.clone(), tail.clone()
        v[0, 2], t[0, 2], v[1, 1], t[1, 1] = fill, fill, fill, fill
        s = student.clone().requires_grad_(True)
        loss = topk_distillation_loss(s, v, indices, t, labels=labels, temperature=2.0)
        loss.backward()
        results.append((loss.detach(), s.grad))
    (loss, grad), (want_loss, want_grad) = results
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(grad, want_grad)
