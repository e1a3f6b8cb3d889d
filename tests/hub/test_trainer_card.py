"""The DistillationTrainer's model cards and its ``push_to_hub``: our card, the student's files, never the teacher.

No test reaches the Hub: the ``HfApi`` methods that Trainer's push path calls are replaced by fakes that
record what would have been uploaded (the files ``upload_folder`` would send, after its ignore patterns).
"""

from __future__ import annotations

import concurrent.futures
import logging
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset
from huggingface_hub import HfApi
from huggingface_hub.utils import filter_repo_objects
from safetensors.torch import load_file
from transformers import DataCollatorWithPadding

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.hub.card import CARD_MARKER
from hf_distill.reports.report import format_count, format_metric
from hf_distill.students.build import count_parameters, student_from_config, student_from_teacher
from hf_distill.training.metrics import accuracy_f1
from tests.helpers.tiny_models import make_sentences, tiny_bert_classifier

TEACHER_ID = "someone/tiny-bert-teacher"
TEACHER_REVISION = "0123456789abcdef0123456789abcdef01234567"


def front_matter(path: Path) -> tuple[dict, str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), text[:200]
    yaml_text, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(yaml_text), body


def dataset(tokenizer, n: int, seed: int) -> Dataset:
    texts = make_sentences(n, seed=seed)
    return Dataset.from_dict(
        {**tokenizer(texts, truncation=True, max_length=16), "labels": [len(t.split()) % 2 for t in texts]}
    )


def hub_teacher():
    """A tiny teacher that looks like a Hub checkpoint: a repo id and a pinned commit."""
    teacher = tiny_bert_classifier(seed=1, num_labels=2)
    teacher.name_or_path = TEACHER_ID
    teacher.config._commit_hash = TEACHER_REVISION
    return teacher


def make_trainer(tmp_path, tokenizer, student=None, teacher=None, **kw) -> DistillationTrainer:
    teacher = teacher if teacher is not None else hub_teacher()
    student = student if student is not None else student_from_teacher(teacher, num_layers=1)
    defaults = dict(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=8,
        max_steps=4,
        learning_rate=1e-3,
        logging_steps=2,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        temperature=3.5,
        alpha=0.25,
    )
    defaults.update(kw)
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=DistillationTrainingArguments(**defaults),
        train_dataset=dataset(tokenizer, 48, seed=0),
        eval_dataset=dataset(tokenizer, 20, seed=1),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=accuracy_f1,
    )


def last_eval(trainer) -> dict:
    return [e for e in trainer.state.log_history if "eval_accuracy" in e][-1]


# ---- the card in every saved folder -------------------------------------------------------------------------


def test_saved_student_folder_has_card_with_the_runs_numbers(tmp_path, wordpiece_tokenizer):
    trainer = make_trainer(tmp_path, wordpiece_tokenizer)
    trainer.train()
    folder = tmp_path / "final"
    trainer.save_model(str(folder))

    metadata, body = front_matter(folder / "README.md")
    assert metadata["base_model"] == TEACHER_ID
    assert metadata["library_name"] == "transformers"
    assert "distillation" in metadata["tags"]
    settings = metadata["distillation"]
    assert settings["temperature"] == 3.5 and settings["alpha"] == 0.25
    assert settings["distillation_loss"] == "forward_kl"
    assert settings["teacher"] == TEACHER_ID and settings["teacher_revision"] == TEACHER_REVISION
    layers = trainer.model.config.distillation["layers"]
    assert settings["student_init"] == f"teacher layers {layers}"

    assert body.lstrip().startswith(CARD_MARKER)
    assert f"(revision `{TEACHER_REVISION}`)" in body
    assert "- Temperature T: 3.5" in body and "- alpha (weight of the distillation term): 0.25" in body
    assert f"- Initialised from: teacher layers {layers}" in body
    assert "- Examples: 48 train, 20 validation" in body
    assert (
        "- Architecture: `BertForSequenceClassification` (model type `bert`): 1 layers, hidden size 32"
        in body
    )
    rows = [line for line in body.splitlines() if line.startswith("| ")]
    assert "accuracy (higher is better)" in rows[0]
    student_row = [cell.strip() for cell in rows[2].strip("|").split("|")]
    assert student_row[0] == "**distilled** (this model)"
    assert student_row[2] == format_metric(last_eval(trainer)["eval_accuracy"])
    assert student_row[4] == format_count(count_parameters(trainer.model))
    assert student_row[5] != "not measured"  # size on disk, from the saved weights
    teacher_row = [cell.strip() for cell in rows[1].strip("|").split("|")]
    assert teacher_row[0] == f"`{TEACHER_ID}`"
    assert teacher_row[4] == format_count(count_parameters(trainer.teacher))


def test_each_checkpoint_has_the_card_of_its_step(tmp_path, wordpiece_tokenizer):
    trainer = make_trainer(tmp_path, wordpiece_tokenizer, save_strategy="steps", save_steps=2)
    trainer.train()
    evals = {e["step"]: e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e}
    for step in (2, 4):
        folder = tmp_path / "run" / f"checkpoint-{step}"
        metadata, body = front_matter(folder / "README.md")
        assert metadata["distillation"]["temperature"] == 3.5
        student_row = [line for line in body.splitlines() if line.startswith("| **distilled**")][0]
        # The evaluation of that step ran before the save, so the card holds it.
        assert f"| {format_metric(evals[step])} |" in student_row


def test_hand_written_readme_is_kept(tmp_path, wordpiece_tokenizer, caplog):
    trainer = make_trainer(tmp_path, wordpiece_tokenizer, max_steps=1, eval_strategy="no")
    folder = tmp_path / "final"
    folder.mkdir()
    (folder / "README.md").write_text("# My own card\n")
    with caplog.at_level(logging.WARNING, logger="hf_distill.hub.trainer_card"):
        trainer.save_model(str(folder))
    assert (folder / "README.md").read_text() == "# My own card\n"
    assert "written by hand" in caplog.text
    assert (folder / "model.safetensors").is_file()


def test_card_before_any_evaluation_reads_not_measured(tmp_path, wordpiece_tokenizer):
    # A student built from a config (no teacher layers), saved before training or evaluating.
    teacher = hub_teacher()
    student = student_from_config(teacher, num_hidden_layers=1, hidden_size=16, intermediate_size=32)
    trainer = make_trainer(tmp_path, wordpiece_tokenizer, student=student, teacher=teacher)
    trainer.save_model(str(tmp_path / "untrained"))
    metadata, body = front_matter(tmp_path / "untrained" / "README.md")
    assert "model-index" not in metadata  # no score yet
    assert metadata["distillation"]["student_init"] == "random"
    student_row = [line for line in body.splitlines() if line.startswith("| **distilled**")][0]
    assert student_row.split("|")[3].strip() == "not measured"


# ---- push_to_hub with the Hub client replaced -------------------------------------------------------------


class FakeHub:
    """Stands in for the HfApi methods Trainer's push path calls; records what each upload would send."""

    def __init__(self):
        self.repos: list[str] = []
        self.uploads: list[dict] = []

    def install(self, monkeypatch):
        fake = self

        def create_repo(api, repo_id, **kwargs):
            fake.repos.append(repo_id)

            class RepoUrl(str):
                pass

            url = RepoUrl(f"https://huggingface.co/{repo_id}")
            url.repo_id = repo_id
            return url

        def upload_folder(api, *, repo_id, folder_path, ignore_patterns=None, run_as_future=False, **kwargs):
            root = Path(folder_path)
            paths = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
            sent = sorted(filter_repo_objects(paths, ignore_patterns=ignore_patterns))
            readme = root / "README.md"
            fake.uploads.append(
                {
                    "repo_id": repo_id,
                    "folder": root,
                    "files": sent,
                    "readme": readme.read_text() if "README.md" in sent else None,
                    "tensors": {
                        name: load_file(root / name) for name in sent if name.endswith(".safetensors")
                    },
                }
            )
            if run_as_future:
                future = concurrent.futures.Future()
                future.set_result(None)
                return future
            return f"https://huggingface.co/{repo_id}/commit/0123abc"

        def create_commit(api, *args, **kwargs):
            raise AssertionError("push_to_hub reached create_commit: something bypassed upload_folder")

        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        return self


def shapes(tensors: dict[str, torch.Tensor]) -> set[tuple[int, ...]]:
    return {tuple(t.shape) for t in tensors.values()}


def test_push_to_hub_uploads_the_student_with_our_card_and_no_teacher(
    tmp_path, wordpiece_tokenizer, monkeypatch
):
    hub = FakeHub().install(monkeypatch)
    teacher = hub_teacher()
    # Narrower than the teacher, so every teacher tensor but the biases of the 2-label head has its own shape.
    student = student_from_config(teacher, num_hidden_layers=1, hidden_size=16, intermediate_size=32)
    trainer = make_trainer(
        tmp_path,
        wordpiece_tokenizer,
        student=student,
        teacher=teacher,
        push_to_hub=True,
        hub_model_id="someone/tiny-student",
        hub_strategy="end",
    )
    trainer.train()
    trainer.push_to_hub()

    assert hub.repos == ["someone/tiny-student"]
    (upload,) = hub.uploads
    assert upload["repo_id"] == "someone/tiny-student" and upload["folder"] == tmp_path / "run"
    assert "model.safetensors" in upload["files"] and "config.json" in upload["files"]
    assert not any("teacher" in name.lower() for name in upload["files"])
    assert not any(name.startswith("checkpoint-") for name in upload["files"])

    uploaded = upload["tensors"]["model.safetensors"]
    student_state = trainer.model.state_dict()
    assert set(uploaded) <= set(student_state)
    for name, tensor in uploaded.items():
        torch.testing.assert_close(tensor, student_state[name])
    teacher_only = shapes(teacher.state_dict()) - shapes(student_state)
    assert len(teacher_only) >= 4
    for name, tensors in upload["tensors"].items():
        assert not shapes(tensors) & teacher_only, f"{name} holds a tensor of the teacher's shape"

    text = upload["readme"]
    assert text is not None and CARD_MARKER in text
    metadata = yaml.safe_load(text[4:].split("\n---\n", 1)[0])
    assert metadata["base_model"] == TEACHER_ID
    assert metadata["distillation"]["temperature"] == 3.5 and metadata["distillation"]["alpha"] == 0.25
    assert metadata["distillation"]["teacher"] == TEACHER_ID
    assert "\n# tiny-student\n" in text  # Trainer's push names the card after the repo
    assert 'from_pretrained("someone/tiny-student")' in text
    assert "generated automatically according to the information the Trainer" not in text


def test_push_to_hub_refuses_teacher_weights_before_uploading(tmp_path, wordpiece_tokenizer, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    teacher = hub_teacher()
    trainer = make_trainer(
        tmp_path,
        wordpiece_tokenizer,
        teacher=teacher,
        push_to_hub=True,
        hub_model_id="someone/tiny-student",
        max_steps=1,
        eval_strategy="no",
    )
    teacher.save_pretrained(tmp_path / "run" / "teacher_model")
    with pytest.raises(
        ValueError, match=r"holds teacher weights \(teacher_model/model.safetensors\).*never uploads"
    ):
        trainer.push_to_hub()
    assert hub.uploads == []


def test_push_to_hub_refuses_the_teachers_own_folder_inside_output_dir(
    tmp_path, wordpiece_tokenizer, monkeypatch
):
    hub = FakeHub().install(monkeypatch)
    source = hub_teacher()
    source.save_pretrained(tmp_path / "run" / "big_model")
    teacher = type(source).from_pretrained(tmp_path / "run" / "big_model")
    trainer = make_trainer(
        tmp_path,
        wordpiece_tokenizer,
        teacher=teacher,
        push_to_hub=True,
        hub_model_id="someone/tiny-student",
        max_steps=1,
        eval_strategy="no",
    )
    with pytest.raises(
        ValueError, match=r"holds teacher weights \(big_model/\).*outside the trainer's output_dir"
    ):
        trainer.push_to_hub()
    assert hub.uploads == []


def test_checkpoint_pushes_carry_our_card(tmp_path, wordpiece_tokenizer, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    trainer = make_trainer(
        tmp_path,
        wordpiece_tokenizer,
        push_to_hub=True,
        hub_model_id="someone/tiny-student",
        hub_strategy="every_save",
        save_strategy="steps",
        save_steps=2,
    )
    trainer.train()
    assert [u["folder"] for u in hub.uploads] == [tmp_path / "run"] * 2
    for upload in hub.uploads:
        assert "model.safetensors" in upload["files"] and CARD_MARKER in upload["readme"]
        assert not any(name.startswith(("checkpoint-", "_")) for name in upload["files"])


# ---- check first, then create the repo ----------------------------------------------------------------------


def pushing_trainer(tmp_path, tokenizer, teacher, **kw) -> DistillationTrainer:
    settings = dict(push_to_hub=True, hub_model_id="someone/tiny-student", max_steps=1, eval_strategy="no")
    return make_trainer(tmp_path, tokenizer, teacher=teacher, **{**settings, **kw})


def test_refused_push_creates_no_repo(tmp_path, wordpiece_tokenizer, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    teacher = hub_teacher()
    trainer = pushing_trainer(tmp_path, wordpiece_tokenizer, teacher)
    assert hub.repos == []  # Trainer would have created it here, before anything was checked
    teacher.save_pretrained(tmp_path / "run" / "teacher_model")
    with pytest.raises(ValueError, match=r"holds teacher weights \(teacher_model/model.safetensors\)"):
        trainer.push_to_hub()
    assert hub.repos == [] and hub.uploads == []


def test_push_to_hub_finds_a_teacher_copy_by_content(tmp_path, wordpiece_tokenizer, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    teacher = hub_teacher()  # a Hub id, not a local folder: only the content can tell
    trainer = pushing_trainer(tmp_path, wordpiece_tokenizer, teacher)
    trainer.train()
    teacher.save_pretrained(tmp_path / "run" / "big")
    with pytest.raises(
        ValueError,
        match=r"holds the teacher's weights: big/model\.safetensors contain every tensor of the trainer's "
        r"teacher; hf_distill never uploads a teacher",
    ):
        trainer.push_to_hub()
    assert hub.repos == [] and hub.uploads == []
    # Moved out of the folder, the same push goes through and creates the repo first.
    (tmp_path / "run" / "big").rename(tmp_path / "big")
    trainer.push_to_hub()
    assert hub.repos == ["someone/tiny-student"] and len(hub.uploads) == 1


def test_checkpoint_push_checks_before_creating_the_repo(tmp_path, wordpiece_tokenizer, monkeypatch):
    hub = FakeHub().install(monkeypatch)
    teacher = hub_teacher()
    trainer = pushing_trainer(
        tmp_path, wordpiece_tokenizer, teacher, hub_strategy="every_save", save_strategy="steps", save_steps=1
    )
    teacher.save_pretrained(tmp_path / "run" / "big")
    with pytest.raises(ValueError, match=r"holds the teacher's weights: big/model\.safetensors"):
        trainer.train()
    assert hub.repos == [] and hub.uploads == []
