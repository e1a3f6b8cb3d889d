"""The fused loss's one ``teacher`` argument (:mod:`hf_distill.losses.fused.teacher_forms`): every form gives the
hand-computed value, the older keyword forms still work with a warning naming ``teacher=``, and a call that
mixes forms, gives none, or gives something that is no form is refused with what to pass instead."""

from __future__ import annotations

import math

import pytest
import torch

from hf_distill import TeacherHead, TeacherLogits, TeacherTopk, fused_linear_distillation_loss
from hf_distill.batch import TargetKind, TeacherTarget
from hf_distill.losses.fused.teacher_forms import TeacherChunkFn
from hf_distill.losses.topk import topk_chunks, topk_teacher
from tests.helpers.fused import B, T, V, make_problem, plain_loss

# Student logits 0 over two tokens (p_s = (1/2, 1/2)); teacher logits (ln 3, 0) (p_t = (3/4, 1/4)).
HAND_KL = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # 0.1308...


def hand_problem():
    hidden = torch.zeros(1, 1, dtype=torch.float64, requires_grad=True)
    weight = torch.ones(2, 1, dtype=torch.float64, requires_grad=True)  # logits h @ W^T = (0, 0)
    teacher_hidden = torch.tensor([[math.log(3.0)]], dtype=torch.float64)
    teacher_weight = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    return hidden, weight, teacher_hidden, teacher_weight


def hand_forms():
    _, _, teacher_hidden, teacher_weight = hand_problem()
    logits = teacher_hidden @ teacher_weight.T
    values, indices, tail = topk_teacher(logits, 1, temperature=1.0)  # token 0 kept, token 1 is the tail
    return {
        "tensor": logits,
        "logits": TeacherLogits(logits, check_finite=True),
        "head": TeacherHead(teacher_hidden, teacher_weight, check_finite=True),
        "topk": TeacherTopk(values, indices, tail),
        "chunk_fn": topk_chunks(values, indices, tail, loss="forward_kl", temperature=1.0),
    }


@pytest.mark.parametrize("form", ["tensor", "logits", "head", "topk", "chunk_fn"])
@pytest.mark.parametrize("implementation", ["fused", "chunked"])
def test_every_form_gives_the_hand_computed_forward_kl(form, implementation):
    hidden, weight, _, _ = hand_problem()
    out = fused_linear_distillation_loss(
        hidden, weight, teacher=hand_forms()[form], implementation=implementation
    )
    assert out.loss.item() == pytest.approx(HAND_KL, rel=1e-12)
    # d/dz_s = p_s - p_t = (-1/4, 1/4); dL/dh = that @ W = 0 since both head rows see h alike.
    (grad_weight,) = torch.autograd.grad(out.loss, weight)
    torch.testing.assert_close(grad_weight, torch.zeros(2, 1, dtype=torch.float64))


def test_the_forms_settings_come_from_the_loss_except_a_chunk_functions_own():
    """TeacherTopk follows the loss's temperature; a chunk function keeps the one it was built with."""
    hidden, weight, _, _ = hand_problem()
    forms = hand_forms()
    at_two = fused_linear_distillation_loss(hidden, weight, teacher=forms["topk"], temperature=2.0).loss
    plain_at_two = fused_linear_distillation_loss(
        hidden, weight, teacher=forms["tensor"], temperature=2.0
    ).loss
    torch.testing.assert_close(at_two, plain_at_two)
    own = fused_linear_distillation_loss(hidden, weight, teacher=forms["chunk_fn"], temperature=2.0).loss
    assert own.item() == pytest.approx(HAND_KL, rel=1e-12)
    assert at_two.item() != pytest.approx(HAND_KL, rel=1e-3)


# ---- the older keyword forms --------------------------------------------------------------------------------


def keyword_forms(teacher_hidden, teacher_weight, bias):
    teacher_logits = teacher_hidden @ teacher_weight.T + bias
    return {
        "teacher_logits": ({"teacher_logits": teacher_logits}, TeacherLogits(teacher_logits)),
        "teacher_hidden": (
            {"teacher_hidden": teacher_hidden, "teacher_weight": teacher_weight, "teacher_bias": bias},
            TeacherHead(teacher_hidden, teacher_weight, bias),
        ),
        "kd_chunk_fn": (
            {
                "kd_chunk_fn": TeacherLogits(teacher_logits).chunks(
                    loss="jsd", temperature=2.0, beta=0.5, skew_lambda=0.1
                )
            },
            TeacherLogits(teacher_logits),
        ),
    }


@pytest.mark.parametrize("keyword", ["teacher_logits", "teacher_hidden", "kd_chunk_fn"])
def test_the_older_keywords_give_the_same_loss_with_a_warning_naming_teacher(keyword):
    hidden, weight, bias, teacher_hidden, teacher_weight, labels = make_problem(seed=2)
    teacher_bias = torch.randn(V, dtype=hidden.dtype)
    old, new = keyword_forms(teacher_hidden, teacher_weight, teacher_bias)[keyword]
    kwargs = dict(labels=labels, loss="jsd", temperature=2.0, kd_weight=0.6, task_weight=0.4, chunk_size=3)
    with pytest.warns(
        DeprecationWarning, match=rf"\({keyword}=.*\) is deprecated: pass one `teacher=`"
    ) as record:
        got = fused_linear_distillation_loss(hidden, weight, bias, **old, **kwargs)
    assert record[0].filename == __file__  # the warning points at the caller's line
    want = fused_linear_distillation_loss(hidden, weight, bias, teacher=new, **kwargs)
    reference = plain_loss(
        hidden, weight, bias, teacher_hidden @ teacher_weight.T + teacher_bias, labels, "jsd", 0.6, 2.0
    )
    torch.testing.assert_close(got.loss, want.loss)
    torch.testing.assert_close(got.loss, reference)
    for a, b in zip(
        torch.autograd.grad(got.loss, (hidden, weight)), torch.autograd.grad(reference, (hidden, weight))
    ):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("keyword", ["teacher_logits", "teacher_hidden"])
def test_the_older_finite_flag_reaches_the_form_it_builds(keyword):
    hidden, weight, bias, teacher_hidden, teacher_weight, labels = make_problem(seed=3)
    teacher_weight = teacher_weight.clone()
    teacher_weight[2, 1] = float("nan")
    old, _ = keyword_forms(teacher_hidden, teacher_weight, torch.zeros(V, dtype=hidden.dtype))[keyword]
    with pytest.warns(DeprecationWarning, match="is deprecated"):
        unchecked = fused_linear_distillation_loss(hidden, weight, bias, **old, labels=labels)
    assert not torch.isfinite(unchecked.loss)  # without the flag the NaN passes (as it always did)
    with (
        pytest.warns(DeprecationWarning, match="check_teacher_finite="),
        pytest.raises(FloatingPointError, match="teacher's logits hold NaN"),
    ):
        fused_linear_distillation_loss(hidden, weight, bias, **old, labels=labels, check_teacher_finite=True)


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"teacher_logits": "L"}, "got teacher= together with the older teacher_logits="),
        (
            {"check_teacher_finite": True},
            r"together with the older check_teacher_finite=.*form's check_finite",
        ),
    ],
)
def test_error_teacher_mixed_with_an_older_keyword(extra, match):
    hidden, weight, bias, teacher_hidden, teacher_weight, labels = make_problem()
    extra = {k: (teacher_hidden @ teacher_weight.T if v == "L" else v) for k, v in extra.items()}
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match=match):
        fused_linear_distillation_loss(
            hidden, weight, bias, teacher=TeacherHead(teacher_hidden, teacher_weight), labels=labels, **extra
        )


def test_error_two_older_teacher_sources_or_a_head_without_hidden_states():
    hidden, weight, bias, teacher_hidden, teacher_weight, labels = make_problem()
    both = {"teacher_logits": teacher_hidden @ teacher_weight.T, "teacher_hidden": teacher_hidden}
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(ValueError, match=r"exactly one teacher source to the chunked loss, got 2"),
    ):
        fused_linear_distillation_loss(hidden, weight, teacher_weight=teacher_weight, labels=labels, **both)
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(ValueError, match="teacher_hidden, which was not given"),
    ):
        fused_linear_distillation_loss(hidden, weight, teacher_weight=teacher_weight, labels=labels)


def test_error_unknown_keyword_is_a_type_error():
    hidden, weight, _, teacher_hidden, teacher_weight, labels = make_problem()
    with pytest.raises(TypeError, match="unexpected keyword argument 'teacher_logit'"):
        fused_linear_distillation_loss(hidden, weight, teacher_logit=teacher_hidden, labels=labels)


# ---- what is no form ----------------------------------------------------------------------------------------


def test_no_teacher_is_refused_unless_the_kd_term_has_no_weight():
    hidden, weight, bias, _, _, labels = make_problem()
    with pytest.raises(ValueError, match="exactly one teacher source .*kd_weight=0.5 needs one.*got none"):
        fused_linear_distillation_loss(hidden, weight, bias, labels=labels, kd_weight=0.5, task_weight=0.5)
    task_only = fused_linear_distillation_loss(
        hidden, weight, bias, labels=labels, kd_weight=0.0, task_weight=1.0
    )
    logits = (hidden @ weight.T + bias).reshape(-1, V)
    kept = labels.reshape(-1) != -100
    # Cross-entropy written out: log-sum-exp minus the label's logit, averaged over the kept positions.
    by_hand = (torch.logsumexp(logits, -1) - logits.gather(1, labels.reshape(-1, 1).clamp_min(0)).squeeze(1))[
        kept
    ]
    torch.testing.assert_close(task_only.loss, by_hand.mean())


@pytest.mark.parametrize(
    "teacher, error, match",
    [
        ((torch.zeros(B, T, V),), TypeError, r"teacher= got a tuple; pass one teacher form"),
        (
            torch.nn.Linear(3, V),
            TypeError,
            "teacher= got a model .Linear.; the fused loss takes the teacher's numbers",
        ),
        ("logits", TypeError, "teacher= got a str"),
    ],
)
def test_error_something_that_is_no_teacher_form(teacher, error, match):
    hidden, weight, _, _, _, labels = make_problem()
    with pytest.raises(error, match=match):
        fused_linear_distillation_loss(hidden, weight, teacher=teacher, labels=labels)


def test_error_forms_built_from_what_is_no_tensor_or_function():
    with pytest.raises(TypeError, match=r"TeacherHead.weight must be a torch.Tensor, got list"):
        TeacherHead(torch.zeros(2, 3), [[1.0]])
    with pytest.raises(TypeError, match=r"TeacherLogits.logits must be a torch.Tensor, got ndarray"):
        TeacherLogits(torch.zeros(2).numpy())
    with pytest.raises(TypeError, match="TeacherChunkFn.fn must be callable, got int"):
        TeacherChunkFn(3)


def test_error_forms_that_do_not_fit_the_student():
    hidden, weight, _, teacher_hidden, teacher_weight, labels = make_problem()
    values, indices, tail = topk_teacher(teacher_hidden @ teacher_weight.T, 3, temperature=1.0)
    cases = [
        (TeacherTopk(values[:, :-1], indices[:, :-1], tail[:, :-1]), r"Teacher top-k values \(2, 6, 3\)"),
        (TeacherTopk(values, indices[..., :2], tail), r"indices \(2, 7, 2\)"),
        (
            TeacherHead(teacher_hidden, teacher_weight, torch.zeros(V + 1)),
            r"bias has shape \(41,\), not \(40,\)",
        ),
        (TeacherHead(teacher_hidden, teacher_weight[:, :-1]), r"LM head \(40, 4\) do not match"),
    ]
    for teacher, match in cases:
        with pytest.raises(ValueError, match=match):
            fused_linear_distillation_loss(hidden, weight, teacher=teacher, labels=labels)


# ---- the trainer's target as a form -------------------------------------------------------------------------


def test_a_teacher_target_becomes_its_form_shifted_like_the_student():
    logits, hidden, head = torch.randn(2, 5, 7), torch.randn(2, 5, 3), torch.randn(7, 3)
    topk = (torch.randn(2, 5, 2), torch.randint(0, 7, (2, 5, 2)), torch.randn(2, 5))
    as_logits = TeacherTarget(TargetKind.LIVE, logits=logits).fused_teacher(check_finite=True)
    assert isinstance(as_logits, TeacherLogits) and as_logits.check_finite
    torch.testing.assert_close(as_logits.logits, logits[:, :-1])
    as_head = TeacherTarget(TargetKind.LIVE, hidden=hidden, head_weight=head).fused_teacher()
    assert isinstance(as_head, TeacherHead) and not as_head.check_finite and as_head.weight is head
    torch.testing.assert_close(as_head.hidden, hidden[:, :-1])
    as_topk = TeacherTarget(TargetKind.CACHED_TOPK, topk=topk).fused_teacher(check_finite=True)
    assert isinstance(as_topk, TeacherTopk)
    for got, want in zip((as_topk.values, as_topk.indices, as_topk.tail), topk):
        torch.testing.assert_close(got, want[:, :-1])
    with pytest.raises(
        ValueError,
        match=r"The teacher target \(live teacher\) holds no logits, no top-k and no hidden states",
    ):
        TeacherTarget(TargetKind.LIVE).fused_teacher()
