"""Cards written by ``DistillationTrainer`` alone measure the teacher's metric, retention and latency when an
evaluation set was given, instead of saying "not measured"."""

from __future__ import annotations

import time

import pytest
import torch
from datasets import Dataset
from huggingface_hub import ModelCard
from transformers import DataCollatorWithPadding

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.hub.card_measures import ratio
from hf_distill.students.build import student_from_teacher
from hf_distill.training.metrics import accuracy_f1
from tests.helpers.tiny_models import make_sentences, tiny_bert_classifier


def _dataset(tokenizer, n: int, seed: int) -> Dataset:
    texts = make_sentences(n, seed=seed)
    return Dataset.from_dict(
        {**tokenizer(texts, truncation=True, max_length=16), "labels": [len(t.split()) % 2 for t in texts]}
    )


def _train(tmp_path, tokenizer, *, eval_set: bool = True, compute_metrics=accuracy_f1) -> DistillationTrainer:
    teacher = tiny_bert_classifier(seed=1, num_labels=2)
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        max_steps=2,
        learning_rate=1e-3,
        eval_strategy="steps" if eval_set else "no",
        eval_steps=2,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        alpha=0.5,
    )
    trainer = DistillationTrainer(
        model=student_from_teacher(teacher, num_layers=1),
        teacher_model=teacher,
        args=args,
        train_dataset=_dataset(tokenizer, 16, seed=0),
        eval_dataset=_dataset(tokenizer, 20, seed=1) if eval_set else None,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics,
    )
    trainer.train()
    trainer.save_model()
    return trainer


@torch.inference_mode()
def _teacher_reference(trainer, tokenizer) -> tuple[float, float]:
    """The teacher's accuracy and mean cross-entropy on the evaluation set, computed here on one padded batch."""
    data = trainer.eval_dataset
    batch = DataCollatorWithPadding(tokenizer)([data[i] for i in range(len(data))])
    labels = batch.pop("labels")
    logits = trainer.teacher.eval()(**batch).logits
    accuracy = (logits.argmax(-1) == labels).float().mean().item()
    return accuracy, torch.nn.functional.cross_entropy(logits, labels).item()


def _card(trainer):
    card = ModelCard.load(f"{trainer.args.output_dir}/README.md")
    return card.data, card.text


def test_trainer_card_measures_teacher_metric_retention_and_latency(tmp_path, wordpiece_tokenizer):
    trainer = _train(tmp_path, wordpiece_tokenizer)
    accuracy, _ = _teacher_reference(trainer, wordpiece_tokenizer)
    data, body = _card(trainer)
    measured = data.distillation["measured"]
    student_accuracy = [e for e in trainer.state.log_history if "eval_accuracy" in e][-1]["eval_accuracy"]
    assert measured["teacher_metric"] == pytest.approx(accuracy)
    assert measured["retention"] == pytest.approx(student_accuracy / accuracy)
    for side in ("teacher", "student"):
        assert measured[f"{side}_latency_ms_b1"] > 0 and measured[f"{side}_latency_ms_b32"] > 0
    teacher_row = next(line for line in body.splitlines() if line.startswith("| `") and "| teacher |" in line)
    numbers = teacher_row.split("| teacher |")[1]  # the tiny teacher has no name: only its numbers count
    assert "not measured" not in numbers and numbers.startswith(f" {accuracy:.4g} | 100.0% |")
    student_row = next(line for line in body.splitlines() if line.startswith("| **distilled**"))
    assert f"| {100 * student_accuracy / accuracy:.1f}% |" in student_row
    speedup = measured["teacher_latency_ms_b1"] / measured["student_latency_ms_b1"]
    assert f"| {speedup:.2f}x |" in student_row


def test_without_a_task_metric_the_card_compares_task_cross_entropy(tmp_path, wordpiece_tokenizer):
    trainer = _train(tmp_path, wordpiece_tokenizer, compute_metrics=None)
    _, cross_entropy = _teacher_reference(trainer, wordpiece_tokenizer)
    data, _ = _card(trainer)
    assert data.distillation["metric_name"] == "loss_task" and data.distillation["higher_is_better"] is False
    # eval_loss is the student's objective (KD and task mixed); the task term is what compares with a teacher.
    student_task = [e for e in trainer.state.log_history if "eval_loss_task" in e][-1]["eval_loss_task"]
    assert data.distillation["student_metric"] == pytest.approx(student_task)
    measured = data.distillation["measured"]
    assert measured["teacher_metric"] == pytest.approx(cross_entropy, rel=1e-5)
    assert measured["retention"] == pytest.approx(cross_entropy / student_task, rel=1e-5)


def test_without_an_evaluation_set_nothing_is_measured(tmp_path, wordpiece_tokenizer):
    trainer = _train(tmp_path, wordpiece_tokenizer, eval_set=False)
    data, body = _card(trainer)
    assert data.distillation["measured"]["teacher_metric"] is None
    assert data.distillation["measured"]["teacher_latency_ms_b1"] is None
    assert "| teacher | not measured |" in body


def test_ratio_refuses_what_is_not_a_positive_number():
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None and ratio(1.0, 0.0) is None and ratio(float("nan"), 1.0) is None
    assert ratio(float("inf"), 1.0) is None and ratio(1.0, -2.0) is None


def test_teacher_and_student_take_turns_when_timed():
    from hf_distill.hub.card_measures import side_by_side_latency_ms

    calls: list[str] = []

    class Recorder(torch.nn.Module):
        def __init__(self, name: str):
            super().__init__()
            self.name, self.weight = name, torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            calls.append(self.name)
            return x * self.weight

    models = {"teacher": Recorder("teacher"), "student": Recorder("student")}
    times = side_by_side_latency_ms(models, {1: {"x": torch.ones(1)}}, rounds=3)
    assert set(times) == {"teacher", "student"} and all(times[n][1] > 0 for n in times)
    turns = [name for i, name in enumerate(calls) if i == 0 or calls[i - 1] != name]
    assert turns == ["teacher", "student"] * 3  # three rounds, each model once per round
    assert all(model.training for model in models.values())  # timed in eval mode, train mode restored


class _Forwards(torch.nn.Module):
    """Counts its forwards; each lasts ``seconds``."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.calls, self.weight = seconds, 0, torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        self.calls += 1
        time.sleep(self.seconds)
        return input_ids


def test_a_forward_longer_than_the_minimum_run_is_timed_once():
    from hf_distill.hub.card_measures import MIN_RUN_SECONDS, latency_ms

    slow, fast = _Forwards(MIN_RUN_SECONDS * 1.5), _Forwards(0.0)
    batches = {1: {"input_ids": torch.ones(1, 4, dtype=torch.long)}}
    measured = latency_ms(slow, batches)
    assert slow.calls == 1 and measured[1] >= MIN_RUN_SECONDS * 1.5 * 1000
    latency_ms(fast, batches)
    assert fast.calls > 2  # a fast forward is still timed by blocked_autorange, many runs
