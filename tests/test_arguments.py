"""Non-finite numbers: NaN/inf knobs are refused, masked positions never reach the gradient, and exact
``-inf`` logits give the values of the 0 * log 0 = 0 convention with finite gradients."""

from __future__ import annotations

import math

import pytest
import torch

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.losses.divergences import PER_POSITION_LOSSES, distillation_loss

ALL_LOSSES = sorted(PER_POSITION_LOSSES)
KL_FAMILY = ["forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "soft_cross_entropy"]
INF = math.inf
NON_FINITE = [math.nan, math.inf, -math.inf]


# ---- arguments ----------------------------------------------------------------------------------------------


def make_args(cls=DistillationTrainingArguments, **kw):
    return cls(output_dir="unused", report_to="none", use_cpu=True, **kw)


@pytest.mark.parametrize("bad", NON_FINITE, ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize(
    "name",
    [
        "temperature",
        "alpha",
        "jsd_beta",
        "skew_lambda",
        "hidden_state_weight",
        "attention_weight",
        "value_relation_weight",
        "learning_rate",
    ],
)
def test_non_finite_knob_is_refused(name, bad):
    with pytest.raises(
        ValueError, match=rf"^{name} must be finite, got {bad}: .* Give a number that is finite"
    ):
        make_args(**{name: bad})


def test_finite_check_comes_before_the_other_checks():
    # Both knobs are wrong; the NaN is named, not the unknown loss.
    with pytest.raises(ValueError, match=r"^temperature must be finite, got nan"):
        make_args(temperature=math.nan, distillation_loss="no_such_loss")


@pytest.mark.parametrize("bad", NON_FINITE, ids=["nan", "+inf", "-inf"])
def test_non_finite_knob_of_a_mode_is_refused(bad):
    from hf_distill.modes.on_policy import OnPolicyDistillationTrainingArguments

    # +inf passes the mode's own `> 0` check: only the generic check can refuse it.
    with pytest.raises(ValueError, match=rf"^generation_temperature must be finite, got {bad}"):
        make_args(OnPolicyDistillationTrainingArguments, generation_temperature=bad)
    # The mode's own range check would also refuse a NaN lmbda; the finite check runs before it.
    with pytest.raises(ValueError, match=rf"^lmbda must be finite, got {bad}"):
        make_args(OnPolicyDistillationTrainingArguments, lmbda=bad)


@pytest.mark.parametrize("bad", NON_FINITE, ids=["nan", "+inf", "-inf"])
def test_non_finite_entry_of_a_list_knob_is_refused(bad):
    from hf_distill.modes.multi_teacher import MultiTeacherTrainingArguments

    with pytest.raises(ValueError, match=r"^teacher_weights must be finite, got \[1\.0, .*Give every entry"):
        make_args(MultiTeacherTrainingArguments, teacher_weights=[1.0, bad])


def test_self_distillation_decay_is_checked():
    from hf_distill.modes.self_distillation import SelfDistillationTrainingArguments

    with pytest.raises(ValueError, match=r"^ema_decay must be finite, got nan.*default is 0\.999"):
        make_args(SelfDistillationTrainingArguments, ema_decay=math.nan)


def test_ordinary_values_still_pass():
    from hf_distill.modes.multi_teacher import MultiTeacherTrainingArguments
    from hf_distill.modes.on_policy import OnPolicyDistillationTrainingArguments

    args = make_args(
        temperature=4, alpha=0.0, jsd_beta=1.0, skew_lambda=0.0, hidden_state_weight=2.5, learning_rate=3e-4
    )
    assert (args.temperature, args.alpha, args.learning_rate) == (4, 0.0, 3e-4)
    assert (
        make_args(OnPolicyDistillationTrainingArguments, generation_temperature=1.5).generation_temperature
        == 1.5
    )
    weights = make_args(MultiTeacherTrainingArguments, teacher_weights=[0.25, 3.0]).teacher_weights
    assert weights == [0.25, 3.0]
    # max_grad_norm is a TrainingArguments knob outside the list: inf keeps its transformers meaning.
    assert make_args(max_grad_norm=math.inf).max_grad_norm == math.inf


# ---- masked positions ---------------------------------------------------------------------------------------


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


# ---- exact -inf logits --------------------------------------------------------------------------------------


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


# (student row, teacher row). exp(-2000 / 2) underflows to exactly 0 in float64 and float32.
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
