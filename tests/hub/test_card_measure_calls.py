"""The card's measurements (the teacher's metric on the evaluation set, a side-by-side latency run of teacher
and student) run at the final save, not at each checkpoint: counted over a run with several checkpoints."""

from __future__ import annotations

import concurrent.futures

import pytest
from datasets import Dataset
from huggingface_hub import HfApi, ModelCard
from transformers import DataCollatorWithPadding

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.hub import trainer_card
from hf_distill.students.build import student_from_teacher
from hf_distill.training.metrics import accuracy_f1
from tests.helpers.tiny_models import make_sentences, tiny_bert_classifier


def _dataset(tokenizer, n: int, seed: int) -> Dataset:
    texts = make_sentences(n, seed=seed)
    return Dataset.from_dict(
        {**tokenizer(texts, truncation=True, max_length=16), "labels": [len(t.split()) % 2 for t in texts]}
    )


@pytest.fixture
def counted(monkeypatch) -> dict[str, int]:
    """Counts the calls of the two measurements the card makes, and makes them cheap."""
    calls = {"latency": 0, "teacher_metrics": 0}

    def latency(models, batches, rounds=3):
        calls["latency"] += 1
        return {name: {1: 2.0 if name == "teacher" else 1.0, 32: 8.0} for name in models}

    def metrics(trainer, teacher, causal):
        calls["teacher_metrics"] += 1
        return {"accuracy": 0.5}

    monkeypatch.setattr(trainer_card, "side_by_side_latency_ms", latency)
    monkeypatch.setattr(trainer_card, "teacher_metrics", metrics)
    return calls


def _trainer(tmp_path, tokenizer, **kw) -> DistillationTrainer:
    teacher = tiny_bert_classifier(seed=1, num_labels=2)
    settings = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=8,
        max_steps=4,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    return DistillationTrainer(
        model=student_from_teacher(teacher, num_layers=1),
        teacher_model=teacher,
        args=DistillationTrainingArguments(**{**settings, **kw}),
        train_dataset=_dataset(tokenizer, 16, seed=0),
        eval_dataset=_dataset(tokenizer, 8, seed=1),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=accuracy_f1,
    )


def _measured(folder) -> dict:
    return ModelCard.load(folder / "README.md").data.distillation["measured"]


def test_four_checkpoints_and_a_final_save_measure_once(tmp_path, wordpiece_tokenizer, counted):
    trainer = _trainer(tmp_path, wordpiece_tokenizer)
    trainer.train()
    assert counted == {"latency": 0, "teacher_metrics": 0}
    for step in (1, 2, 3, 4):  # every checkpoint has its card, without the measurements
        measured = _measured(tmp_path / "run" / f"checkpoint-{step}")
        assert measured["teacher_latency_ms_b1"] is None and measured["teacher_metric"] is None
    trainer.save_model()
    assert counted == {"latency": 1, "teacher_metrics": 1}
    assert _measured(tmp_path / "run")["speedup_b1"] == pytest.approx(2.0)
    # A second save of the same step (another folder) reuses what was measured for it.
    trainer.save_model(str(tmp_path / "copy"))
    assert counted == {"latency": 1, "teacher_metrics": 1}
    assert _measured(tmp_path / "copy")["teacher_metric"] == 0.5


def test_push_to_hub_saves_and_writes_its_card_measuring_once(
    tmp_path, wordpiece_tokenizer, counted, monkeypatch
):
    uploads = []

    def create_repo(api, repo_id, **kwargs):
        class RepoUrl(str):
            pass

        url = RepoUrl(f"https://huggingface.co/{repo_id}")
        url.repo_id = repo_id
        return url

    def upload_folder(api, *, repo_id, folder_path, run_as_future=False, **kwargs):
        uploads.append(_measured(tmp_path / "run"))
        if run_as_future:  # checkpoint pushes upload in the background
            future = concurrent.futures.Future()
            future.set_result(None)
            return future
        return f"https://huggingface.co/{repo_id}/commit/0123abc"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    trainer = _trainer(
        tmp_path,
        wordpiece_tokenizer,
        push_to_hub=True,
        hub_model_id="someone/tiny-student",
        hub_strategy="every_save",
        max_steps=2,
    )
    trainer.train()
    # Each checkpoint push uploads output_dir with a card, unmeasured.
    assert len(uploads) == 2 and all(u["teacher_latency_ms_b1"] is None for u in uploads)
    assert counted == {"latency": 0, "teacher_metrics": 0}
    trainer.push_to_hub()  # save_model, then create_model_card: the same student, measured once
    assert counted == {"latency": 1, "teacher_metrics": 1}
    assert uploads[-1]["teacher_latency_ms_b1"] == pytest.approx(2.0)
