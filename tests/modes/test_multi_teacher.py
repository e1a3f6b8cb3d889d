"""Multi-teacher distillation: the target is the weighted mixture of the teachers' distributions."""

from __future__ import annotations

import pytest
import torch

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.batch import DistillationBatch
from hf_distill.modes.multi_teacher import MultiTeacherDistillationTrainer, MultiTeacherTrainingArguments
from tests.helpers.modes import batch_of, classification_data, tiny_bert


def _args(tmp_path, cls=MultiTeacherTrainingArguments, **kw):
    defaults = dict(
        output_dir=str(tmp_path),
        report_to="none",
        per_device_train_batch_size=8,
        max_steps=3,
        dataloader_pin_memory=False,
    )
    defaults.update(kw)
    return cls(**defaults)


def _teachers():
    """Three teachers of different widths that prefer different classes (random tiny models are near uniform)."""
    teachers = [tiny_bert(seed=s, hidden=16 + 8 * i) for i, s in enumerate((1, 2, 3))]
    with torch.no_grad():
        for index, teacher in enumerate(teachers):
            teacher.classifier.bias.copy_(2.0 * torch.nn.functional.one_hot(torch.tensor(index), 3))
    return teachers


def test_target_is_the_weighted_mixture_of_teacher_probabilities(tmp_path):
    teachers, data = _teachers(), classification_data()
    args = _args(tmp_path, teacher_weights=[1.0, 2.0, 5.0], temperature=3.0)
    trainer = MultiTeacherDistillationTrainer(tiny_bert(seed=0), teacher_models=teachers, args=args)
    batch = {k: v for k, v in batch_of(data).items() if k != "labels"}
    target = torch.softmax(
        trainer.teacher_source.live(DistillationBatch.from_inputs(batch), {}).logits / 3.0, dim=-1
    )
    with torch.no_grad():
        probs = [torch.softmax(t(**batch).logits / 3.0, dim=-1) for t in teachers]
    expected = (1 * probs[0] + 2 * probs[1] + 5 * probs[2]) / 8
    torch.testing.assert_close(target, expected)


@pytest.mark.parametrize("weighting", ["max_prob", "entropy"])
def test_confidence_weights_per_example(tmp_path, weighting):
    teachers, data = _teachers(), classification_data()
    args = _args(tmp_path, teacher_weighting=weighting, temperature=2.0)
    trainer = MultiTeacherDistillationTrainer(tiny_bert(seed=0), teacher_models=teachers, args=args)
    batch = {k: v for k, v in batch_of(data).items() if k != "labels"}
    with torch.no_grad():
        p1 = [torch.softmax(t(**batch).logits, dim=-1) for t in teachers]
        p_t = [torch.softmax(t(**batch).logits / 2.0, dim=-1) for t in teachers]
    if weighting == "max_prob":
        raw = torch.stack([p.max(-1).values for p in p1])
    else:
        raw = torch.stack([torch.exp((p * p.log()).sum(-1)) for p in p1])  # exp(-H)
    weights = raw / raw.sum(0)
    torch.testing.assert_close(trainer.teacher_weights_for(batch), weights)
    expected = sum(w.unsqueeze(-1) * p for w, p in zip(weights, p_t))
    target = torch.softmax(
        trainer.teacher_source.live(DistillationBatch.from_inputs(batch), {}).logits / 2.0, dim=-1
    )
    torch.testing.assert_close(target, expected)
    # The weights differ between examples: they follow each teacher's confidence on each input.
    assert weights.std(dim=1).max() > 0


@pytest.mark.parametrize("loss", ["forward_kl", "jsd", "reverse_kl", "mse"])
def test_one_teacher_reduces_to_single_teacher_loss(tmp_path, loss):
    data = classification_data()
    batch = batch_of(data)
    single = DistillationTrainer(
        tiny_bert(seed=0),
        teacher_model=tiny_bert(seed=1),
        args=_args(tmp_path, DistillationTrainingArguments, distillation_loss=loss, temperature=2.0),
    )
    multi = MultiTeacherDistillationTrainer(
        tiny_bert(seed=0),
        teacher_models=[tiny_bert(seed=1)],
        args=_args(tmp_path, distillation_loss=loss, temperature=2.0),
    )
    single.model.eval()
    multi.model.eval()
    with torch.no_grad():
        expected = single.compute_loss(single.model, batch)
        got = multi.compute_loss(multi.model, batch)
    torch.testing.assert_close(got, expected)


def test_student_moves_toward_the_mixture(tmp_path):
    teachers, data = _teachers(), classification_data(n=32)
    args = _args(tmp_path, alpha=1.0, max_steps=12, learning_rate=1e-2, teacher_weights=[1.0, 1.0, 2.0])
    trainer = MultiTeacherDistillationTrainer(
        tiny_bert(seed=0), teacher_models=teachers, args=args, train_dataset=data
    )
    before = [p.clone() for t in teachers for p in t.parameters()]
    batch = batch_of(data)
    trainer.model.eval()
    with torch.no_grad():
        start = trainer.compute_loss(trainer.model, batch).item()
    trainer.train()
    trainer.model.eval()
    with torch.no_grad():
        end = trainer.compute_loss(trainer.model, batch).item()
    assert end < 0.5 * start
    assert all(torch.equal(a, b) for a, b in zip(before, (p for t in teachers for p in t.parameters())))


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="teacher_weighting 'vote' is unknown"):
        _args(tmp_path, teacher_weighting="vote")
    with pytest.raises(ValueError, match="computes its own weights"):
        _args(tmp_path, teacher_weighting="entropy", teacher_weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="finite numbers > 0"):
        _args(tmp_path, teacher_weights=[1.0, 0.0])
    args = _args(tmp_path, teacher_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="2 teacher_weights for 3 teachers"):
        MultiTeacherDistillationTrainer(tiny_bert(), teacher_models=_teachers(), args=args)
    with pytest.raises(ValueError, match="non-empty list of teacher models"):
        MultiTeacherDistillationTrainer(tiny_bert(), teacher_models=[], args=_args(tmp_path))
    with pytest.raises(TypeError, match="needs MultiTeacherTrainingArguments"):
        MultiTeacherDistillationTrainer(
            tiny_bert(), teacher_models=_teachers(), args=_args(tmp_path, DistillationTrainingArguments)
        )
    with pytest.raises(ValueError, match="use 'plain' \\(or 'auto'\\) here"):
        MultiTeacherDistillationTrainer(
            tiny_bert(), teacher_models=_teachers(), args=_args(tmp_path, kd_loss_implementation="fused")
        )
    with pytest.raises(ValueError, match="num_labels=3 but the teacher has num_labels=2"):
        MultiTeacherDistillationTrainer(
            tiny_bert(), teacher_models=[tiny_bert(), tiny_bert(num_labels=2)], args=_args(tmp_path)
        )
