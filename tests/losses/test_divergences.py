"""Each loss against an independent naive reference, hand-computed values, and edge cases."""

import math

import pytest
import torch

from hf_distill.losses.divergences import (
    PER_POSITION_LOSSES,
    distillation_loss,
    reduce_positions,
    task_cross_entropy,
)

ALL_LOSSES = sorted(PER_POSITION_LOSSES)


# ---- naive references: explicit loops over positions and classes, plain Python math --------------------------


def _softmax(row, temperature):
    scaled = [x / temperature for x in row]
    top = max(scaled)
    exps = [math.exp(x - top) for x in scaled]
    total = sum(exps)
    return [e / total for e in exps]


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def naive_position(name, s_row, t_row, temperature, beta=0.5, lam=0.1):
    p_s, p_t = _softmax(s_row, temperature), _softmax(t_row, temperature)
    t2 = temperature**2
    if name == "forward_kl":
        return _kl(p_t, p_s) * t2
    if name == "reverse_kl":
        return _kl(p_s, p_t) * t2
    if name == "jsd":
        if beta == 0:
            return _kl(p_t, p_s) * t2
        if beta == 1:
            return _kl(p_s, p_t) * t2
        m = [beta * a + (1 - beta) * b for a, b in zip(p_t, p_s)]
        return (beta * _kl(p_t, m) + (1 - beta) * _kl(p_s, m)) * t2
    if name == "skew_forward_kl":
        return _kl(p_t, [lam * a + (1 - lam) * b for a, b in zip(p_t, p_s)]) * t2
    if name == "skew_reverse_kl":
        return _kl(p_s, [lam * b + (1 - lam) * a for a, b in zip(p_t, p_s)]) * t2
    if name == "tvd":
        return 0.5 * sum(abs(a - b) for a, b in zip(p_t, p_s))
    if name == "mse":
        return sum((a - b) ** 2 for a, b in zip(s_row, t_row)) / len(s_row)
    if name == "soft_cross_entropy":
        return -sum(a * math.log(b) for a, b in zip(p_t, p_s)) * t2
    raise KeyError(name)


def naive_loss(name, student, teacher, temperature, keep, **kw):
    """Mean over kept positions, written with loops; ``keep`` is a nested list of booleans."""
    s_rows, t_rows = (
        student.reshape(-1, student.shape[-1]).tolist(),
        teacher.reshape(-1, teacher.shape[-1]).tolist(),
    )
    flags = [bool(k) for k in torch.as_tensor(keep).reshape(-1).tolist()]
    values = [naive_position(name, s, t, temperature, **kw) for s, t, k in zip(s_rows, t_rows, flags) if k]
    return sum(values) / max(len(values), 1)


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("shape", [(5, 7), (2, 4, 9)])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_matches_naive_reference(name, shape, temperature):
    torch.manual_seed(0)
    student, teacher = (
        torch.randn(shape, dtype=torch.float64) * 2,
        torch.randn(shape, dtype=torch.float64) * 2,
    )
    labels = torch.randint(0, 3, shape[:-1])
    labels[..., 0] = -100
    got = distillation_loss(student, teacher, loss=name, temperature=temperature, labels=labels)
    expected = naive_loss(name, student, teacher, temperature, labels != -100)
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.9, 1.0])
def test_jsd_matches_reference_for_each_beta(beta):
    torch.manual_seed(1)
    student, teacher = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    got = distillation_loss(student, teacher, loss="jsd", beta=beta, temperature=1.5)
    assert got.item() == pytest.approx(naive_loss("jsd", student, teacher, 1.5, [1] * 6, beta=beta), rel=1e-6)


@pytest.mark.parametrize("name", ["skew_forward_kl", "skew_reverse_kl"])
@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_skew_matches_reference(name, lam):
    torch.manual_seed(2)
    student, teacher = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    got = distillation_loss(student, teacher, loss=name, skew_lambda=lam, temperature=2.0)
    assert got.item() == pytest.approx(naive_loss(name, student, teacher, 2.0, [1] * 4, lam=lam), rel=1e-6)


# ---- values computed by hand ---------------------------------------------------------------------------------


def test_forward_kl_by_hand():
    # Teacher logits (0, ln 3) -> p_t = (1/4, 3/4); student logits (0, 0) -> p_s = (1/2, 1/2), T = 1.
    # KL(p_t || p_s) = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812...
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[0.0, math.log(3.0)]])
    expected = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert distillation_loss(student, teacher, loss="forward_kl", temperature=1.0).item() == pytest.approx(
        expected
    )
    # At T = 2 the teacher logits become (0, ln 3 / 2): p_t = (1/(1+sqrt 3), sqrt 3/(1+sqrt 3)); times T^2 = 4.
    a = 1 / (1 + math.sqrt(3))
    expected_t2 = 4 * (a * math.log(2 * a) + (1 - a) * math.log(2 * (1 - a)))
    assert distillation_loss(student, teacher, temperature=2.0).item() == pytest.approx(expected_t2, rel=1e-6)


def test_reverse_kl_tvd_mse_soft_ce_by_hand():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[0.0, math.log(3.0)]])
    # KL(p_s || p_t) = 1/2 ln(2) + 1/2 ln(2/3) = 0.143841...
    assert distillation_loss(student, teacher, loss="reverse_kl", temperature=1.0).item() == pytest.approx(
        0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    )
    # TVD = 0.5 * (|1/4 - 1/2| + |3/4 - 1/2|) = 0.25
    assert distillation_loss(student, teacher, loss="tvd", temperature=1.0).item() == pytest.approx(0.25)
    # MSE on logits = (0 + ln(3)^2) / 2
    assert distillation_loss(student, teacher, loss="mse").item() == pytest.approx(math.log(3.0) ** 2 / 2)
    # Soft CE = -(1/4 ln 1/2 + 3/4 ln 1/2) = ln 2
    assert distillation_loss(
        student, teacher, loss="soft_cross_entropy", temperature=1.0
    ).item() == pytest.approx(math.log(2.0))


def test_symmetric_jsd_by_hand():
    # p_t = (1, 0) (almost), p_s = (0, 1) (almost): symmetric JSD tends to ln 2.
    student = torch.tensor([[-50.0, 50.0]])
    teacher = torch.tensor([[50.0, -50.0]])
    assert distillation_loss(student, teacher, loss="jsd", beta=0.5, temperature=1.0).item() == pytest.approx(
        math.log(2.0), rel=1e-6
    )


def test_mean_reduction_by_hand_with_mask_and_num_items():
    per_position = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[True, False, True], [False, False, True]])
    assert reduce_positions(per_position, mask, reduction="sum").item() == 10.0
    assert reduce_positions(per_position, mask, reduction="mean").item() == pytest.approx(10.0 / 3)
    assert reduce_positions(per_position, mask, num_items_in_batch=5).item() == pytest.approx(2.0)
    assert reduce_positions(per_position, mask, reduction="none").tolist() == [
        [1.0, 0.0, 3.0],
        [0.0, 0.0, 6.0],
    ]


def test_task_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    labels = torch.tensor([1, -100])
    # only the first row counts: -ln(3/4)
    assert task_cross_entropy(logits, labels).item() == pytest.approx(-math.log(0.75))
    assert task_cross_entropy(logits, labels, num_items_in_batch=4).item() == pytest.approx(
        -math.log(0.75) / 4
    )


# ---- edge cases ------------------------------------------------------------------------------------------------

DIVERGENCES = [n for n in ALL_LOSSES if n != "soft_cross_entropy"]


@pytest.mark.parametrize("name", DIVERGENCES)
def test_identical_logits_give_zero(name):
    logits = torch.randn(3, 4, 11)
    assert distillation_loss(logits, logits.clone(), loss=name, temperature=3.0).abs().item() < 1e-6


def test_soft_cross_entropy_is_forward_kl_plus_teacher_entropy():
    torch.manual_seed(3)
    student, teacher = torch.randn(8, 6, dtype=torch.float64), torch.randn(8, 6, dtype=torch.float64)
    p_t = torch.softmax(teacher / 2.0, -1)
    entropy = -(p_t * p_t.log()).sum(-1).mean() * 4.0
    forward = distillation_loss(student, teacher, loss="forward_kl", temperature=2.0)
    soft_ce = distillation_loss(student, teacher, loss="soft_cross_entropy", temperature=2.0)
    assert soft_ce.item() == pytest.approx((forward + entropy).item(), rel=1e-9)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_fully_masked_batch_is_zero_with_finite_gradient(name):
    student = torch.randn(2, 5, 7, requires_grad=True)
    teacher = torch.randn(2, 5, 7)
    labels = torch.full((2, 5), -100)
    loss = distillation_loss(student, teacher, loss=name, labels=labels)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() == 0


def test_masked_positions_holding_inf_do_not_leak():
    student = torch.randn(1, 3, 4)
    teacher = torch.randn(1, 3, 4)
    teacher[0, 2] = float("nan")
    labels = torch.tensor([[1, 2, -100]])
    assert torch.isfinite(distillation_loss(student, teacher, labels=labels))


def test_jsd_small_beta_approaches_forward_kl_scaled_by_beta():
    # JSD_beta / beta -> KL(p_t || p_s) as beta -> 0: the beta=0 end point is that limit.
    torch.manual_seed(4)
    student, teacher = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    beta = 1e-5
    small = distillation_loss(student, teacher, loss="jsd", beta=beta, temperature=1.0) / beta
    assert small.item() == pytest.approx(
        distillation_loss(student, teacher, loss="jsd", beta=0.0, temperature=1.0).item(), rel=1e-3
    )
    assert distillation_loss(student, teacher, loss="jsd", beta=0.0).item() == pytest.approx(
        distillation_loss(student, teacher, loss="forward_kl").item()
    )
    assert distillation_loss(student, teacher, loss="jsd", beta=1.0).item() == pytest.approx(
        distillation_loss(student, teacher, loss="reverse_kl").item()
    )


def test_gradient_reaches_student_not_teacher():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.randn(4, 5, requires_grad=True)
    distillation_loss(student, teacher, loss="forward_kl", temperature=2.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_forward_kl_gradient_matches_closed_form():
    # d/dz_s [T^2 KL(p_t || softmax(z_s/T))] = T (p_s - p_t), averaged over the N rows.
    torch.manual_seed(5)
    student = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 4, dtype=torch.float64)
    temperature = 2.0
    distillation_loss(student, teacher, temperature=temperature).backward()
    expected = (
        temperature
        * (torch.softmax(student / temperature, -1) - torch.softmax(teacher / temperature, -1))
        / 3
    )
    torch.testing.assert_close(student.grad, expected.detach())


# ---- errors ----------------------------------------------------------------------------------------------------


def test_error_unknown_loss():
    with pytest.raises(ValueError, match="Unknown distillation loss 'kl_forward'"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), loss="kl_forward")


def test_error_shape_mismatch():
    with pytest.raises(ValueError, match=r"differ in shape.*share the label set"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_error_temperature():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)


def test_error_mask_and_labels_together():
    with pytest.raises(ValueError, match="Both `mask` and `labels`"):
        distillation_loss(
            torch.zeros(2, 3), torch.zeros(2, 3), mask=torch.ones(2, dtype=torch.bool), labels=torch.zeros(2)
        )


def test_error_mask_shape():
    with pytest.raises(ValueError, match=r"mask has shape \(3,\).*leading shape \(2,\)"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), mask=torch.ones(3, dtype=torch.bool))


def test_error_reduction():
    with pytest.raises(ValueError, match="Unknown reduction 'avg'"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), reduction="avg")


def test_error_beta_and_lambda_ranges():
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), loss="jsd", beta=1.5)
    with pytest.raises(ValueError, match=r"skew_lambda must be in \[0, 1\)"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 3), loss="skew_forward_kl", skew_lambda=1.0)


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
