"""recipes/multi_task.py end to end on tiny models: one encoder for sentiment and NER against a student per task."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertForSequenceClassification

from hf_distill.modes.multi_task import MultiTaskStudent
from hf_distill.recipes.multi_task import REPORT_NAME, MultiTaskArguments
from tests.helpers.recipes import (
    needs_rotten_tomatoes,
    run_recipe,
    save_tiny_teacher,
    tiny_flags,
    write_conll,
)


@pytest.mark.parametrize(
    "tasks, match",
    [
        (["sentiment"], r"two or more different tasks of \('sentiment', 'ner'\)"),
        (["sentiment", "sentiment"], "two or more different tasks"),
        (["sentiment", "pos"], r"\['pos'\] are unknown"),
    ],
)
def test_task_list_errors(tasks, match):
    with pytest.raises(ValueError, match=match):
        MultiTaskArguments(tasks=tasks)


@needs_rotten_tomatoes
def test_multi_task_recipe_on_tiny_models(tmp_path, wordpiece_tokenizer):
    checkpoint = save_tiny_teacher(
        tmp_path / "checkpoint", BertForSequenceClassification, wordpiece_tokenizer, num_labels=2
    )
    out = tmp_path / "run"
    flags = tiny_flags(
        out,
        teacher_model_name_or_path=checkpoint,
        fine_tune_teacher="always",
        teacher_max_steps=2,
        train_file=write_conll(tmp_path / "train.conll"),
    )
    report = run_recipe("multi_task", flags)
    assert json.loads((out / REPORT_NAME).read_text())["metrics"] == report["metrics"]
    assert set(report["metrics"]) == {
        "teacher", "multi_task_kd", "single_task_kd_sentiment", "single_task_kd_ner", "multi_task_no_kd"
    }  # fmt: skip
    assert set(report["metrics"]["multi_task_kd"]) == {"sentiment", "ner"}
    assert set(report["metrics"]["single_task_kd_ner"]) == {"ner"}
    students = report["students"]
    # One encoder for both tasks: fewer parameters than the two single-task students together.
    shared = students["multi_task_kd"]["parameters"]
    assert (
        shared
        < students["single_task_kd_sentiment"]["parameters"] + students["single_task_kd_ner"]["parameters"]
    )
    # The multi-task student learnt both tasks from their teachers; the baseline from the labels alone.
    history = report["log_history"]["multi_task_kd"]
    assert any("loss_kd_sentiment" in e for e in history) and any("loss_kd_ner" in e for e in history)
    # The same batches of each task: the single-task students take as many steps as their task has batches.
    steps = {k: max(e.get("step", 0) for e in h) for k, h in report["log_history"].items()}
    assert steps["multi_task_kd"] == steps["single_task_kd_sentiment"] + steps["single_task_kd_ner"]
    # Saved and reloadable, with both heads.
    saved = MultiTaskStudent.from_pretrained(out / "students" / "multi_task_kd")
    assert sum(p.numel() for p in saved.parameters()) == shared
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    assert saved(input_ids=ids, task="sentiment")["logits"].shape == (1, 2)
    assert saved(input_ids=ids, task="ner")["logits"].shape == (1, 5, 3)  # O, B-person, I-person


def test_run_multi_task_recipe_errors(tmp_path):
    from types import SimpleNamespace

    from hf_distill.recipes.arguments import RecipeConfig
    from hf_distill.recipes.multi_task import run_multi_task_recipe

    config = RecipeConfig(training=SimpleNamespace(output_dir=str(tmp_path)))
    sentiment = SimpleNamespace(task="sequence_classification")
    with pytest.raises(ValueError, match=r"needs two or more tasks, got \['sentiment'\]"):
        run_multi_task_recipe({"sentiment": sentiment}, config)
    code = SimpleNamespace(task="causal_lm")
    with pytest.raises(ValueError, match=r"shares a classification encoder, but the tasks are \['causal_lm'"):
        run_multi_task_recipe({"sentiment": sentiment, "code": code}, config)
