"""DistillationTrainingArguments refuses bad knobs while it is built: ranges, and NaN/inf in every numeric knob
(of the modes' arguments too), the finite check first."""

from __future__ import annotations

import math

import pytest

from hf_distill.arguments import DistillationTrainingArguments
from tests.helpers.refusals import NON_FINITE, args

# ---- non-finite knobs ---------------------------------------------------------------------------------------


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


# ---- exact -inf logits --------------------------------------------------------------------------------------


# (student row, teacher row). exp(-2000 / 2) underflows to exactly 0 in float64 and float32.


# ---- ranges ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_temperature_must_be_positive(temperature, tmp_path):
    with pytest.raises(ValueError, match=r"temperature must be > 0, got -?\d"):
        args(tmp_path, temperature=temperature)


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_alpha_must_be_in_unit_interval(alpha, tmp_path):
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got"):
        args(tmp_path, alpha=alpha)
