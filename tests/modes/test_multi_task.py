"""Multi-task distillation: one encoder, a head and a teacher per task, single-task batches."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from datasets import Dataset
from transformers import (
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
    PreTrainedTokenizerFast,
)

from hf_distill import DistillationTrainingArguments
from hf_distill.modes.multi_task import (
    MultiTaskCollator,
    MultiTaskDataset,
    MultiTaskDistillationTrainer,
    MultiTaskStudent,
    TaskBatchSampler,
)
from tests.helpers.tiny_models import bert_config

HEADS = {"sentiment": ("sequence_classification", 3), "ner": ("token_classification", 5)}


def _student(seed: int = 0) -> MultiTaskStudent:
    torch.manual_seed(seed)
    return MultiTaskStudent(BertModel(bert_config(hidden=16), add_pooling_layer=False), HEADS)


def _teachers() -> dict:
    torch.manual_seed(1)
    sentiment = BertForSequenceClassification(bert_config(num_labels=3))
    torch.manual_seed(2)
    ner = BertForTokenClassification(bert_config(num_labels=5))
    return {"sentiment": sentiment, "ner": ner}


def _data(n_sentiment: int = 12, n_ner: int = 8, seed: int = 0) -> MultiTaskDataset:
    generator = torch.Generator().manual_seed(seed)

    def rows(n, length):
        return torch.randint(5, 80, (n, length), generator=generator).tolist()

    sentiment = Dataset.from_dict(
        {"input_ids": rows(n_sentiment, 6), "labels": [i % 3 for i in range(n_sentiment)]}
    )
    ner_ids = rows(n_ner, 5)
    ner = Dataset.from_dict({"input_ids": ner_ids, "labels": [[t % 5 for t in r] for r in ner_ids]})
    return MultiTaskDataset({"sentiment": sentiment, "ner": ner})


def _collators(wordpiece_tokenizer: PreTrainedTokenizerFast) -> dict:
    return {
        "sentiment": DataCollatorWithPadding(wordpiece_tokenizer),
        "ner": DataCollatorForTokenClassification(wordpiece_tokenizer),
    }


def _args(tmp_path, **kw):
    defaults = dict(
        output_dir=str(tmp_path),
        report_to="none",
        per_device_train_batch_size=4,
        max_steps=5,
        learning_rate=1e-2,
        dataloader_pin_memory=False,
        save_strategy="no",
    )
    defaults.update(kw)
    return DistillationTrainingArguments(**defaults)


def test_batches_are_single_task_and_cover_each_example_once_per_epoch():
    dataset = _data(n_sentiment=10, n_ner=7)
    ranges = dataset.task_ranges()
    batches = list(TaskBatchSampler(dataset, batch_size=4, seed=3))
    assert len(batches) == 3 + 2 == len(TaskBatchSampler(dataset, batch_size=4))
    for batch in batches:
        assert sum(all(i in r for i in batch) for r in ranges.values()) == 1
    assert sorted(i for b in batches for i in b) == list(range(17))
    assert dataset[9]["task"] == "sentiment" and dataset[10]["task"] == "ner"


def test_task_weights_set_how_often_each_task_is_drawn():
    data = _data(n_sentiment=40, n_ner=40)
    weighted = MultiTaskDataset(data.datasets, task_weights={"sentiment": 3.0, "ner": 1.0})
    sampler = TaskBatchSampler(weighted, batch_size=4, seed=0)
    ner_range = weighted.task_ranges()["ner"]
    counts = Counter("ner" if batch[0] in ner_range else "sentiment" for _ in range(20) for batch in sampler)
    assert counts["sentiment"] + counts["ner"] == 20 * 20
    assert 0.70 < counts["sentiment"] / 400 < 0.80  # 3:1 -> 0.75; binomial sd 0.022


def test_a_batch_trains_only_its_head_against_only_its_teacher(tmp_path, wordpiece_tokenizer):
    student, teachers = _student(), _teachers()
    calls = Counter()
    for task, teacher in teachers.items():
        teacher.register_forward_hook(lambda *a, task=task: calls.update([task]))
    trainer = MultiTaskDistillationTrainer(
        student, teachers, _args(tmp_path), train_dataset=_data(), collators=_collators(wordpiece_tokenizer)
    )
    for batch in trainer.get_train_dataloader():
        task = batch["task"]
        student.zero_grad(set_to_none=True)
        calls.clear()
        trainer.compute_loss(student, batch).backward()
        assert calls == Counter({task: 1})
        other = "ner" if task == "sentiment" else "sentiment"
        assert student.heads[other].weight.grad is None
        assert student.heads[task].weight.grad.abs().sum() > 0
        assert student.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
        expected_dim = 2 if task == "sentiment" else 3
        assert (
            student(**{k: v for k, v in batch.items() if k not in ("labels", "task")}, task=task)[
                "logits"
            ].dim()
            == expected_dim
        )


def test_training_moves_each_head_toward_its_teacher_and_saves_a_reloadable_student(
    tmp_path, wordpiece_tokenizer
):
    student, teachers = _student(), _teachers()
    teacher_state = {t: {k: v.clone() for k, v in m.state_dict().items()} for t, m in teachers.items()}
    data = _data(n_sentiment=16, n_ner=16)
    args = _args(tmp_path, alpha=1.0, max_steps=24, per_device_eval_batch_size=16)
    trainer = MultiTaskDistillationTrainer(
        student,
        teachers,
        args,
        train_dataset=data,
        eval_dataset=data,
        collators=_collators(wordpiece_tokenizer),
    )
    before = trainer.evaluate()
    trainer.train()
    after = trainer.evaluate()
    for task in HEADS:
        assert after[f"eval_loss_kd_{task}"] < 0.8 * before[f"eval_loss_kd_{task}"]
    for task, teacher in teachers.items():
        for name, value in teacher.state_dict().items():
            assert torch.equal(value, teacher_state[task][name])

    trainer.save_model(str(tmp_path / "student"))
    reloaded = MultiTaskStudent.from_pretrained(tmp_path / "student")
    student.eval()
    inputs = {"input_ids": torch.tensor([[5, 6, 7, 8]])}
    for task in HEADS:
        torch.testing.assert_close(
            reloaded(**inputs, task=task)["logits"], student(**inputs, task=task)["logits"]
        )


def test_errors(tmp_path, wordpiece_tokenizer):
    collators = _collators(wordpiece_tokenizer)
    with pytest.raises(ValueError, match="has kind 'regression'"):
        MultiTaskStudent(BertModel(bert_config(hidden=16)), {"x": ("regression", 1)})
    with pytest.raises(ValueError, match="task_weights names tasks"):
        MultiTaskDataset(_data().datasets, task_weights={"sentiment": 1.0})
    with pytest.raises(ValueError, match="task_weights must be > 0"):
        MultiTaskDataset(_data().datasets, task_weights={"sentiment": 1.0, "ner": 0.0})
    with pytest.raises(ValueError, match=r"tasks \['ner'\] are empty"):
        MultiTaskDataset(
            {"sentiment": _data().datasets["sentiment"], "ner": Dataset.from_dict({"input_ids": []})}
        )
    with pytest.raises(ValueError, match="A batch mixes the tasks"):
        MultiTaskCollator(collators)(
            [{"input_ids": [5], "task": "ner"}, {"input_ids": [6], "task": "sentiment"}]
        )
    with pytest.raises(ValueError, match="for task 'pos', but the student has heads"):
        _student()(input_ids=torch.tensor([[5, 6]]), task="pos")
    with pytest.raises(FileNotFoundError, match="does not hold a multi-task student"):
        MultiTaskStudent.from_pretrained(tmp_path)

    def build(student=None, teachers=None, args=None, **kw):
        kw.setdefault("collators", collators)
        return MultiTaskDistillationTrainer(
            student or _student(),
            teachers or _teachers(),
            args or _args(tmp_path),
            train_dataset=_data(),
            **kw,
        )

    with pytest.raises(TypeError, match="trains a MultiTaskStudent"):
        build(student=BertForSequenceClassification(bert_config()))
    with pytest.raises(ValueError, match="give exactly one teacher per head"):
        build(teachers={"sentiment": _teachers()["sentiment"]})
    with pytest.raises(ValueError, match="teacher of task 'ner' is a BertForSequenceClassification"):
        build(teachers={"sentiment": _teachers()["sentiment"], "ner": _teachers()["sentiment"]})
    with pytest.raises(ValueError, match="has num_labels=4 but the student's head has 3"):
        build(
            teachers={
                "sentiment": BertForSequenceClassification(bert_config(num_labels=4)),
                "ner": _teachers()["ner"],
            }
        )
    with pytest.raises(ValueError, match="multi-task distillation matches only the heads"):
        build(args=_args(tmp_path, hidden_state_weight=1.0))
    with pytest.raises(ValueError, match="Give collators="):
        build(collators=None)
    with pytest.raises(TypeError, match="wrap the task datasets in"):
        MultiTaskDistillationTrainer(
            _student(),
            _teachers(),
            _args(tmp_path),
            train_dataset=_data().datasets["ner"],
            collators=collators,
        )
