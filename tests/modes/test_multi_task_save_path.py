"""``MultiTaskDistillationTrainer`` saves like every hf_distill trainer: complete-or-skipped checkpoints, the
model card, each teacher's fingerprint in the saved student, and a push that refuses any teacher's weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from huggingface_hub import HfApi
from transformers import (
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
)

from hf_distill import DistillationTrainingArguments
from hf_distill.hub.card import CARD_MARKER
from hf_distill.hub.push_guard import model_fingerprint
from hf_distill.modes.multi_task import (
    CONFIG_NAME,
    MultiTaskDataset,
    MultiTaskDistillationTrainer,
    MultiTaskStudent,
)
from hf_distill.training.checkpoints import MARKER_NAME, SAVING_NAME, checkpoint_problems
from tests.helpers.tiny_models import bert_config

HEADS = {"sentiment": ("sequence_classification", 3), "ner": ("token_classification", 5)}


def _teachers() -> dict:
    torch.manual_seed(1)
    sentiment = BertForSequenceClassification(bert_config(num_labels=3))
    torch.manual_seed(2)
    ner = BertForTokenClassification(bert_config(num_labels=5))
    return {"sentiment": sentiment, "ner": ner}


def _data() -> MultiTaskDataset:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 80, (8, 6), generator=generator).tolist()
    sentiment = Dataset.from_dict({"input_ids": ids, "labels": [i % 3 for i in range(8)]})
    ner = Dataset.from_dict({"input_ids": ids, "labels": [[t % 5 for t in r] for r in ids]})
    return MultiTaskDataset({"sentiment": sentiment, "ner": ner})


def _trainer(tmp_path, tokenizer, teachers=None, **kw) -> MultiTaskDistillationTrainer:
    torch.manual_seed(0)
    student = MultiTaskStudent(BertModel(bert_config(hidden=16), add_pooling_layer=False), HEADS)
    settings = dict(
        output_dir=str(tmp_path / "run"),
        report_to="none",
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=1e-2,
        dataloader_pin_memory=False,
        save_strategy="steps",
        save_steps=1,
        disable_tqdm=True,
    )
    collators = {
        "sentiment": DataCollatorWithPadding(tokenizer),
        "ner": DataCollatorForTokenClassification(tokenizer),
    }
    return MultiTaskDistillationTrainer(
        student,
        teachers if teachers is not None else _teachers(),
        DistillationTrainingArguments(**{**settings, **kw}),
        train_dataset=_data(),
        collators=collators,
    )


def test_checkpoints_are_written_atomically_and_resume_skips_an_incomplete_one(tmp_path, wordpiece_tokenizer):
    trainer = _trainer(tmp_path, wordpiece_tokenizer)
    trainer.train()
    run = tmp_path / "run"
    for step in (1, 2):
        folder = run / f"checkpoint-{step}"
        assert (folder / MARKER_NAME).is_file() and not (folder / SAVING_NAME).exists()
        assert checkpoint_problems(str(folder)) == []
    # A save cut short: the newer checkpoint is skipped, with the older one resumed from.
    (run / "checkpoint-2" / MARKER_NAME).unlink()
    (run / "checkpoint-2" / SAVING_NAME).write_text("{}")
    resumed = _trainer(tmp_path, wordpiece_tokenizer, max_steps=3)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 3
    assert [e["step"] for e in resumed.state.log_history if "train_runtime" in e] == [3]
    assert checkpoint_problems(str(run / "checkpoint-3")) == []


def test_saved_student_has_the_card_and_every_teachers_fingerprint(tmp_path, wordpiece_tokenizer):
    teachers = _teachers()
    trainer = _trainer(tmp_path, wordpiece_tokenizer, teachers=teachers, save_strategy="no")
    trainer.train()
    folder = tmp_path / "final"
    trainer.save_model(str(folder))
    readme = (folder / "README.md").read_text()
    assert readme.count(CARD_MARKER) == 1 and "MultiTaskStudent" in readme
    record = json.loads((folder / CONFIG_NAME).read_text())["distillation"]["teachers"]
    assert set(record) == {"sentiment", "ner"}
    for task, teacher in teachers.items():
        assert record[task]["teacher_fingerprint"] == json.loads(json.dumps(model_fingerprint(teacher)))
    # The record survives a reload, so a later push of the reloaded student still knows its teachers.
    assert MultiTaskStudent.from_pretrained(folder).distillation["teachers"] == record


def _fake_hub(monkeypatch) -> dict[str, list]:
    seen: dict[str, list] = {"repos": [], "uploads": []}

    def create_repo(api, repo_id, **kwargs):
        seen["repos"].append(repo_id)

        class RepoUrl(str):
            pass

        url = RepoUrl(f"https://huggingface.co/{repo_id}")
        url.repo_id = repo_id
        return url

    def upload_folder(api, *, repo_id, folder_path, **kwargs):
        seen["uploads"].append(Path(folder_path))
        return f"https://huggingface.co/{repo_id}/commit/0123abc"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return seen


def test_push_refuses_any_tasks_teacher_by_content_before_creating_the_repo(
    tmp_path, wordpiece_tokenizer, monkeypatch
):
    hub = _fake_hub(monkeypatch)
    teachers = _teachers()
    trainer = _trainer(
        tmp_path,
        wordpiece_tokenizer,
        teachers=teachers,
        save_strategy="no",
        push_to_hub=True,
        hub_model_id="someone/multi-task-student",
    )
    assert hub["repos"] == []  # Trainer would create it in its constructor, before any folder is checked
    trainer.train()
    teachers["ner"].save_pretrained(tmp_path / "run" / "copy")
    with pytest.raises(
        ValueError, match=r"copy/model\.safetensors contain every tensor of the trainer's teacher"
    ):
        trainer.push_to_hub()
    assert hub == {"repos": [], "uploads": []}
    (tmp_path / "run" / "copy").rename(tmp_path / "copy")
    trainer.push_to_hub()
    assert hub["repos"] == ["someone/multi-task-student"] and hub["uploads"] == [tmp_path / "run"]
    assert CARD_MARKER in (tmp_path / "run" / "README.md").read_text()
