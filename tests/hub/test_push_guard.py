"""A push decides by content whether a folder holds a teacher: fingerprints of the teacher's weights, the
student's ``distillation`` record, and the teachers that ``report.json`` lists (``hf_distill.hub.push_guard``),
through ``push_student`` and ``hf-distill push``. No test reaches the Hub: ``HfApi`` is replaced."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from huggingface_hub import HfApi
from transformers import DataCollatorWithPadding

from hf_distill import DistillationTrainer, DistillationTrainingArguments, cli
from hf_distill.hub.push import push_student
from hf_distill.hub.push_guard import (
    FINGERPRINT_METHOD,
    SAMPLES,
    SIGNATURE_SIZE,
    file_tensors,
    files_holding,
    model_fingerprint,
    tensor_digest,
)
from hf_distill.students.build import student_from_teacher
from tests.helpers.hub import RecordingApiNoPatch, save_student
from tests.helpers.tiny_models import make_sentences, tiny_bert_classifier


def reference_digest(tensor: torch.Tensor) -> str:
    """The digest written out from its definition: entries i * (n - 1) // (k - 1), rounded to bfloat16."""
    flat = tensor.reshape(-1)
    n = flat.numel()
    k = min(n, SAMPLES)
    picked = torch.stack([flat[i * (n - 1) // (k - 1)] for i in range(k)]).to(torch.bfloat16)
    shape = "x".join(map(str, tensor.shape))
    raw = shape.encode() + picked.view(torch.int16).numpy().tobytes()
    return f"{shape}:{hashlib.blake2b(raw, digest_size=8).hexdigest()}"


class RecordingApi:
    """Stands in for HfApi: records each call; nothing reaches the Hub."""

    def __init__(self):
        self.calls: list[str] = []

    def install(self, monkeypatch):
        monkeypatch.setattr(HfApi, "create_repo", lambda api, *a, **k: self.calls.append("create_repo"))
        monkeypatch.setattr(HfApi, "upload_folder", lambda api, *a, **k: self.calls.append("upload_folder"))
        return self


@pytest.fixture
def teacher():
    return tiny_bert_classifier(seed=1, num_labels=2)


# ---- the fingerprint ------------------------------------------------------------------------------------


def test_digest_matches_its_definition_and_ignores_the_float_width():
    torch.manual_seed(0)
    big = torch.randn(40, 70)  # 2,800 entries: 1,024 of them are sampled
    small = torch.randn(3, 5)  # every entry
    for tensor in (big, small):
        assert tensor_digest(tensor) == reference_digest(tensor)
        assert tensor_digest(tensor.to(torch.bfloat16)) == reference_digest(tensor)
    # The sampled entry 0 moved by one bfloat16 step: another digest. An entry between samples: the same one.
    moved = big.clone()
    moved.view(-1)[0] = (big.view(-1)[0].to(torch.bfloat16).float() * (1 + 2**-6)).item()
    assert tensor_digest(moved) != tensor_digest(big)
    between = big.clone()
    between.view(-1)[1] += 1.0  # index 1 is not sampled: (n - 1) // (k - 1) = 2
    assert tensor_digest(between) == tensor_digest(big)
    assert tensor_digest(big).startswith("40x70:") and len(tensor_digest(big)) == len("40x70:") + 16


def test_tensors_that_cannot_identify_a_model_have_no_digest():
    assert tensor_digest(torch.ones(64)) is None  # a fresh LayerNorm
    assert tensor_digest(torch.arange(64)) is None  # integer buffers (position ids)
    assert tensor_digest(torch.empty(0)) is None
    assert tensor_digest(torch.randn(4, 4, device="meta")) is None


def test_fingerprint_is_the_largest_distinct_tensors(teacher):
    fingerprint = model_fingerprint(teacher)
    assert fingerprint["method"] == FINGERPRINT_METHOD
    state = teacher.state_dict()
    expected = []
    for name in sorted(state, key=lambda n: (-state[n].numel(), n)):
        digest = tensor_digest(state[name])
        if digest is not None and digest not in expected:
            expected.append(digest)
    assert fingerprint["tensors"] == expected[:SIGNATURE_SIZE]
    assert fingerprint["tensors"][0] == reference_digest(teacher.bert.embeddings.word_embeddings.weight)


def test_the_trainer_records_the_teachers_fingerprint_before_casting_it(
    tmp_path, wordpiece_tokenizer, teacher
):
    expected = model_fingerprint(copy.deepcopy(teacher))
    student = tiny_bert_classifier(seed=2, num_labels=2, hidden=16, layers=1)  # built by hand: no record yet
    texts = make_sentences(16, seed=0)
    data = Dataset.from_dict({**wordpiece_tokenizer(texts), "labels": [len(t) % 2 for t in texts]})
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        teacher_dtype="float16",
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=data,
        data_collator=DataCollatorWithPadding(wordpiece_tokenizer),
    )
    # float32 -> float16 -> bfloat16 rounds some entries differently from float32 -> bfloat16.
    assert model_fingerprint(trainer.teacher) != expected
    trainer.save_model(str(tmp_path / "saved"))
    record = json.loads((tmp_path / "saved" / "config.json").read_text())["distillation"]
    assert record["teacher_fingerprint"] == expected == trainer.teacher_fingerprint
    assert set(record) == {"teacher", "teacher_fingerprint"}


# ---- push_student and hf-distill push -------------------------------------------------------------------


def test_teacher_copy_under_another_name_is_found_by_content(tmp_path, monkeypatch, teacher):
    api = RecordingApi().install(monkeypatch)
    folder = save_student(tmp_path / "student", teacher)
    teacher.save_pretrained(folder / "big")  # no path part starts with "teacher"
    with pytest.raises(
        ValueError,
        match=r"holds the teacher's weights: big/model\.safetensors contain every tensor of the teacher "
        r"fingerprint in .*config\.json; hf_distill never uploads a teacher",
    ):
        push_student(folder, "me/x")
    assert api.calls == []


@pytest.mark.parametrize("how", ["bfloat16", "sharded", "state_dict_in_pt"])
def test_teacher_copy_in_another_form_is_found(tmp_path, monkeypatch, teacher, how):
    api = RecordingApi().install(monkeypatch)
    folder = save_student(tmp_path / "student", teacher)
    if how == "bfloat16":
        teacher.to(torch.bfloat16).save_pretrained(folder / "big")
        holding = r"big/model\.safetensors"
    elif how == "sharded":
        teacher.save_pretrained(folder / "big", max_shard_size="20KB")
        holding = (
            r"(big/model-0000\d-of-0000\d\.safetensors, )+big/model-0000\d-of-0000\d\.safetensors contain"
        )
    else:
        torch.save({"teacher": teacher.state_dict(), "step": 3}, folder / "extra.pt")
        holding = r"extra\.pt"
    with pytest.raises(ValueError, match=rf"holds the teacher's weights: {holding}"):
        push_student(folder, "me/x")
    assert api.calls == []


def test_shards_together_hold_the_teacher_but_one_alone_does_not(tmp_path, teacher):
    teacher.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = {p.name: p for p in tmp_path.glob("model-*.safetensors")}
    assert len(shards) >= 2
    fingerprint = model_fingerprint(teacher)
    holding, unreadable = files_holding(fingerprint, shards)
    assert unreadable == [] and len(holding) >= 2 and set(holding) <= set(shards)
    for name in holding:
        assert files_holding(fingerprint, {name: shards[name]}) == ([], [])
    assert sum(1 for _ in file_tensors(shards[holding[0]])) < len(teacher.state_dict())


def test_students_that_share_some_teacher_tensors_are_pushed(tmp_path, teacher):
    # A student cut from teacher layers holds copies of some teacher tensors, never all of them.
    api = RecordingApiNoPatch()
    folder = save_student(tmp_path / "student", teacher)
    push_student(folder, "me/x", api=api)
    assert api.calls == ["create_repo", "upload_folder"]


def test_trained_student_of_the_teachers_own_shape_is_pushed(tmp_path, wordpiece_tokenizer, teacher):
    # Every layer kept: the same names and shapes as the teacher. A few steps of training move the weights
    # across bfloat16 steps, so the content no longer matches; before training it is the teacher's own.
    student = student_from_teacher(teacher, num_layers=teacher.config.num_hidden_layers)
    texts = make_sentences(32, seed=0)
    data = Dataset.from_dict({**wordpiece_tokenizer(texts), "labels": [len(t) % 2 for t in texts]})
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=3,
        learning_rate=1e-4,
        per_device_train_batch_size=8,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
    )
    untrained = tmp_path / "untrained"
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=data,
        data_collator=DataCollatorWithPadding(wordpiece_tokenizer),
    )
    trainer.save_model(str(untrained))
    with pytest.raises(ValueError, match=r"holds the teacher's weights: model\.safetensors"):
        push_student(untrained, "me/x", api=RecordingApiNoPatch())
    trainer.train()
    trainer.save_model(str(tmp_path / "trained"))
    api = RecordingApiNoPatch()
    push_student(tmp_path / "trained", "me/x", api=api)
    assert api.calls == ["create_repo", "upload_folder"]


def recipe_run(tmp_path: Path, teacher, relative: bool = False) -> Path:
    """A run directory as the recipes write it: the fine-tuned teacher, a student, report.json naming both."""
    run = tmp_path / "runs" / "sentiment"
    teacher.save_pretrained(run / "teacher")
    student_dir = save_student(run / "students" / "teacher_layers-1L-distilled", teacher)
    where = (lambda p: os.path.relpath(p, tmp_path)) if relative else str
    report = {
        "task": "sentiment",
        "teacher": {"name_or_path": "minilm-l6", "fine_tuned_dir": where(run / "teacher")},
        "students": [{"name": student_dir.name, "kind": "distilled", "output_dir": where(student_dir)}],
    }
    (run / "report.json").write_text(json.dumps(report))
    return run


def test_cli_refuses_the_recipes_fine_tuned_teacher(tmp_path, monkeypatch, teacher, capsys):
    api = RecordingApi().install(monkeypatch)
    run = recipe_run(tmp_path, teacher)
    # The command line reports the refusal in one line and exits 2 (--debug raises it).
    assert cli.main(["push", str(run / "teacher"), "me/x"]) == 2
    assert re.search(
        r"runs/sentiment/teacher is the teacher that .*report\.json lists as teacher\.fine_tuned_dir "
        r".*never uploads a teacher\. Push a student folder of the run",
        capsys.readouterr().err,
    )
    with pytest.raises(
        ValueError, match=r"is the teacher that .*report\.json lists as teacher\.fine_tuned_dir"
    ):
        cli.main(["--debug", "push", str(run / "teacher"), "me/x"])
    teacher.save_pretrained(run / "teacher" / "checkpoint-2")  # a checkpoint of the teacher's fine-tune
    assert cli.main(["push", str(run / "teacher" / "checkpoint-2"), "me/x"]) == 2
    assert re.search(
        r"lies inside the teacher that .* lists as teacher\.fine_tuned_dir", capsys.readouterr().err
    )
    assert api.calls == []
    # The run's student is pushed, with its card written from the report two levels up.
    cli.main(["push", str(run / "students" / "teacher_layers-1L-distilled"), "me/x"])
    assert api.calls == ["create_repo", "upload_folder"]


def test_relative_paths_in_the_report_are_found_from_elsewhere(tmp_path, monkeypatch, teacher):
    api = RecordingApi().install(monkeypatch)
    run = recipe_run(tmp_path, teacher, relative=True)  # "runs/sentiment/teacher", as a recipe writes it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ValueError, match=r"is the teacher that .* lists as teacher\.fine_tuned_dir"):
        push_student(run / "teacher", "me/x")
    assert api.calls == []


def test_a_model_without_the_students_record_is_refused(tmp_path, monkeypatch, teacher):
    api = RecordingApi().install(monkeypatch)
    teacher.save_pretrained(tmp_path / "some_model")  # no report.json anywhere: only its content tells
    with pytest.raises(
        ValueError,
        match=r"config\.json has no `distillation` record, so .* is not a student saved by hf_distill .* "
        r"may be a teacher; hf_distill never uploads a teacher",
    ):
        push_student(tmp_path / "some_model", "me/x")
    assert api.calls == []


def test_student_without_a_fingerprint_is_checked_against_the_reports_teacher(tmp_path, monkeypatch, teacher):
    # Saved before fingerprints were recorded: the teacher is read from the folder report.json names.
    api = RecordingApi().install(monkeypatch)
    run = recipe_run(tmp_path, teacher)
    folder = run / "students" / "teacher_layers-1L-distilled"
    config = json.loads((folder / "config.json").read_text())
    del config["distillation"]["teacher_fingerprint"]
    (folder / "config.json").write_text(json.dumps(config))
    teacher.save_pretrained(folder / "big")
    with pytest.raises(
        ValueError, match=r"big/model\.safetensors contain every tensor of the teacher saved in .*/teacher"
    ):
        push_student(folder, "me/x")
    assert api.calls == []


def test_weight_file_that_cannot_be_read_is_refused(tmp_path, monkeypatch, teacher):
    api = RecordingApi().install(monkeypatch)
    folder = save_student(tmp_path / "student", teacher)
    (folder / "model.onnx").write_bytes(b"\x08\x07")
    with pytest.raises(
        ValueError, match=r"would upload model\.onnx, weight files hf_distill cannot read to tell them from"
    ):
        push_student(folder, "me/x")
    assert api.calls == []
