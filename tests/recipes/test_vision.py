"""The vision task: digits images (offline) and an image folder through ``datasets``, and the recipe end to end
on a few steps (ResNet teacher trained from scratch -> plain CNN student, KD + feature maps, no-KD baseline)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_distill import cli
from hf_distill.recipes.data_vision import load_digits_images, load_image_dataset, stratified_split
from hf_distill.reports.report import load_report
from tests.helpers.paths import RECIPES


def test_digits_are_upsampled_standardised_and_split_by_class():
    splits = load_digits_images(16, seed=0)
    assert {n: len(s) for n, s in splits.items()} == {"train": 1077, "validation": 360, "test": 360}
    train = splits["train"][:]
    assert train["pixel_values"].shape == (1077, 1, 16, 16) and train["pixel_values"].dtype == torch.float32
    assert abs(train["pixel_values"].mean().item()) < 1e-4 and train[
        "pixel_values"
    ].std().item() == pytest.approx(1.0, abs=1e-3)
    for split in splits.values():  # every class in every split, in its share (stratified)
        counts = np.bincount(split[:]["labels"].numpy(), minlength=10)
        assert counts.min() > 0.08 * len(split) and counts.max() < 0.12 * len(split)
    rows = stratified_split(np.repeat(np.arange(4), 25), seed=1, validation_size=0.2, test_size=0.2)
    together = np.concatenate(list(rows.values()))
    assert len(together) == len(set(together)) == 100, "the splits overlap or drop rows"
    with pytest.raises(ValueError, match="leaves no rows for training"):
        stratified_split(np.zeros(10), seed=0, validation_size=0.5, test_size=0.5)


def test_an_image_folder_loads_through_datasets(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 4)):
        for label in ("cat", "dog"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    splits = load_image_dataset("imagefolder", train_dir=str(tmp_path), image_size=8, channels=3, seed=0)
    assert set(splits) == {"train", "validation", "test"} and len(splits["test"]) == 8
    assert len(splits["train"]) + len(splits["validation"]) == 24
    assert splits["train"].features["labels"].names == ["cat", "dog"]
    assert splits["test"][:]["pixel_values"].shape == (8, 3, 8, 8)
    with pytest.raises(ValueError, match="--label_column 'breed' is not a column"):
        load_image_dataset("imagefolder", train_dir=str(tmp_path), label_column="breed")


def run_vision(argv: list[str]) -> dict:
    spec = importlib.util.spec_from_file_location("recipe_vision", RECIPES / "vision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_vision_recipe_resnet_teacher_to_plain_cnn(tmp_path):
    out = tmp_path / "run"
    flags = {
        "config": str(RECIPES / "configs" / "vision_smoke.yaml"),
        "output_dir": str(out),
        "report_to": "none",
        "disable_tqdm": "true",
        "use_cpu": "true",
        "max_train_samples": "32",
        "max_eval_samples": "16",
        "max_test_samples": "32",
        "per_device_train_batch_size": "16",
        "logging_steps": "1",
    }
    report = run_vision([item for key, value in flags.items() for item in (f"--{key}", value)])
    on_disk = load_report(out)
    assert on_disk["task"] == report["task"] == "image_classification"
    assert report["teacher"]["fine_tuned_dir"] == str(out / "teacher"), "the ResNet is trained from scratch"
    assert report["distillation"]["feature_map_weight"] == 1.0
    assert report["distillation"]["feature_layers"] == "features.1:resnet.encoder.stages.1"
    assert (out / "teacher" / "config.json").is_file()
    students = {s["kind"]: s for s in report["students"]}
    assert set(students) == {"distilled", "no_kd_baseline"}
    for student in students.values():
        assert (Path(student["output_dir"]) / "model.safetensors").is_file()
        assert student["parameters"] < report["teacher"]["parameters"]
        assert 0.0 <= student["metric"] <= 1.0
    distilled = [e for e in report["log_history"]["cnn-distilled"] if "loss" in e]
    baseline = [e for e in report["log_history"]["cnn-no_kd"] if "loss" in e]
    assert len(distilled) == len(baseline) == 2
    assert all("loss_kd" in e and e["loss_feature_map"] > 0 for e in distilled)
    assert not any("loss_kd" in e for e in baseline)
    # One initial CNN for both; the baseline's loss is the cross-entropy the distilled run logs as loss_task.
    assert distilled[0]["loss_task"] == pytest.approx(baseline[0]["loss"], rel=1e-4)

    # The card of a plain-CNN student distilled from a teacher trained in the run: no transformers library, no
    # Hub base model (the teacher has no id), a snippet that loads the state dict into the class.
    from huggingface_hub import ModelCard

    from hf_distill import write_model_card

    for student in students.values():
        assert student["model_class"].endswith("SmallCNN") or "CNN" in student["model_class"]
        card = ModelCard.load(write_model_card(student["output_dir"], report, student_name=student["name"]))
        assert card.data.library_name is None and card.data.base_model is None
        assert "pytorch" in card.data.tags and "from_pretrained" not in card.text
        assert "load_state_dict" in card.text and "trained from scratch" in card.text


def test_cli_trains_vision_but_refuses_eval_with_a_clear_message(capsys):
    assert cli.TASK_KINDS["vision"] == "image_classification"
    assert cli.main(["eval", "vision", "--model_name_or_path", "runs/vision/students/cnn-distilled"]) == 2
    assert "hf-distill eval vision is not available" in capsys.readouterr().err
