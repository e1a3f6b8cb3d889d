"""Self-distillation (EMA / snapshot teacher) and mutual learning (two students, both trained)."""

from __future__ import annotations

import pytest
import torch
from transformers import BertForSequenceClassification, TrainerCallback

from hf_distill import DistillationTrainingArguments
from hf_distill.losses.divergences import distillation_loss
from hf_distill.modes.mutual import MutualLearningTrainer
from hf_distill.modes.self_distillation import (
    SelfDistillationTrainer,
    SelfDistillationTrainingArguments,
    ema_update,
)
from tests.helpers.modes import batch_of, classification_data, tiny_bert


def _args(tmp_path, cls=SelfDistillationTrainingArguments, **kw):
    defaults = dict(
        output_dir=str(tmp_path),
        report_to="none",
        per_device_train_batch_size=8,
        max_steps=4,
        learning_rate=1e-2,
        dataloader_pin_memory=False,
        save_strategy="no",
    )
    defaults.update(kw)
    return cls(**defaults)


class _RecordStudent(TrainerCallback):
    """Keeps the student's parameters after each optimizer step (runs before the teacher's update callback
    would see a later step, since callbacks see the same post-step weights)."""

    def __init__(self, model):
        self.model, self.states = model, []

    def on_step_end(self, args, state, control, **kwargs):
        self.states.append({n: p.detach().clone() for n, p in self.model.named_parameters()})


def test_ema_teacher_follows_the_student_by_the_ema_formula(tmp_path):
    model, decay = tiny_bert(seed=0), 0.6
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = SelfDistillationTrainer(
        model, args=_args(tmp_path, ema_decay=decay), train_dataset=classification_data()
    )
    recorder = _RecordStudent(model)
    trainer.add_callback(recorder)
    trainer.train()
    expected = start
    for state in recorder.states:
        expected = {n: decay * expected[n] + (1 - decay) * state[n] for n in expected}
    teacher = dict(trainer.teacher.named_parameters())
    for name, value in expected.items():
        torch.testing.assert_close(teacher[name], value)
    # The teacher moved, but lags behind the student.
    assert any(not torch.equal(teacher[n], start[n]) for n in start)
    assert any(not torch.allclose(teacher[n], recorder.states[-1][n]) for n in start)
    assert all(not p.requires_grad for p in trainer.teacher.parameters())


def test_snapshot_teacher_is_the_student_of_the_last_refresh(tmp_path):
    model = tiny_bert(seed=0)
    args = _args(tmp_path, self_teacher="snapshot", snapshot_steps=2, max_steps=5)
    trainer = SelfDistillationTrainer(model, args=args, train_dataset=classification_data())
    recorder = _RecordStudent(model)
    trainer.add_callback(recorder)
    trainer.train()
    step4 = recorder.states[3]  # refreshed at steps 2 and 4, not at 5
    for name, value in trainer.teacher.named_parameters():
        torch.testing.assert_close(value, step4[name], rtol=0, atol=0)
    assert not torch.equal(recorder.states[4]["classifier.weight"], step4["classifier.weight"])


def test_ema_update_copies_integer_buffers_and_averages_floats():
    teacher, student = tiny_bert(seed=0), tiny_bert(seed=1)
    before = teacher.classifier.weight.detach().clone()
    ema_update(teacher, student, 0.25)
    torch.testing.assert_close(teacher.classifier.weight, 0.25 * before + 0.75 * student.classifier.weight)


def test_self_distillation_checkpoint_round_trip(tmp_path):
    data = classification_data()
    args = _args(tmp_path, ema_decay=0.5, max_steps=2, save_strategy="steps", save_steps=2)
    trainer = SelfDistillationTrainer(tiny_bert(seed=0), args=args, train_dataset=data)
    trainer.train()
    saved = {n: p.detach().clone() for n, p in trainer.teacher.named_parameters()}
    fresh = SelfDistillationTrainer(tiny_bert(seed=3), args=args, train_dataset=data)
    fresh._load_from_checkpoint(str(tmp_path / "checkpoint-2"))
    for name, value in fresh.teacher.named_parameters():
        torch.testing.assert_close(value, saved[name])
    (tmp_path / "checkpoint-2" / "self_distillation_teacher.pt").unlink()
    with pytest.raises(FileNotFoundError, match="holds no self-distillation teacher"):
        fresh._load_from_checkpoint(str(tmp_path / "checkpoint-2"))


def test_self_distillation_errors(tmp_path):
    with pytest.raises(ValueError, match="self_teacher 'mean' is unknown"):
        _args(tmp_path, self_teacher="mean")
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
        _args(tmp_path, ema_decay=1.0)
    with pytest.raises(ValueError, match="snapshot_steps must be >= 1"):
        _args(tmp_path, snapshot_steps=0)
    with pytest.raises(ValueError, match="do not pass teacher_model"):
        SelfDistillationTrainer(tiny_bert(), args=_args(tmp_path), teacher_model=tiny_bert())
    with pytest.raises(TypeError, match="needs SelfDistillationTrainingArguments"):
        SelfDistillationTrainer(tiny_bert(), args=_args(tmp_path, DistillationTrainingArguments))


# ---- mutual learning ----------------------------------------------------------------------------------


def _mutual(tmp_path, **kw):
    args = _args(tmp_path, DistillationTrainingArguments, **kw)
    return MutualLearningTrainer(
        tiny_bert(seed=0),
        peer_model=tiny_bert(seed=1, hidden=24),
        args=args,
        train_dataset=classification_data(),
    )


def test_mutual_learning_trains_both_students_toward_each_other(tmp_path):
    # alpha=1: no labels are used, so every change comes from each student learning the other.
    trainer = _mutual(tmp_path, alpha=1.0, max_steps=10)
    a, b = trainer.model, trainer.peer
    with torch.no_grad():  # random tiny models agree (near-uniform outputs); make them disagree first
        a.classifier.bias.copy_(torch.tensor([3.0, 0.0, 0.0]))
        b.classifier.bias.copy_(torch.tensor([0.0, 0.0, 3.0]))
    a0 = [p.detach().clone() for p in a.parameters()]
    b0 = [p.detach().clone() for p in b.parameters()]
    batch = {k: v for k, v in batch_of(classification_data()).items() if k != "labels"}

    def disagreement():
        a.eval(), b.eval()
        with torch.no_grad():
            return distillation_loss(a(**batch).logits, b(**batch).logits, temperature=1.0).item()

    start = disagreement()
    trainer.train()
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), a0))
    assert any(not torch.equal(p, q) for p, q in zip(b.parameters(), b0))
    assert disagreement() < 0.5 * start


def test_mutual_gradients_are_each_students_own_loss(tmp_path):
    # No dropout: the training-mode forward passes below must be repeatable.
    no_dropout = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    args = _args(tmp_path, DistillationTrainingArguments, alpha=0.5, temperature=2.0)
    a, b = tiny_bert(seed=0, **no_dropout), tiny_bert(seed=1, hidden=24, **no_dropout)
    trainer = MutualLearningTrainer(a, peer_model=b, args=args)
    batch = batch_of(classification_data())
    a.train()
    trainer.compute_loss(a, batch, num_items_in_batch=len(batch["labels"])).backward()
    grad_b = [p.grad.clone() for p in b.parameters()]
    a.zero_grad(), b.zero_grad()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        target_a = a(**inputs).logits
    logits_b = b(**inputs).logits
    own = 0.5 * distillation_loss(
        logits_b, target_a, temperature=2.0
    ) + 0.5 * torch.nn.functional.cross_entropy(logits_b, batch["labels"])
    own.backward()
    for got, want in zip(grad_b, (p.grad for p in b.parameters())):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("max_grad_norm", [0.5, 0.0])
def test_mutual_clips_the_peers_gradients_like_the_students(tmp_path, max_grad_norm):
    args = _args(tmp_path, DistillationTrainingArguments, max_grad_norm=max_grad_norm)
    a, b = tiny_bert(seed=0), tiny_bert(seed=1)
    trainer = MutualLearningTrainer(a, peer_model=b, args=args)
    optimizer = trainer.create_optimizer()
    for p in b.parameters():
        p.grad = torch.full_like(p, 3.0)
    before = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in b.parameters()])).item()
    optimizer.step()
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in b.parameters()])).item()
    if max_grad_norm:
        assert before > 10 and after == pytest.approx(max_grad_norm, rel=1e-4)
    else:  # 0 turns clipping off, as for Trainer
        assert after == pytest.approx(before)


def test_mutual_saves_both_students_to_their_folders(tmp_path):
    trainer = _mutual(tmp_path, max_steps=2)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    loaded_a = BertForSequenceClassification.from_pretrained(tmp_path / "final" / "student_a")
    loaded_b = BertForSequenceClassification.from_pretrained(tmp_path / "final" / "student_b")
    torch.testing.assert_close(loaded_a.classifier.weight, trainer.model.classifier.weight)
    torch.testing.assert_close(loaded_b.classifier.weight, trainer.peer.classifier.weight)
    assert loaded_b.config.hidden_size == 24
    with pytest.raises(FileNotFoundError, match="has no student_a/ and student_b/"):
        trainer._load_from_checkpoint(str(tmp_path / "final" / "student_a"))


def test_mutual_errors(tmp_path):
    args = _args(tmp_path, DistillationTrainingArguments)
    with pytest.raises(ValueError, match="needs `peer_model`"):
        MutualLearningTrainer(tiny_bert(), args=args)
    with pytest.raises(ValueError, match="Pass the second student as peer_model"):
        MutualLearningTrainer(tiny_bert(), peer_model=tiny_bert(), teacher_model=tiny_bert(), args=args)
    with pytest.raises(ValueError, match="value_relation_weight are not supported"):
        MutualLearningTrainer(
            tiny_bert(),
            peer_model=tiny_bert(),
            args=_args(tmp_path, DistillationTrainingArguments, hidden_state_weight=1.0),
        )
    with pytest.raises(ValueError, match="num_labels=3 but the teacher has num_labels=2"):
        MutualLearningTrainer(tiny_bert(), peer_model=tiny_bert(num_labels=2), args=args)
