"""``teacher_outputs_once``: a multi-seed recipe runs the teacher once over the distilled student's rows (labeled and
transfer) and trains every seed from the saved logits; the students come out as with the live teacher."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import BertForSequenceClassification

from hf_distill import DistillationTrainingArguments
from hf_distill.cache.build import TEACHER_LOGITS
from hf_distill.recipes.training import distilled_rows, reuse_blocker, with_teacher_outputs
from hf_distill.teachers.sources import LiveTeacher
from tests.helpers.recipes import needs_rotten_tomatoes, run_recipe, save_tiny_teacher, tiny_flags


def tiny_task(tokenizer_rows: int = 6):
    from hf_distill.recipes.tasks import TaskData

    ids = [[2, 5 + i, 7, 3][: 2 + i % 3] for i in range(tokenizer_rows)]
    labeled = Dataset.from_dict(
        {"input_ids": ids[:4], "attention_mask": [[1] * len(r) for r in ids[:4]], "labels": [0, 1, 0, 1]}
    )
    transfer = Dataset.from_dict(
        {"input_ids": ids[4:], "attention_mask": [[1] * len(r) for r in ids[4:]], "labels": [-100, -100]}
    )
    return TaskData(
        task="sequence_classification",
        auto_class=BertForSequenceClassification,
        metric_name="accuracy",
        higher_is_better=True,
        dataset_label="tiny",
        tokenizer=None,
        train=labeled,
        validation=None,
        test=None,
        collator=None,
        evaluate=lambda *a: {},
        transfer=transfer,
    )


def tiny_teacher() -> BertForSequenceClassification:
    from transformers import BertConfig

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    )
    return BertForSequenceClassification(config).eval()


def test_the_rows_carry_the_teachers_logits_of_every_labeled_and_transfer_row(tmp_path):
    task, teacher = tiny_task(), tiny_teacher()
    args = DistillationTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=4)
    reused = with_teacher_outputs(task, teacher, args, "kd", [1, 2])
    rows = distilled_rows(reused)
    assert len(rows) == 6 and rows["labels"] == [0, 1, 0, 1, -100, -100]
    with torch.no_grad():  # each row alone: no padding at all
        expected = [teacher(input_ids=torch.tensor([r])).logits[0] for r in rows["input_ids"]]
    torch.testing.assert_close(
        torch.tensor(rows[TEACHER_LOGITS]), torch.stack(expected), rtol=1e-5, atol=1e-6
    )
    assert distilled_rows(task).column_names == ["input_ids", "attention_mask", "labels"], "task unchanged"


def test_the_teacher_stays_live_where_its_cached_logits_are_not_the_whole_signal(tmp_path):
    task = tiny_task()
    args = DistillationTrainingArguments(output_dir=str(tmp_path))
    assert reuse_blocker(task, args, "kd", [1, 2]) is None
    assert reuse_blocker(task, args, "kd", [1]) == "one seed"
    assert reuse_blocker(dataclasses.replace(task, task="causal_lm"), args, "kd", [1, 2]).startswith(
        "a causal_lm task"
    )
    assert reuse_blocker(task, args, "multi_teacher", [1, 2]) == "distillation_mode 'multi_teacher'"
    internal = DistillationTrainingArguments(output_dir=str(tmp_path), hidden_state_weight=1.0)
    assert "hidden_state_weight" in reuse_blocker(task, internal, "kd", [1, 2])
    assert with_teacher_outputs(task, tiny_teacher(), internal, "kd", [1, 2]) is task


@needs_rotten_tomatoes
def test_students_trained_from_the_logits_computed_once_equal_those_of_the_live_teacher(
    tmp_path, wordpiece_tokenizer, monkeypatch, capsys
):
    teacher = save_tiny_teacher(
        tmp_path / "teacher", BertForSequenceClassification, wordpiece_tokenizer, num_labels=2
    )
    calls = {"live": 0}
    live_call = LiveTeacher.__call__

    def counted(self, *args, **kwargs):
        calls["live"] += 1
        return live_call(self, *args, **kwargs)

    monkeypatch.setattr(LiveTeacher, "__call__", counted)
    weights = {}
    for once in ("true", "false"):
        calls["live"] = 0
        out = tmp_path / f"once-{once}"
        # Plain SGD with a large step: Adam divides each update by the gradient's own scale, which turns the
        # 1e-7 differences of padding a batch otherwise (the cache pads rows in batches of 16, training in 8)
        # into visible ones for a parameter whose gradient is near zero; SGD keeps them at float noise while
        # wrong logits would move the weights by about the step.
        flags = tiny_flags(
            out, teacher_model_name_or_path=teacher, fine_tune_teacher="never", optim="sgd", learning_rate=0.5
        )
        run_recipe(
            "sentiment",
            [*flags, "--seeds", "1,2", "--transfer_samples", "16", "--teacher_outputs_once", once],
        )
        weights[once] = {
            seed: load_file(next(Path(out).glob(f"students/*distilled*/seed-{seed}/model.safetensors")))
            for seed in (1, 2)
        }
        if once == "true":
            assert calls["live"] == 0, "every training batch read the saved logits"
            assert (
                "the teacher ran once over the distilled student's 48 training rows"
                in capsys.readouterr().out
            )
        else:
            assert calls["live"] == 2 * 6, (
                "two seeds of 6 steps (48 rows, batches of 8) with the live teacher"
            )
    for seed in (1, 2):
        for name, tensor in weights["true"][seed].items():
            torch.testing.assert_close(tensor, weights["false"][seed][name], rtol=1e-4, atol=1e-5)
    assert not torch.equal(*(weights["true"][s]["classifier.weight"] for s in (1, 2))), "the seeds differ"
