"""Building the recipe's students: one of each kind, and a causal LM refused for a classifier."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hf_distill.recipes.arguments import parse_recipe_config
from hf_distill.recipes.student_arguments import StudentArguments
from hf_distill.recipes.students import (
    CALIBRATION_BATCH_SIZE,
    CALIBRATION_BATCHES,
    build_student,
    calibration_batches,
)
from hf_distill.students.importance import layer_importance
from tests.helpers.recipes import task_data
from tests.helpers.tiny_models import tiny_bert_classifier, tiny_gpt2


def test_gpt2_student_for_a_classifier_is_refused():
    teacher = tiny_bert_classifier()
    with pytest.raises(ValueError, match="student_init 'gpt2' builds a causal LM, but this task is"):
        build_student(
            "gpt2", teacher, StudentArguments(student_init=["gpt2"]), task_data("sequence_classification")
        )


def test_students_of_each_kind(tmp_path):
    teacher = tiny_bert_classifier(num_labels=2)
    task = task_data("sequence_classification")
    args = StudentArguments(student_num_layers=1, student_config_overrides='{"hidden_size": 16}')
    layered = build_student("teacher_layers", teacher, StudentArguments(student_num_layers=1), task)
    assert layered.config.num_hidden_layers == 1
    torch.testing.assert_close(
        layered.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[0].output.dense.weight
    )
    from_config = build_student("config", teacher, args, task)
    assert (from_config.config.num_hidden_layers, from_config.config.hidden_size) == (1, 16)
    teacher.save_pretrained(tmp_path / "given")
    given = build_student(
        "pretrained",
        teacher,
        StudentArguments(student_init=["pretrained"], student_model_name_or_path=str(tmp_path / "given")),
        task_data("sequence_classification", label_kwargs={"num_labels": 2}),
    )
    torch.testing.assert_close(given.classifier.weight, teacher.classifier.weight)
    lm_teacher = tiny_gpt2()
    gpt2 = build_student("gpt2", lm_teacher, StudentArguments(student_num_layers=1), task_data("causal_lm"))
    assert gpt2.config.vocab_size == lm_teacher.config.vocab_size and gpt2.config.n_layer == 1


def test_students_by_importance_are_chosen_by_the_method_the_flag_names():
    teacher = tiny_bert_classifier(num_labels=2, layers=4).eval()
    generator = torch.Generator().manual_seed(0)
    rows = [
        {
            "input_ids": torch.randint(5, 80, (12,), generator=generator),
            "attention_mask": torch.ones(12, dtype=torch.long),
            "labels": torch.tensor(i % 2),
        }
        for i in range(CALIBRATION_BATCHES * CALIBRATION_BATCH_SIZE)
    ]
    task = dataclasses.replace(
        task_data("sequence_classification"),
        train=rows,
        collator=lambda batch: {k: torch.stack([row[k] for row in batch]) for k in batch[0]},
    )
    calibration = calibration_batches(task, CALIBRATION_BATCHES, CALIBRATION_BATCH_SIZE)
    for method in ("block_influence", "skip_loss"):
        args = StudentArguments(
            student_num_layers=2, student_layer_strategy="importance", student_importance_method=method
        )
        record = build_student("teacher_layers", teacher, args, task).config.distillation
        scores = layer_importance(teacher, calibration, method)
        assert record["importance"] == method
        assert record["layers"] == sorted(sorted(range(4), key=lambda i: -scores[i])[:2])


def test_an_unknown_importance_method_is_refused_before_any_work():
    with pytest.raises(
        ValueError, match="student_importance_method='cosine'.*'block_influence', 'skip_loss'"
    ):
        StudentArguments(student_importance_method="cosine")


def test_student_layers_names_the_teacher_layers_kept():
    teacher = tiny_bert_classifier(num_labels=2, layers=4)
    args = StudentArguments(student_num_layers=2, student_layers=[0, 2])
    student = build_student("teacher_layers", teacher, args, task_data("sequence_classification"))
    assert student.config.distillation["layers"] == [0, 2]
    assert student.config.distillation["strategy"] == "explicit"
    torch.testing.assert_close(
        student.bert.encoder.layer[1].attention.self.query.weight,
        teacher.bert.encoder.layer[2].attention.self.query.weight,
    )
    # From the command line and a config file, as the recipes parse them.
    config = parse_recipe_config(
        ["--output_dir", "unused", "--student_num_layers", "3", "--student_layers", "0", "1", "3"],
        task="sentiment",
    )
    assert config.student.student_layers == [0, 1, 3]
    with pytest.raises(ValueError, match=r"Layer index 4 is out of range: the teacher has 4 layers"):
        build_student(
            "teacher_layers",
            teacher,
            StudentArguments(student_num_layers=2, student_layers=[0, 4]),
            task_data("sequence_classification"),
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"student_num_layers": 2, "student_layers": [2, 0]}, r"each once, in increasing order"),
        ({"student_num_layers": 2, "student_layers": [1, 1]}, r"each once, in increasing order"),
        ({"student_num_layers": 2, "student_layers": [-1, 0]}, r"each once, in increasing order"),
        ({"student_num_layers": 3, "student_layers": [0, 2]}, r"names 2 layers but student_num_layers is 3"),
        (
            {"student_num_layers": 2, "student_layers": [0, 2], "student_layer_strategy": "importance"},
            r"both say which teacher layers to keep",
        ),
        (
            {"student_num_layers": 2, "student_layers": [0, 2], "student_init": ["gpt2"]},
            r"is for the teacher_layers student",
        ),
    ],
)
def test_student_layers_that_another_flag_contradicts_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StudentArguments(**kwargs)
