"""Properties of every loss in PER_POSITION_LOSSES over random shapes, masks and temperatures (hypothesis).

For logits of shape ``(N, C)`` or ``(B, T, V)``, any mask (all-masked included) and ``T`` in ``(0.1, 10)``:
the reduced loss is finite with a finite gradient; divergences are >= 0; every loss but the soft
cross-entropy is 0 when the student equals the teacher; the soft cross-entropy equals forward KL plus the
teacher's entropy times T^2. Logits are float64 so the identities hold to 1e-9-ish; the tolerances below
leave room for the exp/log round trips at T = 0.1 with logits up to 20 in size.
"""

from __future__ import annotations

import math

import pytest
import torch

from hf_distill.losses.divergences import PER_POSITION_LOSSES, distillation_loss

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

ALL_LOSSES = sorted(PER_POSITION_LOSSES)
# MSE on logits is a distance, not a divergence, but it is >= 0 too; every loss here is.
NON_NEGATIVE = set(ALL_LOSSES)
ZERO_WHEN_EQUAL = set(ALL_LOSSES) - {"soft_cross_entropy"}
SETTINGS = settings(max_examples=20, deadline=None, derandomize=True)


@st.composite
def cases(draw):
    """Student and teacher logits, a mask over positions (possibly empty) and a temperature."""
    shape = draw(
        st.one_of(
            st.tuples(st.integers(1, 6), st.integers(2, 7)),  # (N, C)
            st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(2, 9)),  # (B, T, V)
        )
    )
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 20.0]))
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(shape, generator=generator, dtype=torch.float64) * scale
    teacher = torch.randn(shape, generator=generator, dtype=torch.float64) * scale
    kind = draw(st.sampled_from(["random", "none", "all_masked", "all_kept"]))
    positions = shape[:-1]
    mask = {
        "random": torch.rand(positions, generator=generator) < 0.5,
        "none": None,
        "all_masked": torch.zeros(positions, dtype=torch.bool),
        "all_kept": torch.ones(positions, dtype=torch.bool),
    }[kind]
    temperature = draw(st.floats(0.1, 10.0, allow_nan=False, exclude_min=True))
    return student, teacher, mask, temperature


def _loss(name, student, teacher, mask, temperature, **kw):
    return distillation_loss(student, teacher, loss=name, temperature=temperature, mask=mask, **kw)


@pytest.mark.parametrize("name", ALL_LOSSES)
@SETTINGS
@given(case=cases(), beta=st.floats(0.0, 1.0), skew_lambda=st.floats(0.0, 0.99))
def test_finite_non_negative_with_finite_gradient(name, case, beta, skew_lambda):
    student, teacher, mask, temperature = case
    student = student.clone().requires_grad_(True)
    value = _loss(name, student, teacher, mask, temperature, beta=beta, skew_lambda=skew_lambda)
    assert torch.isfinite(value)
    if name in NON_NEGATIVE:
        assert value.item() >= -1e-9
    value.backward()
    assert torch.isfinite(student.grad).all()
    if mask is not None and not mask.any():
        assert value.item() == 0.0
        assert not student.grad.any()


@pytest.mark.parametrize("name", ALL_LOSSES)
@SETTINGS
@given(case=cases(), beta=st.floats(0.0, 1.0), skew_lambda=st.floats(0.0, 0.99))
def test_zero_when_student_equals_teacher(name, case, beta, skew_lambda):
    _, teacher, mask, temperature = case
    value = _loss(name, teacher.clone(), teacher, mask, temperature, beta=beta, skew_lambda=skew_lambda)
    if name in ZERO_WHEN_EQUAL:
        assert value.item() == pytest.approx(0.0, abs=1e-9 * max(1.0, temperature**2))
    else:
        assert value.item() >= 0.0


@SETTINGS
@given(case=cases())
def test_soft_cross_entropy_is_forward_kl_plus_teacher_entropy(case):
    student, teacher, mask, temperature = case
    log_p_teacher = torch.log_softmax(teacher / temperature, dim=-1)
    entropy = -(log_p_teacher.exp() * log_p_teacher).sum(-1) * temperature**2  # per position, times T^2
    keep = torch.ones(entropy.shape, dtype=torch.bool) if mask is None else mask
    mean_entropy = entropy[keep].sum() / max(int(keep.sum()), 1)
    soft_ce = _loss("soft_cross_entropy", student, teacher, mask, temperature)
    forward_kl = _loss("forward_kl", student, teacher, mask, temperature)
    tolerance = 1e-9 * max(1.0, temperature**2) * max(1.0, abs(soft_ce.item()))
    assert soft_ce.item() == pytest.approx(forward_kl.item() + mean_entropy.item(), abs=tolerance)
    assert mean_entropy.item() <= math.log(teacher.shape[-1]) * temperature**2 + 1e-9
