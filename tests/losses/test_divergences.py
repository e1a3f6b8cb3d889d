"""Each loss against an independent naive reference, hand-computed values, edge cases, non-finite entries at
masked positions and exact ``-inf`` logits (the 0 * log 0 = 0 convention, with finite gradients)."""

import math

import pytest
import torch

from hf_distill.losses.divergences import (
    PER_POSITION_LOSSES,
    distillation_loss,
    reduce_positions,
    task_cross_entropy,
)
from tests.helpers.refusals import NON_FINITE

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


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_fully_masked_batch_is_zero_with_finite_gradient(name):
    student = torch.randn(2, 5, 7, requires_grad=True)
    teacher = torch.randn(2, 5, 7)
    labels = torch.full((2, 5), -100)
    loss = distillation_loss(student, teacher, loss=name, labels=labels)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() == 0


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


# ---- non-finite entries at masked positions never reach the value or the gradient ---------------------------


def _loss_and_grad(name, student, teacher, **kw):
    student = student.clone().requires_grad_(True)
    value = distillation_loss(student, teacher, loss=name, temperature=2.0, **kw)
    value.backward()
    return value.detach(), student.grad


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("bad", NON_FINITE, ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("side", ["teacher", "student", "both"])
@pytest.mark.parametrize("how", ["mask", "labels"])
def test_masked_position_never_reaches_the_gradient(name, bad, side, how):
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    labels = torch.tensor([[1, 2, -100, 0], [-100, 3, 4, 5]])
    masked = labels == -100
    keep = {"mask": {"mask": ~masked}, "labels": {"labels": labels}}[how]
    clean_student, clean_teacher = student.clone(), teacher.clone()
    clean_student[masked], clean_teacher[masked] = 0.0, 0.0
    # A whole row of the bad value, and one entry of it in a row that is otherwise ordinary.
    dirty_student, dirty_teacher = student.clone(), teacher.clone()
    if side in ("teacher", "both"):
        dirty_teacher[0, 2] = bad
        dirty_teacher[1, 0, 3] = bad
    if side in ("student", "both"):
        dirty_student[0, 2] = bad
        dirty_student[1, 0, 1] = bad
    for reduction in ("mean", "sum"):
        value, grad = _loss_and_grad(name, dirty_student, dirty_teacher, reduction=reduction, **keep)
        expected_value, expected_grad = _loss_and_grad(
            name, clean_student, clean_teacher, reduction=reduction, **keep
        )
        assert torch.isfinite(value) and torch.isfinite(grad).all()
        torch.testing.assert_close(value, expected_value, rtol=0, atol=0)
        torch.testing.assert_close(grad, expected_grad, rtol=0, atol=0)
        assert (grad[masked] == 0).all()


# ---- exact -inf logits: the 0 * log 0 = 0 convention, with finite gradients -----------------------------------


INF = math.inf


def _ref_log_softmax(row, temperature):
    scaled = [x / temperature for x in row]
    top = max(scaled)
    log_total = top + math.log(sum(math.exp(x - top) for x in scaled))
    return [x - log_total for x in scaled]  # -inf stays -inf


def _ref_kl(p, q):
    # 0 * log(0 / q) = 0 whatever q is; p > 0 with q = 0 is a true infinity.
    total = 0.0
    for pi, qi in zip(p, q):
        if pi == 0:
            continue
        total += INF if qi == 0 else pi * (math.log(pi) - math.log(qi))
    return total


def reference(name, s_row, t_row, temperature, beta=0.5, lam=0.1):
    """The loss of one position in float64 Python arithmetic, entry by entry."""
    p_s = [math.exp(x) for x in _ref_log_softmax(s_row, temperature)]
    p_t = [math.exp(x) for x in _ref_log_softmax(t_row, temperature)]
    t2 = temperature**2
    if name == "forward_kl":
        return _ref_kl(p_t, p_s) * t2
    if name == "reverse_kl":
        return _ref_kl(p_s, p_t) * t2
    if name == "jsd":
        m = [beta * a + (1 - beta) * b for a, b in zip(p_t, p_s)]
        return (beta * _ref_kl(p_t, m) + (1 - beta) * _ref_kl(p_s, m)) * t2
    if name == "skew_forward_kl":
        return _ref_kl(p_t, [lam * a + (1 - lam) * b for a, b in zip(p_t, p_s)]) * t2
    if name == "skew_reverse_kl":
        return _ref_kl(p_s, [lam * b + (1 - lam) * a for a, b in zip(p_t, p_s)]) * t2
    if name == "tvd":
        return 0.5 * sum(abs(a - b) for a, b in zip(p_t, p_s))
    if name == "mse":
        # The documented rule: an entry at -inf on either side contributes 0; the divisor stays C.
        return sum(0.0 if -INF in (a, b) else (a - b) ** 2 for a, b in zip(s_row, t_row)) / len(s_row)
    if name == "soft_cross_entropy":
        total = 0.0
        for a, log_b in zip(p_t, _ref_log_softmax(s_row, temperature)):
            if a > 0:
                total -= a * log_b
        return total * t2
    raise KeyError(name)


ROWS = {
    "teacher_-inf": ([0.2, 0.7, -1.0, 0.4, 1.1], [1.0, -INF, 0.5, -0.3, 2.0]),
    "student_-inf_where_teacher_p_is_0": ([1.0, -INF, 0.1, 0.2, -0.4], [0.3, -2000.0, 1.2, 0.0, -0.5]),
    "both_-inf_same_entry": ([-0.2, -INF, 0.3, -INF, 1.1], [0.5, -INF, 2.0, -INF, 0.0]),
    "student_-inf_where_teacher_p_is_0_and_teacher_-inf": (
        [-INF, 0.4, -0.6, 1.3, 0.0],
        [-2000.0, 0.1, 0.9, -INF, 0.6],
    ),
}


@pytest.mark.parametrize("row", sorted(ROWS))
@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_minus_inf_logits_match_the_reference(name, row, dtype):
    s_row, t_row = ROWS[row]
    expected = reference(name, s_row, t_row, 2.0)
    student = torch.tensor([s_row], dtype=dtype, requires_grad=True)
    teacher = torch.tensor([t_row], dtype=dtype)
    value = distillation_loss(student, teacher, loss=name, temperature=2.0, reduction="sum")
    tolerance = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    if math.isinf(expected):
        # Reverse KL of a row where only the teacher is -inf: the student's mass there is a true infinity.
        assert value.item() == expected
        return
    torch.testing.assert_close(value.item(), expected, **tolerance)
    value.backward()
    assert torch.isfinite(student.grad).all()
    # Nothing flows into an entry where the student is -inf.
    assert (student.grad[torch.isneginf(student.detach())] == 0).all()


@pytest.mark.parametrize("name", [n for n in ALL_LOSSES if n != "mse"])
@pytest.mark.parametrize("row", sorted(ROWS))
def test_minus_inf_gradient_equals_that_of_a_finite_stand_in(name, row):
    # -1e4 / T underflows to probability 0 in float64 as -inf does, and the old formulas were finite on
    # it: the gradients must agree. (mse compares raw logits, where -1e4 is no stand-in for -inf.)
    s_row, t_row = ROWS[row]
    if math.isinf(reference(name, s_row, t_row, 2.0)):
        pytest.skip("an infinite divergence has no finite gradient")

    def grad(stand_in):
        student = torch.tensor([[stand_in if x == -INF else x for x in s_row]], dtype=torch.float64)
        student.requires_grad_(True)
        teacher = torch.tensor([[stand_in if x == -INF else x for x in t_row]], dtype=torch.float64)
        distillation_loss(student, teacher, loss=name, temperature=2.0).backward()
        return student.grad.masked_fill(torch.tensor([s_row]) == -INF, 0.0)

    torch.testing.assert_close(grad(-INF), grad(-1e4), rtol=1e-12, atol=1e-15)


def test_true_infinities_stay_infinite():
    # The student's probability is 0 where the teacher's is 1/2: forward KL and soft CE are infinite.
    student, teacher = torch.tensor([[0.0, -INF]]), torch.tensor([[0.0, 0.0]])
    for name in ("forward_kl", "soft_cross_entropy"):
        assert distillation_loss(student, teacher, loss=name).item() == INF


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_padded_vocabulary_in_bf16_is_finite(name):
    torch.manual_seed(0)
    student, teacher = torch.randn(3, 8, dtype=torch.bfloat16), torch.randn(3, 8, dtype=torch.bfloat16)
    student[:, 6:], teacher[:, 6:] = -INF, -INF
    student.requires_grad_(True)
    value = distillation_loss(student, teacher, loss=name, temperature=2.0)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(student.grad).all()
    # Padding the vocabulary with -inf on both sides leaves every divergence as it was.
    if name != "mse":
        unpadded = distillation_loss(student.detach()[:, :6], teacher[:, :6], loss=name, temperature=2.0)
        torch.testing.assert_close(value.detach(), unpadded)


def test_by_hand_with_minus_inf_on_both_sides():
    # Teacher logits [2 ln 3, 0, -inf] and student [0, 0, -inf] at T = 2:
    #   p_t = softmax([ln 3, 0, -inf]) = [3/4, 1/4, 0],  p_s = [1/2, 1/2, 0]; the third entry counts 0.
    #   forward KL = 3/4 ln((3/4)/(1/2)) + 1/4 ln((1/4)/(1/2)) = 3/4 ln(3/2) - 1/4 ln 2  (= 0.130812)
    #   reverse KL = 1/2 ln((1/2)/(3/4)) + 1/2 ln((1/2)/(1/4)) = 1/2 ln 2 - 1/2 ln(3/2)  (= 0.143841)
    #   soft CE    = -(3/4 ln 1/2 + 1/4 ln 1/2) = ln 2
    #   JSD (beta 1/2): m = [5/8, 3/8, 0];
    #     1/2 (3/4 ln(6/5) + 1/4 ln(2/3)) + 1/2 (1/2 ln(4/5) + 1/2 ln(4/3))  (= 0.033822)
    #   The KL family is multiplied by T^2 = 4.
    #   TVD = 1/2 (|3/4 - 1/2| + |1/4 - 1/2| + |0 - 0|) = 1/4
    #   MSE = ((2 ln 3 - 0)^2 + 0^2 + 0 (both -inf)) / 3 = 4 (ln 3)^2 / 3
    ln = math.log
    expected = {
        "forward_kl": 4 * (0.75 * ln(1.5) - 0.25 * ln(2)),
        "reverse_kl": 4 * (0.5 * ln(2) - 0.5 * ln(1.5)),
        "soft_cross_entropy": 4 * ln(2),
        "jsd": 4 * 0.5 * (0.75 * ln(6 / 5) + 0.25 * ln(2 / 3) + 0.5 * ln(4 / 5) + 0.5 * ln(4 / 3)),
        "tvd": 0.25,
        "mse": 4 * ln(3) ** 2 / 3,
    }
    assert abs(expected["forward_kl"] - 4 * 0.130812) < 1e-5 and abs(expected["jsd"] - 4 * 0.033822) < 1e-5
    student = torch.tensor([[0.0, 0.0, -INF]], dtype=torch.float64)
    teacher = torch.tensor([[2 * ln(3), 0.0, -INF]], dtype=torch.float64)
    for name, value in expected.items():
        got = distillation_loss(student, teacher, loss=name, temperature=2.0).item()
        assert got == pytest.approx(value, rel=1e-12), name
