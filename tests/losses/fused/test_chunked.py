"""The chunked / fused-linear losses against the plain ones: values, gradients, memory, trainer wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hf_distill import DistillationTrainer
from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.losses.divergences import PER_POSITION_LOSSES, distillation_loss, task_cross_entropy
from hf_distill.losses.fused.chunked import fused_linear_distillation_loss
from hf_distill.losses.fused.lm_head import AUTO_MIN_VOCAB, lm_head_of, resolve_implementation
from hf_distill.losses.fused.teacher_forms import TeacherHead
from tests.helpers.fused import B, T, V, make_problem, plain_loss
from tests.helpers.tiny_models import tiny_bert_classifier, tiny_gpt2
from tests.helpers.training import lm_dataset, make_args

ALL_LOSSES = sorted(PER_POSITION_LOSSES)


@pytest.mark.parametrize("implementation", ["fused", "chunked"])
@pytest.mark.parametrize("source", ["logits", "hidden"])
@pytest.mark.parametrize("name", ALL_LOSSES)
def test_value_and_gradients_equal_the_plain_loss(name, source, implementation):
    hidden, weight, bias, teacher_hidden, teacher_weight, labels = make_problem()
    teacher_logits = teacher_hidden @ teacher_weight.T
    reference = plain_loss(hidden, weight, bias, teacher_logits, labels, name, alpha=0.7, temperature=2.0)
    expected_grads = torch.autograd.grad(reference, (hidden, weight, bias))
    teacher = teacher_logits if source == "logits" else TeacherHead(teacher_hidden, teacher_weight)
    out = fused_linear_distillation_loss(
        hidden,
        weight,
        bias,
        teacher=teacher,
        labels=labels,
        loss=name,
        temperature=2.0,
        kd_weight=0.7,
        task_weight=0.3,
        chunk_size=3,  # does not divide the 11 kept positions: the last chunk is short
        implementation=implementation,
    )
    # A non-unit upstream gradient must scale the stored gradients.
    grads = torch.autograd.grad(out.loss * 3.0, (hidden, weight, bias))
    torch.testing.assert_close(out.loss, reference)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, 3.0 * want)
    logits = hidden @ weight.T + bias
    torch.testing.assert_close(
        out.loss_kd, distillation_loss(logits, teacher_logits, loss=name, temperature=2.0, labels=labels)
    )
    torch.testing.assert_close(out.loss_task, task_cross_entropy(logits, labels))


@pytest.mark.parametrize("implementation", ["fused", "chunked"])
def test_mask_sum_and_num_items_match_the_plain_loss(implementation):
    hidden, weight, bias, teacher_hidden, teacher_weight, labels = make_problem(seed=1)
    teacher_logits = teacher_hidden @ teacher_weight.T
    mask = labels != -100
    for kw in ({"reduction": "sum"}, {"num_items_in_batch": 23}):
        logits = hidden @ weight.T + bias
        want = distillation_loss(logits, teacher_logits, loss="jsd", beta=0.3, mask=mask, **kw)
        got = fused_linear_distillation_loss(
            hidden, weight, bias, teacher=teacher_logits, mask=mask, loss="jsd", beta=0.3,
            chunk_size=4, implementation=implementation, **kw,
        )  # fmt: skip
        torch.testing.assert_close(got.loss, want)
        torch.testing.assert_close(
            torch.autograd.grad(got.loss, hidden)[0], torch.autograd.grad(want, hidden)[0]
        )


@pytest.mark.parametrize("implementation", ["fused", "chunked"])
def test_fully_masked_batch_gives_zero_and_finite_gradients(implementation):
    hidden, weight, bias, teacher_hidden, teacher_weight, _ = make_problem()
    labels = torch.full((B, T), -100)
    out = fused_linear_distillation_loss(
        hidden, weight, bias, teacher=TeacherHead(teacher_hidden, teacher_weight), labels=labels,
        kd_weight=0.5, task_weight=0.5, implementation=implementation,
    )  # fmt: skip
    assert out.loss.item() == 0.0
    grad_hidden, grad_weight = torch.autograd.grad(out.loss, (hidden, weight))
    assert torch.all(grad_hidden == 0) and torch.all(grad_weight == 0)


def test_no_grad_evaluation_gives_the_same_value():
    hidden, weight, bias, teacher_hidden, teacher_weight, labels = make_problem()
    kwargs = dict(teacher=TeacherHead(teacher_hidden, teacher_weight), labels=labels)
    with_grad = fused_linear_distillation_loss(hidden, weight, bias, **kwargs).loss
    with torch.no_grad():
        without = fused_linear_distillation_loss(hidden, weight, bias, **kwargs).loss
    assert not without.requires_grad
    torch.testing.assert_close(without, with_grad.detach())


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor (in elements) any operation produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for item in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(item, torch.Tensor):
                self.largest = max(self.largest, item.numel())
        return out


@pytest.mark.parametrize("implementation", ["fused", "chunked"])
def test_no_tensor_of_all_positions_times_vocabulary_is_built(implementation):
    n, hidden_size, vocab, chunk = 64, 4, 512, 8
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, hidden_size, generator=g, requires_grad=True)
    weight = torch.randn(vocab, hidden_size, generator=g, requires_grad=True)
    teacher_hidden, teacher_weight = torch.randn(n, hidden_size, generator=g), torch.randn(vocab, hidden_size)
    labels = torch.randint(0, vocab, (n,), generator=g)
    with LargestTensor() as probe:
        out = fused_linear_distillation_loss(
            hidden, weight, teacher=TeacherHead(teacher_hidden, teacher_weight), labels=labels,
            kd_weight=0.5, task_weight=0.5, chunk_size=chunk, implementation=implementation,
        )  # fmt: skip
        out.loss.backward()
    # The weight gradient (vocab x hidden) and one chunk of logits (chunk x vocab) are the largest.
    assert probe.largest <= max(chunk * vocab, vocab * hidden_size)
    with LargestTensor() as probe:
        plain_loss(hidden, weight, 0.0, teacher_hidden @ teacher_weight.T, labels, "forward_kl", 0.5, 1.0)
    assert probe.largest >= n * vocab  # the probe does see full logits when they exist


def test_bfloat16_inputs_stay_close_to_float32():
    hidden, weight, bias, teacher_hidden, teacher_weight, labels = make_problem(dtype=torch.float32)
    kwargs = dict(labels=labels, kd_weight=0.5, task_weight=0.5)
    ref = fused_linear_distillation_loss(
        hidden, weight, bias, teacher=TeacherHead(teacher_hidden, teacher_weight), **kwargs
    )
    low = fused_linear_distillation_loss(
        hidden.detach().bfloat16().requires_grad_(),
        weight.detach().bfloat16(),
        bias.detach().bfloat16(),
        teacher=TeacherHead(teacher_hidden.bfloat16(), teacher_weight.bfloat16()),
        **kwargs,
    )
    assert low.loss.dtype == torch.float32
    assert low.loss.item() == pytest.approx(ref.loss.item(), rel=0.05)


# ---- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"reduction": "none"}, "reduction='none' is not supported by the chunked loss"),
        ({"chunk_size": 0}, "chunk_size must be >= 1"),
        ({"implementation": "plain"}, "implementation='plain' is not a chunked loss"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"task_weight": 0.5, "labels": None}, "task_weight=0.5 needs labels"),
        ({"loss": "kl"}, "Unknown distillation loss 'kl'"),
        ({"mask": torch.ones(B, T, dtype=torch.bool)}, "Both `mask` and `labels`"),
        ({"labels": torch.zeros(B, T + 1, dtype=torch.long)}, r"labels have shape \(2, 8\)"),
    ],
)
def test_errors(kwargs, match):
    hidden, weight, bias, _, _, labels = make_problem()
    teacher_logits = torch.randn(B, T, V, dtype=hidden.dtype)
    base = {"teacher": teacher_logits, "labels": labels}
    with pytest.raises(ValueError, match=match):
        fused_linear_distillation_loss(hidden, weight, bias, **{**base, **kwargs})


def test_error_teacher_sources():
    hidden, weight, bias, teacher_hidden, teacher_weight, labels = make_problem()
    with pytest.raises(ValueError, match="exactly one teacher source"):
        fused_linear_distillation_loss(hidden, weight, labels=labels)
    # The older keyword form's own refusal (tests/losses/fused/test_teacher_forms.py covers the rest of it).
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(ValueError, match="teacher_hidden needs teacher_weight"),
    ):
        fused_linear_distillation_loss(hidden, weight, teacher_hidden=teacher_hidden, labels=labels)
    with pytest.raises(ValueError, match=r"Teacher logits \(2, 7, 39\) do not match"):
        fused_linear_distillation_loss(hidden, weight, teacher=torch.randn(B, T, V - 1), labels=labels)
    with pytest.raises(ValueError, match="Teacher hidden states"):
        fused_linear_distillation_loss(
            hidden, weight, teacher=TeacherHead(teacher_hidden, teacher_weight[:-1]), labels=labels
        )


# ---- choosing the implementation ----------------------------------------------------------------------------


def test_auto_picks_fused_for_large_vocabularies_only():
    small, large = tiny_gpt2(vocab_size=60, hidden=16), tiny_gpt2(vocab_size=AUTO_MIN_VOCAB, hidden=8)
    assert resolve_implementation("auto", small, 60) == "plain"
    assert resolve_implementation("auto", large, AUTO_MIN_VOCAB) == "fused"
    assert resolve_implementation("chunked", small, 60) == "chunked"
    assert resolve_implementation("plain", large, AUTO_MIN_VOCAB) == "plain"


def test_models_without_a_linear_head_are_refused_with_the_reason():
    classifier = tiny_bert_classifier()
    assert "no nn.Linear output embedding" in lm_head_of(classifier)
    assert resolve_implementation("auto", classifier, AUTO_MIN_VOCAB) == "plain"
    with pytest.raises(ValueError, match="needs the student's last hidden states and a linear LM head"):
        resolve_implementation("fused", classifier, AUTO_MIN_VOCAB)
    with pytest.raises(ValueError, match="kd_loss_implementation='fast' is unknown"):
        resolve_implementation("fast", classifier, 10)


def test_logit_softcapping_is_refused():
    model = tiny_gpt2()
    model.config.final_logit_softcapping = 30.0
    assert "final_logit_softcapping=30.0" in lm_head_of(model)


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="kd_loss_implementation 'fast' is unknown"):
        DistillationTrainingArguments(output_dir=str(tmp_path), kd_loss_implementation="fast")
    with pytest.raises(ValueError, match="kd_chunk_size must be >= 1"):
        DistillationTrainingArguments(output_dir=str(tmp_path), kd_chunk_size=0)


def test_error_chunked_loss_for_a_classifier(tmp_path):
    with pytest.raises(ValueError, match="kd_loss_implementation='fused' is for causal LMs"):
        DistillationTrainer(
            model=tiny_bert_classifier(seed=1),
            teacher_model=tiny_bert_classifier(seed=2),
            args=make_args(tmp_path, kd_loss_implementation="fused"),
        )


# ---- the trainer --------------------------------------------------------------------------------------------


def _train_lm(tmp_path, implementation, alpha=0.5, steps=3):
    teacher, student = tiny_gpt2(seed=1), tiny_gpt2(seed=2, hidden=16, layers=1)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_args(
            tmp_path / implementation,
            max_steps=steps,
            alpha=alpha,
            kd_loss_implementation=implementation,
            kd_chunk_size=5,
            per_device_train_batch_size=4,
        ),  # fmt: skip
        train_dataset=lm_dataset(n=12),
    )
    trainer.train()
    history = [log for log in trainer.state.log_history if "loss_kd" in log]
    return student, history


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_trainer_fused_and_chunked_train_like_plain(tmp_path, alpha):
    plain, plain_logs = _train_lm(tmp_path, "plain", alpha)
    for implementation in ("fused", "chunked"):
        student, logs = _train_lm(tmp_path, implementation, alpha)
        assert [log["loss_kd"] for log in logs] == pytest.approx(
            [log["loss_kd"] for log in plain_logs], rel=1e-4
        )
        if alpha < 1:
            assert [log["loss_task"] for log in logs] == pytest.approx(
                [log["loss_task"] for log in plain_logs], rel=1e-4
            )
        for (name, got), want in zip(student.state_dict().items(), plain.state_dict().values()):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("hidden_state_weight", [0.0, 1.0])
def test_evaluation_uses_the_training_kd_loss(tmp_path, monkeypatch, hidden_state_weight):
    """evaluate() runs the KD implementation chosen for training (the fused loss, also with hidden-state
    matching on) and gives the plain loss's values; prediction logits are still handed out when asked for."""
    import hf_distill.terms.logits as logit_terms

    calls = {"n": 0}
    fused = logit_terms.fused_linear_distillation_loss

    def counting(*args, **kwargs):
        calls["n"] += 1
        return fused(*args, **kwargs)

    monkeypatch.setattr(logit_terms, "fused_linear_distillation_loss", counting)
    results, predictions = {}, {}
    for implementation in ("plain", "fused"):
        trainer = DistillationTrainer(
            model=tiny_gpt2(seed=2, hidden=16, layers=1),
            teacher_model=tiny_gpt2(seed=1),
            args=make_args(
                tmp_path / implementation,
                alpha=0.5,
                kd_loss_implementation=implementation,
                kd_chunk_size=5,
                hidden_state_weight=hidden_state_weight,
                per_device_eval_batch_size=4,
            ),
            eval_dataset=lm_dataset(n=8, seed=5),
        )
        assert trainer.kd_implementation == implementation
        before = calls["n"]
        results[implementation] = trainer.evaluate()
        assert (calls["n"] > before) == (implementation == "fused")
        predictions[implementation] = trainer.predict(lm_dataset(n=4, seed=6)).predictions
        assert predictions[implementation].shape == (4, 16, 60)
    np.testing.assert_allclose(predictions["fused"], predictions["plain"], rtol=1e-5, atol=1e-5)
    names = ["eval_loss", "eval_loss_kd", "eval_loss_task"] + (
        ["eval_loss_hidden"] if hidden_state_weight else []
    )
    for name in names:
        assert results["fused"][name] == pytest.approx(results["plain"][name], rel=1e-5), name


def test_closed_form_values_by_hand():
    """Two classes, T = 1: teacher logits (0, ln 3) -> p_t = (1/4, 3/4); student logits (0, 0) -> p_s = (1/2, 1/2).
    KL = 1/4 ln(1/2) + 3/4 ln(3/2) = 0.130812...; d/dz_s = p_s - p_t = (1/4, -1/4).
    Cross-entropy with label 1: ln 2 = 0.693147...; d/dz = (1/2, -1/2)."""
    from hf_distill.losses.fused.closed_form import cross_entropy_value_and_grad, forward_kl_value_and_grad

    student = torch.zeros(1, 2, dtype=torch.float64)
    teacher = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    values, grad, lse = forward_kl_value_and_grad(student, teacher, 1.0)
    assert values.item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-12)
    assert grad[0].tolist() == pytest.approx([0.25, -0.25], abs=1e-12)
    assert lse.item() == pytest.approx(math.log(4.0), abs=1e-12)
    values, grad = cross_entropy_value_and_grad(student, torch.tensor([1]))
    assert values.item() == pytest.approx(math.log(2.0), abs=1e-12)
    assert grad[0].tolist() == pytest.approx([0.5, -0.5], abs=1e-12)
